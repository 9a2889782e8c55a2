"""The Xen PV domain builder: the start-of-day layout a 64-bit PV kernel expects.

Facts from xen/include/public/xen.h ("Start-of-day memory layout"),
xen/include/public/elfnote.h and the layout libxenguest's domain builder
(tools/libs/guest/xg_dom_x86.c) produces for a domU:

    kernel image (ELF PT_LOAD segments, at p_paddr - PADDR_OFFSET)
    initrd module (if any, and the kernel lacks the MOD_START_PFN note)
    P2M list (nr_pages x u64), start_info page, xenstore page, console page,
    bootstrap page tables [L4][L3][L2][L1...], one page of boot stack,
    all mapped at VIRT_BASE + pfn * 4 KiB; the mapping covers at least 512 KiB
    past the stack, rounded up to 4 MiB; page-table pages are mapped read-only.
    initrd module (if any, for a kernel with the MOD_START_PFN note): right
    above the mapping, unmapped, found through start_info.mod_start as a PFN.

Machine frames equal pseudo-physical frames at start of day, so the P2M is the
identity. Frames the hypervisor keeps (shared_info, the read-only M2P, the
descriptor table, grant frames) sit above guest RAM. The M2P is mapped
read-only at MACH2PHYS_VIRT_START (L4 slot 256), which appears in every L4.
The grant-status frames (grant tables v2) are the last frames of machine
memory, after the M2P and outside the frames it describes (see
:func:`m2p_frames`).
"""

from __future__ import annotations

