"""A gdb remote stub for guests running on pvmon's engine (``--gdb HOST:PORT``).

- :mod:`pvmon.gdb.rsp`: remote-protocol framing (packets, checksums, escapes).
- :mod:`pvmon.gdb.target`: the x86-64 register set and target description.
- :mod:`pvmon.gdb.stub`: the debugger on the engine thread (stops, steps,
  breakpoints, watchpoints, memory through the guest page tables, monitor
  commands, reverse execution on a replay).
- :mod:`pvmon.gdb.server`: the TCP listener and the client's reader thread.

The stub uses only :class:`pvmon.engine.machine.Machine` (and, on a replay,
the trace), never an ABI: it serves any guest the engine runs.
"""
