"""Lazy package exports: ``import prompteol`` stays light (no torch) until a name is used."""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib import import_module
from typing import Any


def lazy_exports(package: str, exports: dict[str, str], names: list[str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for a package whose public ``names`` live in the submodules ``exports``.

    ``exports`` maps a name to the relative module that defines it; the value is imported on first
    access and cached in the package namespace.
    """

    def __getattr__(name: str) -> Any:
        if name in exports:
            value = getattr(import_module(exports[name], package), name)
            setattr(sys.modules[package], name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return names

    return __getattr__, __dir__
