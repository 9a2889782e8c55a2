"""User-Mode Linux recorded natively: Debian's UML kernel run under pvmon's
ptrace tracer, its host system calls and its guest processes' system calls
written to a ``.pvt`` trace of ABI ``uml`` (docs/uml.md)."""
