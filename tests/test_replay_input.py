"""Recorded console input goes back in where the guest takes it: verify types
each input at its recorded event, a replay on another backend types each
line at the prompt the guest reaches there. A scripted Debian 6.12 busybox
session recorded on xen-4.17, replayed on xen-3.4."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pvmon.cli import cli
from pvmon.dispatch.console_input import ConsoleInput, script_lines
from pvmon.guests.initramfs import ensure_initramfs
from pvmon.replay.closed import replay_closed
from pvmon.replay.source import open_run, recorded_inputs
from pvmon.session import Session
from pvmon.trace.reader import TraceReader
from pvmon.trace.writer import TraceWriter

SCRIPT = "uname -r\necho hi\npoweroff -f\n"


@pytest.fixture(scope="module")
def scripted612(debian612, tmp_path_factory) -> Path:
    """`pvmon run debian-6.12 --initramfs busybox --script ... --record T`."""
    trace = tmp_path_factory.mktemp("input") / "mk.pvt"
    sess = Session(debian612, initrd=ensure_initramfs("busybox").read_bytes(),
                   initrd_info={"name": "busybox"}, script=script_lines(SCRIPT), record=trace)
    res = sess.run(timeout=600)
    assert res.clean, (res.exit_kind, res.detail)
    return trace


def _without_at(src: Path, dst: Path) -> None:
    """``src`` as a trace recorded before console input carried ``at``."""
    with TraceReader(src) as r, TraceWriter(dst, r.header) as w:
        for ev in r:
            ev.pop("at", None)
            w.append(ev)


# ------------------------------------------------------------ no guest needed
def test_a_replayed_prompt_line_waits_for_the_prompt_and_earlier_input_read():
    inp = ConsoleInput()
    assert not inp.replay_due(True, 10**12)      # nothing to replay
    inp.replay(b"ls\n", "prompt")
    inp.replay(b"x", "idle")
    assert not inp.exhausted()
    inp.saw_output(b"uname -r\r\n6.12.0\r\n")
    assert not inp.replay_due(True, 0)           # no prompt yet, not quiet
    assert inp.replay_due(True, inp.quiet_ns)    # quiet for a second: typed anyway
    inp.saw_output(b"~ # ")
    assert not inp.replay_due(False, 0)          # the guest has not read earlier input
    assert inp.replay_due(True, 0)
    inp.replayed.popleft()
    inp.forget_output()
    assert inp.replay_due(True, 0)               # "idle": no prompt to wait for
    inp.carry = b"rest"
    assert not inp.replay_due(True, 0)           # the previous input is not all in
    inp.carry = b""
    inp.replayed.popleft()
    assert inp.exhausted()


# ------------------------------------------------------------ real 6.12 session


@pytest.mark.debian
@pytest.mark.slow
def test_script_lines_are_recorded_as_typed_at_a_prompt(scripted612, tmp_path):
    got = recorded_inputs(TraceReader(scripted612))
    assert [(i.data, i.at, i.rule) for i in got] == \
        [(ln, "prompt", "prompt") for ln in script_lines(SCRIPT)]
    # A trace from before `at`: the same lines, found typed at a prompt by the
    # block call that follows each.
    old = tmp_path / "old.pvt"
    _without_at(scripted612, old)
    assert [(i.seq, i.data, i.at, i.rule) for i in recorded_inputs(TraceReader(old))] == \
        [(i.seq, i.data, None, "prompt") for i in got]


@pytest.mark.debian
@pytest.mark.slow
def test_verify_of_a_scripted_session_is_still_exact(scripted612):
    rep = replay_closed(open_run(scripted612))
    assert rep.mode == "verify"
    assert rep.total == 0 and rep.compared == len(TraceReader(scripted612))
    assert rep.ending["outcome"] == "identical"


@pytest.mark.debian
@pytest.mark.slow
def test_typed_at_the_prompt_on_the_recorded_backend_is_the_recorded_run(scripted612):
    """The idle-point rule finds the very points the script used: a closed-loop
    replay (not by seq) on the recording's own backend matches event for event."""
    run = open_run(scripted612)
    rep = replay_closed(run, run.version, verify=False)
    assert rep.mode == "closed-loop"
    assert rep.total == 0 and rep.compared == len(TraceReader(scripted612)), rep.by_call


@pytest.mark.debian
@pytest.mark.slow
def test_a_scripted_session_replayed_on_xen_3_4_ends_as_recorded(scripted612):
    """`pvmon replay mk.pvt --backend xen-3.4`: the guest takes another path
    (older Xen), each line still goes in at the prompt, the shell runs it and
    powers off; the report lists the backend's differences, none in the input."""
    r = CliRunner().invoke(cli, ["replay", str(scripted612), "--backend", "xen-3.4", "--json"])
    assert r.exit_code == 1, r.output
    doc = json.loads(r.output)
    assert doc["mode"] == "closed-loop" and doc["diverged"]
    end = doc["ending"]
    assert end["right"].startswith("shutdown: SCHEDOP_shutdown(poweroff)"), end
    assert end["left"].split(" at ")[0] == end["right"].split(" at ")[0]
    assert "tolerated" in end["outcome"] and "ended as recorded" in end["outcome"], end
    assert "hung" not in end["outcome"]
    first = doc["divergences"][0]
    assert first["left"]["name"] == "xen_version"
    assert any("XENFEAT" in e["text"] for e in first["explanation"])
    assert not [c for c in doc["by_call"] if c["call"].startswith("con:in")], doc["by_call"]
