"""The memory and dtype rule of ``prompteol scale``: decide the dtype before loading, never be killed.

Before a model is loaded, its memory need is estimated for a dtype as::

    need = weights + activations + overhead
    weights     = parameters x bytes per parameter       (float32 4, bfloat16 / float16 2;
                                                          4bit ~0.6, 8bit ~1.1 with bitsandbytes)
    activations = batch tokens x hidden size x ACTIVATION_FACTOR (16) x bytes per value
                  (batch tokens = batch_size x the longest prompt's tokens, at most
                  max(max_batch_tokens, longest prompt) when --max-batch-tokens is set; the longest
                  prompt is estimated from characters, CHARS_PER_TOKEN = 3, before any tokenizer exists)
    overhead    = OVERHEAD_BYTES (512 MiB: allocator slack, the prefix key/value cache, temporary
                  copies while loading, tokenizer and data)

and compared with the memory that is free where the weights go:

- CPU: ``MemAvailable`` of ``/proc/meminfo`` (falls back to ``psutil.virtual_memory().available``),
  lowered to the cgroup's limit minus its usage when the process runs in a memory-limited cgroup;
- CUDA: the free memory of the device (``torch.cuda.mem_get_info``); weights that are not
  quantized with bitsandbytes are loaded on the CPU first, so the CPU must also hold
  ``weights + overhead``.

The parameter count and hidden size come from :mod:`prompteol.scale.model_size` (before loading);
the free CPU memory from :func:`prompteol.encoder.limits.cpu_free_memory`, the one reader of it.

The rule (:func:`choose_dtype`): with ``dtype="auto"``, float32 if it fits, else bfloat16, else
the cell is refused with a message naming the need and what is free. An explicit dtype is
used as given, and refused if it cannot fit. When the need or the free memory is unknown,
the requested dtype (float32 for ``auto``) is used without a check, and the decision says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..encoder.limits import cpu_free_memory as cpu_available
from ..models.model_size import BYTES_PER_PARAMETER, ModelSize, model_size

__all__ = [
    "BYTES_PER_PARAMETER",
    "QUANTIZED_BYTES_PER_PARAMETER",
    "ACTIVATION_FACTOR",
    "OVERHEAD_BYTES",
    "CHARS_PER_TOKEN",
    "ModelSize",
    "MemoryEstimate",
    "DtypeDecision",
    "model_size",
    "estimate_need",
    "available_memory",
    "choose_dtype",
    "fmt_bytes",
]

#: bitsandbytes (CUDA): 4-bit NF4 with double quantisation, 8-bit; the embeddings and norms stay in the
#: compute dtype, hence more than 0.5 / 1 byte per parameter on average (an approximation)
QUANTIZED_BYTES_PER_PARAMETER = {"4bit": 0.6, "8bit": 1.1}
#: values alive per token and hidden unit at the peak of one forward: the residual stream, q/k/v,
#: the attention output, the MLP's intermediate (3-8 x hidden), the layer's output, plus headroom
ACTIVATION_FACTOR = 16
#: fixed runtime overhead added to every estimate
OVERHEAD_BYTES = 512 * 2**20
#: characters per token used to estimate prompt lengths before a tokenizer is loaded (English BPE
#: averages ~4; 3 is on the safe side)
CHARS_PER_TOKEN = 3
AUTO = "auto"
_ORDER = ("float32", "bfloat16")  # what auto tries, in order

def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "unknown"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


# ------------------------------------------------------------------------------------ model size
# ------------------------------------------------------------------------------------ estimates
@dataclass(frozen=True)
class MemoryEstimate:
    """The estimated need of one dtype, in bytes."""

    dtype: str
    weights: int | None
    activations: int
    overhead: int = OVERHEAD_BYTES

    @property
    def total(self) -> int | None:
        return None if self.weights is None else self.weights + self.activations + self.overhead

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total}


def estimate_need(
    size: ModelSize, dtype: str, batch_size: int, prompt_tokens: int, *, quantization: str | None = None,
    max_batch_tokens: int | None = None,
) -> MemoryEstimate:  # fmt: skip
    """weights + activations for one batch + the fixed overhead (see the module docstring)."""
    per_param: float = QUANTIZED_BYTES_PER_PARAMETER.get(quantization or "", BYTES_PER_PARAMETER[dtype])
    weights = int(size.num_parameters * per_param) if size.num_parameters else None
    value_bytes = BYTES_PER_PARAMETER[dtype] if quantization not in QUANTIZED_BYTES_PER_PARAMETER else 2
    tokens = max(1, batch_size) * max(1, prompt_tokens)
    if max_batch_tokens:
        tokens = min(tokens, max(max_batch_tokens, prompt_tokens))
    activations = int(tokens * size.hidden() * ACTIVATION_FACTOR * value_bytes)
    return MemoryEstimate(dtype, weights, activations)


# ------------------------------------------------------------------------------------ free memory
def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is there, else ``cpu``; other values as given."""
    if device != "auto":
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def available_memory(device: str = "cpu", quantization: str | None = None) -> dict[str, tuple[int | None, str]]:
    """``{place: (free bytes or None, source)}`` of the places a load on ``device`` needs memory in."""
    out = {"cpu": cpu_available()}
    device = resolve_device(device)
    if device.startswith("cuda"):
        try:
            import torch

            index = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
            out[f"cuda:{index}"] = (int(torch.cuda.mem_get_info(index)[0]), "torch.cuda.mem_get_info")
        except Exception as exc:  # noqa: BLE001
            out[device] = (None, f"unknown ({exc})")
    return out


