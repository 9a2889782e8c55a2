"""Where pvmon keeps what it downloads and builds: fetched guest kernels
(``<cache>/guests``) and the patched Unicorn library (``<cache>/engine``)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$PVMON_CACHE`` or the platform user cache dir for "pvmon" (not created here)."""
    env = os.environ.get("PVMON_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("pvmon"))
