"""File machinery shared by every writer of outputs and records: atomic writes and an exclusive lock.

- :func:`write_atomic` (any writer: ``np.save``, a plot, Parquet), :func:`write_json_atomic` /
  :func:`write_text_atomic`: a temporary file in the same folder, flushed and fsynced, then renamed
  over the target, so a reader (or a rerun after a kill) sees the old file or the new one, never
  half of one. The file gets the mode the umask gives a new file (``mkstemp`` alone would leave it
  0600, unreadable by the rest of a team); :func:`give_umask_mode` does the same for a file or a
  folder written some other way.
- :class:`FileLock`: a non-blocking ``flock`` on a lock file; a second holder fails at once with
  the caller's message. The kernel releases it when the process dies, so a killed run never blocks
  the next one.

Nothing here imports torch.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import InputError

__all__ = [
    "write_atomic", "write_json_atomic", "write_text_atomic", "FileLock", "umask_mode", "give_umask_mode",
    "give_umask_modes",
]  # fmt: skip


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask would set it for every thread for a moment)
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def umask_mode() -> int:
    """The mode a new regular file gets under the current umask (0644 under umask 022)."""
    return 0o666 & ~_umask()


def give_umask_mode(path: str | Path) -> None:
    """Give ``path`` the mode a new file (or, for a folder, a new folder) gets under the umask."""
    mode = umask_mode()
    if os.path.isdir(path):
        mode |= (mode & 0o444) >> 2  # a folder is searchable where it is readable (0755 under umask 022)
    os.chmod(path, mode)


def give_umask_modes(folder: str | Path) -> None:
    """:func:`give_umask_mode` to ``folder`` and everything in it (what a library saved 0600, such as
    the safetensors files of ``save_pretrained``)."""
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            give_umask_mode(os.path.join(root, name))
    give_umask_mode(folder)


def write_atomic(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Write ``path`` atomically through ``write(tmp)``, which writes the whole file at ``tmp``: a
    temporary file beside ``path`` with the same suffix (writers that choose a format by the
    extension, like matplotlib, see the right one). The file is fsynced, given the umask's mode and
    renamed over ``path``; on any failure the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        give_umask_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (temporary file, fsync, rename)."""
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


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
            # the holder before us may have removed the file between our open and our lock: then we
            # hold a lock on a file nobody else can find, and a third process could lock a new one
            if os.fstat(self.fd).st_ino != os.stat(self.path).st_ino:
                raise OSError("the lock file was replaced")
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
