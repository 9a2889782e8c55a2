"""The patched Unicorn library (pvmon/engine/uclib.py): selection, build errors,
and the property that justifies it: guests behave the same on it as on the wheel's
library, event for event."""

import os
import subprocess
import sys

import msgpack
import pytest

from pvmon.engine import uclib
from pvmon.trace.reader import TraceReader

PVMON = [sys.executable, "-m", "pvmon.cli"]

needs_build = pytest.mark.skipif(uclib.built_library() is None,
                                 reason="patched Unicorn not built (pvmon engine build)")


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "LIBUNICORN_PATH"}
    env.update(extra)
    return env


def test_the_build_id_hashes_the_patch_bytes(tmp_path, monkeypatch):
    before = uclib.build_id()
    for name in uclib.PATCHES:
        (tmp_path / name).write_bytes((uclib.PATCH_DIR / name).read_bytes() + b"\n")
    monkeypatch.setattr(uclib, "PATCH_DIR", tmp_path)
    assert uclib.build_id() != before
    assert uclib.library_dir().name == f"unicorn-2.1.4-pvmon-{uclib.build_id()}"


def test_the_patch_applies_to_the_gen_tb_start_it_describes():
    text = (uclib.PATCH_DIR / uclib.PATCHES[0]).read_text()
    assert "+++ b/qemu/include/exec/gen-icount.h" in text
    assert "tcg_gen_brcondi_i32(tcg_ctx, TCG_COND_GE, flag, 0, no_exit_request)" in text


@needs_build
def test_this_process_and_children_load_the_patched_library():
    d = uclib.describe()
    assert d["patched"] and d["patches"] == list(uclib.PATCHES)
    out = subprocess.run(PVMON + ["engine", "info"], check=False, capture_output=True, text=True,
                         env=_env(), timeout=60)
    assert out.returncode == 0 and "patched: yes" in out.stdout


def test_stock_choice_and_an_explicit_path_keep_the_wheel(tmp_path):
    out = subprocess.run(PVMON + ["engine", "info"], check=False, capture_output=True, text=True,
                         env=_env(PVMON_UNICORN="stock"), timeout=60)
    assert out.returncode == 0, out.stderr
    assert "patched: no" in out.stdout and "site-packages" in out.stdout
    # without any build in this cache, pvmon runs on the wheel and says how to build
    out = subprocess.run(PVMON + ["engine", "info"], check=False, capture_output=True, text=True,
                         env=_env(PVMON_CACHE=str(tmp_path)), timeout=60)
    assert "not built: run `pvmon engine build`" in out.stdout


def test_a_bad_sdist_is_one_line_and_installs_nothing(tmp_path):
    bogus = tmp_path / "unicorn-2.1.4.tar.gz"
    bogus.write_bytes(b"not a tarball")
    cache = tmp_path / "cache"
    p = subprocess.run(PVMON + ["engine", "build", "--sdist", str(bogus)], check=False,
                       capture_output=True, text=True, env=_env(PVMON_CACHE=str(cache)),
                       timeout=120)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert lines[-1].startswith("pvmon: error:") and "Traceback" not in p.stderr
    assert not list((cache / "engine").glob("unicorn-*/libunicorn.so.2"))


def _events(path):
    with TraceReader(path) as r:
        return [msgpack.packb(ev) for ev in r]


def _record(guest, path, **env):
    p = subprocess.run(PVMON + ["run", guest, "--quiet", "--record", str(path)], check=False,
                       capture_output=True, text=True, env=_env(**env), timeout=600)
    assert p.returncode in (0, 1), p.stderr
    return _events(path)


@needs_build
def test_a_guest_runs_event_for_event_the_same_on_both_libraries(tmp_path):
    stock = _record("pvtest-v2", tmp_path / "stock.pvt", PVMON_UNICORN="stock")
    patched = _record("pvtest-v2", tmp_path / "patched.pvt")
    assert len(stock) > 100
    assert stock == patched


@needs_build
def test_a_debian_boot_differs_on_the_stock_library_only_by_xens_msr_policy(debian612,
                                                                           tmp_path):
    """Xen's MSR policy needs the patched engine's RDMSR/WRMSR hook: on the
    stock library Linux reads the engine's own MSRs, so it misses the three
    #GPs Xen gives its rdmsr_safe probes and sees QEMU's MISC_ENABLE (fast
    strings off) and PAT, as pvmon showed before session 13."""
    _record("debian-6.12", tmp_path / "stock.pvt", PVMON_UNICORN="stock")
    _record("debian-6.12", tmp_path / "patched.pvt")
    stock = list(TraceReader(tmp_path / "stock.pvt"))
    patched = list(TraceReader(tmp_path / "patched.pvt"))

    def gps(evs):
        return [e for e in evs if e["k"] == "fault" and e["vec"] == 13]

    def console(evs):
        return b"".join(e["data"] for e in evs if e["k"] == "con")

    assert len(gps(patched)) == len(gps(stock)) + 3
    assert b"Disabled fast string operations" in console(stock)
    assert b"Disabled fast string operations" not in console(patched)
    assert b"WB  WT  UC- UC  WC  WP  UC  UC" in console(patched)
    def calls(evs):
        return sum(e["k"] == "hc" for e in evs)

    assert abs(calls(patched) - calls(stock)) < 20
