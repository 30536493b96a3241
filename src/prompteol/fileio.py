"""File machinery shared by every writer of records: atomic writes and an exclusive lock.

- :func:`write_json_atomic` / :func:`write_text_atomic`: a temporary file in the same folder,
  flushed and fsynced, then renamed over the target, so a reader (or a rerun after a kill) sees the
  old file or the new one, never half of one. The file gets the mode the umask gives a new file
  (``mkstemp`` alone would leave it 0600).
- :class:`FileLock`: a non-blocking ``flock`` on a lock file; a second holder fails at once with
  the caller's message. The kernel releases it when the process dies, so a killed run never blocks
  the next one.

Nothing here imports torch.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import InputError

__all__ = ["write_json_atomic", "write_text_atomic", "FileLock", "umask_mode"]


def umask_mode() -> int:
    """The mode a new regular file gets under the current umask (0644 under umask 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically (never a partial file)."""
    return write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, allow_nan=True) + "\n")


class FileLock:
    """An exclusive, non-blocking lock held on ``path`` for the duration of a ``with`` block.

    ``busy_message`` is the :class:`~prompteol.errors.InputError` raised when another process holds
    it. The lock file is removed on exit while still held (a killed holder leaves it behind: harmless,
    the next holder reuses it).
    """

    def __init__(self, path: str | Path, busy_message: str):
        self.path = Path(path)
        self.busy_message = busy_message
        self.fd: int | None = None

    def __enter__(self) -> FileLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, umask_mode())
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.fd)
            self.fd = None
            raise InputError(self.busy_message) from None
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = None
