"""The backend contract: one hypervisor ABI at one version.

Someone who has never seen pvmon should be able to write a backend from this
module alone. The pieces, in the order a run meets them:

1. A factory makes a :class:`Backend` (third-party backends register one
   under the ``pvmon.backends`` entry point group; it takes no arguments).
   A backend of a new ABI also brings its :class:`GuestKind`: a
   ``guest_kind`` attribute, or one registered under the
   ``pvmon.guest_kinds`` entry point group named by the ABI.
2. The session asks the registry for the backend's :class:`GuestKind`
   (loader, domain builder, dispatch layer), builds the machine and the
   domain with it, lets it set what the loader learnt (Xen:
   :attr:`Backend.hypercall_page`), then calls :meth:`Backend.attach` with the
   machine, the domain layout, a :class:`GuestAccess` and the
   :class:`PlatformServices` of the dispatch layer.
3. The dispatch layer sets :attr:`Backend.console_out`, then for every call
   the guest makes calls :meth:`Backend.call` and reads what the call did
   (:class:`CallResult`: the return value, :attr:`Backend.op`,
   ``Backend.events.raised``); between calls it drives the vCPU
   (:class:`Vcpu`: timers, event upcalls, fault delivery) and feeds console
   input (:meth:`Backend.console_input`).
4. Replay drives the same members without a running guest: open loop calls
   :meth:`Backend.call` with a :class:`GuestAccess` that serves recorded memory
   and a :class:`PlatformServices` that only notes jumps and stops.

A backend is pure in its inputs: it sees the guest only through its
:class:`GuestAccess` (which records every byte it reads and writes), keeps
its own state, and answers each call with a result. Events it raises and
memory it writes are what the recorder stores beside the call, so a call can
be replayed against another backend without the guest.

Optional capabilities are advertised in :attr:`Backend.capabilities`, never
faked: a backend with no writable page tables does not invent ``pinned``
frames, it leaves :data:`CAP_PV_MMU` out and callers ask before using them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol


class GuestFault(Exception):
    """A backend touched a guest address the guest cannot access. Backends
    turn it into the ABI's own error (Xen: -EFAULT); it never leaves pvmon."""

    def __init__(self, address: int, write: bool = False) -> None:
        super().__init__(f"guest {'write' if write else 'read'} fault at {address:#x}")
        self.address = address
        self.write = write


class GuestAccess(Protocol):
    """How a backend reads and writes the guest; every access is recorded
    (the ``rd``/``wr`` fields of a call event, docs/trace-format.md), so a
    backend must never reach guest memory another way.

    Addresses: *virtual* (``va``) go through the guest's current page tables
    with kernel privilege; *machine* (``ma``) are frame << 12 (frame = guest
    pseudo-physical frame in pvmon's domains). Sizes are bytes.

    The live implementation is :class:`pvmon.dispatch.access.RecordingGuestAccess`;
    open-loop replay serves recorded reads instead (pvmon/replay/openloop.py).
    """

    def read(self, va: int, size: int) -> bytes:
        """``size`` bytes at guest-virtual ``va``. Raises :class:`GuestFault`
        (address = the first unmapped byte) when any of it is not mapped, or
        when ``size`` is negative."""
        ...

    def write(self, va: int, data: bytes) -> None:
        """Write ``data`` at guest-virtual ``va``. Raises :class:`GuestFault`
        (write=True) when any of it is not mapped."""
        ...

    def walk(self, va: int) -> tuple[int, int]:
        """Translate ``va``: ``(physical address, machine address of the L1
        entry that maps it)``. Raises :class:`GuestFault` when not mapped."""
        ...

    def read_machine(self, ma: int, size: int) -> bytes:
        """``size`` bytes of machine memory at ``ma``, checked: raises
        :class:`GuestFault` when the range is not guest memory (a frame
        number the guest passed)."""
        ...

    def write_machine(self, ma: int, data: bytes) -> None:
        """Write ``data`` to machine memory at ``ma``, checked like
        :meth:`read_machine` (raises :class:`GuestFault` with write=True);
        code translated from the page is invalidated."""
        ...

    def read_phys(self, ma: int, size: int) -> bytes:
        """``size`` bytes at machine address ``ma``, unchecked: only for
        frames the domain builder placed (shared_info, rings), which are
        always valid. Raises nothing a guest can provoke."""
        ...

    def write_phys_data(self, ma: int, data: bytes) -> None:
        """Write ``data`` at ``ma``, unchecked, as :meth:`read_phys`; for data
        pages, so translated code is not invalidated."""
        ...

    def read_u64_phys(self, ma: int) -> int:
        """The little-endian u64 at ``ma`` (unchecked, as :meth:`read_phys`):
        event-channel words, page-table entries the backend found by a walk."""
        ...

    def write_u64_phys(self, ma: int, value: int) -> None:
        """Store ``value`` (masked to 64 bits) as a little-endian u64 at
        ``ma`` (unchecked, as :meth:`read_phys`)."""
        ...


