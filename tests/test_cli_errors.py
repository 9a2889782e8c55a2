"""Bad input gets one readable line and exit status 2, never a traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.hostile_support import one_line_error, pvmon


def run(*args):
    return subprocess.run([sys.executable, "-m", "pvmon.cli", *args], check=False, capture_output=True,
                          text=True, timeout=120)


def test_an_unknown_guest_name_is_one_line_and_exit_2():
    p = run("run", "no-such-guest")
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_a_garbage_guest_image_is_one_line_and_exit_2(tmp_path):
    f = tmp_path / "junk.elf"
    f.write_bytes(b"\x7fELF" + b"\x00" * 200)
    p = run("run", str(f))
    assert p.returncode == 2
    assert "Traceback" not in p.stderr and p.stderr.startswith("pvmon: error:")


def test_an_unknown_backend_is_one_line_and_exit_2():
    p = run("run", "pvtest-v2", "--backend", "xen-9.99")
    assert p.returncode == 2 and "unknown backend" in p.stderr


def test_a_bad_memory_size_is_one_line_and_exit_2():
    p = run("run", "pvtest-v2", "--memory", "lots")
    assert p.returncode == 2 and "memory" in p.stderr


def _elf_with_first_load(patch_phdr):
    """pvtest-v2's image with its first PT_LOAD program header changed by ``patch_phdr``
    (a function of (p_offset, p_filesz, p_memsz) returning new values)."""
    import struct
    from pathlib import Path

    import pvmon.guests
    data = bytearray((Path(pvmon.guests.__file__).parent / "images" / "pvtest-v2.elf").read_bytes())
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        at = phoff + i * phentsize
        if struct.unpack_from("<I", data, at)[0] == 1:          # PT_LOAD
            off, = struct.unpack_from("<Q", data, at + 8)
            filesz, memsz = struct.unpack_from("<QQ", data, at + 32)
            off, filesz, memsz = patch_phdr(off, filesz, memsz)
            struct.pack_into("<Q", data, at + 8, off)
            struct.pack_into("<QQ", data, at + 32, filesz, memsz)
            return bytes(data)
    raise AssertionError("no PT_LOAD in pvtest-v2")


def test_a_load_segment_past_the_end_of_the_file_is_one_line_and_exit_2(tmp_path):
    f = tmp_path / "cut.elf"
    f.write_bytes(_elf_with_first_load(lambda off, fs, ms: (off, fs + (1 << 30), ms + (1 << 30))))
    p = run("run", str(f))
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "outside the file" in p.stderr or "past the end of the file" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_a_load_segment_bigger_in_the_file_than_in_memory_is_one_line_and_exit_2(tmp_path):
    f = tmp_path / "fat.elf"
    f.write_bytes(_elf_with_first_load(lambda off, fs, ms: (off, fs, max(1, fs // 2))))
    p = run("run", str(f))
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_an_empty_guest_image_is_one_line_and_exit_2(tmp_path):
    f = tmp_path / "empty.elf"
    f.write_bytes(b"")
    p = run("run", str(f))
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------- option values
# Options take the units QEMU users expect and refuse the rest as a usage error:
# one line, exit 2.



@pytest.mark.parametrize("option, value, says", [
    ("--idle-exit", "nan", "finite"),
    ("--idle-exit", "inf", "finite"),
    ("--idle-exit", "-1", "negative"),
    ("--timeout", "-1", "negative"),
    ("--timeout", "nan", "finite"),
    ("--timeout", "soon", "not a number of seconds"),
    ("--memory", "12", "32 MiB to 8 GiB"),
    ("--memory", "256K", "32 MiB to 8 GiB"),
    ("--memory", "-1", "bad memory size"),
    ("--memory", "1001K", "32 MiB to 8 GiB"),
    ("--memory", "32769K", "4 KiB pages"),
    ("--cmdline", "x" * 1024, "at most 1023"),
])
def test_an_option_value_out_of_bounds_is_a_one_line_usage_error(option, value, says):
    line = one_line_error(pvmon("run", option, value))
    assert option in line and says in line


@pytest.mark.parametrize("option, value", [("--idle-exit", "nan"), ("--timeout", "-1"),
                                           ("--memory", "12")])
def test_boot_takes_the_same_option_values_as_run(option, value):
    line = one_line_error(pvmon("boot", "--headless", option, value))
    assert option in line and "see 'pvmon boot -h'" in line


def test_replay_timeout_must_be_a_finite_number_of_seconds(tmp_path):
    for value in ("-1", "nan", "inf"):
        line = one_line_error(pvmon("replay", str(tmp_path / "none.pvt"), "--timeout", value))
        assert "--timeout" in line


def test_a_command_line_that_is_not_utf8_is_refused():
    line = one_line_error(pvmon("run", "--cmdline", "console=hvc0 \udcff"))
    assert "UTF-8" in line


@pytest.mark.parametrize("text, size", [
    ("256", 256 << 20), ("256M", 256 << 20), ("256MiB", 256 << 20), ("1G", 1 << 30),
    ("1.5G", 3 << 29), ("524288K", 512 << 20), ("0.0078125T", 8 << 30),
    (f"{64 << 20}B", 64 << 20), (" 64m ", 64 << 20),
])
def test_memory_sizes_are_mib_by_default_with_qemu_suffixes(text, size):
    from pvmon.session import parse_memory
    assert parse_memory(text) == size


def test_memory_256_is_256_mib_and_timeout_0_is_no_limit(tmp_path):
    p = pvmon("run", "--memory", "256", "--timeout", "0", "--idle-exit", "0",
              "--record", "m.pvt", "--quiet", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    from pvmon.trace.reader import TraceReader
    with TraceReader(tmp_path / "m.pvt") as r:
        assert r.header["machine"]["memory"] == 256 << 20
        assert r.header["machine"]["idle_limit_ns"] is None
    assert "exit: shutdown" in p.stderr


def test_the_help_says_which_units_options_take():
    out = " ".join(pvmon("run", "-h").stdout.split())
    assert "Guest memory in MiB (256), or with a suffix K, M, G or T" in out
    assert "(0: no limit, the default)" in out and "(0: never)" in out


def test_a_usage_error_is_one_line_naming_the_help():
    line = one_line_error(pvmon("run", "--no-such-option"))
    assert "--no-such-option" in line and "pvmon run -h" in line


# ---------------------------------------------------------- options that do nothing
# Console input without an initrd, and a paused run nobody can resume, are refused
# for the guests known to have no userland; a kernel given by path is warned about.

@pytest.mark.parametrize("args", [("--script", "uname -a"), ("--input-file", "in.txt"),
                                  ("--input-file", "-")])
def test_console_input_without_an_initrd_is_refused_for_built_in_guests(tmp_path, args):
    (tmp_path / "in.txt").write_text("uname -a\n")
    line = one_line_error(pvmon("run", "pvtest-v2", *args, cwd=tmp_path))
    assert "needs an initrd" in line and args[0] in line


def test_console_input_without_an_initrd_is_a_warning_for_a_kernel_given_by_path(tmp_path):
    import shutil

    import pvmon.guests as guests_pkg
    elf = tmp_path / "mine.elf"
    shutil.copy(Path(guests_pkg.__file__).parent / "images" / "pvtest-v2.elf", elf)
    p = pvmon("run", str(elf), "--script", "uname -a", "--quiet", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "pvmon: warning: --script without an initrd" in p.stderr


def test_boot_headless_paused_is_refused():
    line = one_line_error(pvmon("boot", "--headless", "--paused"))
    assert "--paused" in line and "--headless" in line
