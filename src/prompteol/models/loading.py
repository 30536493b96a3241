"""Resolve a model reference and load the base model (no LM head) and its tokenizer.

A reference is, in this order: a packaged alias (pulled on first use), a tiny random test
model (``tiny-random-llama`` ...), a ``.gguf`` file (converted once and cached by its
sha256), a local transformers folder (or a LoRA adapter folder made by ``prompteol train``),
or a hub id (used when the hub is reachable; offline it fails at once with a clear message).
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import logging
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from ..errors import ConfigError, ModelNotFoundError
from ..paths import cache_root, models_dir
from .pull import MARKER, convert_gguf, is_pulled, packaged_path, pull, sha256_file
from .registry import PACKAGED_MODELS
from .testing import RANDOM_MODELS, save_tiny_model, weights_id

__all__ = ["ResolvedModel", "resolve_model", "load_base_model", "load_tokenizer", "truncate_to_layer", "known_aliases"]

log = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


@dataclass
class ResolvedModel:
    """Where a model reference points to.

    ``path`` is what ``from_pretrained`` receives (a folder, or a hub id for ``kind == "hub"``);
    ``weights_id`` identifies the weights for fingerprints (a sha256 where one is known).
    """

    ref: str
    kind: str  # packaged | random | gguf | local | hub | adapter
    path: str
    weights_id: str
    adapter: str | None = None


def known_aliases() -> list[str]:
    return sorted(PACKAGED_MODELS) + sorted(RANDOM_MODELS)


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def _hub_cached(ref: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(ref, "config.json"), str)
    except Exception:  # noqa: BLE001 - an unusable cache simply means "not cached"
        return False


def _folder_weights_id(folder: Path, cache_dir=None) -> str:
    """sha256 over the folder's weight files, memoised by (path, size, mtime)."""
    marker = folder / MARKER
    if marker.is_file():
        info = json.loads(marker.read_text())
        if info.get("gguf_sha256"):
            return f"gguf-sha256:{info['gguf_sha256']}"
        if info.get("weights_id"):
            return str(info["weights_id"])
    files = sorted(p for p in folder.iterdir() if p.suffix in _WEIGHT_SUFFIXES and p.is_file())
    if not files:
        raise ModelNotFoundError(f"{folder} holds no weight files ({', '.join(_WEIGHT_SUFFIXES)})")
    memo_path = cache_root(cache_dir) / "fingerprints.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    h = hashlib.sha256()
    changed = False
    for p in files:
        st = p.stat()
        key = f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        if key not in memo:
            memo[key] = sha256_file(p)
            changed = True
        h.update(p.name.encode() + b"\0" + memo[key].encode())
    if changed:
        try:
            memo_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo_path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(memo, indent=1))
            os.replace(tmp, memo_path)
        except OSError:
            log.warning("could not write %s; weight hashes will be recomputed next time", memo_path)
    return f"files-sha256:{h.hexdigest()}"


def _resolve_gguf(file: Path, cache_dir=None, progress: bool = True) -> ResolvedModel:
    digest = sha256_file(file)
    target = cache_root(cache_dir) / "gguf" / digest[:16]
    if not (target / MARKER).is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        convert_gguf(file, target, {"gguf_sha256": digest, "gguf_file": str(file)}, progress)
    return ResolvedModel(str(file), "gguf", str(target), f"gguf-sha256:{digest}")


def _adapter_base(folder: Path) -> str:
    for name in ("prompteol_train.json", ADAPTER_CONFIG):
        p = folder / name
        if p.is_file():
            info = json.loads(p.read_text())
            base = info.get("base_model") or info.get("model") or info.get("base_model_name_or_path")
            if isinstance(base, dict):
                base = base.get("model")
            if base:
                return str(base)
    raise ModelNotFoundError(f"the adapter folder {folder} does not record its base model; pass --model too")


