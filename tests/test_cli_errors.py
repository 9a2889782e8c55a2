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
