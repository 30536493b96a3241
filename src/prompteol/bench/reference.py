"""The paper's code path (``reference``, ``reference-demo``): the full causal LM, as method.md runs it.

The paper's code path (``reference``, ``reference-demo``): the full causal LM with vocabulary logits,
``output_hidden_states=True``, batch 16 in the given order, left padding, the demonstration in every prompt."""

from __future__ import annotations

import time

import numpy as np

from .base import Runner, register_runner
from .configs import DEMO, BenchConfig


@register_runner("reference")
class ReferenceRunner(Runner):
    """The reference recipe (kongds/scaling_sentemb evaluation.py), with our normalisation/rendering."""

    def __init__(self, cfg: BenchConfig, args):
        super().__init__()
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ..encoder.prompts.templates import TEMPLATES, Demonstration, normalize_sentence
        from ..models.loading import quiet_transformers, resolve_model

        path = resolve_model(args.model, progress=False).path
        t = time.perf_counter()
        with quiet_transformers():
            tok = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, args.dtype)).to(args.device).eval()
        self.load_s = time.perf_counter() - t
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        tok.padding_side = "left"
        demos = [Demonstration(*DEMO)] if cfg.options.get("demo") else []
        self.render = lambda s: TEMPLATES["prompteol"].render(normalize_sentence(s), demos)
        self.tok, self.model, self.device = tok, model, args.device
        self.weights_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20

    def token_counts(self, sentences: list[str]) -> tuple[int, int]:
        n = sum(len(x) for x in self.tok([self.render(s) for s in sentences])["input_ids"])
        return n, n

    def embed(self, sentences: list[str]) -> np.ndarray:
        import torch

        prompts = [self.render(s) for s in sentences]

        def run(batch_prompts):
            batch = self.tok(batch_prompts, padding=True, return_tensors="pt").to(self.device)
            with torch.no_grad():
                return self.model(**batch, output_hidden_states=True, return_dict=True).hidden_states[-1][:, -1, :]

        return torch.cat([run(prompts[i : i + 16]) for i in range(0, len(prompts), 16)]).float().cpu().numpy()