def resolve_model(ref: str, cache_dir=None, progress: bool = True) -> ResolvedModel:
    """Turn a user's model reference into something ``from_pretrained`` can load."""
    if not isinstance(ref, str) or not ref.strip():
        raise ModelNotFoundError(f"a model reference must be a non-empty string, got {ref!r}")
    if ref in PACKAGED_MODELS:
        if not is_pulled(ref, cache_dir):
            pull(ref, cache_dir=cache_dir, progress=progress)
        spec = PACKAGED_MODELS[ref]
        return ResolvedModel(ref, "packaged", str(packaged_path(ref, cache_dir)), f"gguf-sha256:{spec.sha256}")
    if ref in RANDOM_MODELS:
        folder = models_dir(cache_dir) / ref
        if not (folder / MARKER).is_file():
            tmp = folder.with_name(f".tmp-{ref}-{os.getpid()}")
            save_tiny_model(ref, tmp)
            (tmp / MARKER).write_text(json.dumps({"weights_id": weights_id(ref)}))
            shutil.rmtree(folder, ignore_errors=True)  # an incomplete folder is never trusted
            os.replace(tmp, folder)
        return ResolvedModel(ref, "random", str(folder), weights_id(ref))
    path = Path(ref).expanduser()
    if path.is_file():
        if path.suffix == ".gguf":
            return _resolve_gguf(path, cache_dir, progress)
        raise ModelNotFoundError(f"{ref} is a file but not a .gguf file; give a model folder, a .gguf file or an alias")
    if path.is_dir():
        if (path / ADAPTER_CONFIG).is_file():
            base = resolve_model(_adapter_base(path), cache_dir, progress)
            base.adapter = str(path)
            return base
        if not (path / "config.json").is_file():
            ggufs = sorted(path.glob("*.gguf"))
            if len(ggufs) == 1:
                return _resolve_gguf(ggufs[0], cache_dir, progress)
            raise ModelNotFoundError(f"{ref} is a folder without config.json (nor exactly one .gguf file)")
        return ResolvedModel(ref, "local", str(path), _folder_weights_id(path, cache_dir))
    looks_like_path = ref.startswith((".", "/", "~")) or ref.endswith(".gguf") or os.sep + os.sep in ref
    hint = difflib.get_close_matches(ref, known_aliases(), n=1)
    suggestion = f" Did you mean {hint[0]!r}?" if hint else ""
    if looks_like_path:
        raise ModelNotFoundError(f"no such file or folder: {ref}.{suggestion}")
    if _hub_cached(ref):
        return ResolvedModel(ref, "hub", ref, f"hub:{ref}")
    if not _hub_reachable():
        raise ModelNotFoundError(
            f"{ref!r} is not a packaged alias, a local folder or a .gguf file, and the model hub is not "
            f"reachable (offline), so it cannot be downloaded.{suggestion} Valid aliases: "
            f"{', '.join(known_aliases())}. Or pass a local folder / .gguf file."
        )
    return ResolvedModel(ref, "hub", ref, f"hub:{ref}")


def load_tokenizer(path: str, offline: bool = False):
    """The tokenizer, with a pad token assigned from its own special tokens when it has none.

    Padded positions are masked out, so which id pads never changes a vector.
    """
    from transformers import AutoTokenizer

    with quiet_transformers():
        tok = AutoTokenizer.from_pretrained(path, local_files_only=offline)
    if tok.pad_token is None:
        for candidate in (tok.eos_token, tok.unk_token, tok.bos_token):
            if candidate is not None:
                tok.pad_token = candidate
                break
        else:
            tok.pad_token = tok.convert_ids_to_tokens(0)
    return tok


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' load reports and weight-loading bars (the LM head we skip is expected)."""
    from transformers.utils import logging as tlog

    verbosity, bars = tlog.get_verbosity(), tlog.is_progress_bar_enabled()
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        tlog.set_verbosity(verbosity)
        if bars:
            tlog.enable_progress_bar()


