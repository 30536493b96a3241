"""The PromptEOL encoder: render -> tokenize -> batch -> forward to a layer -> pool -> post-process.

:class:`~prompteol.encoder.encoder.Encoder` is a short composition of the parts in this package
(docs/architecture.md): ``config`` (every option, declared once), ``prompts/`` (templates,
presets, texts to token ids), ``batching`` and ``limits`` (length-sorted batches that fit),
``forward/`` (the model run up to the read-out layer, the shared-prefix cache, fused blocks),
``pooling``, ``postprocess``, ``identity`` (the fingerprint), ``precision`` (``dtype="auto"``) and
``methods/`` (the training-free methods, each a :class:`~prompteol.encoder.methods.Method`
registered by name). Importing this package does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {"Encoder": ".encoder", "EncoderConfig": ".config"}

__all__ = ["Encoder", "EncoderConfig"]

if TYPE_CHECKING:  # pragma: no cover
    from .config import EncoderConfig
    from .encoder import Encoder

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
