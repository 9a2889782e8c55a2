"""Helpers for the TUI tests: drive a real app (real engine, real guests,
real traces) with Textual's Pilot from plain synchronous tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from pvmon.guests.catalog import resolve
from pvmon.session import Session
from pvmon.ui.app import PvmonApp
from pvmon.ui.live_session import BootSpec, LiveSession


def drive(app: PvmonApp, script: Callable[..., Awaitable[None]],
          size: tuple[int, int] = (100, 30)) -> None:
    """Run ``app`` headless and ``await script(pilot)`` inside it."""
    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await script(pilot)
    asyncio.run(main())


async def until(pilot, cond: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    """Let the app run until ``cond()`` holds (AssertionError after ``timeout`` s)."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await pilot.pause(0.02)


def live_app(guest: str = "pvtest-v2", **spec) -> tuple[PvmonApp, LiveSession]:
    """An app on a live boot of ``guest``; the wall clock is frozen so that
    speed and rate figures (the only host-dependent numbers) do not vary."""
    live = LiveSession.create(BootSpec(resolve(guest), **spec), clock=lambda: 0.0)
    return PvmonApp(live=live), live


def record(guest: str, path: Path) -> Path:
    """Boot ``guest`` headless, recording to ``path``."""
    Session(resolve(guest), record=path).run()
    return path


def reference_calls(guest: str = "pvtest-v2") -> list[tuple]:
    """(seq, name, ret, t) of every hypercall of an undisturbed run."""
    sess = Session(resolve(guest))
    out: list[tuple] = []
    sess.dispatch.call_listeners.append(
        lambda ev: out.append((ev["seq"], ev["name"], ev["ret"], ev["t"])))
    sess.run()
    return out
