"""No command writes onto its own input or over a file that is not what it
writes: ``--record`` replaces a trace but not ``victim.txt`` (nor what a
symlink points at) unless ``--force``; ``trace export -o`` never destroys the
trace it reads; the TUI's record key refuses the same files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pvmon.files import check_output, is_pvmon_trace
from pvmon.guests.catalog import resolve
from pvmon.session import Session
from pvmon.trace.reader import TraceReader
from tests.hostile_support import one_line_error, pvmon

VICTIM = b"precious data, not a trace\n"


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    p = tmp_path_factory.mktemp("outputs") / "t.pvt"
    assert Session(resolve("pvtest-v2"), record=p).run().clean
    return p


@pytest.fixture
def local_trace(trace, tmp_path):
    p = tmp_path / "self.pvt"
    shutil.copy(trace, p)
    return p


@pytest.mark.parametrize("fmt", ["jsonl", "perfetto"])
def test_export_onto_its_own_input_is_refused_and_the_trace_survives(local_trace, fmt):
    before = local_trace.read_bytes()
    line = one_line_error(pvmon("trace", "export", str(local_trace), "--format", fmt,
                                "-o", str(local_trace), "--force"))
    assert "is an input of this command" in line
    assert local_trace.read_bytes() == before


def test_export_onto_a_symlink_or_hard_link_to_its_input_is_refused(local_trace, tmp_path):
    before = local_trace.read_bytes()
    (tmp_path / "sym.json").symlink_to(local_trace)
    os.link(local_trace, tmp_path / "hard.json")
    for out in ("sym.json", "hard.json"):
        line = one_line_error(pvmon("trace", "export", "self.pvt", "--format", "jsonl",
                                    "-o", out, "--force", cwd=tmp_path))
        assert "is an input of this command" in line
    assert local_trace.read_bytes() == before


def test_export_replaces_an_earlier_export_but_not_another_file_unless_forced(local_trace,
                                                                             tmp_path):
    out = tmp_path / "out.json"
    for fmt in ("perfetto", "jsonl", "perfetto"):     # an earlier export of either format
        p = pvmon("trace", "export", "self.pvt", "--format", fmt, "-o", "out.json",
                  cwd=tmp_path)
        assert p.returncode == 0, p.stderr
    out.write_bytes(VICTIM)
    line = one_line_error(pvmon("trace", "export", "self.pvt", "--format", "jsonl",
                                "-o", "out.json", cwd=tmp_path))
    assert "exists and is not a pvmon trace export; pass --force" in line
    assert out.read_bytes() == VICTIM
    p = pvmon("trace", "export", "self.pvt", "--format", "jsonl", "-o", "out.json",
              "--force", cwd=tmp_path)
    assert p.returncode == 0 and out.read_bytes().startswith(b'{"format":"pvmon-trace"')


def test_record_over_a_file_that_is_not_a_trace_needs_force(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(VICTIM)
    line = one_line_error(pvmon("run", "--record", "victim.txt", "--quiet", cwd=tmp_path))
    assert "--record victim.txt exists and is not a pvmon trace; pass --force" in line
    assert victim.read_bytes() == VICTIM
    p = pvmon("run", "--record", "victim.txt", "--quiet", "--force", cwd=tmp_path)
    assert p.returncode == 0 and is_pvmon_trace(victim)


def test_record_through_a_symlink_protects_what_it_points_at(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(VICTIM)
    (tmp_path / "link.pvt").symlink_to(victim)
    line = one_line_error(pvmon("run", "--record", "link.pvt", "--quiet", cwd=tmp_path))
    assert f"(a link to {victim})" in line and "not a pvmon trace" in line
    assert victim.read_bytes() == VICTIM


def test_record_replaces_an_earlier_trace(local_trace):
    p = pvmon("run", "--record", str(local_trace), "--quiet", "--cmdline", "again")
    assert p.returncode == 0, p.stderr
    with TraceReader(local_trace) as r:
        assert r.header["machine"]["cmdline"] == "again"


def test_record_onto_the_guest_image_is_refused_even_with_force(tmp_path):
    import pvmon.guests as guests_pkg
    elf = tmp_path / "mine.elf"
    shutil.copy(Path(guests_pkg.__file__).parent / "images" / "pvtest-v2.elf", elf)
    before = elf.read_bytes()
    line = one_line_error(pvmon("run", "mine.elf", "--record", "mine.elf", "--force",
                                cwd=tmp_path))
    assert "is an input of this command" in line
    assert elf.read_bytes() == before


def test_record_into_a_directory_is_refused(tmp_path):
    line = one_line_error(pvmon("run", "--record", ".", "--quiet", cwd=tmp_path))
    assert "is a directory" in line


def test_empty_files_and_devices_may_be_written(tmp_path):
    (tmp_path / "empty.pvt").write_bytes(b"")
    assert check_output(tmp_path / "empty.pvt") == tmp_path / "empty.pvt"
    assert check_output("/dev/null", kind="export") == Path("/dev/null")
    assert check_output(tmp_path / "new.pvt", inputs=[None, tmp_path / "missing"]) \
        == tmp_path / "new.pvt"


def test_the_tui_record_key_refuses_a_file_that_is_not_a_trace(tmp_path, monkeypatch):
    from tests.tui_support import drive, live_app, until
    monkeypatch.chdir(tmp_path)   # short names: Pilot types each character
    victim = tmp_path / "v.txt"
    victim.write_bytes(VICTIM)
    app, first = live_app()

    async def script(pilot):
        screen = app.screen
        await until(pilot, lambda: screen._finished_shown)
        await pilot.press("r", "ctrl+u", *"v.txt", "enter")
        await pilot.pause(0.2)
        assert screen.live is first                      # no reboot
        assert any("v.txt exists and is not a pvmon trace; choose another file"
                   in str(n.message) for n in app._notifications)

    drive(app, script)
    assert victim.read_bytes() == VICTIM
