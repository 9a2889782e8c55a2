"""`pvmon cache list` / `pvmon cache clean`: everything pvmon leaves in its cache
directory is shown with its size and origin, and can be removed by kind or age."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time

import pytest

from pvmon.guests import catalog
from tests.test_loaders_bzimage import COMPRESSORS, ELF, make_bzimage

PVMON = [sys.executable, "-m", "pvmon.cli"]
DAY = 86400


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("PVMON_CACHE", str(root))
    return root


def pvmon(*args):
    return subprocess.run(PVMON + [str(a) for a in args], capture_output=True, text=True,
                          timeout=120, check=False, env={**os.environ, "COLUMNS": "200"})


def _du(root):
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


def _listing():
    p = pvmon("cache", "list", "--json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def _fill(cache, tmp_path):
    """A vmlinuz passed by path (extracted), a fetched-looking kernel, a stale
    engine build and what an interrupted fetch leaves."""
    bz = tmp_path / "vmlinuz-9.9"
    bz.write_bytes(make_bzimage(COMPRESSORS["lz4"](ELF), len(ELF)))
    g = catalog.resolve(str(bz))
    kdir = cache / "guests" / "debian-6.12"
    kdir.mkdir(parents=True)
    for name in ("vmlinuz", "vmlinux"):
        (kdir / name).write_bytes(b"k" * 1000)
    (kdir / "meta.json").write_text(json.dumps({"package": "linux-image-x", "version": "1"}))
    stale = cache / "engine" / "unicorn-2.1.4-pvmon-000000000000"
    stale.mkdir(parents=True)
    (stale / "libunicorn.so.2").write_bytes(b"u" * 5000)
    (cache / "engine" / "build-000000000000.log").write_text("log\n")
    left = cache / "guests" / ".debian-6.1-x1y2"
    left.mkdir()
    (left / "linux-image.deb").write_bytes(b"d" * 3000)
    return bz, g


def test_cache_list_shows_every_item_with_size_origin_and_a_total(cache, tmp_path):
    bz, g = _fill(cache, tmp_path)
    doc = _listing()
    kinds = {i["kind"]: i for i in doc["items"]}
    assert set(kinds) == {"extracted", "kernel", "engine", "partial"}
    ex = kinds["extracted"]
    assert ex["origin"] == f"vmlinux extracted from {bz.resolve()}"
    assert ex["size"] >= len(ELF) and str(g.vmlinux.parent) in ex["paths"]
    assert kinds["engine"]["size"] == 5004 and "stale" in kinds["engine"]["origin"]
    assert kinds["partial"]["size"] == 3000
    assert doc["total"] == sum(i["size"] for i in doc["items"]) == _du(cache)
    text = pvmon("cache", "list").stdout
    assert "extracted" in text and str(bz.resolve()) in text and "total" in text
    # guests list shows the extracted kernel and the cache's total too
    listing = pvmon("guests", "list").stdout
    assert "extracted" in listing and f"in {len(doc['items'])} item(s)" in listing


def test_cache_clean_removes_by_kind_or_age_and_dry_run_removes_nothing(cache, tmp_path):
    _fill(cache, tmp_path)
    before = _du(cache)
    p = pvmon("cache", "clean", "--kind", "extracted", "--kind", "partial", "--dry-run")
    assert p.returncode == 0 and "would remove extracted" in p.stdout
    assert "would remove 2 item(s)" in p.stdout and _du(cache) == before
    p = pvmon("cache", "clean", "--kind", "extracted", "--kind", "partial")
    assert p.returncode == 0 and "removed 2 item(s)" in p.stdout
    assert {i["kind"] for i in _listing()["items"]} == {"kernel", "engine"}
    old = time.time() - 40 * DAY
    for path in (cache / "engine").rglob("*"):
        os.utime(path, (old, old))
    os.utime(cache / "engine" / "unicorn-2.1.4-pvmon-000000000000", (old, old))
    p = pvmon("cache", "clean", "--older-than", "30d")
    assert p.returncode == 0 and "removed 1 item(s)" in p.stdout, p.stdout
    assert {i["kind"] for i in _listing()["items"]} == {"kernel"}
    p = pvmon("cache", "clean", "--all")
    assert p.returncode == 0 and _listing()["items"] == []


def test_cache_clean_without_a_selection_or_with_a_bad_age_is_refused(cache):
    for args, msg in ((["cache", "clean"], "say what to remove"),
                      (["cache", "clean", "--older-than", "soon"], "not an age"),
                      (["cache", "clean", "--all", "--kind", "engine"], "--all removes")):
        p = pvmon(*args)
        assert p.returncode == 2 and msg in p.stderr and "Traceback" not in p.stderr


def test_a_fetched_kernels_vmlinuz_given_by_path_reuses_its_vmlinux(cache, tmp_path):
    bz = make_bzimage(COMPRESSORS["lz4"](ELF), len(ELF))
    kdir = cache / "guests" / "debian-6.12"
    kdir.mkdir(parents=True)
    (kdir / "vmlinuz").write_bytes(bz)
    (kdir / "vmlinux").write_bytes(ELF)
    (kdir / "meta.json").write_text(json.dumps(
        {"package": "linux-image-x", "version": "1",
         "vmlinuz_sha256": hashlib.sha256(bz).hexdigest()}))
    copy = tmp_path / "vmlinuz"
    copy.write_bytes(bz)
    g = catalog.resolve(str(copy))
    assert g.vmlinux == kdir / "vmlinux" and g.sha256 == hashlib.sha256(ELF).hexdigest()
    assert not (cache / "guests" / "by-sha256").exists()
