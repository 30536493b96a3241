"""A model's parameter count and hidden size before it is loaded (scale's memory rule, the backend choice).

The size of a model before it is loaded (``prompteol scale``'s memory rule and ``backend="auto"`` need it): the parameter
count and the hidden size.

The parameter count comes, in this order of preference, from the registry (packaged models:
``num_parameters``), from the safetensors headers of a local folder or a cached hub snapshot
(exact element counts, whatever dtype the file stores: a bfloat16 file of N parameters is N,
not its size / 4), from the size of other weight files divided by the stored dtype's size
(``torch_dtype`` of config.json, float32 when it says nothing), from a GGUF file's tensor
shapes, or from a hub model's config.json (layers, hidden and MLP sizes, vocabulary). The
hidden size comes from config.json where there is one, else ``1.2 x parameters^(1/3)``
(rounded up to 64; it only scales the activation term).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BYTES_PER_PARAMETER", "ModelSize", "model_size", "folder_size", "gguf_size", "config_size", "hub_size"]

BYTES_PER_PARAMETER = {"float32": 4, "bfloat16": 2, "float16": 2}
_ST_BYTES = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
             "F8_E4M3": 1, "F8_E5M2": 1}  # fmt: skip


_ST_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "F64": "float64"}


#: weights the base model (AutoModel, no LM head) does not load
_SKIPPED_PREFIXES = ("lm_head.",)


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
    from .loading import ADAPTER_CONFIG, _adapter_base
    from .pull import packaged_path
    from .registry import PACKAGED_MODELS
    from .testing import RANDOM_MODELS

    spec = PACKAGED_MODELS.get(ref)
    if spec is not None:
        hidden = _hidden_from_config(_read_json(packaged_path(ref, cache_dir) / "config.json"))
        return ModelSize(spec.num_parameters or None, hidden, "registry")
    if ref in RANDOM_MODELS:
        from .loading import resolve_model

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
    from .loading import _hub_reachable

    return hub_size(ref, download_config=_hub_reachable())  # offline: the local HF cache only, at once
