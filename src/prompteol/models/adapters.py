"""LoRA adapters (PEFT) on top of the base model used by the encoder."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..errors import ModelNotFoundError, require

__all__ = ["apply_adapter", "adapter_id", "adapter_identity", "check_training_settings"]

_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
_CONFIG = "adapter_config.json"


def adapter_id(path: str | Path) -> str:
    """sha256 of the adapter weights."""
    folder = Path(path)
    for name in _WEIGHTS:
        f = folder / name
        if f.is_file():
            return "adapter-sha256:" + hashlib.sha256(f.read_bytes()).hexdigest()
    raise ModelNotFoundError(f"{folder} holds no adapter weights ({' or '.join(_WEIGHTS)}); is it an adapter folder?")


def adapter_identity(path: str | Path) -> dict:
    """What the fingerprint hashes of an adapter: its weights and its config (alpha and rank scale
    the update, so the same weights under another ``adapter_config.json`` give other vectors)."""
    folder = Path(path)
    config = folder / _CONFIG
    return {
        "weights": adapter_id(folder),
        "config": hashlib.sha256(config.read_bytes()).hexdigest() if config.is_file() else None,
    }


def apply_adapter(model, path: str | Path, merge: bool = True):
    """Load the LoRA adapter at ``path`` onto ``model``; merge it into the weights when possible.

    Returns ``(model, adapter_identity)``.
    """
    require("peft", "train", "Loading a LoRA adapter")
    from peft import PeftModel

    ident = adapter_identity(path)
    peft_model = PeftModel.from_pretrained(model, str(path), is_trainable=False)
    if merge:
        model = peft_model.merge_and_unload()
    else:
        model = peft_model
    model.eval()
    return model, ident


def check_training_settings(path: str | Path, config) -> list[str]:
    """Warn (and return the differences) when ``config`` encodes differently from how the adapter was trained.

    An adapter trained with one template/layer/pooling gives poor vectors under another; this is
    allowed (it can be an experiment) but never silent. Compared: every ``prompt``-kind option of
    :class:`~prompteol.EncoderConfig` (how a sentence is rendered and read out).
    """
    import json
    import logging

    run = Path(path) / "prompteol_train.json"
    if not run.is_file():
        return []
    try:
        trained = json.loads(run.read_text()).get("encoder") or {}
    except (OSError, ValueError):
        return []
    compared = type(config).fields_of_kind("prompt")
    diffs = [f"{k}: trained {b!r}, now {a!r}" for k, (a, b) in config.differences(trained, compared).items()]
    if diffs:
        logging.getLogger("prompteol").warning(
            "the adapter %s was trained with other encoder settings (%s); its vectors may be poor", path, "; ".join(diffs)
        )
    return diffs
