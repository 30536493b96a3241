"""The embedding cache's file: opening it, checking it, and repairing it (the layer under the store).

Damage: on open, a cheap check (SQLite header, schema, file size against the header) runs;
when it fails, the file is checked with ``PRAGMA quick_check`` under an exclusive lock file
(``embeddings.sqlite.lock``, :class:`~prompteol.fileio.FileLock`, waiting up to 60 s) and, if damaged and
not open in another process, moved aside to ``embeddings.sqlite.damaged-<timestamp>`` (with its
``-wal``/``-shm``); a fresh cache is started. A SQLite error later in a run is never raised: reads count
as misses, a damaged file is repaired the same way, and when that is not possible the cache is disabled
for the rest of the process (one warning). A version-1 file (no checksums) is upgraded in place. See
``docs/cache.md``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
import weakref
from pathlib import Path

from ..fileio import FileLock
from ..paths import embeddings_db

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["CacheFile", "CacheOff", "SCHEMA_VERSION"]

log = logging.getLogger("prompteol.cache")  # one logger for the store and its repair, as before the split

SCHEMA_VERSION = 2  # 1: no checksum column (user_version 0); 2: per-row blake2b checksum


_SCHEMA = """
BEGIN;
CREATE TABLE IF NOT EXISTS vectors (
    fingerprint TEXT NOT NULL,
    key BLOB NOT NULL,
    dim INTEGER NOT NULL,
    checksum BLOB NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (fingerprint, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS encoders (
    fingerprint TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    created REAL NOT NULL
);
PRAGMA user_version = 2;
COMMIT;
"""


_VECTOR_COLUMNS = {"fingerprint", "key", "dim", "vector"}  # + "checksum" from version 2


_ENCODER_COLUMNS = {"fingerprint", "config", "created"}


_DAMAGE_CODES = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB (primary result codes)


_SQLITE_MAGIC = b"SQLite format 3\x00"


_SHM_DMS_BYTE = 128  # the -shm byte every process with the database open in WAL mode holds a read lock on


_LOCK_TIMEOUT = 60.0


# live connections of this process per database file (to never move aside a file still open here)
_LIVE: dict[str, weakref.WeakSet] = {}


_LIVE_LOCK = threading.Lock()


def _is_damage(exc: BaseException) -> bool:
    """Whether a SQLite error says the file itself is damaged (not busy, locked, full, ...)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _DAMAGE_CODES
    msg = str(exc).lower()
    return "malformed" in msg or "not a database" in msg


def _is_gone(exc: BaseException) -> bool:
    """Whether a SQLite error says the file or its tables are missing (deleted, or replaced by an empty file)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return (code is not None and code & 0xFF == 14) or "no such table" in str(exc).lower()  # 14: SQLITE_CANTOPEN


class _Connection(sqlite3.Connection):
    """A connection that unregisters itself from :data:`_LIVE` when closed."""

    _live_key: str | None = None

    def close(self) -> None:
        super().close()
        if self._live_key is not None:
            with _LIVE_LOCK:
                live = _LIVE.get(self._live_key)
                if live is not None:
                    live.discard(self)


class CacheOff(Exception):
    """The cache is disabled for this process (the reason is in ``EmbeddingCache.disabled``)."""


class _Unusable(Exception):
    """The file cannot be used and is left as it is (damaged but still open somewhere, newer schema, ...)."""


def _exclusive_lock(path: Path, timeout: float = _LOCK_TIMEOUT) -> FileLock:
    """An exclusive advisory lock on ``path`` (created if needed, never deleted); waits up to ``timeout``."""
    return FileLock(path, wait=timeout, remove=False)


def _open_elsewhere(db: Path) -> bool:
    """Whether another process has ``db`` open in WAL mode (it holds a read lock on the -shm DMS byte).

    Only call this while this process has no connection to ``db``: closing the probe's file
    descriptor drops every POSIX lock this process holds on the -shm file.
    """
    shm = db.with_name(db.name + "-shm")
    if fcntl is None or not shm.exists():
        return False
    try:
        fd = os.open(shm, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _SHM_DMS_BYTE, os.SEEK_SET)
    except OSError:
        return True
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, _SHM_DMS_BYTE, os.SEEK_SET)
        return False
    finally:
        os.close(fd)


def _header_problem(db: Path) -> str | None:
    """A cheap look at the file (size and the 100-byte SQLite header): what looks wrong, or None.

    This is only a trigger: a mismatch can also be seen, briefly, while another process
    checkpoints, so it is confirmed with ``PRAGMA quick_check`` before anything is moved.
    """
    try:
        size = db.stat().st_size
        if size == 0:
            return None  # an empty file is an empty database to SQLite
        with open(db, "rb") as f:
            head = f.read(100)
    except OSError as exc:
        return f"cannot read the file: {exc}"
    if len(head) < 100 or not head.startswith(_SQLITE_MAGIC):
        return f"no SQLite header ({size} bytes)"
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        return f"invalid page size {page_size} in the header"
    if size % page_size:
        return f"the file size ({size} bytes) is not a whole number of {page_size}-byte pages"
    pages = int.from_bytes(head[28:32], "big")
    if head[24:28] == head[92:96] and pages * page_size > size:
        return f"the file is truncated: its header says {pages} pages, it has {size // page_size}"
    return None


class CacheFile:
    """The SQLite file of an embedding cache: one connection per thread, opened, checked and repaired.

    Never raises on a damaged or unusable file: it repairs what it can (moving a damaged
    file aside, see the module docstring) and otherwise disables itself for the process
    (:attr:`disabled` says why; reads then miss and writes do nothing). :attr:`notes` lists,
    in words, what was found and done (the same text is logged as warnings).
    """

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else embeddings_db()
        self.disabled: str | None = None
        self.notes: list[str] = []
        self.moved_aside: list[Path] = []  # damaged files this instance moved aside
        self._local = threading.local()
        self._state_lock = threading.RLock()
        self._live_key = os.path.abspath(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._live_key = os.path.realpath(self.path)
            if not self._probe():
                with _exclusive_lock(self.lock_path):
                    self._open_locked()
        except (sqlite3.Error, OSError, _Unusable) as exc:  # TimeoutError is an OSError
            self._close_local()
            self._disable(f"cannot open the embedding cache {self.path}: {exc}")

    # ------------------------------------------------------------------ paths and connections
    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def _uri(self, create: bool = False) -> str:
        return Path(os.path.abspath(self.path)).as_uri() + ("?mode=rwc" if create else "?mode=rw")

    def _new_connection(self, create: bool = False) -> _Connection:
        con = sqlite3.connect(self._uri(create), uri=True, timeout=60.0, factory=_Connection)
        con._live_key = self._live_key
        with _LIVE_LOCK:
            _LIVE.setdefault(self._live_key, weakref.WeakSet()).add(con)
        try:
            con.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error:
            con.close()
            raise
        return con

    def _connect(self) -> sqlite3.Connection:
        if self.disabled is not None:
            raise CacheOff(self.disabled)
        con = getattr(self._local, "con", None)
        if con is None:
            con = self._new_connection()
            self._local.con = con
        return con

    def _close_local(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            self._local.con = None
            with contextlib.suppress(sqlite3.Error):
                con.close()

    # ------------------------------------------------------------------ open, check, repair
    @staticmethod
    def _schema_state(con: sqlite3.Connection) -> tuple[str, int]:
        """``(state, user_version)``; state is current, empty, old, newer or foreign. Reads the header and schema."""
        version = con.execute("PRAGMA user_version").fetchone()[0]
        tables = {name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if version > SCHEMA_VERSION:
            return "newer", version
        if not tables and version == 0:
            return "empty", version
        vec_cols = {r[1] for r in con.execute("PRAGMA table_info(vectors)")}
        enc_cols = {r[1] for r in con.execute("PRAGMA table_info(encoders)")}
        if not (vec_cols >= _VECTOR_COLUMNS and enc_cols >= _ENCODER_COLUMNS):
            return "foreign", version
        if version == 0 and "checksum" not in vec_cols:
            return "old", version
        if version == SCHEMA_VERSION and "checksum" in vec_cols:
            return "current", version
        return "foreign", version

    def _probe(self) -> bool:
        """The lock-free open check; True when the file is a healthy current cache (the connection is kept)."""
        if not self.path.exists() or _header_problem(self.path) is not None:
            return False
        con = None
        try:
            con = self._new_connection()
            state, _ = self._schema_state(con)
            if state == "current" and con.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
                self._local.con = con
                return True
        except sqlite3.Error:
            pass
        if con is not None:
            con.close()
        return False

    @staticmethod
    def _quick_check(con: sqlite3.Connection) -> str | None:
        """``PRAGMA quick_check``: None when the file is sound, else what it found (reads the whole file)."""
        try:
            rows = [r[0] for r in con.execute("PRAGMA quick_check(5)")]
        except sqlite3.Error as exc:
            if _is_damage(exc):
                return str(exc)
            raise
        if rows == ["ok"]:
            return None
        text = "; ".join(line.strip() for row in rows for line in str(row).splitlines() if line.strip())
        return text if len(text) <= 300 else text[:300] + " ..."

    def _open_locked(self, suspicion: str | None = None) -> bool:
        """Open (create, migrate or repair) under the lock file; ``suspicion`` forces a quick_check.

        Returns whether anything was changed (False: the file was a sound current cache and is kept).
        """
        existed = self.path.exists()
        size = self.path.stat().st_size if existed else 0
        wal = self.path.with_name(self.path.name + "-wal")
        con = None
        state, version = "missing", 0
        damage = None
        if existed:
            suspicion = suspicion or _header_problem(self.path)
            try:
                con = self._new_connection()
                state, version = self._schema_state(con)
                if suspicion is not None:
                    found = self._quick_check(con)
                    if found is not None:
                        damage = f"{suspicion}; quick_check: {found}"
                    elif state == "current" and con.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
                        self._local.con = con
                        return False  # sound after all (e.g. seen mid-checkpoint, or already repaired)
            except sqlite3.Error as exc:
                if not _is_damage(exc):
                    if con is not None:
                        con.close()
                    raise
                damage = f"{suspicion}; {exc}" if suspicion and str(exc) not in suspicion else (suspicion or str(exc))
            if damage is not None:
                if con is not None:
                    con.close()
                    con = None
                try:
                    dest = self._move_aside()
                except (_Unusable, OSError) as why:
                    raise _Unusable(f"it is damaged ({damage}) but cannot be moved aside: {why}") from None
                self._note(
                    f"the embedding cache {self.path} is damaged ({damage}); moved it aside to {dest.name} "
                    "and started a fresh cache (its vectors are recomputed as needed)"
                )
                existed, state = False, "missing"
        if state == "newer":
            if con is not None:
                con.close()
            raise _Unusable(f"it was written by a newer prompteol (schema version {version} > {SCHEMA_VERSION}); "
                         "upgrade prompteol or use another --cache-dir")  # fmt: skip
        if state == "foreign":
            if con is not None:
                con.close()
            raise _Unusable(f"it is an SQLite file that is not a prompteol embedding cache (schema version {version})")
        if con is None:
            con = self._new_connection(create=True)
        if state in ("missing", "empty"):
            if existed and size == 0 and not (wal.exists() and wal.stat().st_size > 0):
                self._note(f"the embedding cache {self.path} was an empty (0-byte) file; started a fresh cache")
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(_SCHEMA)
        elif state == "old":
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript("BEGIN; ALTER TABLE vectors ADD COLUMN checksum BLOB; PRAGMA user_version = 2; COMMIT;")
            self._note(
                f"upgraded the embedding cache {self.path} to schema version {SCHEMA_VERSION} (per-row checksums); "
                "the vectors it held have no checksum, so they are not served and are recomputed as needed"
            )
        else:
            if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                con.execute("PRAGMA journal_mode=WAL")
            self._local.con = con
            return False
        self._local.con = con
        return True

    def _move_aside(self) -> Path:
        """Rename the (damaged) file and its -wal/-shm to ``<name>.damaged-<timestamp>``; holds the lock file."""
        with _LIVE_LOCK:
            live = len(_LIVE.get(self._live_key, ()))
        if live:
            raise _Unusable(f"it is still open in this process ({live} connection(s)); the next run moves it aside")
        if _open_elsewhere(self.path):
            raise _Unusable("it is open in another process; the first run that finds it unused moves it aside")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        dest = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
        n = 1
        while dest.exists():
            n += 1
            dest = self.path.with_name(f"{self.path.name}.damaged-{stamp}-{n}")
        os.replace(self.path, dest)
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                os.replace(side, dest.with_name(dest.name + suffix))
        self.moved_aside.append(dest)
        return dest

    def _note(self, message: str) -> None:
        self.notes.append(message)
        log.warning(message)

    def _disable(self, reason: str) -> None:
        with self._state_lock:
            if self.disabled is None:
                self.disabled = reason
                self._note(f"{reason}; the embedding cache is disabled for the rest of this process "
                           "(vectors are computed instead)")  # fmt: skip

    def _failed(self, exc: sqlite3.Error, what: str, write: bool) -> None:
        """A SQLite error during ``what``: repair a damaged file, else (for writes) disable the cache. One warning."""
        with self._state_lock:
            if self.disabled is not None:
                return
            self._close_local()
            if _is_damage(exc) or _is_gone(exc):
                problem = f"{what} failed: {exc}"
                notes = len(self.notes)
                try:
                    with _exclusive_lock(self.lock_path):
                        changed = self._open_locked(suspicion=problem if _is_damage(exc) else None)
                except (sqlite3.Error, OSError, _Unusable) as why:
                    self._close_local()
                    if isinstance(why, _Unusable):
                        self._disable(f"the embedding cache {self.path}: {why}")
                    else:
                        self._disable(f"the embedding cache {self.path}: {problem}; repairing it failed: {why}")
                    return
                if not changed and _is_damage(exc):  # an error that the file does not explain: do not retry
                    self._close_local()
                    self._disable(f"the embedding cache {self.path}: {problem} (PRAGMA quick_check found no damage)")
                elif changed and len(self.notes) == notes:
                    self._note(f"the embedding cache {self.path}: {problem}; started a fresh cache")
                return
            if write:
                self._disable(f"the embedding cache {self.path}: {what} failed ({exc})")
            else:
                log.warning(
                    "the embedding cache %s: %s failed (%s); computing those vectors instead", self.path, what, exc
                )

    def damaged_copies(self) -> list[Path]:
        """Damaged files moved aside next to this cache (``<name>.damaged-*``, without their -wal/-shm)."""
        return sorted(p for p in self.path.parent.glob(self.path.name + ".damaged-*")
                      if not p.name.endswith(("-wal", "-shm")))  # fmt: skip

    def remove_damaged_copies(self) -> list[Path]:
        """Delete the damaged files moved aside earlier (and their -wal/-shm); returns the files removed."""
        removed = []
        for p in self.damaged_copies():
            for f in (p, p.with_name(p.name + "-wal"), p.with_name(p.name + "-shm")):
                with contextlib.suppress(FileNotFoundError):
                    f.unlink()
            removed.append(p)
        return removed

    def close(self) -> None:
        """Close this thread's connection (a later call reopens one)."""
        self._close_local()
