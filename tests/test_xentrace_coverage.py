"""replay --coverage: which calls of a trace (recorded, or imported from
xentrace) a target backend lacks or answers differently, by its declarations."""

from __future__ import annotations

import json
from pathlib import Path

from pvmon.replay.coverage import DIFFERS, SAME, UNKNOWN_SUBOP, coverage
from tests.hostile_support import one_line_error, pvmon

GOLDEN = Path(__file__).parent / "data" / "golden-pvtest-v2.pvt"


def _rows(cov) -> dict:
    return {(r.hypercall, r.subop): r for r in cov.rows}


def test_a_trace_on_its_own_backend_has_full_coverage():
    cov = coverage(GOLDEN, "xen-4.17")
    assert cov.exit_code == 0 and {r.verdict for r in cov.rows} == {SAME}
    assert cov.calls == sum(r.count for r in cov.rows)


def test_coverage_on_an_old_xen_names_the_declared_differences_with_sources():
    cov = coverage(GOLDEN, "xen-3.4")
    rows = _rows(cov)
    assert cov.exit_code == 1 and cov.baseline == "xen-4.17"
    mmu = rows[("mmu_update", None)]
    assert mmu.verdict == DIFFERS and any("xsa148" in w for w in mmu.why)
    assert any("XSA-148" in s for s in mmu.sources)
    assert rows[("xen_version", "version")].verdict == DIFFERS
    assert rows[("console_io", "write")].verdict == SAME


def test_a_release_build_differs_on_console_writes():
    rows = _rows(coverage(GOLDEN, "xen-4.17-release"))
    assert rows[("console_io", "write")].verdict == DIFFERS
    assert "verbose_debug" in rows[("console_io", "write")].why[0]


def test_an_imported_xentrace_trace_is_checked_against_the_reference(tmp_path):
    xt, back = tmp_path / "g.xt", tmp_path / "g.pvt"
    assert pvmon("trace", "export", str(GOLDEN), "--format", "xentrace", "-o",
                 str(xt)).returncode == 0
    assert pvmon("trace", "import", str(xt), "-o", str(back)).returncode == 0
    p = pvmon("replay", str(back), "--backend", "xen-3.4", "--coverage", "--json")
    assert p.returncode == 1, p.stderr
    out = json.loads(p.stdout)
    assert "compared with the reference xen-4.17" in out["baseline_note"]
    verdicts = {(r["hypercall"], r["subop"]): r["verdict"] for r in out["rows"]}
    assert verdicts[("mmu_update", None)] == DIFFERS
    # mmuext_op's sub-op lives in guest memory, which xentrace does not record
    assert verdicts[("mmuext_op", None)] == UNKNOWN_SUBOP
    p = pvmon("replay", str(back), "--backend", "xen-3.4", "--coverage")
    assert p.returncode == 1 and "coverage on xen-3.4" in p.stdout


def test_coverage_without_a_backend_or_with_an_unknown_one_is_one_line():
    assert "--coverage needs --backend" in one_line_error(
        pvmon("replay", str(GOLDEN), "--coverage"))
    assert "xen-9.9" in one_line_error(
        pvmon("replay", str(GOLDEN), "--coverage", "--backend", "xen-9.9"))
