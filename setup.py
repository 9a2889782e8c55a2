"""Build hook for the compiled modules, pvmon.trace._evpack (the recorder's
hypercall-event packer), pvmon.engine._slicer (the SMP scheduler's
block-budget hook), pvmon.uml._stoploop (the UML tracer's ptrace stop
loop) and pvmon.gdb._tbwalk (reverse execution's walk over translated
blocks); everything else is in pyproject.toml. All are optional: without a C
compiler pvmon installs and records the same traces, packing every event
through ormsgpack, counting blocks in a Python hook, running the UML
tracer's stop loop and walking the blocks in Python instead (slower)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("pvmon.trace._evpack", ["pvmon/trace/_evpack.c"], optional=True,
                             extra_compile_args=["-O2"]),
                   Extension("pvmon.engine._slicer", ["pvmon/engine/_slicer.c"], optional=True,
                             extra_compile_args=["-O2"]),
                   Extension("pvmon.engine._trampoline", ["pvmon/engine/_trampoline.c"],
                             optional=True, extra_compile_args=["-O2"]),
                   Extension("pvmon.uml._stoploop", ["pvmon/uml/_stoploop.c"], optional=True,
                             extra_compile_args=["-O2"]),
                   Extension("pvmon.gdb._tbwalk", ["pvmon/gdb/_tbwalk.c"], optional=True,
                             extra_compile_args=["-O2"]),
                   Extension("pvmon.engine._pagewalk", ["pvmon/engine/_pagewalk.c"],
                             optional=True, extra_compile_args=["-O2"])])
