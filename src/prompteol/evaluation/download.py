"""Fetch the standard SentEval data (SimCSE's ``senteval.tar``) into a data root, then verify it.

Offline, the request fails at once (name resolution or a short connect timeout) with a
:class:`~prompteol.errors.DataError` that says how to point prompteol at a local copy.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import DataError
from ..fileio import replace_folder
from .data import LOCAL_HINT, check_data

__all__ = ["SENTEVAL_URL", "CONNECT_TIMEOUT", "download_senteval"]

log = logging.getLogger(__name__)

#: the archive SimCSE, PromptBERT and PromptEOL download (SentEval/data/downstream/download_dataset.sh)
SENTEVAL_URL = "https://huggingface.co/datasets/princeton-nlp/datasets-for-simcse/resolve/main/senteval.tar"
#: seconds to wait for a connection (and for each read): offline must fail fast
CONNECT_TIMEOUT = 10.0
_CHUNK = 1 << 20


def download_senteval(
    dest: str | os.PathLike, url: str = SENTEVAL_URL, timeout: float = CONNECT_TIMEOUT, progress: bool = True
) -> Path:
    """Download and unpack the SentEval archive so that ``dest/downstream/`` is a verified data root.

    Returns ``dest``. Does nothing if ``dest`` already holds every file with its checksum.
    Raises :class:`DataError` when the archive cannot be fetched or does not hold the SentEval files.
    """
    dest = Path(dest).expanduser()
    if (dest / "downstream").is_dir():
        if all(s.ok for s in check_data(dest, "all")):
            log.info("%s already holds the verified SentEval files", dest)
            return dest
        raise DataError(f"{dest / 'downstream'} exists but is incomplete or changed (see `prompteol data verify "
                        f"--data-dir {dest}`); move it away or choose another --dest")  # fmt: skip
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / ".senteval.tar.partial"
    staging = dest / ".senteval-staging"
    try:
        _fetch(url, archive, timeout, progress)
        shutil.rmtree(staging, ignore_errors=True)
        with tarfile.open(archive) as tar:
            tar.extractall(staging, filter="data")  # refuses absolute paths, links out of the tree, devices
        found = _find_downstream(staging)
        if found is None:
            raise DataError(f"the archive from {url} has no SentEval task folders (STS/, MR/, ...)")
        replace_folder(found, dest / "downstream")
    except BaseException:
        if created and not (dest / "downstream").exists():
            shutil.rmtree(dest, ignore_errors=True)  # leave nothing behind that we made
        raise
    finally:
        archive.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
    bad = [s for s in check_data(dest, "all") if not s.ok]
    if bad:
        names = ", ".join(f"{s.path} ({s.status})" for s in bad[:5])
        raise DataError(f"the downloaded archive does not hold the expected SentEval files: {names}"
                        f"{' ...' if len(bad) > 5 else ''}")  # fmt: skip
    return dest


def _fetch(url: str, out: Path, timeout: float, progress: bool) -> None:
    from tqdm.auto import tqdm

    from .. import __version__

    request = urllib.request.Request(url, headers={"User-Agent": f"prompteol/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp, open(out, "wb") as f:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc="senteval.tar", disable=not progress,
                      file=sys.stderr) as bar:  # fmt: skip
                for block in iter(lambda: resp.read(_CHUNK), b""):
                    f.write(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(f"could not download {url} ({reason}). Without a network, use a local copy of the "
                        f"SentEval data: {LOCAL_HINT}") from None  # fmt: skip


def _find_downstream(root: Path) -> Path | None:
    """The folder (at most 4 levels down) that holds the task folders STS/ and MR/."""
    candidates = [root] + [p for depth in ("*", "*/*", "*/*/*", "*/*/*/*") for p in root.glob(depth) if p.is_dir()]
    for folder in candidates:
        if (folder / "STS").is_dir() and (folder / "MR").is_dir():
            return folder
    return None
