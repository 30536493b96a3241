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

The parameter count comes, in this order of preference, from the registry (packaged models:
``num_parameters``), from the safetensors headers of a local folder or a cached hub snapshot
(exact element counts, whatever dtype the file stores: a bfloat16 file of N parameters is N,
not its size / 4), from the size of other weight files divided by the stored dtype's size
(``torch_dtype`` of config.json, float32 when it says nothing), from a GGUF file's tensor
shapes, or from a hub model's config.json (layers, hidden and MLP sizes, vocabulary). The
hidden size comes from config.json where there is one, else ``1.2 x parameters^(1/3)``
(rounded up to 64; it only scales the activation term).

The rule (:func:`choose_dtype`): with ``dtype="auto"``, float32 if it fits, else bfloat16, else
the cell is refused with a message naming the need and what is free. An explicit dtype is
used as given, and refused if it cannot fit. When the need or the free memory is unknown,
the requested dtype (float32 for ``auto``) is used without a check, and the decision says so.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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

BYTES_PER_PARAMETER = {"float32": 4, "bfloat16": 2, "float16": 2}
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

_ST_BYTES = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
             "F8_E4M3": 1, "F8_E5M2": 1}  # fmt: skip
_ST_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "F64": "float64"}
#: weights the base model (AutoModel, no LM head) does not load
_SKIPPED_PREFIXES = ("lm_head.",)


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "unknown"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


# ------------------------------------------------------------------------------------ model size
@dataclass(frozen=True)
class ModelSize:
    """What is known about a model before loading it."""

    num_parameters: int | None
    hidden_size: int | None
    source: str  # registry | safetensors | weight files | gguf | config.json | unknown: <why>
    stored_dtype: str | None = None

    @property
    def known(self) -> bool:
        return bool(self.num_parameters)

    def hidden(self) -> int:
        """The hidden size, or its rule-of-thumb estimate from the parameter count."""
        if self.hidden_size:
            return self.hidden_size
        params = self.num_parameters or 0
        return max(64, int(math.ceil(1.2 * params ** (1 / 3) / 64)) * 64)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _hidden_from_config(cfg: dict) -> int | None:
    text = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else None
    for c in (cfg, text or {}):
        for key in ("hidden_size", "n_embd", "d_model"):
            if isinstance(c.get(key), int):
                return int(c[key])
    return None


def _safetensors_header(path: Path) -> dict:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if not 0 < n < 200_000_000:
            raise ValueError(f"{path} does not start with a safetensors header")
        return json.loads(f.read(n))


def _count_safetensors(files: list[Path]) -> tuple[int, str | None]:
    """(parameters, the dtype most of them are stored in), from the headers alone."""
    total, by_dtype = 0, {}  # type: ignore[var-annotated]
    for path in files:
        for name, info in _safetensors_header(path).items():
            if name == "__metadata__" or name.startswith(_SKIPPED_PREFIXES):
                continue
            n = math.prod(info.get("shape") or [1])
            total += n
            by_dtype[info.get("dtype")] = by_dtype.get(info.get("dtype"), 0) + n
    stored = max(by_dtype, key=by_dtype.get) if by_dtype else None  # type: ignore[arg-type]
    return total, _ST_DTYPES.get(stored or "", stored)


