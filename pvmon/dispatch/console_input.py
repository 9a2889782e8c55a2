"""When console input reaches the guest: deterministic injection points.

Keyboard input is a nondeterministic input like a TSC read: for a run to be
repeatable (and replayable), the *point* at which input enters the guest must
be defined by the guest's own execution, and recorded. The rule:

    Input is injected only at a kernel-mode hypercall boundary: in the
    dispatch, after the engine trapped a hypercall and before the backend
    handles it. Each injection is recorded as a ``con`` event with
    ``dir: "in"`` whose ``seq`` is the dispatch's event counter at that moment;
    the hypercall then gets the next ``seq``.

How the point was chosen is recorded too, as the event's ``at``: ``"prompt"``
for a chunk placed by the script rule (below), ``"idle"`` for live input
that arrived while the guest waited at an idle point; live input taken at any
other boundary, and the rest of a chunk that did not fit in the ring the
first time, carry no ``at``.

A replay on the recorded backend (verify) re-injects recorded input by
sequence number: ``dispatch.schedule_input(seq, data, at)`` for every
recorded ``con``/``in`` event, and the dispatch injects it at the first
hypercall boundary where ``dispatch.seq >= seq`` (in a faithful replay that
is exactly ``seq``). A replay on another backend takes another path, where
those numbers mean nothing: there ``dispatch.replay_input(data, rule)``
re-injects each input, in order, at an idle point chosen by what the guest is
doing (*replayed*, below).

Four sources, each with its own rule for *which* boundary:

* **scheduled** (verify): :meth:`ConsoleInput.schedule` — at the recorded seq.
* **replayed** (closed loop on another backend): :meth:`ConsoleInput.replay`
  — one input per idle point, in order, once the guest has consumed all
  earlier input and nothing is left over from it; an input recorded with
  ``at: "prompt"`` also waits for the script rule's prompt (or quiet)
  condition, so it is typed at the prompt it was typed at. Any other input
  (``"idle"``, or typed live at an arbitrary hypercall boundary) is typed at
  the first such idle point after everything before it. A trace recorded
  before ``at`` existed says nothing: there an input whose next event is the
  guest's SCHEDOP_block was taken at an idle point, which for such traces
  means a script line, and is replayed as ``"prompt"``
  (:func:`pvmon.replay.source.recorded_inputs`).
* **live** (a TTY, the TUI console pane; any thread): :meth:`ConsoleInput.post`
  — at the next hypercall boundary after the bytes arrive. When the guest
  idles (SCHEDOP_block with nothing pending) the dispatch waits in wall time,
  up to the guest's next timer, for live input, so an interactive guest's
  virtual time keeps pace with the user rather than racing ahead.
* **script** (``--script``, ``--input-file``, piped stdin, tests):
  :meth:`ConsoleInput.add_script` — one chunk (a line) at a time, only at an
  *idle point*: the guest is about to block in SCHEDOP_block with no event
  pending, has consumed all earlier input (console ring ``in_cons ==
  in_prod``), and its console output since the last chunk ends in a shell
  prompt (``#``, ``$`` or ``>`` then a space, terminal escapes ignored) or has
  been quiet for :attr:`ConsoleInput.quiet_ns` of virtual time. A pipe's lines
  are waited for (wall time) at the idle point, so a piped script gives the
  same run as the same text given with ``--script``.

Idle exit: when no input can arrive any more (no scheduled, replayed or
script input left, the script source closed, no live source) and the guest
has idled with no console output or input for
:attr:`ConsoleInput.idle_limit_ns` of virtual time (default 10 s), the run stops with exit kind ``idle``: "idle: waiting for
console input, no input left". The check runs at idle points, so the stop
point is deterministic too.
"""

from __future__ import annotations

import queue
import re
import threading
from collections import deque

#: Shell prompt at the end of console output: '#', '$' or '>' then one space.
PROMPT_RE = re.compile(rb"[#$>] $")
_ESCAPES = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-Za-z]|\r")

DEFAULT_IDLE_LIMIT_NS = 10_000_000_000
#: Ctrl-] on a live source ends the run, like telnet's and virsh console's escape.
DETACH = b"\x1d"
DEFAULT_QUIET_NS = 1_000_000_000


def script_lines(text: str | bytes) -> list[bytes]:
    """Split script text into the lines to type, each ending in a newline
    (a missing final newline is added; an empty text types nothing)."""
    if isinstance(text, str):
        text = text.encode()
    if text.endswith(b"\n"):
        text = text[:-1]
    return [ln + b"\n" for ln in text.split(b"\n")] if text else []