_TORCH_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def load_base_model(path: str, dtype: str = "float32", device: str = "cpu", quantization=None, offline=False):
    """``AutoModel`` (the base model: no LM head, no vocabulary logits) in eval mode."""
    import torch
    from transformers import AutoModel

    kwargs: dict = {"dtype": getattr(torch, _TORCH_DTYPES[dtype]), "local_files_only": offline}
    if quantization in ("4bit", "8bit"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"quantization={quantization!r} uses bitsandbytes kernels that need a CUDA GPU, and none is "
                f"available here; use quantization='int8-dynamic' on CPU or run on a GPU machine"
            )
        from ..errors import require

        require("bitsandbytes", "gpu", f"{quantization} quantization")
        from transformers import BitsAndBytesConfig

        compute = getattr(torch, _TORCH_DTYPES[dtype]) if dtype != "float32" else torch.float16
        kwargs["quantization_config"] = (
            BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=compute)  # fmt: skip
            if quantization == "4bit"
            else BitsAndBytesConfig(load_in_8bit=True)
        )
        # an explicit "cuda:N" (one process per GPU, e.g. torchrun) pins the weights there
        kwargs["device_map"] = {"": device} if str(device).startswith("cuda") else "auto"
    elif device == "auto":
        kwargs["device_map"] = "auto" if torch.cuda.is_available() else None
    with quiet_transformers():
        model = AutoModel.from_pretrained(path, **kwargs)
    if "device_map" not in kwargs or kwargs["device_map"] is None:
        model.to("cuda" if device == "auto" and torch.cuda.is_available() else (device if device != "auto" else "cpu"))
    if quantization == "int8-dynamic":
        from torch.ao.quantization import quantize_dynamic

        model = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    model.eval()
    return model


_NORM_NAMES = ("norm", "final_layer_norm", "ln_f", "final_layernorm", "norm_f")


def _num_layers(model) -> int:
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return int(cfg.num_hidden_layers)


def find_decoder_layers(model, n: int | None = None):
    """``(parent_module, attribute_name, module_list)`` of the decoder blocks.

    With ``n`` the list must have that length (the config's layer count, before truncation);
    without it, the first ModuleList of decoder blocks is returned (after truncation).
    """
    import torch

    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.ModuleList):
            continue
        if n is not None and len(module) != n:
            continue
        if n is None and not all(type(m).__name__.endswith(("DecoderLayer", "Block", "Layer")) for m in module):
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        return parent, attr, module
    raise ConfigError(f"cannot find the decoder layers of {type(model).__name__}")


def resolve_layer(layer: int, num_layers: int) -> int:
    """Map ``layer`` (negative from the top) to an index into ``hidden_states`` (0..num_layers)."""
    idx = layer if layer >= 0 else num_layers + 1 + layer
    if not 0 <= idx <= num_layers:
        raise ConfigError(
            f"layer {layer} is out of range for a model with {num_layers} layers; "
            f"valid: {-(num_layers + 1)}..{num_layers} (-1 = last, 0 = embeddings)"
        )
    return idx


def truncate_to_layer(model, layer: int) -> int:
    """Drop the blocks above ``layer`` so the forward stops there; returns the resolved index.

    ``hidden_states[k]`` of a full forward is the raw output of block ``k`` for ``k`` below
    the top, and the final-normed output at the top; so below the top the final norm (and
    OPT's ``project_out``) is replaced by the identity.
    """
    import torch

    n = _num_layers(model)
    idx = resolve_layer(layer, n)
    if idx == n:
        return idx
    parent, attr, layers = find_decoder_layers(model, n)
    setattr(parent, attr, torch.nn.ModuleList(list(layers)[:idx]))
    for name in _NORM_NAMES:
        if isinstance(getattr(parent, name, None), torch.nn.Module):
            setattr(parent, name, torch.nn.Identity())
    if isinstance(getattr(parent, "project_out", None), torch.nn.Module):
        parent.project_out = None
    return idx
