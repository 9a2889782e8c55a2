"""The set_debugreg/get_debugreg rules checked from inside the reference
guest: the family "debug registers: set_debugreg/get_debugreg" of
pvtest-v2-rules (guests/src/checks_debugreg_hc.c; its last 7 checks are I/O
breakpoints hit from guest user mode) passes on the reference,
and on the older versions fails exactly where their declared differences say
(xen.git f539ae2706 and 30f43f4aa8 for %dr4/%dr5, XSA-444 for the
argument-translation area; pvmon/backends/xen/history.py)."""

import re

import pytest

from pvmon.guests.catalog import resolve
from pvmon.session import Session

SECTION = "debug registers: set_debugreg/get_debugreg (pv/misc-hypercalls.c)"


def _section(backend: str) -> list[tuple[str, str]]:
    """(ok|FAIL, check text) of the family, run on ``backend`` (an older
    version's run may crash in a later family: this one must be whole)."""
    s = Session(resolve("pvtest-v2-rules"), backend=backend)
    ring = bytearray()
    s.on_console(lambda ch, data: ring.extend(data) if ch == "ring" else None)
    res = s.run(timeout=600)
    assert res.exit_kind == "shutdown" or backend != "xen-4.17", res.detail
    part = ring.decode(errors="replace").split(f"pvtest: # {SECTION}\n", 1)[1]
    assert "pvtest: # " in part, "the family did not finish"
    part = part.split("pvtest: # ", 1)[0]
    return re.findall(r"^pvtest: (ok|FAIL) \d+ - (.*)$", part, re.MULTILINE)


def _failing(lines) -> set[str]:
    return {name.split(" (")[0] for v, name in lines if v != "ok"}


def test_every_set_debugreg_rule_passes_on_the_reference_and_names_its_source():
    lines = _section("xen-4.17")
    assert len(lines) == 38 and not _failing(lines)
    for _v, name in lines:
        assert re.search(r"\((SD|RD|DH|EP|%dr|an int)", name), name


@pytest.mark.parametrize("backend, fails", [
    ("xen-4.11", {"set_debugreg(0, the compat argument-translation area) -> -EPERM",
                  "CR4.DE clear: get_debugreg(5) = %dr7"}),
    ("xen-4.6", {"set_debugreg(0, the compat argument-translation area) -> -EPERM",
                 "set_debugreg(6, 1 << 32) -> -EINVAL", "set_debugreg(7, 1 << 32) -> -EINVAL",
                 "CR4.DE clear: set_debugreg(4, 1) -> 0 and %dr6 reads 0xffff0ff1",
                 "CR4.DE clear: get_debugreg(4) = %dr6",
                 "CR4.DE clear: set_debugreg(5, v) -> 0 and %dr7 reads v",
                 "CR4.DE clear: get_debugreg(5) = %dr7",
                 "CR4.DE clear: set_debugreg(5, GD) -> -EPERM",
                 "CR4.DE set: set_debugreg(4) -> -ENODEV", "CR4.DE set: set_debugreg(5) -> -ENODEV",
                 "CR4.DE set: get_debugreg(4) -> -ENODEV", "CR4.DE set: get_debugreg(5) -> -ENODEV",
                 "set_debugreg(8) -> -ENODEV", "get_debugreg(8) -> -ENODEV",
                 "get_debugreg(-1) -> -ENODEV"}),
])
def test_an_older_version_fails_the_checks_its_declared_differences_predict(backend, fails):
    assert _failing(_section(backend)) == fails
