"""What :meth:`Encoder.encode <prompteol.Encoder.encode>` does to the pooled vectors, in this order:

1. :func:`truncate` (``truncate_dim=N``): keep the first N dimensions. For PromptEOL this is plain
   truncation: the vectors are hidden states of a model never trained Matryoshka-style, so the
   leading dimensions are not more informative than the others (nothing is measured here);
2. :func:`normalize_rows` (``normalize=True``): unit-length rows, after the truncation, so a
   truncated vector is re-normalised;
3. :func:`quantize` (``precision=``): the semantics of sentence-transformers'
   ``quantize_embeddings`` (same outputs and dtypes, checked by the tests), plus ``float16``.

Also the cosine similarities behind :meth:`Encoder.similarity <prompteol.Encoder.similarity>`.
Numpy only: nothing here imports torch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, InputError

if TYPE_CHECKING:  # pragma: no cover
    from .encode_options import EncodeOptions

__all__ = [
    "PRECISIONS", "truncate", "normalize_rows", "quantize", "postprocess", "as_vectors", "cosine_matrix",
    "cosine_pairwise",
]  # fmt: skip

log = logging.getLogger(__name__)

#: ``precision=`` values: float32 (as computed), float16, int8/uint8 (256 buckets per dimension,
#: calibrated), binary/ubinary (one bit per dimension, ``x > 0``, packed 8 per byte)
PRECISIONS = ("float32", "float16", "int8", "uint8", "binary", "ubinary")


def truncate(vectors: np.ndarray, dim: int | None) -> np.ndarray:
    """The first ``dim`` columns (``None``: all). ``dim`` must be 1..the vectors' dimension."""
    if dim is None:
        return vectors
    width = vectors.shape[-1]
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not 1 <= dim <= width:
        raise ConfigError(f"truncate_dim should be an int in 1..{width} (the vectors' dimension) or None, got {dim!r}")
    return vectors[..., : int(dim)]


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """Unit-length rows (a zero row stays zero), in the rows' own float dtype: the one vector normaliser
    (the library, both server routes, the similarities)."""
    return vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)