def folder_size(folder: Path) -> ModelSize:
    """A transformers folder: safetensors headers, else weight-file sizes / the stored dtype's size."""
    cfg = _read_json(folder / "config.json")
    hidden = _hidden_from_config(cfg)
    st = sorted(folder.glob("*.safetensors"))
    if st:
        try:
            params, stored = _count_safetensors(st)
            return ModelSize(params, hidden, "safetensors", stored)
        except (OSError, ValueError, struct.error) as exc:
            return ModelSize(None, hidden, f"unknown: unreadable safetensors ({exc})")
    others = sorted(p for ext in ("*.bin", "*.pt", "*.pth") for p in folder.glob(ext))
    if others:
        stored = str(cfg.get("torch_dtype") or cfg.get("dtype") or "float32")
        size = BYTES_PER_PARAMETER.get(stored, 4)
        return ModelSize(sum(p.stat().st_size for p in others) // size, hidden, "weight files", stored)
    ggufs = sorted(folder.glob("*.gguf"))
    if len(ggufs) == 1:
        return gguf_size(ggufs[0])
    return ModelSize(None, hidden, f"unknown: no weight files in {folder}")


def gguf_size(path: Path) -> ModelSize:
    """A GGUF file: element counts from its tensor table (read through a memory map, not loaded)."""
    try:
        from gguf import GGUFReader

        reader = GGUFReader(str(path))
        params = sum(int(t.n_elements) for t in reader.tensors if not t.name.startswith("output."))
        hidden = None
        for key, fld in reader.fields.items():
            if key.endswith(".embedding_length"):
                hidden = int(fld.parts[fld.data[0]][0])
                break
        return ModelSize(params, hidden, "gguf")
    except Exception as exc:  # noqa: BLE001 - an unreadable file: the need is unknown, loading will say why
        return ModelSize(None, None, f"unknown: unreadable GGUF file ({exc})")


_UNGATED = ("opt", "gpt2", "gpt_neox", "gptj", "bloom", "falcon", "phi", "gpt_bigcode", "bert")


def config_size(cfg: dict) -> ModelSize:
    """Parameters of a decoder from its config.json: layers x (attention + MLP) + embeddings."""
    text = cfg.get("text_config")
    c: dict = text if isinstance(text, dict) else cfg
    h = _hidden_from_config(cfg)
    layers = c.get("num_hidden_layers") or c.get("n_layer") or c.get("num_layers")
    vocab = c.get("vocab_size")
    if not (h and layers and vocab):
        return ModelSize(None, h, "unknown: config.json lacks hidden size, layers or vocabulary")
    ffn = c.get("intermediate_size") or c.get("ffn_dim") or c.get("n_inner") or 4 * h
    heads = c.get("num_attention_heads") or c.get("n_head") or 1
    kv_heads = c.get("num_key_value_heads") or heads
    head_dim = c.get("head_dim") or h // heads
    attention = 2 * h * heads * head_dim + 2 * h * kv_heads * head_dim
    mlp = (2 if str(c.get("model_type", cfg.get("model_type"))) in _UNGATED else 3) * h * ffn
    positions = (c.get("max_position_embeddings") or 0) * h if cfg.get("model_type") in ("opt", "gpt2") else 0
    params = int(layers * (attention + mlp) + vocab * h + positions)
    return ModelSize(params, h, "config.json", cfg.get("torch_dtype") or cfg.get("dtype"))


def _hub_file(ref: str, name: str, download: bool) -> Path | None:
    try:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache

        cached = try_to_load_from_cache(ref, name)
        if isinstance(cached, str):
            return Path(cached)
        if download:
            return Path(hf_hub_download(ref, name))
    except Exception:  # noqa: BLE001 - not cached, offline, gated, missing: unknown
        return None
    return None


def hub_size(ref: str, download_config: bool = True) -> ModelSize:
    """A hub id: the safetensors headers of a cached snapshot, else its config.json (cached or fetched)."""
    cfg_path = _hub_file(ref, "config.json", download=download_config)
    if cfg_path is None:
        return ModelSize(None, None, f"unknown: no config.json for {ref!r} (not cached, hub unreachable)")
    folder = cfg_path.parent
    if sorted(folder.glob("*.safetensors")):
        size = folder_size(folder)
        if size.known:
            return size
    return config_size(_read_json(cfg_path))


def model_size(ref: str, cache_dir=None) -> ModelSize:
    """What is known of ``ref``'s size before loading it (never loads weights, never pulls a model)."""
    from ..models.loading import ADAPTER_CONFIG, _adapter_base
    from ..models.pull import packaged_path
    from ..models.registry import PACKAGED_MODELS
    from ..models.testing import RANDOM_MODELS

    spec = PACKAGED_MODELS.get(ref)
    if spec is not None:
        hidden = _hidden_from_config(_read_json(packaged_path(ref, cache_dir) / "config.json"))
        return ModelSize(spec.num_parameters or None, hidden, "registry")
    if ref in RANDOM_MODELS:
        from ..models.loading import resolve_model

        return folder_size(Path(resolve_model(ref, cache_dir=cache_dir).path))  # built in a moment
    path = Path(ref).expanduser()
    if path.is_file():
        return gguf_size(path) if path.suffix == ".gguf" else ModelSize(None, None, f"unknown: {ref} is not a model")
    if path.is_dir():
        if (path / ADAPTER_CONFIG).is_file():
            try:
                return model_size(_adapter_base(path), cache_dir)  # the adapter's own weights are small
            except Exception as exc:  # noqa: BLE001
                return ModelSize(None, None, f"unknown: {exc}")
        return folder_size(path)
    if ref.startswith((".", "/", "~")):
        return ModelSize(None, None, f"unknown: no such file or folder {ref}")
    from ..models.loading import _hub_reachable

    return hub_size(ref, download_config=_hub_reachable())  # offline: the local HF cache only, at once


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
def _meminfo_available(path: str = "/proc/meminfo") -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
        return None if text in ("", "max") else int(text)
    except (OSError, ValueError):
        return None


def _cgroup_free() -> int | None:
    """Limit minus usage of the process's memory cgroup (v2, else v1), None without a limit."""
    limit, usage = _read_int("/sys/fs/cgroup/memory.max"), _read_int("/sys/fs/cgroup/memory.current")
    if limit is None:
        limit, usage = (_read_int("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
                        _read_int("/sys/fs/cgroup/memory/memory.usage_in_bytes"))  # fmt: skip
    if limit is None or usage is None or limit >= 2**60:  # no limit
        return None
    return max(0, limit - usage)


def cpu_available() -> tuple[int | None, str]:
    """Free CPU memory in bytes and where the number comes from."""
    free, source = _meminfo_available(), "/proc/meminfo MemAvailable"
    if free is None:
        try:
            import psutil

            free, source = int(psutil.virtual_memory().available), "psutil"
        except Exception:  # noqa: BLE001 - not installed / unsupported platform
            return None, "unknown (no /proc/meminfo, no psutil)"
    limited = _cgroup_free()
    if limited is not None and limited < free:
        return limited, "cgroup limit - usage"
    return free, source


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
