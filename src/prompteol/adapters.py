"""LoRA adapters (PEFT) on top of the base model used by the encoder."""

from __future__ import annotations

import hashlib
from pathlib import Path

from .errors import ModelNotFoundError, require

__all__ = ["apply_adapter", "adapter_id"]

_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def adapter_id(path: str | Path) -> str:
    """sha256 of the adapter weights (part of the encoder fingerprint)."""
    folder = Path(path)
    for name in _WEIGHTS:
        f = folder / name
        if f.is_file():
            return "adapter-sha256:" + hashlib.sha256(f.read_bytes()).hexdigest()
    raise ModelNotFoundError(f"{folder} holds no adapter weights ({' or '.join(_WEIGHTS)}); is it an adapter folder?")


def apply_adapter(model, path: str | Path, merge: bool = True):
    """Load the LoRA adapter at ``path`` onto ``model``; merge it into the weights when possible.

    Returns ``(model, adapter_id)``.
    """
    require("peft", "train", "Loading a LoRA adapter")
    from peft import PeftModel

    ident = adapter_id(path)
    peft_model = PeftModel.from_pretrained(model, str(path), is_trainable=False)
    if merge:
        model = peft_model.merge_and_unload()
    else:
        model = peft_model
    model.eval()
    return model, ident
