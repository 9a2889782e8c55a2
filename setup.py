"""Build hook for the compiled modules, pvmon.trace._evpack (the recorder's
hypercall-event packer) and pvmon.engine._slicer (the SMP scheduler's
block-budget hook); everything else is in pyproject.toml. Both are optional:
without a C compiler pvmon installs and records the same traces, packing every
event through ormsgpack and counting blocks in a Python hook instead (slower)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("pvmon.trace._evpack", ["pvmon/trace/_evpack.c"], optional=True,
                             extra_compile_args=["-O2"]),
                   Extension("pvmon.engine._slicer", ["pvmon/engine/_slicer.c"], optional=True,
                             extra_compile_args=["-O2"])])
