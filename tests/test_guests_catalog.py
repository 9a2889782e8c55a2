"""Guest catalog resolution, Debian version ordering, fetch errors and the guests CLI."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from pvmon.cli import cli
from pvmon.errors import FetchError, GuestImageError, GuestNotFound
from pvmon.guests import catalog, debian
from tests.test_loaders_bzimage import COMPRESSORS, ELF, make_bzimage


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PVMON_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_cache_root_env(cache):
    assert debian.cache_root() == cache
    assert debian.guest_dir("debian-6.12") == cache / "guests" / "debian-6.12"


def test_unknown_name_lists_known(cache):
    with pytest.raises(GuestNotFound) as exc:
        catalog.resolve("debian-7.0")
    for known in ("pvtest-v1", "pvtest-v2", "debian-6.1", "debian-6.12"):
        assert known in str(exc.value)


def test_uncached_debian_says_how_to_fetch(cache):
    with pytest.raises(GuestNotFound, match=r"pvmon guests fetch debian-6\.12"):
        catalog.resolve("debian-6.12")


def test_builtin_default(cache):
    img = catalog.IMAGES_DIR / "pvtest-v2.elf"
    if img.is_file():
        g = catalog.resolve(None)
        assert (g.name, g.kind, g.vmlinux) == ("pvtest-v2", "builtin", img)
        assert len(g.sha256) == 64
    else:
        with pytest.raises(GuestNotFound, match="pvtest-v2.*does not exist"):
            catalog.resolve(None)


def test_directory_and_fetch_errors(cache, tmp_path):
    with pytest.raises(GuestNotFound, match="not a regular file"):
        catalog.resolve(str(tmp_path))
    with pytest.raises(GuestNotFound, match="fetchable guests"):
        catalog.fetch("pvtest-v9")


def test_path_elf(cache, tmp_path):
    (tmp_path / "vmlinux-1.2.3").write_bytes(ELF)
    (tmp_path / "System.map-1.2.3").write_text(
        "ffffffff81000000 T _text\nffffffff81000078 T startup_xen\nffffffff81001000 T x\n")
    (tmp_path / "config-1.2.3").write_text("CONFIG_XEN_PV=y\n")
    g = catalog.resolve(str(tmp_path / "vmlinux-1.2.3"))
    assert g.kind == "path" and g.vmlinuz is None and g.release == "1.2.3"
    assert g.system_map == tmp_path / "System.map-1.2.3"
    assert g.config == tmp_path / "config-1.2.3"
    assert g.symbols().format(0xFFFFFFFF8100007A) == "startup_xen+0x2"


def test_path_bzimage_cached_by_sha256(cache, tmp_path):
    bz = tmp_path / "vmlinuz"
    bz.write_bytes(make_bzimage(COMPRESSORS["lz4"](ELF), len(ELF)))
    g = catalog.resolve(str(bz))
    assert g.vmlinuz == bz and g.vmlinux.read_bytes() == ELF
    assert g.vmlinux.is_relative_to(cache / "guests" / "by-sha256")
    assert g.sha256 == hashlib.sha256(ELF).hexdigest()
    assert catalog.resolve(str(bz)).vmlinux == g.vmlinux


def test_path_garbage(cache, tmp_path):
    p = tmp_path / "vmlinuz"
    p.write_bytes(b"\x00garbage" * 500)
    with pytest.raises(GuestImageError, match="HdrS"):
        catalog.resolve(str(p))


def test_list_guests_uncached(cache):
    rows = {r["name"]: r for r in catalog.list_guests()}
    assert set(rows) == {"pvtest-v1", "pvtest-v2", "pvtest-v2-rules", "pvtest-v2-poc", "debian-6.1",
                         "debian-6.12",
                         "busybox"}
    assert rows["debian-6.1"]["status"] == "not fetched"
    assert (rows["busybox"]["kind"], rows["busybox"]["status"]) == ("initramfs", "not fetched")
    assert rows["pvtest-v1"]["status"] in ("built in", "missing")


VERSIONS = ["6.1.192-2", "6.1.19-1", "6.12.117-1~deb12u1", "6.12.117-1", "6.12.9-1~bpo12+1",
            "1:0.1-1", "6.12.117-1~deb12u1+b1", "6.12.117~rc1-1", "6.1.0-56", "6.12.100-1a"]


def _dpkg(a: str, op: str, b: str) -> bool:
    return subprocess.run(["dpkg", "--compare-versions", a, op, b], check=False).returncode == 0


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="needs dpkg to cross-check")
def test_compare_versions_matches_dpkg():
    for a in VERSIONS:
        for b in VERSIONS:
            ours = debian.compare_versions(a, b)
            lt, eq = _dpkg(a, "lt", b), _dpkg(a, "eq", b)
            assert (ours < 0, ours == 0) == (lt, eq), (a, b)


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb to build a .deb")
@pytest.mark.parametrize("comp", ["xz", "gzip", "zstd"])
def test_unpack_deb_pure_python(tmp_path, monkeypatch, comp):
    pkg = tmp_path / "pkg"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "boot").mkdir()
    (pkg / "DEBIAN" / "control").write_text(
        "Package: fake-image\nVersion: 1.0-1\nArchitecture: amd64\n"
        "Maintainer: t <t@example.org>\nDescription: test\n")
    (pkg / "boot" / "vmlinuz-1.0").write_bytes(b"kernel bytes")
    deb = tmp_path / "fake.deb"
    subprocess.run(["dpkg-deb", f"-Z{comp}", "--root-owner-group", "-b", str(pkg), str(deb)],
                   check=True, capture_output=True)
    empty = tmp_path / "emptybin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no dpkg-deb: the ar + tar fallback runs
    debian.unpack_deb(deb, tmp_path / "out")
    assert (tmp_path / "out" / "boot" / "vmlinuz-1.0").read_bytes() == b"kernel bytes"


def test_no_apt(cache, monkeypatch, tmp_path):
    empty = tmp_path / "emptybin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(FetchError, match="apt-get not found.*vmlinuz or vmlinux"):
        debian.fetch_debian("debian-6.1")


def test_cli_errors_are_one_line(cache):
    r = CliRunner().invoke(cli, ["guests", "fetch", "nonesuch"])
    assert r.exit_code == 2
    assert "fetchable guests are debian-6.1, debian-6.12" in r.output
    r = CliRunner().invoke(cli, ["guests", "list"])
    assert r.exit_code == 0 and "not fetched" in r.output and "debian-6.12" in r.output


@pytest.mark.debian
@pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt")
@pytest.mark.parametrize("name", list(debian.SERIES))
def test_debian_resolution_and_cache(name):
    cand = debian.resolve_package(name)
    assert debian.SERIES[name].match(cand.package)
    assert not cand.package.endswith(("-dbg", "-unsigned"))
    g = catalog.debian_guest(name)  # fetches into the user cache if missing
    meta = json.loads((debian.guest_dir(name) / "meta.json").read_text())
    assert (g.package, g.version) == (meta["package"], meta["version"])
    assert g.sha256 == meta["vmlinux_sha256"]
    assert g.release and g.vmlinuz.name == "vmlinuz" and g.config is not None
    assert g.symbols().address("startup_xen") is not None
    again = debian.fetch_debian(name)  # same version cached -> no-op
    if (again["package"], again["version"]) == (g.package, g.version):
        assert again["fetched"] is False
    rows = {r["name"]: r for r in catalog.list_guests()}
    assert rows[name]["status"] == "cached" and rows[name]["version"] == g.version
    r = CliRunner().invoke(cli, ["guests", "fetch", name])
    assert r.exit_code == 0 and g.version in r.output and meta["vmlinux_sha256"] in r.output