import array
import mmap
import operator
import struct
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from pvmon.backends.xen import abi
from pvmon.engine.machine import PAGE_SIZE, PTE_A, PTE_D, PTE_NX, PTE_P, PTE_RW, PTE_US, Machine
from pvmon.errors import GuestImageError

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
HV_GDT_VA = abi.HYPERVISOR_VIRT_START + GiB   # L4 slot 256, L3 slot 1
GDT_PAGES = 16
# The domain's max_grant_frames (the toolstack's per-domain limit: xl.cfg
# max_grant_frames; Xen's default is gnttab_max_frames=64): the frames reserved for
# its shared grant table, mapped by GNTTABOP_setup_table (xen/common/grant_table.c).
GRANT_FRAMES = 4
# Grant-status frames a v2 table of GRANT_FRAMES frames needs: 256 v2 entries per
# frame, 2048 status entries per frame (grant_to_status_frames, grant_table.c@stable-4.17).
GRANT_STATUS_FRAMES = -(-GRANT_FRAMES * 256 // 2048)
# Descriptor-table slots for FLAT_RING3_{CS32,CS64,SS64} (xen-x86_64.h): index =
# selector >> 3 (Xen's boot_gdt, xen/arch/x86/desc.c@stable-4.17).
# (pvmon.backends.xen.pv.segments loads the same descriptors on mode switches.)
DESC_CODE64 = 0x00AFFB000000FFFF   # present, DPL3, 64-bit code
DESC_CODE32 = 0x00CFFB000000FFFF   # present, DPL3, 32-bit code (compatibility mode)
DESC_DATA = 0x00CFF3000000FFFF     # present, DPL3, writable data
_GDT_CODE64_K = 0x00AF9B000000FFFF  # present, DPL0, 64-bit code
_GDT_DATA_K = 0x00CF93000000FFFF    # present, DPL0, writable data
# The engine runs the guest kernel at CPL 0 (see vcpu.py), so the hidden SS/CS
# it loads must be DPL 0: Unicorn derives the CPL from SS.DPL whenever SS is
# reloaded. These selectors sit in Xen's reserved GDT area (entries >= 14*512)
# and are never shown to the guest, which sees FLAT_RING3_* in its frames.
ENGINE_KERNEL_CS = 0xE010
ENGINE_KERNEL_SS = 0xE018


@dataclass
class KernelImage:
    """A parsed PV kernel ELF. ``notes``: Xen ELF notes by name (ints for
    addresses, str for strings). ``segments``: (paddr, vaddr, file bytes, memsz),
    the file bytes a zero-copy view into the image (see :func:`load_kernel`)."""

    path: Path | None
    entry: int
    virt_base: int
    paddr_offset: int
    hypercall_page: int | None
    notes: dict[str, object]
    segments: list[tuple[int, int, bytes | memoryview, int]]
    #: [start, end) p_paddr ranges the kernel declares as code, mapped executable
    #: at start of day (see :func:`_code_ranges`); sorted.
    exec_ranges: tuple[tuple[int, int], ...] = ()

    @property
    def mechanism(self) -> str:
        """"page" when the kernel asks for a hypercall page, else "syscall"."""
        return "page" if self.hypercall_page is not None else "syscall"


_INT_NOTES = {"ENTRY", "HYPERCALL_PAGE", "VIRT_BASE", "PADDR_OFFSET", "INIT_P2M",
              "HV_START_LOW", "PHYS32_ENTRY", "MOD_START_PFN", "L1_MFN_VALID",
              "SUSPEND_CANCEL"}


def _xen_notes(data: bytes) -> dict[str, object]:
    """Xen ELF notes from a PT_NOTE segment's bytes (ELF note format: namesz,
    descsz, type, name and desc each padded to 4 bytes). Names from elfnote.h."""
    notes: dict[str, object] = {}
    off = 0
    while off + 12 <= len(data):
        namesz, descsz, typ = struct.unpack_from("<III", data, off)
        off += 12
        name = data[off:off + namesz].rstrip(b"\0")
        off += (namesz + 3) & ~3
        desc = data[off:off + descsz]
        off += (descsz + 3) & ~3
        if off > len(data) + 3:
            break
        if name != b"Xen":
            continue
        key = abi.XEN_ELFNOTES.get(typ, str(typ))
        if key in _INT_NOTES and len(desc) in (1, 2, 4, 8):
            notes[key] = int.from_bytes(desc, "little")
        else:
            notes[key] = desc.rstrip(b"\0").decode("latin-1")
    return notes


def load_kernel(path: Path) -> KernelImage:
    """Parse the Xen PV kernel ELF at ``path`` without copying it: the file is
    mapped read-only and each segment is a view into the mapping, which the
    views keep alive (a Debian vmlinux is about 55 MB; reading and slicing it
    cost about 0.2 s of a 2 s boot). Raises GuestImageError when the file cannot
    be read or is not a Xen PV kernel (see :func:`parse_kernel`)."""
    try:
        with open(path, "rb") as f:
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except ValueError:          # mmap refuses an empty file
        raise GuestImageError(f"{path}: empty file, not an x86-64 ELF kernel") from None
    except OSError as exc:
        raise GuestImageError(f"cannot read guest image {path}: {exc.strerror}") from None
    return parse_kernel(data, path)


PF_X, PF_W, PF_R = 1, 2, 4      # ELF p_flags (System V gABI)
SHF_ALLOC, SHF_EXECINSTR = 0x2, 0x4


def parse_kernel(data: bytes | mmap.mmap, path: Path | None = None) -> KernelImage:
    """Parse a Xen PV kernel ELF held in ``data``. Segment bytes are views into
    ``data``, not copies.

    Loads what Xen's libelf loads (xen/common/libelf, stable-4.17:
    ``elf_phdr_is_loadable`` takes a PT_LOAD whose p_flags have any of R, W, X,
    whatever the combination; the flags never become page permissions) and
    refuses what ``elf_xen_addr_calc_check`` refuses: an entry point outside
    the image, ``[min p_paddr, max p_paddr + p_memsz) + virt_base -
    paddr_offset`` (libelf-dominfo.c). ``exec_ranges``: see :func:`_code_ranges`.

    Raises GuestImageError for anything that is not an x86-64 ELF with Xen
    notes, for a segment that lies outside the file or whose file size exceeds
    its memory size, and for an entry point outside the image."""
    import io
    name = path or "image"
    view = memoryview(data)
    try:
        elf = ELFFile(io.BytesIO(data) if isinstance(data, bytes) else data)
        if elf.get_machine_arch() != "x64" or elf.elfclass != 64:
            raise GuestImageError(f"{name}: not an x86-64 ELF kernel")
        notes: dict[str, object] = {}
        for seg in elf.iter_segments():
            if seg["p_type"] == "PT_NOTE":
                notes.update(_xen_notes(seg.data()))
        segments = []
        loads: list[tuple[int, int, int, int]] = []      # (paddr, vaddr, memsz, p_flags)
        for seg in elf.iter_segments():
            if seg["p_type"] == "PT_LOAD" and seg["p_memsz"] \
                    and seg["p_flags"] & (PF_R | PF_W | PF_X):
                off, filesz, memsz = seg["p_offset"], seg["p_filesz"], seg["p_memsz"]
                if off + filesz > len(view):
                    raise GuestImageError(f"{name}: PT_LOAD segment at file offset {off:#x}"
                                          f"+{filesz:#x} extends past the end of the file")
                if filesz > memsz:
                    raise GuestImageError(f"{name}: PT_LOAD segment has p_filesz {filesz:#x}"
                                          f" > p_memsz {memsz:#x}")
                segments.append((seg["p_paddr"], seg["p_vaddr"], view[off:off + filesz], memsz))
                loads.append((seg["p_paddr"], seg["p_vaddr"], memsz, seg["p_flags"]))
        entry_default = elf.header["e_entry"]
    except ELFError as exc:
        raise GuestImageError(f"{name}: malformed ELF ({exc})") from None
    except GuestImageError:
        raise
    except Exception as exc:  # noqa: BLE001 - pyelftools raises assorted errors on hostile input
        raise GuestImageError(f"{name}: unreadable ELF ({exc})") from None
    if "VIRT_BASE" not in notes and "GUEST_OS" not in notes:
        raise GuestImageError(f"{name}: no Xen ELF notes; not a Xen PV kernel")
    if not segments:
        raise GuestImageError(f"{name}: no loadable segments")
    entry = int(notes.get("ENTRY", entry_default))
    virt_base, paddr_offset = int(notes.get("VIRT_BASE", 0)), int(notes.get("PADDR_OFFSET", 0))
    shift = virt_base - paddr_offset
    kstart = min(p for p, _v, _m, _f in loads) + shift
    kend = max(p + m for p, _v, m, _f in loads) + shift
    if not kstart <= entry <= kend:
        raise GuestImageError(f"{name}: entry point {entry:#x} lies outside the kernel image "
                              f"[{kstart:#x}, {kend:#x}); Xen refuses it too")
    return KernelImage(path, entry, virt_base, paddr_offset, notes.get("HYPERCALL_PAGE"), notes,
                       segments, _code_ranges(elf, loads, entry - shift))


def _code_ranges(elf: ELFFile, loads: list[tuple[int, int, int, int]],
                 entry_paddr: int) -> tuple[tuple[int, int], ...]:
    """The ``[start, end)`` p_paddr ranges pvmon maps executable at start of day.

    Xen maps the whole bootstrap region executable (libxenguest's x86-64
    start-of-day page tables, tools/libs/guest/xg_dom_x86.c, never set NX).
    pvmon sets NX on what the kernel's ELF does not declare as code, for speed
    (see :func:`build`). Declared code is: every PT_LOAD with PF_X; every
    section with SHF_ALLOC and SHF_EXECINSTR, through the segment that holds
    it (Linux 7.x links ``.init.text``, where its Xen entry point is, into a
    segment flagged RW only); and, when neither covers the entry point (an
    image without section headers), the whole segment holding the entry.
    Unreadable section headers count as none: Xen's loader ignores them."""
    ranges = [(p, p + m) for p, _v, m, f in loads if f & PF_X]
    try:
        sections = [(sec["sh_addr"], sec["sh_size"]) for sec in elf.iter_sections()
                    if sec["sh_flags"] & (SHF_ALLOC | SHF_EXECINSTR) == SHF_ALLOC | SHF_EXECINSTR
                    and sec["sh_size"]]
    except Exception:  # noqa: BLE001 - hostile section headers: pyelftools raises assorted errors
        sections = []
    for addr, size in sections:
        for p, v, m, _f in loads:
            if v <= addr < v + m:
                ranges.append((p + addr - v, p + min(addr + size, v + m) - v))
                break
    if not any(a <= entry_paddr < b for a, b in ranges):
        ranges += [(p, p + m) for p, _v, m, _f in loads if p <= entry_paddr < p + m]
    merged: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return tuple(merged)


@dataclass
class Layout:
    """Where the builder put everything. Virtual addresses are guest-virtual,
    ``*_pfn`` are frame numbers, ``*_ma`` machine addresses."""

    nr_pages: int
    virt_base: int
    start_info_va: int
    start_info_pfn: int
    store_pfn: int
    console_pfn: int
    p2m_va: int
    pt_base_va: int
    pt_base_pfn: int
    nr_pt_frames: int
    stack_top_va: int
    mapped_end_va: int
    shared_info_ma: int
    hv_l3_ma: int
    gdt_ma: int
    grant_ma: int
    m2p_ma: int
    mod_start_pfn: int = 0
    mod_len: int = 0
    store_evtchn: int = 1
    console_evtchn: int = 2
    extras: dict = field(default_factory=dict)


def extra_bytes_for(ram_bytes: int) -> int:
    """Bytes of hypervisor-owned frames the builder needs above ``ram_bytes``:
    the frames the M2P describes (:func:`m2p_frames`) plus the grant-status frames."""
    fixed = 5 + GDT_PAGES + GRANT_FRAMES
    total = ram_bytes // PAGE_SIZE + fixed
    for _ in range(4):
        m2p_pages = -(-total * 8 // PAGE_SIZE)
        m2p_l1 = -(-m2p_pages // 512)
        total = ram_bytes // PAGE_SIZE + fixed + m2p_pages + m2p_l1
    return (total - ram_bytes // PAGE_SIZE + GRANT_STATUS_FRAMES) * PAGE_SIZE


def m2p_frames(phys_bytes: int) -> int:
    """Machine frames the M2P describes (what XENMEM_machphys_mapping reports)
    in a machine of ``phys_bytes``: every frame but the grant-status frames at
    the top. Those come from Xen's heap only when a guest switches to grant
    tables v2, so they are left out of the M2P's size as they were before they
    existed (the M2P entry of each, where the M2P's last page covers it, reads
    INVALID, as share_xen_page_with_guest leaves it)."""
    return phys_bytes // PAGE_SIZE - GRANT_STATUS_FRAMES


def grant_status_ma(phys_bytes: int) -> int:
    """Machine address of the first grant-status frame (grant tables v2)."""
    return phys_bytes - GRANT_STATUS_FRAMES * PAGE_SIZE


def build(machine: Machine, kernel: KernelImage, cmdline: str,
          initrd: bytes | None = None) -> Layout:
    """Lay the domain out in ``machine``'s RAM and set the boot registers.
    Raises GuestImageError when the kernel does not fit."""
    ram = machine.ram_bytes
    nr_pages = ram // PAGE_SIZE
    vb = kernel.virt_base
    pages = lambda n: -(-n // PAGE_SIZE)

    kend = 0
    for paddr, _vaddr, data, memsz in kernel.segments:
        pa = paddr - kernel.paddr_offset
        if pa < 0 or pa + memsz > ram:
            raise GuestImageError(f"kernel segment at {pa:#x}+{memsz:#x} does not fit in "
                                  f"{ram >> 20} MiB")
        # nothing has run in this machine yet, so no translated code to invalidate
        machine.write_phys_data(pa, data)
        kend = max(kend, pa + memsz)
    pfn = pages(kend)

    # The initrd module (xen.h start_info mod_start/mod_len). A kernel with the
    # MOD_START_PFN note (elfnote.h; Linux arch/x86/xen/xen-head.S has it) takes
    # it unmapped, by frame number: it goes above the bootstrap mapping and
    # start_info says SIF_MOD_START_PFN, as libxenguest does for such kernels
    # ("unmapped initrd"). Other kernels get it mapped right after the kernel
    # image, with mod_start a virtual address.
    unmapped_mod = bool(initrd) and bool(kernel.notes.get("MOD_START_PFN"))
    mod_pfn = mod_len = 0
    mod_len = len(initrd) if initrd else 0
    if initrd and not unmapped_mod:
        mod_pfn = pfn
        if (pfn + pages(mod_len)) * PAGE_SIZE > ram:
            raise GuestImageError(f"initrd ({mod_len} bytes) does not fit in guest memory")
        machine.write_phys(mod_pfn * PAGE_SIZE, initrd)
        pfn += pages(mod_len)
    p2m_pfn = pfn
    pfn += pages(nr_pages * 8)
    si_pfn, store_pfn, cons_pfn = pfn, pfn + 1, pfn + 2
    pfn += 3
    pt_pfn = pfn
    n_pt = 4
    while True:
        stack_pfn = pt_pfn + n_pt
        mapped_end = -(-((stack_pfn + 1) * PAGE_SIZE + 512 * KiB) // (4 * MiB)) * 4 * MiB
        need = 3 + mapped_end // (2 * MiB)
        if need <= n_pt:
            break
        n_pt = need
    if mapped_end > GiB or mapped_end > ram:
        raise GuestImageError(f"initial mapping ({mapped_end >> 20} MiB) exceeds guest memory")
    mapped_pages = mapped_end // PAGE_SIZE
    if unmapped_mod:
        mod_pfn = mapped_pages
        if (mod_pfn + pages(mod_len)) * PAGE_SIZE > ram:
            raise GuestImageError(f"initrd ({mod_len} bytes) does not fit in "
                                  f"{ram >> 20} MiB of guest memory")
        machine.write_phys(mod_pfn * PAGE_SIZE, initrd)

    # --- hypervisor frames above RAM
    hv = ram
    si_ma, hv_l3, m2p_l2, hv_l2, hv_l1 = (hv + i * PAGE_SIZE for i in range(5))
    gdt_ma = hv + 5 * PAGE_SIZE
    grant_ma = gdt_ma + GDT_PAGES * PAGE_SIZE
    m2p_l1_ma = grant_ma + GRANT_FRAMES * PAGE_SIZE
    total_frames = m2p_frames(machine.phys_bytes)
    m2p_pages = pages(total_frames * 8)
    m2p_l1_n = -(-m2p_pages // 512)
    m2p_ma = m2p_l1_ma + m2p_l1_n * PAGE_SIZE
    if m2p_ma + m2p_pages * PAGE_SIZE > grant_status_ma(machine.phys_bytes):
        raise GuestImageError("internal: hypervisor area too small")

    w = machine.write_u64_phys
    # M2P contents: identity for RAM, INVALID (~0) for hypervisor frames (the
    # grant-status frames too, where the last M2P page reaches them).
    m2p = bytearray(m2p_pages * PAGE_SIZE)
    identity = _u64_le(range(nr_pages))
    m2p[:nr_pages * 8] = identity
    covered = min(m2p_pages * PAGE_SIZE // 8, total_frames + GRANT_STATUS_FRAMES)
    m2p[nr_pages * 8:covered * 8] = b"\xff" * 8 * (covered - nr_pages)
    machine.write_phys_data(m2p_ma, bytes(m2p))
    for i in range(m2p_pages):
        w(m2p_l1_ma + i * 8, (m2p_ma + i * PAGE_SIZE) | PTE_P | PTE_US | PTE_A | PTE_NX)
    for i in range(m2p_l1_n):
        w(m2p_l2 + i * 8, (m2p_l1_ma + i * PAGE_SIZE) | PTE_P | PTE_RW | PTE_US | PTE_A)
    for i in range(GDT_PAGES):
        w(hv_l1 + i * 8, (gdt_ma + i * PAGE_SIZE) | PTE_P | PTE_RW | PTE_A | PTE_D | PTE_NX)
    w(hv_l2, hv_l1 | PTE_P | PTE_RW | PTE_A)
    w(hv_l3, m2p_l2 | PTE_P | PTE_RW | PTE_US | PTE_A)
    w(hv_l3 + 8, hv_l2 | PTE_P | PTE_RW | PTE_A)
    for sel, desc in ((abi.FLAT_RING3_CS64, DESC_CODE64), (abi.FLAT_RING3_SS64, DESC_DATA),
                      (abi.FLAT_RING3_CS32, DESC_CODE32),
                      (ENGINE_KERNEL_CS, _GDT_CODE64_K), (ENGINE_KERNEL_SS, _GDT_DATA_K)):
        w(gdt_ma + (sel >> 3) * 8, desc)

    # --- P2M (identity), start_info, bootstrap page tables
    machine.write_phys_data(p2m_pfn * PAGE_SIZE,
                            identity)
    l4, l3, l2 = (pt_pfn + i for i in range(3))
    l1_first = pt_pfn + 3
    pt_lo, pt_hi = pt_pfn, pt_pfn + n_pt
    page = lambda p: p * PAGE_SIZE
    l1 = bytearray(n_pt * PAGE_SIZE)
    # Execute permission. xen.h (start-of-day layout, point 7) promises only that
    # every bootstrap element is mapped read-write (the page tables read-only);
    # libxenguest leaves the whole region executable (xg_dom_x86.c: no NX in any
    # start-of-day entry). pvmon maps executable only the pages the kernel's ELF
    # declares as code (KernelImage.exec_ranges: PF_X segments, SHF_EXECINSTR
    # sections, the entry's segment as a last resort) and sets NX on the rest
    # (data, mfn_list, start_info, the page tables, the stack): Unicorn 2.1.4
    # sends every store to a page mapped executable down its slow path
    # (notdirty_write never cleans a TLB entry that is also executable), which
    # cost the 6.12 boot about a quarter of its time (5.9 s -> 4.5 s measured;
    # again on 2026-12-04 with every bootstrap page executable, as under Xen:
    # 3.2 s -> 4.2 s wall; the kernel image's segments alone made 4.7 s).
    # Linux executes none of those pages; a guest that did would take a #PF here
    # and not under Xen. The NX bits are guest-visible: Linux copies them into
    # the page-table entries it writes (mmu_update values), as it would copy
    # Xen's. Measured 2026-12-04: the 6.1 and 6.12 panic boots make the same
    # calls under this mapping and under Xen's all-executable one; a 6.12
    # busybox session (uname -a, ls /proc, free, poweroff -f) does not (86,570
    # calls here, 88,746 all-executable), nor does the 7.2 panic boot (60,147
    # vs 60,160). Mapping like Xen would change what every existing shell
    # recording holds, so this stays until the engine's store path makes it free.
    # Page p (at p * 4 KiB) is executable when a - 4 KiB < p * 4 KiB < b for an
    # exec range [a, b): p from a // 4 KiB up to, not including, ceil(b / 4 KiB).
    # The flags are made a run of pages at a time: a Debian kernel maps 20,000.
    xr = [(a - kernel.paddr_offset, b - kernel.paddr_offset) for a, b in kernel.exec_ranges]
    nx = PTE_NX if xr else 0
    flags = [nx] * mapped_pages
    for a, b in xr:
        lo, hi = max(a // PAGE_SIZE, 0), min(-(-b // PAGE_SIZE), mapped_pages)
        if lo < hi:
            flags[lo:hi] = [0] * (hi - lo)
    rw, ro = PTE_P | PTE_US | PTE_A | PTE_RW | PTE_D, PTE_P | PTE_US | PTE_A
    lo, hi = min(pt_lo, mapped_pages), min(pt_hi, mapped_pages)
    flags = ([f | rw for f in flags[:lo]] + [f | ro for f in flags[lo:hi]]
             + [f | rw for f in flags[hi:]])
    l1[:mapped_pages * 8] = _u64_le(map(operator.add, range(0, page(mapped_pages), PAGE_SIZE),
                                        flags))
    machine.write_phys_data(page(l1_first), bytes(l1[:(n_pt - 3) * PAGE_SIZE]))
    tbl = PTE_P | PTE_RW | PTE_US | PTE_A
    for i in range(mapped_end // (2 * MiB)):
        w(page(l2) + (((vb >> 21) + i) & 511) * 8, page(l1_first + i) | tbl)
    w(page(l3) + ((vb >> 30) & 511) * 8, page(l2) | tbl)
    w(page(l4) + ((vb >> 39) & 511) * 8, page(l3) | tbl)
    w(page(l4) + 256 * 8, hv_l3 | tbl)

    si = bytearray(PAGE_SIZE)
    S = abi.START_INFO
    si[0:len(abi.START_INFO_MAGIC)] = abi.START_INFO_MAGIC
    flags = abi.SIF_MOD_START_PFN if unmapped_mod else 0
    va = lambda p: vb + page(p)
    for name, val in (("nr_pages", nr_pages), ("shared_info", si_ma), ("store_mfn", store_pfn),
                      ("console_mfn", cons_pfn), ("pt_base", va(pt_pfn)),
                      ("nr_pt_frames", n_pt), ("mfn_list", va(p2m_pfn)),
                      ("mod_start", (mod_pfn if flags & abi.SIF_MOD_START_PFN else va(mod_pfn))
                       if initrd else 0),
                      ("mod_len", mod_len), ("first_p2m_pfn", 0), ("nr_p2m_frames", 0)):
        struct.pack_into("<Q", si, S[name], val)
    struct.pack_into("<I", si, S["flags"], flags)
    struct.pack_into("<I", si, S["store_evtchn"], 1)
    struct.pack_into("<I", si, S["console_evtchn"], 2)
    cmd = cmdline.encode()[:abi.MAX_GUEST_CMDLINE - 1]
    si[S["cmd_line"]:S["cmd_line"] + len(cmd)] = cmd
    machine.write_phys_data(page(si_pfn), bytes(si))

    if kernel.hypercall_page is not None:
        hp = kernel.hypercall_page - vb
        if not 0 <= hp < kend:
            raise GuestImageError("HYPERCALL_PAGE note points outside the kernel image")
        machine.write_phys(hp, hypercall_page_bytes())

    layout = Layout(nr_pages, vb, va(si_pfn), si_pfn, store_pfn, cons_pfn, va(p2m_pfn),
                    va(pt_pfn), pt_pfn, n_pt, va(pt_pfn + n_pt + 1), vb + mapped_end,
                    si_ma, hv_l3, gdt_ma, grant_ma, m2p_ma, mod_pfn, mod_len)
    machine.setup_long_mode(page(pt_pfn), HV_GDT_VA, GDT_PAGES * PAGE_SIZE - 1)
    machine.set_segment("ss", ENGINE_KERNEL_SS)
    machine.set_segment("cs", ENGINE_KERNEL_CS)
    machine.set_cpl(0)
    machine.set_regs(rip=kernel.entry, rsp=layout.stack_top_va, rsi=layout.start_info_va,
                     rflags=0x202)
    return layout


def _u64_le(values: Iterable[int]) -> bytes:
    """``values`` as little-endian u64s (struct ``<Q`` each), through an array:
    twice as fast as struct for the 65,536 P2M entries of 256 MiB."""
    out = array.array("Q", values)
    if sys.byteorder != "little":
        out.byteswap()
    return out.tobytes()


def hypercall_page_bytes() -> bytes:
    """The 64-bit PV hypercall page: 128 stubs of 32 bytes, each
    ``push %rcx; push %r11; mov $nr,%eax; syscall; pop %r11; pop %rcx; ret``,
    and for iret ``push %rcx; push %r11; push %rax; mov $23,%eax; syscall``
    (byte layout as Xen writes it: xen/arch/x86/pv/hypercall.c)."""
    p = bytearray(b"\xcc" * PAGE_SIZE)
    for i in range(PAGE_SIZE // abi.HYPERCALL_ENTRY_SIZE):
        o = i * abi.HYPERCALL_ENTRY_SIZE
        if i == abi.HYPERVISOR_iret:
            stub = b"\x51\x41\x53\x50\xb8" + struct.pack("<I", i) + b"\x0f\x05"
        else:
            stub = b"\x51\x41\x53\xb8" + struct.pack("<I", i) + b"\x0f\x05\x41\x5b\x59\xc3"
        p[o:o + len(stub)] = stub
    return bytes(p)