class PlatformServices(Protocol):
    """What a backend calls back while it handles a call or delivers to the
    vCPU: the one place a backend reaches the run. The dispatch layer
    implements it for a running guest (:class:`pvmon.dispatch.core.DispatchCore`);
    open-loop replay implements it for a guest that does not run (jumps and
    stops are noted, not executed). Every stop takes effect when the current
    call returns: the backend still returns its value."""

    def cur_rip(self) -> int:
        """The guest RIP the current call returns to (after a :meth:`jump`,
        the jump's target)."""
        ...

    def jump(self, rip: int) -> None:
        """Resume the guest at ``rip`` instead of after the current call (an
        ``iret`` hypercall, a bounce frame into a guest handler)."""
        ...

    def crash_stop(self, detail: str, rip: int) -> None:
        """End the run: the hypervisor crashed the domain (``detail``: a
        sentence saying why; ``rip``: where). Exit kind "crash"."""
        ...

    def stuck(self, detail: str) -> None:
        """End the run: the guest waits for something that can never come
        (blocked with no timer and no event). Exit kind "stuck"."""
        ...

    def guest_shutdown(self, reason: int) -> None:
        """End the run: the guest asked to shut down with the ABI's
        ``reason`` code (Xen: SHUTDOWN_poweroff, _reboot, _crash, ...). Exit
        kind "shutdown", or "crash" for the ABI's crash reason."""
        ...


class Vcpu(Protocol):
    """The vCPU side of a backend (``Backend.vcpu`` after attach), driven by
    the dispatch layer between calls. Times are virtual ns
    (``machine.clock.now_ns``); RIPs guest-virtual."""

    #: True while the guest runs in its user mode (a ``syscall`` is then a
    #: system call of a guest process, not a call to the hypervisor).
    user_mode: bool
    #: The earliest armed timer (virtual ns), or None; read on every TSC read.
    deadline: int | None

    def upcall_mask(self) -> int:
        """Non-zero while event delivery is masked."""
        ...

    def upcall_pending(self) -> bool:
        """True when an event waits for delivery (masked or not)."""
        ...

    def can_upcall(self) -> bool:
        """True when an event waits, is unmasked and a callback is registered."""
        ...

    def deliver_upcall(self) -> bool:
        """Enter the guest's event callback now (through
        :meth:`PlatformServices.jump`). Returns False, changing nothing, if
        :meth:`can_upcall` is False."""
        ...

    def deliver_trap(self, vector: int, error_code: int | None, cr2: int | None,
                     rip: int) -> bool:
        """Deliver exception ``vector`` (``error_code`` or None, ``cr2`` for
        #PF, ``rip`` of the faulting instruction) to the guest's handler,
        through :meth:`PlatformServices.jump`. With no handler the backend
        stops the run as its hypervisor would (``crash_stop``) and returns
        False."""
        ...

    def software_interrupt(self, vector: int, next_rip: int) -> tuple[int, int | None, int]:
        """What the hypervisor makes of ``int $vector`` ending at ``next_rip``:
        ``(vector, error code or None, rip)`` to pass to :meth:`deliver_trap`."""
        ...

    def syscall_from_user(self, ret_rip: int) -> bool:
        """A ``syscall`` in guest user mode (``ret_rip``: after it): enter the
        guest kernel's system-call entry (through ``jump``). False if none is
        registered (the guest is then given the ABI's fault)."""
        ...

    def fire_timers(self) -> bool:
        """Raise the timer event of every timer due at the current virtual
        time. True if one fired."""
        ...

    def next_deadline(self) -> int | None:
        """The earliest armed timer (virtual ns), or None."""
        ...


class EventSource(Protocol):
    """``Backend.events``: the events a backend raised during the current call."""

    #: Event numbers (Xen: event-channel ports) made pending since the
    #: dispatch layer last cleared the list, in order. The dispatch layer
    #: clears it after each call; a backend only appends.
    raised: list[int]


class ConsoleDevice(Protocol):
    """``Backend.console``: the guest console's input side."""

    def input_consumed(self) -> bool:
        """True when the guest has read every byte given to
        :meth:`Backend.console_input`."""
        ...


class CallResult(NamedTuple):
    """Everything one call did, as the recorder stores it (a ``hc`` event,
    docs/trace-format.md). ``ret``: the value returned to the guest (negative
    errno as a signed int); ``name``: the call's name in the ABI's table;
    ``op``: the decoded operation (sub-op and arguments, msgpack-able; empty
    if nothing was decoded); ``raised``: the events the call raised, in order.
    Memory read and written is in the :class:`GuestAccess` (its ``reads`` and
    ``writes``).

    The hot path does not build one per call: :meth:`Backend.call` returns
    ``ret`` and leaves ``op`` in :attr:`Backend.op` and ``raised`` in
    ``Backend.events.raised`` until the next call, and the recorder packs the
    event from those values in C (pvmon/trace/_evpack.c), because one more
    object per call is measurable on a boot of 50,000+ calls. Callers off the
    hot path use :meth:`Backend.call_result`."""

    ret: int
    name: str
    op: dict
    raised: tuple[int, ...]


