"""Security fixes as ABI history: seven Xen Security Advisories whose fix a
64-bit PV domU can see, declared as differences of the versions that predate
them (pvmon/backends/xen/history.py), reproduced by the hostile guest
pvtest-v2-poc (guests/src/checks_poc.c), and named by the open-loop matrix.
XSA-12's step needs a second vCPU (guests/src/poc_xsa12.c): with one it is
skipped, and it affects xen-3.4 only (fixed in 4.2); tests/test_xen_xsa12.py
runs it."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pvmon.backends.xen import abi
from pvmon.backends.xen.history import XSAS
from pvmon.backends.xen.versions import REGISTRY, XSA_FIXES
from pvmon.guests.catalog import resolve
from pvmon.replay.matrix import run_matrix
from pvmon.replay.openloop import replay_open
from pvmon.replay.source import open_run
from pvmon.session import Session

ROOT = Path(__file__).resolve().parents[1]
MATRIX = ["xen-4.6", "xen-4.11", "xen-4.17"]
TWO_VCPUS = {12}      # the steps a one-vCPU run skips


def _poc(backend: str, record: Path | None = None,
         vcpus: int = 1) -> tuple[object, dict[int, str], str]:
    """Run pvtest-v2-poc on ``backend``: the result, {XSA: verdict}, console text."""
    s = Session(resolve("pvtest-v2-poc"), backend=backend, record=record, vcpus=vcpus)
    out = bytearray()
    s.on_console(lambda ch, data: out.extend(data) if ch == "io" else None)
    res = s.run(timeout=60)
    text = out.decode()
    verdicts = {int(m.group(1)): m.group(2)
                for m in re.finditer(r"^pvtest: XSA-(\d+) (\w+) - ", text, re.MULTILINE)}
    return res, verdicts, text


def _declared(version: str, vcpus: int = 1) -> dict[int, str]:
    caps = REGISTRY[version].capabilities
    return {n: "skipped" if vcpus == 1 and n in TWO_VCPUS else
            "fixed" if x.capability in caps else "vulnerable" for n, x in XSAS.items()}


@pytest.fixture(scope="module")
def poc_trace(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("poc") / "poc.pvt"
    res, verdicts, _ = _poc("xen-4.17", record=path)
    assert res.exit_kind == "shutdown" and verdicts == _declared("xen-4.17")
    return path


def test_every_xsa_is_declared_with_its_advisory_fix_commit_and_file():
    assert len(XSAS) >= 5
    ref = REGISTRY["xen-4.17"]
    for n, x in XSAS.items():
        assert x.capability in ref.capabilities, n          # the reference has every fix
        assert re.fullmatch(r"[0-9a-f]{10}", x.fix) and x.file.startswith("xen/"), n
        assert x.fixed and x.vulnerable and x.call, n
    assert {x.capability for x in XSAS.values()} >= set(XSA_FIXES)
    # an affected version's record says which advisory, which commit, which file
    d = {c.xsa: c.as_dict() for c in REGISTRY["xen-4.6"].changes if c.xsa}
    assert set(d) == set(XSAS) - {12}                   # XSA-12 was fixed in 4.2
    d34 = {c.xsa: c.as_dict() for c in REGISTRY["xen-3.4"].changes if c.xsa}
    assert set(d34) >= set(XSAS) - {234} and d34[12]["fix"] == "e89c6d0573"
    assert d[213]["fix"] == "22c096c99d" and d[213]["file"] == "xen/common/multicall.c"
    assert "RELEASE-4.6.0" in d[213]["source"] and "fc7839698c" in d[213]["source"]
    assert [c.xsa for c in REGISTRY["xen-4.11"].changes if c.xsa] == [327]


def test_older_versions_are_the_reference_plus_their_declared_differences():
    v46, v411 = REGISTRY["xen-4.6"], REGISTRY["xen-4.11"]
    assert (v46.version_string, v46.base) == ("4.6.0", "xen-4.17")
    assert (v411.version_string, v411.base) == ("4.11.0", "xen-4.17")
    assert all(c.source for c in v46.changes + v411.changes)
    assert {"dm_op", "argo_op", "hypfs_op"} <= v46.missing
    assert "dm_op" not in v411.missing and "argo_op" in v411.missing
    assert "acquire_resource" in v46.missing_subops["memory_op"]


@pytest.mark.parametrize("vcpus", [1, 2])
@pytest.mark.parametrize("backend", MATRIX + ["xen-3.4"])
def test_the_poc_guest_reports_each_xsa_vulnerable_or_fixed_as_the_version_declares(
        backend, vcpus):
    res, verdicts, text = _poc(backend, vcpus=vcpus)
    assert res.exit_kind == "shutdown" and res.shutdown_reason == abi.SHUTDOWN_poweroff, text
    assert verdicts == _declared(backend, vcpus), text
    steps = sum(v != "skipped" for v in verdicts.values())
    nv = sum(v == "vulnerable" for v in verdicts.values())
    assert f"pvtest: poc: {steps} steps, {nv} vulnerable, {steps - nv} fixed, " \
           "0 unexpected" in text


def test_xen_4_11_is_affected_by_xsa_327_only_xen_4_6_by_all_but_xsa_12_and_xen_3_4_by_all():
    assert [n for n, v in _declared("xen-4.11", 2).items() if v == "vulnerable"] == [327]
    assert [n for n, v in _declared("xen-4.6", 2).items() if v == "fixed"] == [12]
    assert set(_declared("xen-3.4", 2).values()) == {"vulnerable"}


def test_the_open_loop_matrix_names_the_affected_versions_and_why(poc_trace):
    rows = {r["backend"]: r for r in run_matrix([poc_trace], MATRIX, jobs=1)}
    assert rows["xen-4.17"]["total"] == 0
    assert rows["xen-4.11"]["total"] == 1
    assert rows["xen-4.11"]["first"] == "xen:vcpu_op:register_vcpu_info: result"
    # both declared differences of register_vcpu_info are named; the XSA is one
    assert rows["xen-4.11"]["why"] == [
        "vcpu_info_enxio: supported by xen-4.17, not by xen-4.11",
        "xsa327_vcpu_info_aligned: supported by xen-4.17, not by xen-4.11"]
    assert rows["xen-4.6"]["total"] > len(XSAS)
    assert rows["xen-4.6"]["why"][0].startswith("xsa148_l2_pse_refused:")


def test_every_divergence_on_xen_4_6_is_explained_by_a_missing_fix(poc_trace):
    rep = replay_open(open_run(poc_trace, need_guest=False), REGISTRY["xen-4.6"])
    explained = set()
    caps = {x.capability: n for n, x in XSAS.items()}
    for div in rep.iter_divergences():
        named = {}
        for f in div.explanation:
            cap = f.text.partition(":")[0]
            if cap in caps:
                named[caps[cap]] = f.source
        assert named, div.deltas
        assert all(f"XSA-{n}" in source for n, source in named.items())
        explained |= set(named)
    assert explained == set(XSAS) - TWO_VCPUS


def test_pvmon_replay_open_loop_matrix_on_the_command_line(poc_trace):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "pvmon", "replay", str(poc_trace), "--backend",
                          ",".join(MATRIX), "--open-loop", "--json", "--jobs", "1"],
                         capture_output=True, text=True, env=env, timeout=120, check=False)
    assert out.returncode == 1, out.stderr         # differences found
    rows = {r["backend"]: r for r in json.loads(out.stdout)}
    assert [rows[b]["total"] == 0 for b in MATRIX] == [False, False, True]
    assert any("xsa327" in why for why in rows["xen-4.11"]["why"])
