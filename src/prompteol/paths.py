"""Where prompteol keeps its caches.

The root is, in order of precedence: the ``cache_dir`` argument (CLI ``--cache-dir``),
the ``PROMPTEOL_CACHE`` environment variable, then the user's cache folder
(``~/.cache/prompteol`` on Linux, via platformdirs). Under it:

- ``models/<alias>/``: converted packaged models (transformers folders, fast to load);
- ``gguf/<sha256-prefix>/``: converted user GGUF files;
- ``downloads/``: wheels while a pull runs (removed after a successful pull);
- ``embeddings.sqlite``: the persistent embedding cache;
- ``fingerprints.json``: memoised sha256 of local weight files.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_root", "models_dir", "downloads_dir", "embeddings_db", "ENV_CACHE"]

ENV_CACHE = "PROMPTEOL_CACHE"


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("prompteol", appauthor=False))


def models_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    return cache_root(cache_dir) / "models"


def downloads_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    return cache_root(cache_dir) / "downloads"


def embeddings_db(cache_dir: str | os.PathLike | None = None) -> Path:
    return cache_root(cache_dir) / "embeddings.sqlite"
