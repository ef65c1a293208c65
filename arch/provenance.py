"""Where a result came from: package versions and timestamps, captured one way everywhere.

Datasets, predictors, checkpoints, exports and benchmark CSVs all record the versions that made
them and when; one helper each, so that two files never disagree on the format (before: five
version captures and three timestamp formats)."""

from __future__ import annotations

import platform
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from typing import Iterable


def versions(packages: Iterable[str], python: bool = True, missing: str | None = "unknown") -> dict[str, str]:
    """{"python": "3.11.7", package: version, ...} from the installed distributions (no import
    needed, so asking for torch's version does not load torch). A package that is not installed
    maps to ``missing``, or is left out when ``missing`` is None."""
    out = {"python": platform.python_version()} if python else {}
    for pkg in packages:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            if missing is not None:
                out[pkg] = missing
    return out


def now_iso() -> str:
    """The current time in UTC, ISO 8601 to the second (``2026-12-01T19:40:00+00:00``)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
