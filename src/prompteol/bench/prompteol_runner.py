"""prompteol itself (``prompteol``, ``prompteol-*``): :class:`prompteol.Encoder` with the configuration's options."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .base import Runner, register_runner
from .configs import BenchConfig


@register_runner("encoder")
class EncoderRunner(Runner):
    def __init__(self, cfg: BenchConfig, args):
        super().__init__()
        from ..encoder.encoder import Encoder

        kwargs: dict[str, Any] = {"device": args.device}
        if args.dtype != "float32":
            kwargs["dtype"] = args.dtype
        kwargs.update(cfg.options)
        t = time.perf_counter()
        self.enc = enc = Encoder.from_pretrained(args.model, progress=False, **kwargs)
        self.load_s = time.perf_counter() - t
        self.args = args
        self.nonembed_params = sum(p.numel() for n, p in enc.model.named_parameters() if "embed" not in n) or None
        self.weights_mb = sum(p.numel() * p.element_size() for p in enc.model.parameters()) / 2**20

    def token_counts(self, sentences: list[str]) -> tuple[int, int]:
        enc = self.enc
        seqs = enc.prompts.tokenize(enc.prompts.prepare(sentences))
        prompt_tokens = sum(len(s) for s in seqs)
        prefix = enc.prefix.get(enc.runner) if enc.config.prefix_cache else None
        cached = len(prefix.ids) * sum(1 for s in seqs if s[: len(prefix.ids)] == prefix.ids) if prefix else 0
        return prompt_tokens, prompt_tokens - cached

    def embed(self, sentences: list[str]) -> np.ndarray:
        out = self.enc.encode(sentences, batch_size=self.args.batch_size, max_batch_tokens=self.args.max_batch_tokens,
                              use_embedding_cache=False, show_progress=False)  # fmt: skip
        desc = self.enc.describe()
        self.extra["precision"] = desc["precision"]
        if desc.get("fused"):
            self.extra["fused"] = desc["fused"]  # compile time, calls, the first-call check, any fallback
        if desc.get("backend"):
            self.extra["backend"] = desc["backend"]  # the export and its time, the first-call check, any fallback
        return out
