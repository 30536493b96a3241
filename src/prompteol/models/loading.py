"""Resolve a model reference and load the base model (no LM head) and its tokenizer.

A reference is, in this order: a packaged alias (pulled on first use), a tiny random test
model (``tiny-random-llama`` ...), a ``.gguf`` file (converted once and cached by its
sha256), a local transformers folder (or a LoRA adapter folder made by ``prompteol train``),
or a hub id (used when the hub is reachable; offline it fails at once with a clear message).
"""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from ..encoder.identity import files_sha256, folder_identity  # noqa: F401 - re-exported (the identity of a folder)
from ..errors import ConfigError, ModelNotFoundError
from ..paths import cache_root, models_dir
from .gguf import convert_gguf
from .pull import MARKER, is_pulled, packaged_path, pull, sha256_file
from .registry import PACKAGED_MODELS
from .testing import RANDOM_MODELS, save_tiny_model, weights_id

__all__ = [
    "ResolvedModel", "resolve_model", "load_base_model", "load_tokenizer", "known_aliases", "folder_identity",
    "find_decoder_layers", "resolve_layer", "num_layers",
]  # fmt: skip

log = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"


@dataclass
class ResolvedModel:
    """Where a model reference points to.

    ``path`` is what ``from_pretrained`` receives (a folder, or a hub id for ``kind == "hub"``);
    ``identity`` is what the fingerprint hashes (see :mod:`prompteol.encoder.identity`): the hashes of
    the weights and of the tokenizer and config files, the versions that converted a GGUF file,
    or the hub id with its revision (the resolved commit is added after loading).
    """

    ref: str
    kind: str  # packaged | random | gguf | local | hub
    path: str
    identity: dict
    adapter: str | None = None

    @property
    def weights_id(self) -> str:
        """A short readable id of the weights (the full identity is ``identity``)."""
        return str(self.identity.get("weights"))


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


def _resolve_gguf(file: Path, cache_dir=None, progress: bool = True) -> ResolvedModel:
    digest = sha256_file(file)
    target = cache_root(cache_dir) / "gguf" / digest[:16]
    if not (target / MARKER).is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        convert_gguf(file, target, {"gguf_sha256": digest, "gguf_file": str(file)}, progress)
    return ResolvedModel(str(file), "gguf", str(target), folder_identity(target, cache_dir))


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


def resolve_model(ref: str, cache_dir=None, progress: bool = True, revision: str | None = None) -> ResolvedModel:
    """Turn a user's model reference into something ``from_pretrained`` can load."""
    if not isinstance(ref, str) or not ref.strip():
        raise ModelNotFoundError(f"a model reference must be a non-empty string, got {ref!r}")
    if ref in PACKAGED_MODELS:
        if not is_pulled(ref, cache_dir):
            pull(ref, cache_dir=cache_dir, progress=progress)
        folder = packaged_path(ref, cache_dir)
        return ResolvedModel(ref, "packaged", str(folder), folder_identity(folder, cache_dir))
    if ref in RANDOM_MODELS:
        folder = models_dir(cache_dir) / ref
        if not (folder / MARKER).is_file():
            from ..fileio import write_folder_atomic

            with write_folder_atomic(folder) as tmp:  # an incomplete folder is never trusted
                save_tiny_model(ref, tmp)
                (tmp / MARKER).write_text(json.dumps({"weights_id": weights_id(ref)}))
        return ResolvedModel(ref, "random", str(folder), {"weights": weights_id(ref)})
    path = Path(ref).expanduser()
    if path.is_file():
        if path.suffix == ".gguf":
            return _resolve_gguf(path, cache_dir, progress)
        raise ModelNotFoundError(f"{ref} is a file but not a .gguf file; give a model folder, a .gguf file or an alias")
    if path.is_dir():
        if (path / ADAPTER_CONFIG).is_file():
            base = resolve_model(_adapter_base(path), cache_dir, progress, revision)
            base.adapter = str(path)
            return base
        if not (path / "config.json").is_file():
            ggufs = sorted(path.glob("*.gguf"))
            if len(ggufs) == 1:
                return _resolve_gguf(ggufs[0], cache_dir, progress)
            raise ModelNotFoundError(f"{ref} is a folder without config.json (nor exactly one .gguf file)")
        return ResolvedModel(ref, "local", str(path), folder_identity(path, cache_dir))
    looks_like_path = ref.startswith((".", "/", "~")) or ref.endswith(".gguf") or os.sep + os.sep in ref
    hint = difflib.get_close_matches(ref, known_aliases(), n=1)
    suggestion = f" Did you mean {hint[0]!r}?" if hint else ""
    if looks_like_path:
        raise ModelNotFoundError(f"no such file or folder: {ref}.{suggestion}")
    hub = {"weights": f"hub:{ref}", "revision": revision}  # the commit is added once loaded
    if _hub_cached(ref):
        return ResolvedModel(ref, "hub", ref, hub)
    if not _hub_reachable():
        raise ModelNotFoundError(
            f"{ref!r} is not a packaged alias, a local folder or a .gguf file, and the model hub is not "
            f"reachable (offline), so it cannot be downloaded.{suggestion} Valid aliases: "
            f"{', '.join(known_aliases())}. Or pass a local folder / .gguf file."
        )
    return ResolvedModel(ref, "hub", ref, hub)


def load_tokenizer(path: str, offline: bool = False, revision: str | None = None):
    """The tokenizer, with a pad token assigned from its own special tokens when it has none.

    Padded positions are masked out, so which id pads never changes a vector.
    """
    from transformers import AutoTokenizer

    with quiet_transformers():
        tok = AutoTokenizer.from_pretrained(path, local_files_only=offline, revision=revision)
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


#: the dtype the weights are loaded in; ``bf16-mixed`` loads float32 and then keeps only the
#: Linear weights in bfloat16 (see :func:`to_mixed_bf16`)
_TORCH_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16", "bf16-mixed": "float32"}


def to_mixed_bf16(model) -> None:
    """Linear weights to bfloat16; embeddings, norms and everything else stay float32.

    Run under ``torch.autocast(dtype=bfloat16)`` (the runner does), every matmul is a bfloat16
    matmul while the residual stream, the norms, the softmax statistics and the read-out stay
    float32 (a bf16 linear output added to the fp32 residual promotes to fp32).
    """
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.to(torch.bfloat16)


def load_base_model(
    path: str, dtype: str = "float32", device: str = "cpu", quantization=None, offline=False, revision=None
):
    """``AutoModel`` (the base model: no LM head, no vocabulary logits) in eval mode."""
    import torch
    from transformers import AutoModel

    kwargs: dict = {"dtype": getattr(torch, _TORCH_DTYPES[dtype]), "local_files_only": offline}
    if revision is not None:
        kwargs["revision"] = revision
    if quantization in ("4bit", "8bit"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"quantization={quantization!r} uses bitsandbytes kernels that need a CUDA GPU, and none is "
                f"available here; on CPU use dtype='auto' (bfloat16 where the CPU has it natively) or run on a GPU machine"
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
    if dtype == "bf16-mixed":
        to_mixed_bf16(model)
    if quantization == "int8-dynamic":
        from torch.ao.quantization import quantize_dynamic

        model = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    model.eval()
    return model


def num_layers(model) -> int:
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
