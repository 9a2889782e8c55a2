"""`pvmon boot` in a real terminal: tmux runs it, send-keys types, capture-pane reads."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class Tmux:
    def __init__(self, command: str, width: int = 100, height: int = 30) -> None:
        self.name = f"pvmon-test-{uuid.uuid4().hex[:8]}"
        subprocess.run(["tmux", "new-session", "-d", "-s", self.name, "-x", str(width),
                        "-y", str(height), command], check=True)

    def screen(self) -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", self.name, "-S", "-40"],
                              capture_output=True, text=True, check=False).stdout

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

    def wait_for(self, *texts: str, timeout: float = 30.0) -> str:
        t0 = time.monotonic()
        while True:
            screen = self.screen()
            if all(t in screen for t in texts):
                return screen
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"{texts} not on screen after {timeout} s:\n{screen}")
            time.sleep(0.1)

    def wait_gone(self, text: str, timeout: float = 10.0) -> None:
        t0 = time.monotonic()
        while text in self.screen():
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"{text!r} still on screen after {timeout} s")
            time.sleep(0.1)

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True,
                       check=False)


def test_pvmon_boot_in_a_real_terminal_answers_keys_and_prints_the_summary():
    term = Tmux(f"cd {ROOT} && {sys.executable} -m pvmon boot --paused; "
                "echo EXIT=$?; sleep 30")
    try:
        screen = term.wait_for("PAUSED", "paused after #0", "Quit")
        assert "hypercalls" in screen and "registers" in screen and "console" in screen
        term.keys("n")
        term.wait_for("paused after #1")
        term.keys("?")
        term.wait_for("Live boot:", "Break", "Step")   # the help screen lists the keys
        term.keys("Escape")
        term.wait_gone("Live boot:")
        term.keys("space")
        screen = term.wait_for("FINISHED", "exit: shutdown", "119 passed")
        term.keys("f")
        term.wait_for("Show only")
        term.keys("sched", "Enter")
        screen = term.wait_for("hypercalls [sched]")
        stream_lines = [ln for ln in screen.splitlines() if " SCHED " in ln]
        assert stream_lines and all("sched_op" in ln for ln in stream_lines)
        assert "console_io(" not in screen
        term.keys("q")
        screen = term.wait_for("EXIT=0", "virtual time:")
        assert "exit: shutdown - SCHEDOP_shutdown(poweroff)" in screen
    finally:
        term.close()
