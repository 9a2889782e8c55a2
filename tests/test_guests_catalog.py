"""Guest catalog resolution, Debian version ordering, fetch errors and the guests CLI."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

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
    assert set(rows) == {"pvtest-v1", "pvtest-v2", "pvtest-v2-rules", "pvtest-v2-poc",
                         "pvtest-v2-smp",
                         "pvtest-v2-pvh", "pvtest-lguest", "pvtest-lguest-pae",
                         "pvtest-vmi", "pvtest-kvm",
                         "debian-6.1", "debian-6.12", "debian-7.2", "uml-6.1", "uml-6.12",
                         "busybox"}
    assert (rows["uml-6.1"]["kind"], rows["uml-6.1"]["status"]) == ("uml", "not fetched")
    assert rows["debian-6.1"]["status"] == "not fetched"
    assert (rows["debian-6.12"]["suite"], rows["debian-7.2"]["suite"]) == ("bookworm", "sid")
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
    assert "fetchable guests are debian-<major>.<minor> (debian-6.1, debian-6.12, debian-7.2)" \
        in r.output and "bookworm, trixie, forky, sid" in r.output
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


# ------------------------------------------------------------------ suites


def test_series_patterns_take_each_series_signed_image_and_nothing_else():
    s61, s612, s72 = (debian.SERIES[n] for n in ("debian-6.1", "debian-6.12", "debian-7.2"))
    assert s61.match("linux-image-6.1.0-57-cloud-amd64")
    assert not s61.match("linux-image-6.12.118+deb12-cloud-amd64")
    assert s612.match("linux-image-6.12.118+deb12-cloud-amd64")
    assert s612.match("linux-image-6.12.90+deb13.1-cloud-amd64")          # trixie's
    assert s72.match("linux-image-7.2.13+deb14-cloud-amd64")
    for other in ("linux-image-7.2.13+deb14-cloud-amd64-dbg", "linux-image-cloud-amd64",
                  "linux-binary-7.2.13+deb14-cloud-amd64", "linux-image-7.2.13+deb14-amd64",
                  "linux-image-7.20.1+deb14-cloud-amd64"):
        assert not s72.match(other), other
    assert (s61.suite, s612.suite, s72.suite) == ("bookworm", "bookworm", "sid")


def test_a_series_pvmon_does_not_know_needs_a_suite(cache):
    with pytest.raises(FetchError, match=r"debian-7\.3 is not a series pvmon knows.*"
                                         r"--suite bookworm\|trixie\|forky\|sid"):
        debian.series_for("debian-7.3")
    assert debian.series_for("debian-7.3", "sid") == debian.Series("7.3", "sid")
    assert debian.series_for("debian-6.12", "trixie").suite == "trixie"
    with pytest.raises(FetchError, match="unknown Debian suite 'potato'"):
        debian.series_for("debian-6.12", "potato")
    with pytest.raises(FetchError, match="not a Debian kernel name"):
        debian.series_for("linux-7.2")


def test_the_apt_source_points_every_apt_path_into_pvmons_cache(cache):
    """apt itself (apt-config dump) resolves every file through which it would
    read or write the system's sources, pins, lists, status or package cache to
    a path under <cache>/apt/<suite>: nothing under /etc/apt or /var/lib/apt."""
    if shutil.which("apt-config") is None:
        pytest.skip("needs apt-config")
    from pvmon.guests import apt
    src = apt.AptSource("sid")
    out = subprocess.run(["apt-config", *src.options(), "dump"], capture_output=True,
                         text=True, check=True).stdout
    conf = {k.lower(): v for k, v in (ln.rstrip(";").split(" ", 1) for ln in out.splitlines()
                                      if " " in ln)}
    root = str(cache / "apt" / "sid")
    for key in ("Dir::Etc::SourceList", "Dir::Etc::SourceParts", "Dir::Etc::Preferences",
                "Dir::Etc::PreferencesParts", "Dir::State::Lists", "Dir::State::status",
                "Dir::Cache"):
        assert conf[key.lower()].strip('"').startswith(root), (key, conf[key.lower()])
    assert conf["apt::architecture"] == '"amd64"'
    assert src.sources_list() == (
        "deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
        "http://deb.debian.org/debian sid main\n")
    lines = apt.AptSource("bookworm").sources_list().splitlines()
    assert [ln.split()[-2] for ln in lines] == ["bookworm", "bookworm-updates",
                                                 "bookworm-security"]
    assert all("signed-by=/usr/share/keyrings/debian-archive-keyring.gpg" in ln for ln in lines)


def test_a_kernel_cached_from_another_suite_is_replaced_only_with_force(cache):
    if shutil.which("apt-get") is None:
        pytest.skip("needs apt")
    d = debian.guest_dir("debian-7.2")
    d.mkdir(parents=True)
    for f in ("vmlinuz", "vmlinux"):
        (d / f).write_bytes(b"x")
    (d / "meta.json").write_text(json.dumps({"suite": "forky", "package": "p", "version": "1"}))
    with pytest.raises(FetchError, match=r"debian-7\.2 in the cache came from Debian forky "
                                         r"\(p 1\); pass --force to replace it with sid's"):
        debian.fetch_debian("debian-7.2")


def test_cli_refuses_a_suite_with_a_suite_and_an_unknown_suite_in_one_line(cache):
    for args, want in ((["sid", "--suite", "trixie"], "sid is a suite already"),
                       (["debian-6.12", "--suite", "potato"], "unknown Debian suite 'potato'"),
                       (["debian-9.9"], "debian-9.9 is not a series pvmon knows")):
        r = CliRunner().invoke(cli, ["guests", "fetch", *args])
        assert r.exit_code == 2 and want in r.output, (args, r.output)
        assert "Traceback" not in r.output


def _deb(tmp_path: Path, name: str, files: dict[str, bytes]) -> Path:
    pkg = tmp_path / f"{name}-tree"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: 7.2.13-1\nArchitecture: amd64\n"
        "Maintainer: t <t@example.org>\nDescription: test\n")
    for rel, data in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_bytes(data)
    deb = tmp_path / f"{name}.deb"
    subprocess.run(["dpkg-deb", "-Zxz", "--root-owner-group", "-b", str(pkg), str(deb)],
                   check=True, capture_output=True)
    return deb


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb to build a .deb")
@pytest.mark.parametrize("pure_python", [False, True])
def test_a_split_kernel_is_found_in_its_linux_binary_package(tmp_path, monkeypatch, pure_python):
    """Debian 7.x: linux-image-<R> holds no kernel; linux-binary-<R> has
    /usr/lib/modules/<R>/vmlinuz and linux-base-<R> its config and System.map."""
    rel = "7.2.13+deb14-cloud-amd64"
    debs = {
        f"linux-image-{rel}": _deb(tmp_path, f"linux-image-{rel}",
                                   {f"usr/share/doc/linux-image-{rel}/x": b""}),
        f"linux-binary-{rel}": _deb(tmp_path, f"linux-binary-{rel}",
                                    {f"usr/lib/modules/{rel}/vmlinuz": b"bz"}),
        f"linux-base-{rel}": _deb(tmp_path, f"linux-base-{rel}",
                                  {f"usr/lib/modules/{rel}/config": b"CONFIG_XEN_PV=y\n",
                                   f"usr/lib/modules/{rel}/System.map": b"placeholder\n"}),
    }
    if pure_python:
        empty = tmp_path / "emptybin"
        empty.mkdir()
        monkeypatch.setenv("PATH", str(empty))
    trees = tmp_path / "root"
    for pkg, deb in debs.items():
        debian.unpack_deb(deb, trees / pkg, debian._UNPACK)
    vmlinuz, release, extra = debian._kernel_files(trees)
    assert vmlinuz.read_bytes() == b"bz" and release == rel
    assert vmlinuz.relative_to(trees).parts[0] == f"linux-binary-{rel}"
    assert extra["config"].read_bytes() == b"CONFIG_XEN_PV=y\n" and "System.map" in extra


def test_cache_list_shows_each_suites_apt_lists_and_suite_fetched_kernels(cache):
    from pvmon.guests import cachedir
    (cache / "apt" / "sid" / "lists").mkdir(parents=True)
    (cache / "apt" / "sid" / "updated").write_text("x")
    (cache / "apt" / "potato").mkdir()
    d = cache / "guests" / "debian-7.3"
    d.mkdir(parents=True)
    (d / "meta.json").write_text(json.dumps({"suite": "sid", "package": "linux-image-7.3.1",
                                             "version": "7.3.1-1"}))
    items = {(i.kind, i.name): i for i in cachedir.items()}
    assert "apt lists of Debian sid" in items[("apt", "sid")].origin
    assert ("other", "potato") in items
    assert items[("kernel", "debian-7.3")].origin == "apt sid: linux-image-7.3.1 7.3.1-1"


def _tree_state(*roots: str) -> dict[str, tuple[int, int]]:
    import os
    state = {}
    for root in roots:
        for dirpath, dirs, files in os.walk(root):
            for f in dirs + files:
                p = os.path.join(dirpath, f)
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                state[p] = (st.st_mtime_ns, st.st_size)
    return state


@pytest.mark.debian
@pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt")
def test_updating_resolving_and_downloading_from_sid_leaves_the_systems_apt_untouched(
        cache, tmp_path):
    """A real apt-get update, apt-cache search/policy/show and apt-get download
    against sid: /etc/apt, /var/lib/apt and /var/cache/apt are as they were."""
    from pvmon.guests import apt
    roots = ("/etc/apt", "/var/lib/apt", "/var/cache/apt")
    before = _tree_state(*roots)
    src = apt.AptSource("sid")
    try:
        src.update()
    except FetchError as exc:
        pytest.skip(f"cannot reach Debian sid: {exc}")
    cand = debian.resolve_package("debian-7.2")
    deps = debian._split_packages(src, cand)
    assert [d for d, _v in deps] == [cand.package.replace("linux-image-", p)
                                     for p in ("linux-base-", "linux-binary-")] or deps == []
    debs = src.download([(cand.package, cand.version)], tmp_path)   # the 2 kB image package
    assert debs[cand.package].stat().st_size > 0
    assert _tree_state(*roots) == before
    assert (cache / "apt" / "sid" / "lists").is_dir() and src.updated_at() is not None


@pytest.mark.debian
@pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt")
def test_fetching_a_suite_by_name_fetches_its_newest_series():
    try:
        series = debian.newest_series("sid")
    except FetchError as exc:
        pytest.skip(f"cannot reach Debian sid: {exc}")
    r = CliRunner().invoke(cli, ["guests", "fetch", "sid"])
    assert r.exit_code == 0, r.output
    assert f"sid: newest cloud kernel series is {series.version}: {series.name}" in r.output
    meta = debian.read_meta(series.name)
    assert meta and meta["suite"] == "sid" and f"{meta['package']} {meta['version']} from sid" \
        in r.output
    assert catalog.resolve(series.name).package == meta["package"]
