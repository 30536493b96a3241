"""GGUF files: checked before anything trusts them, converted once into a transformers folder.

GGUF files: checked before anything trusts them (:func:`check_gguf`: header, metadata and tensor table
walked without loading the data, sizes checked against the file) and converted once into a plain
transformers folder (:func:`convert_gguf`: loaded with transformers, dequantised to float32, saved with
its tokenizer and a marker naming the GGUF's sha256 and the versions that converted it), under a temporary
name renamed into place only when complete."""

from __future__ import annotations

import contextlib
import json
import logging
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..encoder.identity import MARKER  # the marker of a folder prompteol made (its identity reads it)
from ..errors import ModelNotFoundError
from ..fileio import write_folder_atomic

__all__ = ["check_gguf", "convert_gguf", "conversion_versions", "CONVERSION_VERSION", "GGUF_MAGIC", "say"]

log = logging.getLogger(__name__)


def say(msg: str, progress: bool) -> None:
    log.info(msg)
    if progress:
        print(f"[prompteol] {msg}", file=sys.stderr, flush=True)


#: bump when :func:`convert_gguf` changes what it writes (part of the model's identity)
CONVERSION_VERSION = 1


def conversion_versions() -> dict[str, str]:
    """The versions that decide what a GGUF conversion writes (recorded in the marker, fingerprinted)."""
    from ..records import versions_of

    found = versions_of(("transformers", "tokenizers", "gguf"), missing="not installed")
    return {"prompteol_conversion": str(CONVERSION_VERSION), **{k: str(v) for k, v in found.items()}}


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

    say(f"converting {gguf.name} to a transformers folder (takes 30-90 s once)", progress)
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
    say(f"converted in {time.perf_counter() - t0:.0f} s -> {out_dir}", progress)
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
