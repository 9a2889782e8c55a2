"""The code a stretch of execution ran, read from Unicorn's translation cache
(pvmon/gdb/codepages.py): what reverse-continue skips segments by."""

from __future__ import annotations

import unicorn

from pvmon.gdb.codepages import CodePages, Ranges, union

BASE = 0x400000
# 0x400000: 16 NOPs, then JMP +0x1000 over a page of NOPs the run never executes;
# 0x401012: 4 NOPs and HLT (the run stops there: `until`)
CODE = b"\x90" * 16 + b"\xe9\x00\x10\x00\x00" + b"\x90" * 0x1000 + b"\x90" * 4 + b"\xf4"
END = BASE + 16 + 5 + 0x1000 + 4


def _engine() -> unicorn.Uc:
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    uc.mem_map(BASE, 0x3000)
    uc.mem_write(BASE, CODE)
    return uc


def test_the_code_run_since_a_restart_holds_every_executed_address_and_not_the_skipped_one():
    uc = _engine()
    pages = CodePages(uc)
    assert pages.ok
    pages.restart()
    uc.emu_start(BASE, END)
    ran = pages.harvest()
    assert ran is not None
    assert BASE in ran and BASE + 16 in ran and END - 1 in ran
    assert BASE + 0x100 not in ran and BASE + 16 + 5 + 0x800 not in ran
    pages.restart()                      # a new stretch: nothing ran yet
    assert not len(pages.harvest())
    for _ in range(3):                   # the engine runs on after the blocks' pages went back
        uc.emu_start(BASE, END)
        assert BASE in pages.harvest() and uc.reg_read(unicorn.x86_const.UC_X86_REG_RIP) == END
        pages.restart()


def test_a_cache_flush_it_did_not_make_turns_the_answer_to_unknown():
    uc = _engine()
    pages = CodePages(uc)
    pages.restart()
    uc.emu_start(BASE, END)
    uc.ctl_flush_tb()                    # the blocks run so far are gone from the cache
    assert pages.harvest() is None
    assert union(pages.harvest(), Ranges([(1, 2)])) is None


def test_ranges_merge_and_answer_membership():
    r = Ranges([(10, 20), (15, 30), (40, 41)]) | Ranges([(30, 35)])
    assert list(zip(r.starts, r.ends)) == [(10, 35), (40, 41)]
    assert 10 in r and 34 in r and 40 in r
    assert 9 not in r and 35 not in r and 41 not in r


def test_the_compiled_block_walk_and_the_python_one_find_the_same_code(monkeypatch):
    from pvmon.gdb import codepages
    uc = _engine()
    pages = CodePages(uc)
    pages.restart()
    uc.emu_start(BASE, END)
    fast = pages.harvest()
    monkeypatch.setattr(codepages, "_WALK", None)
    slow = pages.harvest()
    assert list(zip(fast.starts, fast.ends)) == list(zip(slow.starts, slow.ends))
    assert len(slow) >= 2                # the jump left a hole
