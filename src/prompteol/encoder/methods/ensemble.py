"""Ensembles of prompts (MetaEOL, Lei et al. 2024; ``prompts=(...)``, ``combine="mean"|"concat"``).

Each template (the config's, then every one of ``prompts``) is a member encoder on the same loaded model
(every other method applies inside each member); their vectors are averaged or concatenated.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .base import Method, MethodSetup, register

if TYPE_CHECKING:  # pragma: no cover
    from ..config import EncoderConfig

__all__ = ["Ensemble"]


@register
class Ensemble(Method):
    """Member encoders, one per template; the vectors combined by ``config.combine``."""

    name = "ensemble"
    dim_fields = ("prompts", "combine")
    composite = True

    @classmethod
    def applies(cls, config: EncoderConfig) -> bool:
        return bool(config.prompts)

    def __init__(self, setup: MethodSetup):
        super().__init__(setup)
        c = setup.config
        self.concat = c.combine == "concat"
        self.members = [setup.make_encoder(c.replace(template=t, prompts=())) for t in (c.template, *c.prompts)]

    def dim(self) -> int:
        dims = [m.dim for m in self.members]
        return sum(dims) if self.concat else dims[0]

    def batches(self, sentences: list[str], batch_size: int, max_batch_tokens: int | None
                ) -> Iterator[tuple[list[int], np.ndarray]]:  # fmt: skip
        """Every member's vectors of a chunk of sentences, combined, chunk by chunk."""
        chunk = 8 * batch_size  # members sort each chunk by length themselves
        for lo in range(0, len(sentences), chunk):
            part = sentences[lo : lo + chunk]
            outs = []
            for member in self.members:
                vecs = np.zeros((len(part), member.dim), dtype=np.float32)
                for idx, v in member.iter_batches(part, batch_size, max_batch_tokens):
                    vecs[idx] = v
                outs.append(vecs)
            combined = np.concatenate(outs, axis=1) if self.concat else np.mean(outs, axis=0)
            yield list(range(lo, lo + len(part))), combined.astype(np.float32)

    def embed(self, texts: Sequence[str], max_length: int | None = None) -> Any:
        import torch

        outs = [m.embed(texts, max_length=max_length) for m in self.members]
        return torch.cat(outs, dim=1) if self.concat else torch.stack(outs).mean(dim=0)
