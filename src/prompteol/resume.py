"""Resuming from a record: read a record back, and say which of its settings differ from this run's.

The one settings-differ of every resumable run: the corpus engine's progress record and manifest
(:mod:`prompteol.corpus.resume`) and the scaling study's partial cell records (:mod:`prompteol.scale.run`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["differences", "read_record"]


def differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(key path, old value, new value)`` of every setting that differs (nested mappings key by key)."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append((f"{prefix}{key}", a, b))
    return out


def read_record(path: Path) -> dict[str, Any]:
    """A resume record (progress record or manifest) as a dict; ``ValueError`` when it is unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(str(exc)) from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data
