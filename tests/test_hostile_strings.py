"""What a guest, a trace, a profile or a command line says is printed
literally: Rich markup (``[/oops]``, ``[red]``), emoji codes (``:smile:``) and
terminal control characters never crash a report nor change what it shows."""

from __future__ import annotations

import pytest

from pvmon.literal import markup, printable
from tests.hostile_support import one_line_error, pvmon, rewrite

MARKUP = "console=hvc0 [/oops] opt=[red] [bold]x[/bold] :smile: [[fail]] \\"


@pytest.fixture(scope="module")
def hostile_trace(tmp_path_factory):
    """pvtest-v2 recorded with a command line full of markup and an escape sequence."""
    d = tmp_path_factory.mktemp("hostile")
    p = pvmon("run", "--cmdline", MARKUP + " \x1b[31mred", "--record", "c.pvt", "--quiet",
              cwd=d)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    return d / "c.pvt"


def test_trace_info_shows_a_command_line_with_markup_and_escapes_as_it_is(hostile_trace):
    p = pvmon("trace", "info", str(hostile_trace))
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    assert MARKUP + " \\x1b[31mred" in p.stdout
    assert "\x1b" not in p.stdout


def test_a_profile_with_markup_in_a_comment_and_its_tables_prints_every_line(tmp_path):
    prof = tmp_path / "acme.toml"
    prof.write_text('name = "acme-4.17"   # [/x] opt=[red]\nbase = "xen-4.17"\n'
                    '[remove]\nhypercalls = ["xenpmu_op"]\n'
                    '[[fail]]\nhypercall = "xen_version"\nerror = "EINVAL"\n'
                    'reason = "ticket [/1234]"\n')
    p = pvmon("run", "--backend", str(prof), "--record", "a.pvt", "--quiet", cwd=tmp_path)
    assert "Traceback" not in p.stderr, p.stderr
    p = pvmon("trace", "info", "a.pvt", cwd=tmp_path)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    if 'hypercalls = ["xenpmu_op"]' in p.stdout:       # where the profile's text is shown,
        for line in ("# [/x] opt=[red]", "[remove]", "[[fail]]", 'reason = "ticket [/1234]"'):
            assert line in p.stdout                      # it is shown whole


def test_the_run_summary_prints_a_trace_path_with_markup(tmp_path):
    p = pvmon("run", "--record", "[red]opt=[bold] :smile:.pvt", "--quiet", cwd=tmp_path)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    assert "trace: [red]opt=[bold] :smile:.pvt (3605 events)" in p.stderr


def _renamed(ev: dict) -> None:
    """event_channel_op calls named with markup and an escape, answered differently."""
    if ev.get("k") == "hc" and ev.get("name") == "event_channel_op":
        ev["name"] = "[/x]evtchn\x1b[2J"
        ev["ret"] = 77


@pytest.fixture(scope="module")
def renamed_trace(hostile_trace):
    return rewrite(hostile_trace, hostile_trace.with_name("renamed.pvt"), event=_renamed)


def test_trace_cat_and_stats_print_recorded_names_literally(renamed_trace):
    p = pvmon("trace", "cat", str(renamed_trace), "--from", "0", "--to", "200")
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    assert "[/x]evtchn\\x1b[2J(" in p.stdout and "\x1b" not in p.stdout
    p = pvmon("trace", "stats", str(renamed_trace))
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    assert "[/x]evtchn\\x1b[2J" in p.stdout and "\x1b" not in p.stdout


def test_a_replay_report_and_a_diff_print_recorded_names_literally(hostile_trace,
                                                                   renamed_trace):
    p = pvmon("replay", "--open-loop", str(renamed_trace))
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert "[/x]evtchn\\x1b[2J" in p.stdout and "\x1b" not in p.stdout
    p = pvmon("diff", str(hostile_trace), str(renamed_trace))
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert "[/x]evtchn\\x1b[2J" in p.stdout and "\x1b" not in p.stdout


def test_printable_shows_control_characters_and_keeps_everything_else():
    assert printable("plain [red] :smile: é") == "plain [red] :smile: é"
    assert printable("a\x1b[2Jb\rc\n\x00\u202e") == "a\\x1b[2Jb\\rc\\n\\x00\\u202e"
    assert printable("toml\n[remove]\tx", multiline=True) == "toml\n[remove]\tx"
    assert markup("[/oops] \\") == "\\[/oops] \\\\"


def test_backends_lists_a_profile_description_with_markup_and_emoji_codes_literally(tmp_path):
    (tmp_path / "acme.toml").write_text('name = "acme-4.17"\nbase = "xen-4.17"\n'
                                        'description = "ACME :smile: build [/x] [red]hot"\n')
    p = pvmon("backends", env={"PVMON_PROFILES": str(tmp_path)})
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    assert "ACME :smile: build [/x] [red]hot" in p.stdout


def test_an_error_about_a_file_name_with_a_newline_and_an_escape_stays_one_visible_line(
        tmp_path):
    line = one_line_error(pvmon("trace", "info", "a\nb\x1b[31m.pvt", cwd=tmp_path))
    assert "a\\nb\\x1b[31m.pvt: cannot open trace" in line
