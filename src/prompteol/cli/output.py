"""Output paths checked before any model is loaded, so a bad ``-o`` costs nothing."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import ConfigError

__all__ = ["check_output"]


def check_output(path: str | Path, option: str = "-o") -> Path:
    """``path`` if a file can be written there (atomically, as :func:`~prompteol.fileio.write_atomic`
    does), else :class:`~prompteol.errors.ConfigError` saying why.

    Missing parent folders are created; a directory is refused; the folder must accept a new
    file (a temporary file is created and removed there), since the output is written next to
    it and renamed into place.
    """
    path = Path(path).expanduser()
    shown = f"{option} {str(path)!r}"
    if path.is_dir():
        raise ConfigError(f"{shown} is a directory; give a file name, e.g. {str(path / 'out')!r} plus an extension")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"{shown}: cannot create the folder {str(folder)!r}: a file of that name exists") from None
    except OSError as exc:
        raise ConfigError(f"{shown}: cannot create the folder {str(folder)!r}: {exc.strerror or exc}") from None
    if not folder.is_dir():
        raise ConfigError(f"{shown}: {str(folder)!r} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".check", dir=folder)
    except OSError as exc:
        raise ConfigError(f"{shown}: cannot write in {str(folder)!r}: {exc.strerror or exc}") from None
    os.close(fd)
    Path(probe).unlink(missing_ok=True)
    return path
