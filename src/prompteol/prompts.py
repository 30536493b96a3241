"""From user texts to prompt token ids: validate, normalise, cut, render, tokenize.

:class:`PromptBuilder` is the text half of the encoder (no model, no torch): every caller
(encode, training's embed, the server, the benchmarks) turns texts into token ids here, so
rendering cannot drift between them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .errors import InputError
from .templates import normalize_sentence

__all__ = ["PromptBuilder", "Tokenized", "check_texts"]

log = logging.getLogger(__name__)


def check_texts(texts) -> list[str]:
    """A list of strings, or :class:`InputError` naming the first bad item."""
    if isinstance(texts, str):
        raise InputError("texts should be a list of strings, got a single string; wrap it in a list")
    if isinstance(texts, (bytes, bytearray)):
        raise InputError("texts should be a list of strings, got bytes; decode them first (e.g. data.decode('utf-8'))")
    if isinstance(texts, Mapping):
        raise InputError(
            f"texts should be a list of strings, got a {type(texts).__name__}; pass list(d.values()) "
            f"or list(d.keys()) explicitly"
        )
    if isinstance(texts, np.ndarray):
        texts = texts.tolist()
    try:
        items = list(texts)
    except TypeError:
        raise InputError(f"texts should be a list of strings, got {type(texts).__name__}") from None
    for i, t in enumerate(items):
        if isinstance(t, (bytes, bytearray)):
            raise InputError(f"texts[{i}] is bytes; decode it to a string first (e.g. b.decode('utf-8'))")
        if not isinstance(t, str):
            raise InputError(f"texts[{i}] should be a string, got {type(t).__name__}: {t!r:.60}")
    return items


@dataclass(frozen=True)
class Tokenized:
    """Prepared sentences with the token ids of their full prompts (:meth:`PromptBuilder.build`).

    :meth:`Encoder.encode` accepts one instead of texts, so a caller that tokenized already (the
    server, in its tokenizer thread) never has the texts tokenized twice, nor in another thread.
    """

    sentences: list[str]
    ids: list[list[int]]

    def __post_init__(self) -> None:
        if len(self.sentences) != len(self.ids):
            raise InputError(f"{len(self.sentences)} sentences but {len(self.ids)} token-id sequences")

    def __len__(self) -> int:
        return len(self.sentences)

    @property
    def lengths(self) -> list[int]:
        return [len(s) for s in self.ids]


class PromptBuilder:
    """The prompts of one encoder configuration (template, demonstrations, text handling)."""

    def __init__(self, tokenizer, config):
        self.tokenizer = tokenizer
        self.config = config

    def prepare(self, texts: Sequence[str], max_length: int | None = None, warn_cut: bool = True) -> list[str]:
        """Validate, cut (if ``max_length``, else the config's) and normalise (if configured).

        ``warn_cut=False`` silences the truncation warning (training cuts every long sentence on purpose).
        """
        items = check_texts(texts)
        limit = max_length if max_length is not None else self.config.max_length
        if limit is not None:
            items = self._truncate(items, limit, warn_cut)
        if self.config.normalize_text:
            items = [normalize_sentence(t) for t in items]
        return items

    def _truncate(self, texts: list[str], limit: int, warn_cut: bool = True) -> list[str]:
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        out, cut = [], 0
        for text, seq in zip(texts, ids):
            if len(seq) > limit:
                text = self.tokenizer.decode(seq[:limit])
                cut += 1
            out.append(text)
        if cut and warn_cut:
            log.warning("%d of %d sentence(s) were cut to max_length=%d tokens", cut, len(texts), limit)
        return out

    def render(self, sentence: str) -> str:
        """The prompt for one prepared sentence (template and demonstrations applied)."""
        return self.config.template.render(sentence, self.config.demonstrations)

    def tokenize(self, sentences: Sequence[str]) -> list[list[int]]:
        """Token ids of the full prompts of prepared sentences, with the tokenizer's own special
        tokens; no padding."""
        prompts = [self.render(s) for s in sentences]
        ids = self.tokenizer(prompts, add_special_tokens=True)["input_ids"] if prompts else []
        for i, seq in enumerate(ids):
            if not seq:
                raise InputError(
                    f"texts[{i}] gives an empty prompt ({prompts[i]!r} has no tokens); "
                    f"use a template or a non-empty text"
                )
        return ids

    def build(self, texts: Sequence[str]) -> Tokenized:
        """``prepare`` then ``tokenize``: what :meth:`Encoder.encode` needs, computed once.

        The shared prefix's ids are computed here too (once), so a thread that only builds
        prompts is the only one that ever uses the tokenizer (the server's tokenizer thread).
        """
        sentences = self.prepare(texts)
        self._prefix_ids  # noqa: B018 - computed in this thread, not later in the model thread
        return Tokenized(sentences, self.tokenize(sentences))

    def prefix_ids(self) -> list[int]:
        """Token ids of everything before the sentence (demonstrations + template start)."""
        return list(self._prefix_ids)

    @cached_property
    def _prefix_ids(self) -> list[int]:  # computed once, so later calls never touch the tokenizer
        text = self.config.template.prefix(self.config.demonstrations)
        return self.tokenizer(text, add_special_tokens=True)["input_ids"]

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Number of prompt tokens (template and demonstrations included) per text."""
        return [len(s) for s in self.tokenize(self.prepare(texts))]
