"""Shell completion of guest and backend names, through click's own completion
machinery (``_PVMON_COMPLETE=bash_complete``) in a real ``pvmon`` process."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.hostile_support import ROOT


def _offered(words: str, env: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """(type, value) of every completion bash would get for the last of ``words``."""
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    full = {**os.environ, "PYTHONPATH": str(ROOT), "_PVMON_COMPLETE": "bash_complete",
            "COMP_WORDS": words, "COMP_CWORD": str(cword), **(env or {})}
    p = subprocess.run([sys.executable, "-m", "pvmon"], capture_output=True, text=True,
                       env=full, timeout=60, check=False)
    assert p.returncode == 0 and not p.stderr, p.stderr
    return [tuple(ln.split(",", 1)) for ln in p.stdout.splitlines()]


def test_run_completes_guest_names_from_the_catalog():
    assert _offered("pvmon run pvt") == [("plain", n) for n in
                                          ("pvtest-v1", "pvtest-v2", "pvtest-v2-rules",
                                           "pvtest-v2-poc", "pvtest-v2-smp", "pvtest-v2-pvh",
                                           "pvtest-lguest",
                                           "pvtest-lguest-pae", "pvtest-vmi", "pvtest-kvm")]
    assert ("plain", "debian-6.12") in _offered("pvmon boot deb")
    assert ("plain", "pvtest-v2") in _offered("pvmon run ")


def test_a_guest_given_as_a_path_completes_as_a_file():
    assert _offered("pvmon run ./vml") == [("file", "./vml")]


def test_backend_options_complete_from_the_registry_with_profiles(tmp_path):
    (tmp_path / "acme.toml").write_text(
        "name = 'acme-4.17'\nbase = 'xen-4.17'\nversion = '4.17.7-acme'\n")
    (tmp_path / "broken.toml").write_text("name = 'broken'\nbase = 'xen-9.9'\n")
    env = {"PVMON_PROFILES": str(tmp_path)}
    assert _offered("pvmon run --backend xen-4.1", env) == [
        ("plain", "xen-4.11"), ("plain", "xen-4.17"), ("plain", "xen-4.17-release")]
    boot = [v for _, v in _offered("pvmon boot --backend ", env)]
    assert "xen-3.4" in boot and "acme-4.17" in boot and "broken" not in boot
    assert _offered("pvmon replay t.pvt --backend xen-3.4,xen-4.2", env) == [
        ("plain", "xen-3.4,xen-4.21"), ("plain", "xen-3.4,xen-4.22")]
    assert _offered("pvmon replay t.pvt --guest pvtest-v2-r") == [("plain", "pvtest-v2-rules")]


def test_a_profile_directory_that_is_a_file_still_completes_the_built_in_backends(tmp_path):
    bad = tmp_path / "not-a-dir"
    bad.write_text("x")
    assert _offered("pvmon run --backend xen-3", {"PVMON_PROFILES": str(bad)}) == [
        ("plain", "xen-3.4")]