def quantize(vectors: np.ndarray, precision: str = "float32", calibration: Any = None) -> np.ndarray:
    """``vectors`` (N, D) float -> ``precision``, as sentence-transformers' ``quantize_embeddings``.

    - ``float32``: unchanged (float32); ``float16``: cast (not in sentence-transformers);
    - ``int8`` / ``uint8``: each dimension's range [min, max] is cut into 256 buckets,
      ``floor((x - min) / ((max - min) / 255))`` clipped to 0..255 (minus 128 for int8). The ranges
      come from ``calibration`` (embeddings, (M, D)) when given, else from ``vectors`` themselves:
      then two calls are calibrated differently and their codes are not comparable; pass the same
      ``calibration`` to every call whose codes are compared;
    - ``binary`` / ``ubinary``: ``np.packbits(x > 0)`` (D/8 bytes per row, uint8), minus 128 as int8
      for ``binary``. No calibration.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision should be one of {list(PRECISIONS)}, got {precision!r}")
    x = np.asarray(vectors)
    if x.ndim != 2:
        raise InputError(f"quantize expects an (N, D) array, got shape {x.shape}")
    if x.dtype in (np.int8, np.uint8):
        raise InputError("the embeddings to quantize must be float, not int8 or uint8")
    dim = x.shape[1]
    if precision == "float32":
        return x.astype(np.float32)
    if precision == "float16":
        return x.astype(np.float16)
    if precision.endswith("binary"):
        if len(x) == 0:
            return np.zeros((0, (dim + 7) // 8), dtype=np.int8 if precision == "binary" else np.uint8)
        packed = np.packbits(x > 0, axis=-1)
        return (packed - 128).astype(np.int8) if precision == "binary" else packed
    # int8 / uint8
    if len(x) == 0:
        return np.zeros((0, dim), dtype=np.int8 if precision == "int8" else np.uint8)
    if calibration is None:
        if len(x) == 1:
            raise InputError(f"cannot calibrate {precision} buckets on a single embedding; pass calibration= "
                             "(embeddings of a representative sample) or encode more texts at once")  # fmt: skip
        if len(x) < 100:
            log.warning("computing %s quantization buckets from %d embeddings; pass calibration= (more "
                        "embeddings of a representative sample) for stabler buckets", precision, len(x))  # fmt: skip
        ref = x
    else:
        ref = np.asarray(calibration.detach().float().cpu().numpy() if hasattr(calibration, "detach") else calibration)
        if ref.ndim != 2 or ref.shape[1] != dim or len(ref) == 0:
            raise InputError(f"calibration should be embeddings of shape (M, {dim}) (the same truncate_dim and "
                             f"normalize as the call), got shape {ref.shape}")  # fmt: skip
    ranges = np.vstack((np.min(ref, axis=0), np.max(ref, axis=0))).astype(np.float32, copy=False)
    starts = ranges[0, :]
    steps = (ranges[1, :] - starts) / 255
    steps = np.where(steps == 0, 1, steps)
    codes = np.clip(np.floor((x - starts) / steps), 0, 255)
    return codes.astype(np.uint8) if precision == "uint8" else (codes - 128).astype(np.int8)


def postprocess(vectors: np.ndarray, options: EncodeOptions) -> np.ndarray:
    """What happens to pooled vectors before they are returned, in every path (``Encoder.encode``, the
    server's ``/v1/embeddings`` and ``/embed``, the baselines): truncate, then normalise, then quantise,
    as ``options`` (:class:`~prompteol.encoder.encode_options.EncodeOptions`) say."""
    out = truncate(vectors, options.truncate_dim)
    if options.normalize:
        out = normalize_rows(out)
    if options.precision != "float32" or out.dtype != np.float32:
        out = quantize(out, options.precision, options.calibration)
    return out


# ---------------------------------------------------------------------------------------- similarity
def as_vectors(items: Any, encode: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    """Texts (a string or a sequence of strings: encoded with ``encode``) or vectors (an array, a
    torch tensor, a list of rows; one vector is one row) -> float32 (N, D)."""
    if isinstance(items, str):
        return np.asarray(encode([items]), dtype=np.float32)
    if hasattr(items, "detach"):  # a torch tensor
        items = items.detach().float().cpu().numpy()
    if isinstance(items, np.ndarray):
        arr = items
    elif isinstance(items, Sequence) and (len(items) == 0 or all(isinstance(t, str) for t in items)):
        return np.asarray(encode(list(items)), dtype=np.float32)
    else:
        try:
            arr = np.asarray(items, dtype=np.float32)
        except (TypeError, ValueError):
            raise InputError("expected texts (a string or a list of strings) or vectors (an array of shape (N, D)), "
                             f"got {type(items).__name__}") from None  # fmt: skip
    if arr.dtype.kind in "US":  # a numpy array of strings
        return np.asarray(encode([str(t) for t in arr.ravel()]), dtype=np.float32)
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise InputError(f"vectors should have shape (N, D) or (D,), got {arr.shape}")
    return arr


def _unit(x: np.ndarray) -> np.ndarray:
    return normalize_rows(x.astype(np.float64))


def _check_dims(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape[1] != b.shape[1] and len(a) and len(b):
        raise InputError(f"the two sides have vectors of different dimensions ({a.shape[1]} and {b.shape[1]})")


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarities (len(a), len(b)), float32 (a zero vector has similarity 0)."""
    _check_dims(a, b)
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)), dtype=np.float32)
    return (_unit(a) @ _unit(b).T).astype(np.float32)


def cosine_pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each pair ``(a[i], b[i])`` (n,), float32."""
    if len(a) != len(b):
        raise InputError(f"similarity_pairwise needs as many items on both sides, got {len(a)} and {len(b)}")
    _check_dims(a, b)
    if not len(a):
        return np.zeros((0,), dtype=np.float32)
    return np.einsum("ij,ij->i", _unit(a), _unit(b)).astype(np.float32)
