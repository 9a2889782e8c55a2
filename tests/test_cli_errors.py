"""Bad input gets one readable line and exit status 2, never a traceback."""

import subprocess
import sys


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
