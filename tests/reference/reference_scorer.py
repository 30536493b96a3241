"""An independent PromptEOL scorer: the reference recipe, written from method.md alone.

It does not import prompteol (``test_reference.py`` checks its imports), so the tests that compare
prompteol with it compare two implementations, not one with itself. The recipe (method.md section 1,
as the public reference code kongds/scaling_sentemb runs it):

- the reference's evaluation-time sentence normalisation: a non-empty sentence that does not end with
  ``.``, ``?``, ``"`` or ``'`` gets a ``.``; every ``"`` becomes ``'``; a final ``?`` becomes ``.``;
- the full prompt ``This sentence : "<S>" means in one word:"``, tokenized with the tokenizer's own
  special tokens, no truncation;
- batches of ``batch_size`` sentences in the given order, padded on the **left**;
- the full causal LM (``AutoModelForCausalLM``) with ``output_hidden_states=True``; the vector is the
  last position of ``hidden_states[-1]`` (the last layer, after the final norm).

Left padding leaves the vectors unchanged for models whose positions are relative (RoPE: Llama, Qwen2)
or counted from the attention mask (OPT); for absolute positions counted from the token index (GPT-2)
or sliding-window masks built from token indices (Gemma 3), use ``batch_size=1``.

STS-B dev is read as SentEval reads it (``sts-dev.csv``: score in column 5, sentences in columns 6 and 7,
``' '.join(s.split())``) and scored with the Spearman correlation of the cosines, x100.

Only transformers, torch (which transformers runs on), numpy and scipy are used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

TEMPLATE = 'This sentence : "{sentence}" means in one word:"'


def normalize(sentence: str) -> str:
    """The reference's evaluation-time normalisation (method.md section 1), in its order."""
    s = sentence
    if len(s) > 0 and s[-1] not in ".?\"'":
        s += "."
    s = s.replace('"', "'")
    if len(s) > 0 and s[-1] == "?":
        s = s[:-1] + "."
    return s


def prompt(sentence: str) -> str:
    return TEMPLATE.format(sentence=normalize(sentence))


class ReferenceScorer:
    """``encode(sentences) -> (N, H) float32`` with the reference recipe, from a transformers folder."""

    def __init__(self, model_dir: str | Path, dtype: str = "float32"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:  # masked out: the choice never reaches a vector
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=getattr(torch, dtype))
        self.model.eval()

    def encode(self, sentences: list[str], batch_size: int = 16) -> np.ndarray:
        import torch

        out = []
        for i in range(0, len(sentences), batch_size):
            batch = [prompt(s) for s in sentences[i : i + batch_size]]
            inputs = self.tokenizer(batch, return_tensors="pt", padding=True)
            with torch.no_grad():
                hidden = self.model(**inputs, output_hidden_states=True).hidden_states[-1]  # (B, T, H)
            out.append(hidden[:, -1, :].float().numpy())  # left padding: the last position is the last token
        return np.concatenate(out) if out else np.zeros((0, self.model.config.hidden_size), np.float32)


def read_stsb_dev(data_dir: str | Path) -> tuple[list[str], list[str], np.ndarray]:
    """STS-B dev as SentEval reads it: (sentences 1, sentences 2, gold scores)."""
    path = Path(data_dir) / "downstream" / "STS" / "STSBenchmark" / "sts-dev.csv"
    s1, s2, gold = [], [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            text = line.strip().split("\t")
            s1.append(" ".join(text[5].split()))
            s2.append(" ".join(text[6].split()))
            gold.append(float(text[4]))
    return s1, s2, np.asarray(gold)


def sts_spearman(vectors1: np.ndarray, vectors2: np.ndarray, gold: np.ndarray) -> float:
    """Spearman x100 of the pairs' cosine similarities."""
    from scipy.stats import spearmanr

    a = vectors1.astype(np.float64)
    b = vectors2.astype(np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(spearmanr(np.nan_to_num(cos), gold).correlation * 100)


def score_stsb_dev(scorer: ReferenceScorer, data_dir: str | Path, batch_size: int = 16) -> float:
    """The reference's STS-B dev score: every unique sentence encoded once, in first-seen order."""
    s1, s2, gold = read_stsb_dev(data_dir)
    unique = list(dict.fromkeys(s1 + s2))
    vectors = scorer.encode(unique, batch_size=batch_size)
    index = {s: i for i, s in enumerate(unique)}
    return sts_spearman(vectors[[index[s] for s in s1]], vectors[[index[s] for s in s2]], gold)