# ------------------------------------------------------------------------------------ the rule
@dataclass
class DtypeDecision:
    """The dtype a model is loaded with, or a refusal (``dtype is None``) with its reason."""

    requested: str
    dtype: str | None
    reason: str
    estimates: dict[str, MemoryEstimate] = field(default_factory=dict)
    free: dict[str, int | None] = field(default_factory=dict)
    checked: bool = True

    @property
    def refused(self) -> bool:
        return self.dtype is None

    @property
    def need(self) -> int | None:
        est = self.estimates.get(self.dtype or "")
        return est.total if est else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "requested": self.requested, "dtype": self.dtype, "reason": self.reason, "checked": self.checked,
            "estimates": {k: v.to_dict() for k, v in self.estimates.items()}, "free": dict(self.free),
            "rule": "need = parameters x bytes per parameter + batch tokens x hidden x "
                    f"{ACTIVATION_FACTOR} x bytes per value + {fmt_bytes(OVERHEAD_BYTES)}",
        }  # fmt: skip


def _fits(est: MemoryEstimate, free: dict[str, int | None], quantization: str | None) -> list[str]:
    """The places where ``est`` does not fit (empty: it fits everywhere)."""
    short = []
    total = est.total or 0
    for place, avail in free.items():
        if avail is None:
            continue
        if place == "cpu" and len(free) > 1:  # a GPU load: the CPU holds the weights while loading
            if quantization in QUANTIZED_BYTES_PER_PARAMETER:
                continue
            need = (est.weights or 0) + est.overhead
        else:
            need = total
        if need > avail:
            short.append(f"{place}: needs {fmt_bytes(need)}, {fmt_bytes(avail)} free")
    return short


def choose_dtype(
    size: ModelSize, requested: str = AUTO, *, batch_size: int = 32, prompt_tokens: int = 128, device: str = "cpu",
    quantization: str | None = None, max_batch_tokens: int | None = None,
    available: Callable[..., dict[str, tuple[int | None, str]]] | None = None,
) -> DtypeDecision:  # fmt: skip
    """Apply the rule: ``auto`` = the fastest accurate precision of the device (:func:`prompteol.encoder.precision.
    resolve_dtype`: bfloat16 on CUDA and on CPUs with native bfloat16, else float32) if it fits, else
    bfloat16, else refuse; an explicit dtype is used as given unless it cannot fit. ``available``
    (default :func:`available_memory`) is called once, right now."""
    if requested != AUTO and requested not in BYTES_PER_PARAMETER:
        from ..errors import ConfigError

        raise ConfigError(f"dtype should be auto or one of {list(BYTES_PER_PARAMETER)}, got {requested!r}")
    places = (available or available_memory)(device, quantization)
    free = {place: value for place, (value, _) in places.items()}
    if requested == AUTO:
        from ..encoder.precision import resolve_dtype

        fast = resolve_dtype(AUTO, device).dtype
        candidates = list(dict.fromkeys([fast, *_ORDER]))
        candidates = candidates[candidates.index(fast):] if fast in _ORDER else candidates
    else:
        candidates = [requested]
    estimates = {d: estimate_need(size, d, batch_size, prompt_tokens, quantization=quantization,
                                  max_batch_tokens=max_batch_tokens) for d in candidates}  # fmt: skip
    first = candidates[0]
    if not size.known:
        return DtypeDecision(requested, first, f"memory need unknown ({size.source.removeprefix('unknown: ')}); {first} without a check",
                             estimates, free, checked=False)  # fmt: skip
    if all(v is None for v in free.values()):
        sources = "; ".join(src for _, src in places.values())
        return DtypeDecision(requested, first, f"free memory unknown ({sources}); {first} without a check",
                             estimates, free, checked=False)  # fmt: skip
    shortfalls: dict[str, list[str]] = {}
    for dtype in candidates:
        short = _fits(estimates[dtype], free, quantization)
        if not short:
            est = estimates[dtype]
            why = f"needs {fmt_bytes(est.total)} ({size.num_parameters:,} parameters, {size.source})"
            if dtype != first:
                why += f"; {first} would need {fmt_bytes(estimates[first].total)} ({'; '.join(shortfalls[first])})"
            where = ", ".join(f"{p} {fmt_bytes(v)} free" for p, v in free.items() if v is not None)
            return DtypeDecision(requested, dtype, f"{dtype}: {why}; {where}", estimates, free)
        shortfalls[dtype] = short
    tried = "; ".join(f"{d}: {', '.join(s)}" for d, s in shortfalls.items())
    return DtypeDecision(
        requested, None,
        f"not enough memory for {size.num_parameters:,} parameters ({size.source}): {tried}. Free memory, "
        f"lower --batch-size / set --max-batch-tokens, or use a machine with more memory",
        estimates, free,
    )  # fmt: skip
