"""From user texts to prompt token ids: validate, normalise, cut, render, tokenize.

:class:`PromptBuilder` is the text half of the encoder (no model, no torch): every caller
(encode, training's embed, the server, the benchmarks) turns texts into token ids here, so
rendering cannot drift between them.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import numpy as np

from ...errors import InputError
from .templates import normalize_sentence

__all__ = ["PromptBuilder", "PromptEdit", "Tokenized", "check_texts", "ContextLengthError", "surrogate_problem"]

log = logging.getLogger(__name__)

_SURROGATE = re.compile(r"[\ud800-\udfff]")


class ContextLengthError(InputError):
    """A prompt has more tokens than the model has positions (:attr:`PromptBuilder.max_positions`)."""

    def __init__(self, message: str, index: int, tokens: int, limit: int):
        super().__init__(message)
        self.index = index
        self.tokens = tokens
        self.limit = limit


def surrogate_problem(text: str) -> str | None:
    """What is wrong with ``text`` if it holds a surrogate code point (not valid Unicode: no
    tokenizer can encode it), else ``None``. A sentence for messages: ``"contains a lone ..."``."""
    found = _SURROGATE.search(text)
    if found is None:
        return None
    return (
        f"contains a lone surrogate (U+{ord(found.group()):04X}) at character {found.start()}; that is not "
        f"valid Unicode (a JSON \\u escape without its pair, or bytes decoded with errors='surrogateescape'), "
        f"so no tokenizer can read it: remove or replace it"
    )


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
        problem = surrogate_problem(t)
        if problem is not None:
            raise InputError(f"texts[{i}] {problem}")
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


class PromptEdit(Protocol):
    """What a method adds to the prompts (:class:`~prompteol.encoder.methods.Method` implements it)."""

    def edit_ids(self, ids: list[list[int]]) -> list[list[int]]: ...

    def prefix_ids(self, ids: list[int]) -> list[int]: ...

    def sentence_offset(self) -> int: ...


class PromptBuilder:
    """The prompts of one encoder configuration (template, demonstrations, text handling), with the
    token-level edits of its methods (``edits``, applied in order after tokenizing)."""

    def __init__(self, tokenizer, config, max_positions: int | None = None, edits: Sequence[PromptEdit] = ()):
        self.tokenizer = tokenizer
        self.config = config
        #: the model's maximum number of positions (set by the encoder from the model config); a
        #: prompt with more tokens is refused with :class:`ContextLengthError`. ``None``: no limit.
        self.max_positions = max_positions
        self.edits = list(edits)

    def prepare(self, texts: Sequence[str], max_length: int | None = None, warn_cut: bool = True) -> list[str]:
        """Validate, cut (if ``max_length``, else the config's) and normalise (if configured).

        ``warn_cut=False`` silences the truncation warning (training cuts every long sentence on purpose).
        A prepared sentence whose prompt is over :attr:`max_positions` raises :class:`ContextLengthError`
        naming its index in ``texts`` (:meth:`tokenize` checks too, but a caller may tokenize only some
        of the sentences, e.g. those not in the embedding cache).
        """
        items = check_texts(texts)
        limit = max_length if max_length is not None else self.config.max_length
        if limit is not None:
            items = self._truncate(items, limit, warn_cut)
        if self.config.normalize_text:
            items = [normalize_sentence(t) for t in items]
        self._check_long(items)
        return items

    def _check_long(self, sentences: list[str]) -> None:
        """Tokenize (and check) only the sentences whose prompt could be over :attr:`max_positions`:
        those with more than ``max_positions / 2`` UTF-8 bytes once rendered (byte-level BPE gives at
        most one token per byte, SentencePiece with byte fallback one per byte plus a word marker);
        the exact check of every prompt is :meth:`tokenize`'s."""
        limit = self.max_positions
        if limit is None:
            return
        shape = self._render_shape

        def could_exceed(s: str) -> bool:
            if shape is not None and 8 * (shape[0] + shape[1] * len(s)) + 8 <= limit:
                return False  # even at 4 UTF-8 bytes per character (no rendering, no encoding)
            return 2 * len(self.render(s).encode("utf-8")) + 8 > limit

        suspects = [i for i, s in enumerate(sentences) if could_exceed(s)]
        if suspects:
            ids = self.tokenizer([self.render(sentences[i]) for i in suspects], add_special_tokens=True)["input_ids"]
            for i, seq in zip(suspects, ids):
                self._check_length(i, len(seq), sentences[i])

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
        tokens; no padding. A prompt over :attr:`max_positions` raises :class:`ContextLengthError`
        (the index is into ``sentences``)."""
        prompts = [self.render(s) for s in sentences]
        ids = self.tokenizer(prompts, add_special_tokens=True)["input_ids"] if prompts else []
        for i, seq in enumerate(ids):
            if not seq:
                raise InputError(
                    f"texts[{i}] gives an empty prompt ({prompts[i]!r} has no tokens); "
                    f"use a template or a non-empty text"
                )
            self._check_length(i, len(seq), sentences[i])
        for edit in self.edits:
            ids = edit.edit_ids(ids)
        return ids

    def _check_length(self, index: int, tokens: int, sentence: str) -> None:
        limit = self.max_positions
        if limit is None or tokens <= limit:
            return
        fixed = len(self._template_ids)  # the template's own tokens (a long sentence is never tokenized twice)
        room = limit - fixed
        fix = (
            f"set max_length (--max-length N) to cut sentences to N tokens before templating (N <= {room} here)"
            if room > 0
            else f"the template and demonstrations alone take {fixed} tokens: use fewer demonstrations"
        )
        quote = repr(sentence[:40]) + ("..." if len(sentence) > 40 else "")
        raise ContextLengthError(
            f"texts[{index}] ({quote}) is {tokens} tokens once rendered in the prompt template, more "
            f"than the model's maximum of {limit} positions; shorten it, or {fix}",
            index, tokens, limit,
        )  # fmt: skip

    def build(self, texts: Sequence[str]) -> Tokenized:
        """``prepare`` then ``tokenize``: what :meth:`Encoder.encode` needs, computed once.

        The shared prefix's ids are computed here too (once), so a thread that only builds
        prompts is the only one that ever uses the tokenizer (the server's tokenizer thread).
        """
        sentences = self.prepare(texts)
        self._prefix_ids  # noqa: B018 - computed in this thread, not later in the model thread
        return Tokenized(sentences, self.tokenize(sentences))

    def prefix_ids(self) -> list[int]:
        """Token ids of the shared prefix: everything before the sentence (demonstrations + template start),
        as the methods' edits leave it."""
        ids = list(self._prefix_ids)
        for edit in self.edits:
            ids = edit.prefix_ids(ids)
        return ids

    def sentence_offset(self) -> int:
        """Tokens the methods' edits insert before the sentence's own tokens."""
        return sum(edit.sentence_offset() for edit in self.edits)

    @cached_property
    def _render_shape(self) -> tuple[int, int] | None:
        """``(characters of the prompt of an empty sentence, copies of the sentence in a prompt)`` when
        rendering is plain substitution (the prompt's length is linear in the sentence's), else ``None``."""
        a, b, c = (len(self.render(x)) for x in ("", "x", "xx"))
        return (a, b - a) if c - b == b - a else None

    @cached_property
    def _template_ids(self) -> list[int]:  # the prompt of an empty sentence (only for messages)
        return self.tokenizer(self.render(""), add_special_tokens=True)["input_ids"]

    @cached_property
    def _prefix_ids(self) -> list[int]:  # computed once, so later calls never touch the tokenizer
        text = self.config.template.prefix(self.config.demonstrations)
        return self.tokenizer(text, add_special_tokens=True)["input_ids"]

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Number of prompt tokens (template and demonstrations included) per text (texts over the
        model's positions are counted, not refused)."""
        unlimited = copy.copy(self)  # the same builder (subclasses too) without the length check
        unlimited.max_positions = None
        return [len(s) for s in unlimited.tokenize(unlimited.prepare(texts))]
