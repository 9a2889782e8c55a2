"""What the CLI tells users, checked through the real command in a subprocess:
diff against a truncated trace, the console printed once, profiles under one
name, unknown filter terms, the engine's one story, shell completion."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pvmon.trace import TraceReader
from pvmon.ui.families import family_of

PVMON = [sys.executable, "-m", "pvmon.cli"]


def pvmon(*args, env=None, **kw):
    return subprocess.run(PVMON + [str(a) for a in args], capture_output=True, text=True,
                          timeout=300, check=False, env={**os.environ, **(env or {})}, **kw)


@pytest.fixture(scope="module")
def v2_trace(tmp_path_factory):
    path = tmp_path_factory.mktemp("out") / "v2.pvt"
    p = pvmon("run", "pvtest-v2", "--quiet", "--record", path)
    assert p.returncode == 0, p.stderr
    return path


# ------------------------------------------------------------------ diff
def test_diff_against_a_truncated_trace_says_so_and_counts_what_each_side_holds(
        v2_trace, tmp_path):
    cut = tmp_path / "cut.pvt"
    with TraceReader(v2_trace) as r:
        cut.write_bytes(v2_trace.read_bytes()[:r.frames[0].end + 10])
        full_calls = sum(1 for e in r if e["k"] == "hc")
    with TraceReader(cut) as r:
        last = r.truncated_after
        cut_calls = sum(1 for e in r if e["k"] == "hc")
    assert 0 < cut_calls < full_calls
    p = pvmon("diff", v2_trace, cut, env={"COLUMNS": "200"})
    assert p.returncode == 1, p.stderr
    out = p.stdout
    assert f"truncated after event {last}" in out
    assert f"the right trace is truncated after event {last}" in out
    assert f"({full_calls:,} hypercalls" in out and f"({cut_calls:,} hypercalls" in out
    assert f"mechanism: both syscall (left x{full_calls:,}, right x{cut_calls:,})" in out
    assert "after the end of the truncated right" in out
    doc = json.loads(pvmon("diff", v2_trace, cut, "--json").stdout)
    assert doc["right"]["status"] == f"truncated after event {last}"
    assert doc["right"]["hypercalls"] == cut_calls and doc["left"]["status"] == "complete"
    assert doc["runs"][-1]["past_truncated_end"] is True


# ---------------------------------------------------------------- console
def test_run_prints_the_guest_console_once_and_the_xen_log_only_when_asked(v2_trace):
    p = pvmon("run", "pvtest-v2")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == len(set(lines)) > 100           # every line once
    with TraceReader(v2_trace) as r:
        ring = b"".join(e["data"] for e in r if e["k"] == "con" and e["ch"] == "ring")
    assert p.stdout == ring.decode()
    assert "(xen)" not in p.stderr
    q = pvmon("run", "pvtest-v2", "--quiet", "--xen-log")
    assert q.stdout == ""
    log = [ln for ln in q.stderr.splitlines() if ln.startswith("(xen) ")]
    assert [ln.removeprefix("(xen) ") for ln in log] == lines


def _feed_in_pieces(chunks, size):
    from pvmon.dispatch.console_output import GuestConsole
    out, log = [], []
    con = GuestConsole(out.append, log.append)
    for ch, data in chunks:
        for i in range(0, len(data), size):
            con(ch, data[i:i + size])
    con.close()
    return b"".join(out), b"".join(log)


@pytest.mark.parametrize("size", [1, 3, 4096])
def test_a_linux_style_hand_over_from_the_early_console_to_hvc0_is_printed_once(size):
    early = b"".join(b"[    0.%06d] line %d\n" % (i, i) for i in range(50))
    handover = b"[    0.009758] console [hvc0] enabled\n[    0.009763] bootconsole disabled\n"
    later = b"[    0.01] after\r\n[    0.02] more\r\n~ # "
    chunks = [("io", early), ("io", handover),
              ("ring", handover.replace(b"\n", b"\r\n") + later)]
    out, log = _feed_in_pieces(chunks, size)
    assert out == early + handover + later
    assert log == early + handover


@pytest.mark.parametrize("size", [1, 7, 4096])
def test_ring_output_that_is_not_a_repeat_is_never_dropped(size):
    chunks = [("io", b"hello\nworld\n"), ("ring", b"world wide\n"), ("io", b"x\n"),
              ("ring", b"hello\n")]
    out, _ = _feed_in_pieces(chunks, size)
    assert out == b"hello\nworld\nworld wide\nhello\n"


# --------------------------------------------------------------- profiles
ACME = """# a profile whose file is not named after it
name = "acme-4.17"
base = "xen-4.17"
version = "4.17.7-acme"
description = "ACME's build [remove] not [red]markup[/red]"
[remove]
hypercalls = ["xenpmu_op"]
[[fail]]
hypercall = "vcpu_op"
subop = "set_singleshot_timer"
error = "EINVAL"
reason = "ACME-1234"
"""


def test_a_profile_has_one_name_everywhere_and_a_broken_one_is_not_offered(tmp_path):
    (tmp_path / "acme.toml").write_text(ACME)
    (tmp_path / "broken.toml").write_text("name = 'broken'\nbase = 'xen-9.9'\n")
    env = {"PVMON_PROFILES": str(tmp_path), "COLUMNS": "200"}
    listing = pvmon("backends", env=env)
    assert listing.returncode == 0
    assert "acme-4.17  profile 4.17.7-acme" in listing.stdout
    assert f"file: {tmp_path / 'acme.toml'}" in listing.stdout
    assert "unknown base 'xen-9.9'" in listing.stdout        # listed, with its error
    trace = tmp_path / "acme.pvt"
    p = pvmon("run", "--backend", "acme-4.17", "--quiet", "--record", trace, env=env)
    assert p.returncode in (0, 1) and "trace: " in p.stderr, p.stderr   # its timer fails
    by_file = pvmon("run", "--backend", "acme", "--quiet", env=env)
    assert by_file.returncode == 2
    line = by_file.stderr.strip()
    assert line.count("\n") == 0 and "unknown backend 'acme'" in line
    assert f"{tmp_path / 'acme.toml'} is the profile 'acme-4.17'" in line
    known = line.split("known: ")[1].split(", ")
    assert "acme-4.17" in known and "broken" not in known and "acme" not in known
    info = pvmon("trace", "info", trace, env=env)
    assert info.returncode == 0, info.stderr
    assert "acme-4.17 (Xen 4.17.7-acme), based on xen-4.17, from " in info.stdout
    assert str(tmp_path / "acme.toml") in info.stdout
    for toml_only in ("[[fail]]", "ACME-1234", "set_singleshot_timer", "xenpmu_op\""):
        assert toml_only not in info.stdout
    # the trace verifies from its recorded profile, under the same name
    (tmp_path / "acme.toml").unlink()
    rep = json.loads(pvmon("replay", trace, "--json", env=env).stdout)
    assert "acme-4.17" in rep["left"]


# ---------------------------------------------------------------- filters
def test_trace_cat_refuses_an_unknown_filter_term_with_close_matches(v2_trace):
    p = pvmon("trace", "cat", v2_trace, "--filter", "nosuchcall")
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.count("\n") == 1 and "unknown filter term 'nosuchcall'" in p.stderr
    p = pvmon("trace", "cat", v2_trace, "--filter", "mmu_updat,event_channel_op")
    assert p.returncode == 2
    assert "'mmu_updat' (did you mean mmu_update" in p.stderr
    assert "event_channel_op'" not in p.stderr          # the known term is not blamed


@pytest.mark.parametrize("term,check", [
    ("mmu", lambda ev: family_of(ev) == "mmu"),
    ("xen", lambda ev: ev["k"] == "hc"),
    ("PIN_L4_TABLE", lambda ev: ev.get("op", {}).get("cmd") == "PIN_L4_TABLE"),
    ("pin_l4_table", lambda ev: ev.get("op", {}).get("cmd") == "PIN_L4_TABLE"),
    ("console", lambda ev: ev["k"] == "con" or ev.get("name") == "console_io"),
    ("set_gdt", lambda ev: ev.get("name") == "set_gdt"),
])
def test_families_abis_and_sub_ops_remain_filter_terms(v2_trace, term, check):
    p = pvmon("trace", "cat", v2_trace, "--filter", term, "--json")
    assert p.returncode == 0, p.stderr
    shown = [json.loads(line) for line in p.stdout.splitlines()]
    with TraceReader(v2_trace) as r:
        want = [e["seq"] for e in r if check(e)]
    assert want and [e["seq"] for e in shown] == want


def test_a_name_only_the_trace_knows_is_a_valid_filter_term(tmp_path):
    from pvmon.trace import TraceWriter
    from pvmon.trace.synth import synthetic_header
    path = tmp_path / "new.pvt"
    with TraceWriter(path, synthetic_header()) as w:
        w.append({"seq": 0, "t": 1, "cpu": 0, "k": "hc", "abi": "xen", "nr": 77,
                  "name": "frobnicate_op", "args": [], "op": {}, "ret": 0, "rip": 1})
        w.append({"seq": 1, "t": 2, "cpu": 0, "k": "teleport", "rip": 2})
    p = pvmon("trace", "cat", path, "--filter", "frobnicate_op,teleport")
    assert p.returncode == 0, p.stderr
    assert len(p.stdout.splitlines()) == 2


# ----------------------------------------------------------------- engine
def test_the_engine_help_and_the_readme_tell_one_story_about_the_patches():
    from pathlib import Path

    from pvmon.engine.uclib import PATCHES
    count = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine", 10: "ten", 11: "eleven"}[len(PATCHES)]
    text = " ".join(pvmon("engine", "build", "--help", env={"COLUMNS": "200"}).stdout.split())
    assert f"pvmon's {count} patches" in text
    assert "Only the patched library guarantees" in text
    assert "same on either library" not in text
    readme = " ".join((Path(__file__).parents[1] / "README.md").read_text().split())
    assert f"rebuilt with {count} small patches" in readme
    assert "only the patched library guarantees repeatable runs" in readme
    env = {k: v for k, v in os.environ.items() if k != "LIBUNICORN_PATH"}
    info = subprocess.run(PVMON + ["engine", "info"], capture_output=True, text=True,
                          check=False, env={**env, "PVMON_UNICORN": "stock"})
    assert "patched: no" in info.stdout and "not guaranteed to repeat" in info.stdout


# ------------------------------------------------------------- completion
def test_shell_completion_is_documented_and_works():
    from pathlib import Path
    text = pvmon("--help", env={"COLUMNS": "120"}).stdout
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for shell in ("bash", "zsh", "fish"):
        assert f"_PVMON_COMPLETE={shell}_source pvmon" in text
        assert f"_PVMON_COMPLETE={shell}_source pvmon" in readme
    script = pvmon(env={"_PVMON_COMPLETE": "bash_source"})
    assert script.returncode == 0 and "_pvmon_completion()" in script.stdout
    done = pvmon(env={"_PVMON_COMPLETE": "bash_complete", "COMP_WORDS": "pvmon cache clean "
                      "--kind ex", "COMP_CWORD": "4"})
    assert done.stdout.split() == ["plain,extracted"]