def layout_from_fields(layout_class: type, recorded: Any) -> Any | None:
    """``layout_class`` (a dataclass) built from a header's ``layout`` map, as
    :meth:`GuestKind.layout_from` returns it: None when the map is not a dict,
    lacks a field (``extras`` may be missing) or a field's value does not fit."""
    from dataclasses import fields
    names = {f.name for f in fields(layout_class)}
    if isinstance(recorded, dict) and names - {"extras"} <= set(recorded):
        try:
            return layout_class(**{k: v for k, v in recorded.items() if k in names})
        except TypeError:
            pass
    return None


def first_bad_int_field(recorded: dict, bits: int,
                        skip: frozenset[str] = frozenset({"extras"})) -> tuple[str, Any, str] | None:
    """For :meth:`GuestKind.layout_problem`: the first field of a header's
    ``layout`` map (names in ``skip`` aside) that is not an integer of
    ``bits`` bits, as ``(field, value, "a <bits>-bit integer")``, or None."""
    for name, v in recorded.items():
        if name in skip:
            continue
        if type(v) is not int or not 0 <= v < 1 << bits:
            return name, v, f"a {bits}-bit integer"
    return None


class GuestKind(Protocol):
    """How to build and run a guest of one ABI in one guest mode (Xen PV:
    :data:`pvmon.backends.xen.pv.XEN_PV`): the loader, the domain builder,
    the names a trace header records and the dispatch layer. A session asks
    the registry for the kind of its backend
    (:func:`pvmon.backends.registry.guest_kind`) and imports nothing of the
    ABI itself. A third-party backend either uses the kind of its ``abi``
    (a second implementation of Xen) or brings its own as a
    ``guest_kind`` attribute.

    ``name``: the kind ("xen-pv"); ``cpuid_policy``: the CPUID policy name
    the trace header records (``machine.cpuid_policy``, "xen-pv-v1").
    """

    name: str
    cpuid_policy: str

    def dispatch_class(self) -> type:
        """The dispatch layer (a :class:`~pvmon.dispatch.core.DispatchCore`
        subclass taking ``(machine, backend, guest access, record)``)."""
        ...

    def load_kernel(self, path: Any) -> Any:
        """Parse the kernel image at ``path`` (a :class:`~pathlib.Path`); the
        result has ``mechanism`` (str, recorded in the header). Raises
        GuestImageError for an image this kind cannot boot."""
        ...

    def extra_bytes_for(self, ram_bytes: int) -> int:
        """Bytes of machine memory beyond guest RAM the domain needs (for
        hypervisor-owned frames), for :class:`~pvmon.engine.machine.Machine`."""
        ...

    def build(self, machine: Any, kernel: Any, cmdline: str,
              initrd: bytes | None = None) -> Any:
        """Lay the domain out in ``machine`` and set the boot registers.
        Returns the layout (a dataclass; the header records its fields and
        :meth:`Backend.attach` receives it). Raises GuestImageError when the
        kernel does not fit."""
        ...

    def layout_from(self, recorded: dict) -> Any | None:
        """The layout a trace header recorded (its ``layout`` map) as
        :meth:`build` returns it, or None when the map lacks a field (an
        older trace: replay lays the domain out again from the image)."""
        ...

    def layout_problem(self, recorded: dict, memory: int) -> tuple[str, Any, str] | None:
        """Check a header's ``layout`` map (untrusted input) for ``memory``
        bytes of RAM: the first bad field as ``(field, value, what it
        should be)``, or None."""
        ...

    def prepare(self, backend: Backend, kernel: Any) -> None:
        """Tell ``backend`` what the loader learnt before it attaches (Xen:
        :attr:`Backend.hypercall_page`)."""
        ...


#: Capability: the guest updates page tables through calls and the backend
#: keeps ``pinned`` (frame -> page-table level) for writable-page-table
#: emulation (Xen PV). HVM-style backends leave it out.
CAP_PV_MMU = "pv-mmu"
#: Capability: ``hypercall_page`` is honoured (calls from inside the page the
#: loader filled are recorded with ``via`` "page").
CAP_HYPERCALL_PAGE = "hypercall-page"
#: Capability: console input (:meth:`Backend.console_input` and ``console``).
CAP_CONSOLE_INPUT = "console-input"
#: Capability: event upcalls (``events.raised`` and the :class:`Vcpu` upcall members).
CAP_EVENT_UPCALLS = "event-upcalls"


