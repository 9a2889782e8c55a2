"""The busybox initramfs (cpio newc), initrd options, and the console-input rules."""

from __future__ import annotations

import stat
import subprocess
import sys
import zlib

import pytest

from pvmon.dispatch.console_input import DETACH, ConsoleInput, script_lines
from pvmon.errors import GuestImageError, GuestNotFound
from pvmon.guests import initramfs
from pvmon.guests.initramfs import Entry, cpio_newc, read_cpio_newc

# A stand-in busybox: the applet table as busybox lays it out, amid other bytes.
APPLETS = ["[", "[[", "ash", "cat", "cttyhack", "echo", "ls", "mount", "poweroff", "setsid",
           "sh", "uname"]
FAKE_BUSYBOX = b"\x7fELF" + bytes(64) + "\0".join(APPLETS).encode() + b"\0\0" + bytes(32)


def test_cpio_newc_entries_are_4_byte_aligned_and_end_in_the_trailer():
    data = cpio_newc([Entry("bin", stat.S_IFDIR | 0o755), Entry("bin/x", stat.S_IFREG | 0o755,
                                                                b"abcde")])
    assert data.startswith(b"070701")
    assert data.count(b"070701") == 3
    assert b"TRAILER!!!\0" in data
    # Each header starts at a multiple of 4 (Linux init/initramfs.c insists).
    starts = [i for i in range(0, len(data), 4) if data[i:i + 6] == b"070701"]
    assert len(starts) == 3
    assert len(data) % 4 == 0


def test_cpio_newc_round_trips_names_modes_data_and_device_numbers():
    entries = [Entry("dev", stat.S_IFDIR | 0o755),
               Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
               Entry("bin/sh", stat.S_IFLNK | 0o777, b"busybox"),
               Entry("init", stat.S_IFREG | 0o755, b"#!/bin/sh\n" * 7)]
    assert read_cpio_newc(cpio_newc(entries)) == entries


def test_a_truncated_cpio_archive_is_a_readable_error():
    data = cpio_newc([Entry("a", stat.S_IFREG | 0o644, b"x" * 100)])
    with pytest.raises(GuestImageError, match="cpio"):
        read_cpio_newc(data[:150])


def test_busybox_applets_come_from_its_name_table():
    assert initramfs.busybox_applets(FAKE_BUSYBOX) == APPLETS
    with pytest.raises(GuestImageError, match="applet"):
        initramfs.busybox_applets(b"not busybox")


def test_the_busybox_initramfs_is_reproducible_and_complete():
    a = initramfs.busybox_initramfs(FAKE_BUSYBOX)
    assert a == initramfs.busybox_initramfs(FAKE_BUSYBOX)
    files = {e.name: e for e in read_cpio_newc(a)}
    assert files["bin/busybox"].data == FAKE_BUSYBOX
    assert files["bin/sh"].data == b"busybox" and stat.S_ISLNK(files["bin/sh"].mode)
    assert files["init"].mode & 0o111 and b"mount -t proc" in files["init"].data
    assert b"cttyhack sh" in files["init"].data
    assert files["dev/console"].rdev == (5, 1)
    for d in ("proc", "sys", "dev", "tmp", "root"):
        assert stat.S_ISDIR(files[d].mode)
    assert zlib.crc32(a) == zlib.crc32(initramfs.busybox_initramfs(FAKE_BUSYBOX))


def test_initrd_options_resolve_or_fail_readably(tmp_path, monkeypatch):
    monkeypatch.setenv("PVMON_CACHE", str(tmp_path / "cache"))
    assert initramfs.load_initrd(None, None) == (None, {})
    f = tmp_path / "rd.cpio"
    f.write_bytes(b"070701")
    data, info = initramfs.load_initrd(None, str(f))
    assert data == b"070701" and info["size"] == 6 and len(info["sha256"]) == 64
    with pytest.raises(GuestNotFound, match="does not exist"):
        initramfs.load_initrd(None, str(tmp_path / "missing"))
    with pytest.raises(GuestNotFound, match="pvmon guests fetch debian-6.12 --initramfs busybox"):
        initramfs.load_initrd("busybox", None)
    with pytest.raises(GuestNotFound, match="unknown initramfs"):
        initramfs.load_initrd("alpine", None)
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(GuestImageError, match="empty"):
        initramfs.load_initrd(None, str(tmp_path / "empty"))


def test_a_replay_finds_the_recorded_initrd_or_says_why_not(tmp_path):
    f = tmp_path / "rd.cpio"
    f.write_bytes(b"070701 initrd")
    _, info = initramfs.load_initrd(None, str(f))
    assert initramfs.initrd_from_header(None) is None
    assert initramfs.initrd_from_header(info) == b"070701 initrd"
    f.write_bytes(b"070701 changed")
    with pytest.raises(GuestImageError, match="differs from the recorded one"):
        initramfs.initrd_from_header(info)


@pytest.mark.parametrize("args, msg", [
    (["--initrd", "/no/such/initrd"], "does not exist"),
    (["--initramfs", "alpine"], "unknown initramfs"),
    (["--initramfs", "busybox", "--initrd", "/etc/hostname"], "either --initramfs or --initrd"),
    (["--script", "ls", "--input-file", "/etc/hostname"], "either --script or --input-file"),
    (["--input-file", "/no/such/file"], "cannot read input file"),
])
def test_bad_initrd_and_input_options_are_one_line_and_exit_2(args, msg):
    p = subprocess.run([sys.executable, "-m", "pvmon", "run", "pvtest-v2", *args],
                       capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("pvmon: error:") and msg in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_script_text_becomes_lines_with_newlines():
    assert script_lines("uname -a\nfree") == [b"uname -a\n", b"free\n"]
    assert script_lines(b"ls\n") == [b"ls\n"]
    assert script_lines("") == []


def test_a_prompt_is_recognised_through_terminal_escapes():
    inp = ConsoleInput()
    inp.saw_output(b"Enter 'help' for a list of built-in commands.\r\n\r\n~ # \x1b[6n")
    assert inp.at_prompt()
    inp.forget_output()
    assert not inp.at_prompt()
    inp.saw_output(b"processor\t: 0\r\nflags\t\t: fpu\r\n")
    assert not inp.at_prompt()
    inp.saw_output(b"user@host:~$ ")
    assert inp.at_prompt()


def test_input_sources_and_exhaustion():
    inp = ConsoleInput()
    assert inp.exhausted()
    inp.schedule(10, b"a")
    with pytest.raises(ValueError):
        inp.schedule(5, b"b")
    assert not inp.exhausted()
    inp.scheduled.clear()
    inp.add_script([b"ls\n"], more=True)
    assert inp.next_script_chunk() == b"ls\n"
    assert inp.has_script() and not inp.exhausted()
    inp.close_script()
    assert inp.next_script_chunk() is None and inp.exhausted()
    inp.post(b"x" + DETACH + b"y")
    assert inp.detach and inp.take_live() == b"x"
