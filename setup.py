"""Build hook for the one compiled module, pvmon.trace._evpack (the recorder's
hypercall-event packer); everything else is in pyproject.toml. The module is
optional: without a C compiler pvmon installs and records the same traces,
packing every event through ormsgpack instead (slower)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("pvmon.trace._evpack", ["pvmon/trace/_evpack.c"], optional=True,
                             extra_compile_args=["-O2"])])
