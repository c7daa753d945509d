"""$PACKAGER_HOME: where the store, job folders and caches live (on the ground floor, so every layer can find it)."""

from __future__ import annotations

import os
from pathlib import Path


def packager_home(home: Path | str | None = None) -> Path:
    """$PACKAGER_HOME, else ~/.packager."""
    # Absolute, because workers run with the store as their working directory.
    chosen = home if home is not None else os.environ.get("PACKAGER_HOME") or Path.home() / ".packager"
    return Path(chosen).expanduser().absolute()


def tuning_cache_dir(home: Path | str | None = None) -> Path:
    """The tuning records every build and `tune` share: $PACKAGER_HOME/tuning."""
    return packager_home(home) / "tuning"
