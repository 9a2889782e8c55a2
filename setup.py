"""Build hook for the compiled modules, pvmon.trace._evpack (the recorder's
hypercall-event packer), pvmon.engine._slicer (the SMP scheduler's
block-budget hook) and pvmon.uml._stoploop (the UML tracer's ptrace stop
loop); everything else is in pyproject.toml. All are optional: without a C
compiler pvmon installs and records the same traces, packing every event
through ormsgpack, counting blocks in a Python hook and running the UML
tracer's stop loop in Python instead (slower)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("pvmon.trace._evpack", ["pvmon/trace/_evpack.c"], optional=True,
                             extra_compile_args=["-O2"]),
                   Extension("pvmon.engine._slicer", ["pvmon/engine/_slicer.c"], optional=True,
                             extra_compile_args=["-O2"]),
                   Extension("pvmon.engine._trampoline", ["pvmon/engine/_trampoline.c"],
                             optional=True, extra_compile_args=["-O2"]),
                   Extension("pvmon.uml._stoploop", ["pvmon/uml/_stoploop.c"], optional=True,
                             extra_compile_args=["-O2"])])