class Backend(ABC):
    """One hypervisor ABI at one version.

    Identity (class or instance attributes): ``abi`` ("xen", "kvm", "vmi",
    "lguest"), ``name`` (how users select it: ``xen-4.17``), ``version``
    ("4.17"), ``ver`` (the ABI's version record, or None: for Xen a
    :class:`~pvmon.backends.xen.versions.XenVersion`, whose ``major``/``minor``
    choose the CPUID policy).

    Set by the caller before or during attach: ``hypercall_page`` (the
    guest-virtual address of the page the loader filled with call stubs, or
    None), ``console_out`` (called with ``(channel, bytes)`` for guest
    console output; the dispatch layer sets it).

    Kept by the backend, read by callers: ``op`` (the decoded operation of
    the last call), ``unsupported`` (``{"call" or "call(sub)": count}`` of
    calls answered "not implemented"). After :meth:`attach`: ``vcpu``
    (:class:`Vcpu`), ``events`` (:class:`EventSource`), ``console``
    (:class:`ConsoleDevice`, with :data:`CAP_CONSOLE_INPUT`), ``pinned``
    (``{frame: level}``, with :data:`CAP_PV_MMU`).
    """

    abi: str = ""
    name: str = ""
    version: str = ""
    # Annotations only (XenBackend sets both per instance; callers use getattr
    # with a default), so no class attribute shadows the instance's.
    ver: Any
    hypercall_page: int | None
    #: What this backend offers beyond the required members (the ``CAP_*`` names).
    CAPABILITIES: frozenset[str] = frozenset()

    op: dict
    unsupported: dict[str, int]
    console_out: Callable[[str, bytes], None]
    vcpu: Vcpu
    events: EventSource
    console: ConsoleDevice
    pinned: dict[int, int]

    @property
    def capabilities(self) -> frozenset[str]:
        """The optional capabilities this backend implements (``CAP_*``)."""
        return self.CAPABILITIES

    def implements(self, capability: str) -> bool:
        """True if this backend offers ``capability`` (a ``CAP_*`` name)."""
        return capability in self.capabilities

    @abstractmethod
    def describe(self) -> dict:
        """What this backend is and how it differs from its base: a dict with
        ``name``, ``abi``, ``version``, ``base`` and ``differences`` (a list of
        ``{"what", "source"}``)."""

    @abstractmethod
    def attach(self, machine: Any, layout: Any, guest: GuestAccess,
               platform: PlatformServices, memory_bytes: int, name: str) -> None:
        """Bind to a built domain, once, before the first call.

        Args:
            machine: the :class:`~pvmon.engine.machine.Machine` (its ``clock``
                gives virtual time; machine memory for start-of-day state the
                guest has not seen yet may be written directly).
            layout: the domain builder's layout (for Xen a
                :class:`~pvmon.backends.xen.builder.Layout`: frames of
                shared_info, console and xenstore rings, page-table base).
            guest: every later guest-memory access goes through it.
            platform: the callbacks (:class:`PlatformServices`).
            memory_bytes: guest RAM in bytes.
            name: the guest's name (what the hypervisor tells the guest).

        Returns: None. Raises nothing for a guest the builder accepted."""

    @abstractmethod
    def call(self, nr: int, args: tuple[int, ...]) -> int:
        """Handle call ``nr`` with raw argument registers ``args`` (Xen: rdi,
        rsi, rdx, r10, r8, unsigned 64-bit).

        Returns: the value for the guest's return register, a negative errno
        as a signed int for errors (unknown ``nr``: the ABI's "no such call",
        counted in ``unsupported``).

        Side results until the next call (see :class:`CallResult`): ``op``
        holds the decoded operation; ``events.raised`` gets the events raised;
        the :class:`GuestAccess` has the memory read and written; stops and
        jumps went through :class:`PlatformServices`.

        Raises: nothing a guest can provoke; a bad pointer or argument becomes
        the ABI's error value (a :class:`GuestFault` must not escape)."""

    def call_result(self, nr: int, args: tuple[int, ...], name: str = "") -> CallResult:
        """:meth:`call`, returning a :class:`CallResult` (off the hot path:
        tests, tools). Clears ``events.raised`` first and after; ``name`` is
        copied into the result (the ABI module knows the names)."""
        raised = self.events.raised
        del raised[:]
        ret = self.call(nr, args)
        out = CallResult(ret, name, self.op, tuple(raised))
        del raised[:]
        return out

    def console_input(self, data: bytes) -> int:
        """Type ``data`` into the guest's console and raise its event.

        Returns: how many leading bytes fitted (the caller offers the rest
        later). Raises :class:`NotImplementedError` without
        :data:`CAP_CONSOLE_INPUT`."""
        raise NotImplementedError(f"{self.name} has no console input")
