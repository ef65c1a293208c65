"""The FamilyRegistry objects modules hold: what the checks that every registry knows every
model family walk (tests/arch/test_family.py for the lower floors, tests/search for search/)."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Iterable

from moenas.arch.family import FamilyRegistry


def package_modules(*packages: str) -> list[str]:
    """Every module of ``packages`` (nested ones included), by dotted name."""
    out = []
    for package in packages:
        path = importlib.import_module(package).__path__
        out += [info.name for info in pkgutil.walk_packages(path, f"{package}.")]
    return out


def family_registries(modules: Iterable[str]) -> dict[str, FamilyRegistry]:
    """Every FamilyRegistry ``modules`` hold, by ``module.NAME`` where first found (each once)."""
    found: dict[int, tuple[str, FamilyRegistry]] = {}
    for module in modules:
        for name, value in vars(importlib.import_module(module)).items():
            if isinstance(value, FamilyRegistry):
                found.setdefault(id(value), (f"{module}.{name}", value))
    return dict(found.values())
