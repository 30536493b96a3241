"""File machinery shared by every writer of outputs and records: atomic writes and an exclusive lock.

- :func:`write_atomic` (any writer: ``np.save``, a plot, Parquet), :func:`write_json_atomic` /
  :func:`write_text_atomic`: a temporary file in the same folder, flushed and fsynced, then renamed
  over the target, so a reader (or a rerun after a kill) sees the old file or the new one, never
  half of one. The file gets the mode the umask gives a new file (``mkstemp`` alone would leave it
  0600, unreadable by the rest of a team); :func:`give_umask_mode` does the same for a file or a
  folder written some other way.
- :func:`write_folder_atomic`: a folder built under a temporary name beside its target and renamed
  into place when complete (an existing target is moved aside first, removed after);
  :func:`replace_folder` is that last step alone;
- :class:`FileLock`: an exclusive ``flock`` on a lock file, the one lock of every writer: by default a
  second holder fails at once with the caller's message; with ``wait`` it waits (seconds, or ``None``:
  as long as it takes). The kernel releases it when the process dies, so a killed run never blocks the
  next one.

Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .errors import InputError

__all__ = [
    "write_atomic", "commit_atomic", "write_json_atomic", "write_text_atomic", "write_folder_atomic", "replace_folder", "FileLock",
    "umask_mode", "give_umask_mode", "give_umask_modes",
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
        commit_atomic(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def commit_atomic(tmp: str | Path, path: str | Path) -> Path:
    """The last step of every atomic file write: fsync the complete file ``tmp`` (written beside ``path``),
    give it the umask's mode and rename it over ``path`` (for writers that write ``tmp`` piece by piece)."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    give_umask_mode(tmp)
    os.replace(tmp, path)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (temporary file, fsync, rename)."""
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically (never a partial file)."""
    return write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, allow_nan=True) + "\n")


@contextlib.contextmanager
def write_folder_atomic(path: str | Path, *, shareable: bool = False) -> Iterator[Path]:
    """Build the folder ``path`` in the (new, empty) temporary folder this yields (``.tmp-NAME-PID``
    beside it), then put it in place with :func:`replace_folder`; on any failure the temporary folder is
    removed and ``path`` is untouched. ``shareable``: give everything in it the umask's modes first (what
    ``save_pretrained`` and copies leave 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if shareable:
            give_umask_modes(tmp)
        replace_folder(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_folder(tmp: str | Path, path: str | Path) -> None:
    """Rename the complete folder ``tmp`` to ``path``; an existing ``path`` is moved aside first (put back
    if the rename fails) and removed after."""
    tmp, path = Path(tmp), Path(path)
    old = None
    if path.exists():
        old = path.with_name(f".old-{path.name}-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        if old is not None:
            os.replace(old, path)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class FileLock:
    """An exclusive lock held on ``path`` for the duration of a ``with`` block.

    ``wait=0`` (default): when another process holds it, :class:`~prompteol.errors.InputError` with
    ``busy_message`` at once; ``wait=N``: retry for up to N seconds, then :class:`TimeoutError`;
    ``wait=None``: block until it is free. ``remove=True`` (default) removes the lock file on exit while
    still held (a killed holder leaves it behind: harmless, the next holder reuses it); ``remove=False``
    leaves it for the next holder (a lock file that many processes share, such as the embedding cache's).
    """

    #: seconds between two tries while waiting
    POLL_S = 0.02

    def __init__(self, path: str | Path, busy_message: str = "", *, wait: float | None = 0.0, remove: bool = True):
        self.path = Path(path)
        self.busy_message = busy_message or f"{self.path} is locked by another process"
        self.wait = wait
        self.remove = remove
        self.fd: int | None = None

    def _try(self, fd: int, block: bool) -> bool:
        """Take the lock on ``fd``; False when another process holds it (never when ``block``)."""
        if sys.platform == "win32":  # pragma: no cover - Windows
            import msvcrt

            try:
                msvcrt.locking(fd, msvcrt.LK_LOCK if block else msvcrt.LK_NBLCK, 1)
            except OSError:
                return False
            return True
        import fcntl

        try:
            fcntl.flock(fd, fcntl.LOCK_EX if block else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def __enter__(self) -> FileLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, umask_mode())
        deadline = None if self.wait is None else time.monotonic() + self.wait
        try:
            while not self._try(fd, block=self.wait is None):
                if deadline is None or time.monotonic() >= deadline:
                    if not self.wait:
                        raise InputError(self.busy_message)
                    raise TimeoutError(f"could not lock {self.path} within {self.wait:.0f} s")
                time.sleep(self.POLL_S)
            # a holder that removes the file on exit may have removed it between our open and our lock:
            # then we hold a lock on a file nobody else can find, and a third process could lock a new one
            if self.remove and not _same_file(fd, self.path):
                raise InputError(self.busy_message)
        except (InputError, TimeoutError):
            os.close(fd)
            raise
        except OSError:
            os.close(fd)
            if self.wait == 0:
                raise InputError(self.busy_message) from None
            raise
        self.fd = fd
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.fd is not None:
            if self.remove:
                self.path.unlink(missing_ok=True)
            os.close(self.fd)  # releases the lock
            self.fd = None


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except OSError:
        return False
