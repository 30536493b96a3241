"""Run a prompteol encoder on MTEB tasks: an adapter implementing ``mteb``'s encoder protocol.

>>> import mteb
>>> from prompteol.evaluation.mteb_adapter import PromptEOLMTEB
>>> model = PromptEOLMTEB.from_pretrained("smollm2-135m")                      # doctest: +SKIP
>>> results = mteb.evaluate(model, mteb.get_tasks(tasks=["STSBenchmark"]))     # doctest: +SKIP

The template, demonstrations, layer and pooling are those of the wrapped
:class:`~prompteol.Encoder`: MTEB hands over raw texts and our encoder renders them, so the
same sentence gets the same vector here, in ``prompteol eval`` and in ``prompteol encode``
(and shares the embedding cache). MTEB's query/passage prompt types are ignored: PromptEOL
uses one template for every text. Needs ``pip install 'prompteol[mteb]'``.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from ..errors import require

require("mteb", "mteb", "the MTEB adapter")

from mteb.models.abs_encoder import AbsEncoder  # noqa: E402
from mteb.models.model_meta import ModelMeta, ScoringFunction  # noqa: E402

__all__ = ["PromptEOLMTEB"]


class PromptEOLMTEB(AbsEncoder):
    """An ``mteb`` encoder (``mteb.models.EncoderProtocol``) around any object with ``encode(list[str])``.

    Args:
        encoder: a :class:`prompteol.Encoder` (or anything with ``encode(texts) -> (N, H)``).
        name: model name for MTEB's results (``org/name``); default ``prompteol/<model>``.
        revision: recorded by MTEB; default the encoder's fingerprint, so a different template,
            demonstration or layer never reuses another configuration's cached MTEB results.
        batch_size: sentences per forward batch when MTEB gives none.
    """

    def __init__(self, encoder, *, name: str | None = None, revision: str | None = None, batch_size: int = 32):
        self.model = encoder
        self.batch_size = batch_size
        config = getattr(encoder, "config", None)
        model_name = getattr(config, "model", None) or getattr(encoder, "name", None) or type(encoder).__name__
        fingerprint = getattr(encoder, "fingerprint", None)
        dim = getattr(encoder, "dim", None)
        meta = {
            "name": name or f"prompteol/{re.sub(r'[^A-Za-z0-9._-]+', '-', str(model_name)).strip('-')}",
            "revision": revision or (str(fingerprint) if fingerprint else None),
            "framework": ["PyTorch", "Transformers"],
            "similarity_fn_name": ScoringFunction.COSINE,
            "use_instructions": False,
            "embed_dim": int(dim) if isinstance(dim, int) else None,
            "modalities": ["text"],
        }
        self.mteb_model_meta = ModelMeta.create_empty({k: v for k, v in meta.items() if v is not None})

    @classmethod
    def from_pretrained(cls, model: str = "smollm2-135m", *, batch_size: int = 32, **encoder_kwargs) -> PromptEOLMTEB:
        """Build the :class:`~prompteol.Encoder` (same arguments as ``Encoder.from_pretrained``) and wrap it."""
        from ..encoder import Encoder

        encoder_kwargs.setdefault("cache", True)
        return cls(Encoder.from_pretrained(model, **encoder_kwargs), batch_size=batch_size)

    def encode(
        self,
        inputs,
        *,
        task_metadata=None,
        hf_split: str | None = None,
        hf_subset: str | None = None,
        prompt_type=None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Embed every text of MTEB's DataLoader (batches with a ``text`` list) -> float32 (N, H)."""
        texts: list[str] = []
        for batch in inputs:
            if "text" not in batch:
                raise ValueError(f"PromptEOLMTEB encodes text only; got a batch with keys {sorted(batch)}")
            texts.extend(batch["text"])
        options: dict[str, Any] = {}
        if _accepts(self.model.encode, "batch_size"):
            options["batch_size"] = int(kwargs.get("batch_size") or self.batch_size)
        if "show_progress_bar" in kwargs and _accepts(self.model.encode, "show_progress"):
            options["show_progress"] = bool(kwargs["show_progress_bar"])
        return np.asarray(self.model.encode(texts, **options), dtype=np.float32)


def _accepts(fn, name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