class ConsoleInput:
    """Input waiting to reach one guest console, and the rules for when it may.

    The dispatch owns one and asks it at every hypercall boundary
    (:meth:`take_due`) and at every idle point (the dispatch's idle logic).
    ``post`` is the only method safe to call from other threads.
    """

    def __init__(self) -> None:
        #: Verify: ``(seq, data, at)`` to inject by recorded seq.
        self.scheduled: deque[tuple[int, bytes, str | None]] = deque()
        #: Closed loop on another backend: ``(data, rule)`` to inject by idle point.
        self.replayed: deque[tuple[bytes, str]] = deque()
        self.script: deque[bytes] = deque()
        #: More script chunks may still come (a pipe not yet at EOF).
        self.script_open = False
        self._script_cv = threading.Condition()
        self._live: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        #: A live source (a terminal, the TUI) may post input at any time.
        self.live_open = False
        self.live_ready = False
        #: The user asked to leave (DETACH typed on a live source).
        self.detach = False
        #: Bytes accepted for injection that did not fit in the ring yet.
        self.carry = b""
        self.quiet_ns = DEFAULT_QUIET_NS
        self.idle_limit_ns: int | None = DEFAULT_IDLE_LIMIT_NS
        self.prompt = PROMPT_RE
        self._tail = bytearray()

    # --------------------------------------------------------------- sources
    def schedule(self, at_seq: int, data: bytes, at: str | None = None) -> None:
        """Verify: inject ``data`` at the first hypercall boundary with
        ``dispatch.seq >= at_seq``, recorded with the recorded ``at`` (None:
        none). Calls must come in seq order; raises ValueError otherwise."""
        if self.scheduled and at_seq < self.scheduled[-1][0]:
            raise ValueError("schedule_input calls must come in seq order")
        self.scheduled.append((at_seq, bytes(data), at))

    def replay(self, data: bytes, rule: str = "idle") -> None:
        """Closed loop on another backend: inject ``data`` at an idle point
        after every input given before it (see the module docstring);
        ``rule`` "prompt": wait for the prompt, "idle": do not."""
        if data:
            self.replayed.append((bytes(data), rule))

    def add_script(self, chunks, *, more: bool = False) -> None:
        """Script: append ``chunks`` (bytes each, usually one line with its
        newline), fed one per idle point. ``more``: further chunks will follow
        through :meth:`add_script`; call :meth:`close_script` at the end."""
        with self._script_cv:
            self.script.extend(bytes(c) for c in chunks if c)
            self.script_open = more
            self._script_cv.notify_all()

    def close_script(self) -> None:
        with self._script_cv:
            self.script_open = False
            self._script_cv.notify_all()

    def post(self, data: bytes) -> None:
        """Live input from any thread: injected at the next hypercall boundary.
        A :data:`DETACH` byte (Ctrl-]) is not passed on: it asks the run to
        stop at that boundary (exit kind "interrupted")."""
        if DETACH in data:
            data = data.split(DETACH, 1)[0]
            self.detach = True
        if data or self.detach:
            self._live.put(bytes(data))
            self.live_ready = True

    # ----------------------------------------------------------- dispatch side
    def has_script(self) -> bool:
        return bool(self.script) or self.script_open

    def next_script_chunk(self, wait: float | None = None) -> bytes | None:
        """The next script chunk, waiting (wall time) for an open source to
        deliver one; None when the script is exhausted and closed."""
        with self._script_cv:
            while not self.script and self.script_open:
                if not self._script_cv.wait(wait):
                    return None
            return self.script.popleft() if self.script else None

    def take_live(self, timeout: float = 0.0) -> bytes:
        """Everything posted so far (waiting up to ``timeout`` wall seconds for
        the first bytes); b"" when nothing came."""
        out = bytearray()
        try:
            out += self._live.get(timeout=timeout) if timeout > 0 else self._live.get_nowait()
            while True:
                out += self._live.get_nowait()
        except queue.Empty:
            pass
        self.live_ready = not self._live.empty()
        return bytes(out)

    def exhausted(self) -> bool:
        """No input can arrive any more."""
        return not (self.scheduled or self.replayed or self.carry or self.has_script()
                    or self.live_open or self.live_ready)

    def script_due(self, consumed: bool, quiet_for_ns: int) -> bool:
        """The script rule at an idle point: the guest has read every input
        byte (``consumed``), none is left over, and its console output since
        the last chunk ends in a prompt or it has written nothing to the
        console for :attr:`quiet_ns` (``quiet_for_ns``: virtual ns since
        its last console output or input)."""
        return consumed and not self.carry and (self.at_prompt()
                                                or quiet_for_ns >= self.quiet_ns)

    def replay_due(self, consumed: bool, quiet_for_ns: int) -> bool:
        """Whether the next :meth:`replay` input is due at this idle point:
        the script rule for rule "prompt", else only that every earlier
        input was consumed and none is left over."""
        if not self.replayed:
            return False
        if self.replayed[0][1] == "prompt":
            return self.script_due(consumed, quiet_for_ns)
        return consumed and not self.carry

    # ------------------------------------------------------------- prompt
    def saw_output(self, data: bytes) -> None:
        self._tail += data
        if len(self._tail) > 512:
            del self._tail[:-256]

    def forget_output(self) -> None:
        self._tail.clear()

    def at_prompt(self) -> bool:
        """The console output since the last injected chunk ends in a prompt."""
        lines = _ESCAPES.sub(b"", bytes(self._tail)).rsplit(b"\n", 1)
        return bool(self.prompt.search(lines[-1]))


__all__ = ["DETACH", "PROMPT_RE", "ConsoleInput", "script_lines"]
