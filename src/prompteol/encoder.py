"""The PromptEOL encoder: render -> tokenize -> length-sorted batches -> forward -> pool.

One code path serves every caller: :meth:`Encoder.encode` (CLI, evaluation, demonstration
search, serving) and :meth:`Encoder.embed` (training, with gradients) share
:meth:`Encoder.prepare` (validation, normalisation, truncation), :meth:`Encoder.tokenize`
(template + demonstrations rendering) and :meth:`Encoder.forward_ids` (base-model forward
stopped at the requested layer, then pooling).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import EncoderConfig
from .errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .cache import EmbeddingCache

__all__ = ["Encoder", "plan_batches"]

log = logging.getLogger(__name__)


def plan_batches(lengths: Sequence[int], batch_size: int, max_batch_tokens: int | None = None) -> list[list[int]]:
    """Group indices into batches of similar length (longest first).

    A batch holds at most ``batch_size`` sequences and, when ``max_batch_tokens`` is set, at
    most that many padded tokens (``len(batch) * longest``); a single sequence longer than
    the budget still gets a batch of its own.
    """
    if batch_size < 1:
        raise InputError(f"batch_size should be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]
        too_many = len(current) >= batch_size
        too_big = max_batch_tokens is not None and (len(current) + 1) * longest > max_batch_tokens
        if current and (too_many or too_big):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


@dataclass
class _Prefix:
    """The shared prefix (demonstrations + template start), computed once per weights state."""

    ids: list[int]
    kv: list[tuple[Any, Any]]  # per layer (keys, values), each (1, heads, P, d)
    hidden_sum: Any  # (1, H) sum of the prefix hidden states (for mean pooling)


class Encoder:
    """Sentence embeddings from a causal LM with a prompt template (PromptEOL by default).

    Build one with :meth:`from_pretrained`; call :meth:`encode`.
    """

    def __init__(
        self,
        model,
        tokenizer,
        config: EncoderConfig,
        *,
        weights_id: str,
        num_layers: int,
        layer_index: int,
        adapter_id: str | None = None,
        cache: EmbeddingCache | None = None,
        source: dict | None = None,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.weights_id = weights_id
        self.num_layers = num_layers
        self.layer_index = layer_index
        self.adapter_id = adapter_id
        self.cache = cache
        self.source = source or {}
        #: side on which batches are padded; results do not depend on it
        self.padding_side = "right"
        self._prefix: _Prefix | None = None
        self._prefix_stale = True
        self._dim: int | None = None
        params = inspect.signature(model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        if cache is not None:
            cache.register(self.fingerprint, self.describe())

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(
        cls,
        model: str = "smollm2-135m",
        *,
        template="prompteol",
        demonstrations=(),
        layer: int = -1,
        pooling: str = "last",
        dtype: str = "float32",
        device: str = "cpu",
        normalize_text: bool = True,
        max_length: int | None = None,
        adapter: str | None = None,
        quantization: str | None = None,
        prefix_cache: bool = True,
        cache: EmbeddingCache | bool | None = None,
        cache_dir=None,
        progress: bool = True,
    ) -> Encoder:
        """Load ``model`` (alias, folder, ``.gguf``, adapter folder or hub id) as an encoder.

        ``cache=True`` attaches the default persistent :class:`~prompteol.cache.EmbeddingCache`.
        """
        config = EncoderConfig(
            model=model, template=template, demonstrations=demonstrations, layer=layer, pooling=pooling,
            dtype=dtype, device=device, normalize_text=normalize_text, max_length=max_length, adapter=adapter,
            quantization=quantization, prefix_cache=prefix_cache,
        )  # fmt: skip
        return cls.from_config(config, cache=cache, cache_dir=cache_dir, progress=progress)

    @classmethod
    def from_config(cls, config: EncoderConfig, *, cache=None, cache_dir=None, progress: bool = True) -> Encoder:
        from .models.loading import _num_layers, load_base_model, load_tokenizer, resolve_model, truncate_to_layer

        resolved = resolve_model(config.model, cache_dir=cache_dir, progress=progress)
        adapter = config.adapter or resolved.adapter
        offline = resolved.kind != "hub"
        tokenizer = load_tokenizer(resolved.path, offline=offline)
        model = load_base_model(resolved.path, config.dtype, config.device, config.quantization, offline=offline)
        adapter_id = None
        if adapter:
            from .adapters import apply_adapter, check_training_settings

            model, adapter_id = apply_adapter(model, adapter, merge=config.quantization is None)
            check_training_settings(adapter, config)
        num_layers = _num_layers(model)
        layer_index = truncate_to_layer(model, config.layer)
        if cache is True:
            from .cache import EmbeddingCache

            cache = EmbeddingCache(None if cache_dir is None else _db(cache_dir))
        source = {"kind": resolved.kind, "path": resolved.path, "ref": resolved.ref}
        return cls(
            model, tokenizer, config, weights_id=resolved.weights_id, num_layers=num_layers,
            layer_index=layer_index, adapter_id=adapter_id, cache=cache or None, source=source,
        )  # fmt: skip

    def derive(self, **changes) -> Encoder:
        """A new encoder on the same loaded model with other prompt settings.

        Only settings that do not need another model load may change: ``template``,
        ``demonstrations``, ``pooling``, ``normalize_text``, ``max_length``, ``prefix_cache``.
        The new encoder shares the model, tokenizer and embedding cache, and has its own
        fingerprint and shared-prefix cache (used by demonstration search).
        """
        allowed = {"template", "demonstrations", "pooling", "normalize_text", "max_length", "prefix_cache"}
        bad = sorted(set(changes) - allowed)
        if bad:
            from .errors import ConfigError

            raise ConfigError(f"derive() cannot change {bad}; load a new encoder. It can change {sorted(allowed)}")
        data = self.config.to_dict()
        data.update({k: v for k, v in changes.items()})
        config = EncoderConfig.from_dict(data)
        derived = Encoder(
            self.model, self.tokenizer, config, weights_id=self.weights_id, num_layers=self.num_layers,
            layer_index=self.layer_index, adapter_id=self.adapter_id, cache=self.cache, source=self.source,
        )  # fmt: skip
        derived.padding_side = self.padding_side
        derived._dim = self._dim
        return derived

    # ------------------------------------------------------------------ identity
    @property
    def device(self):
        return next(self.model.parameters()).device

    @property
    def dim(self) -> int:
        """Output dimension (read from one probe forward, so projections are accounted for)."""
        if self._dim is None:
            import torch

            with torch.inference_mode():
                ids = [self.tokenizer.pad_token_id or 0]
                self._dim = int(self.forward_ids([ids], use_prefix=False).shape[-1])
        return self._dim

    def describe(self) -> dict[str, Any]:
        """The full configuration as JSON-serialisable data (for result files and caches)."""
        return {
            **self.config.to_dict(),
            "weights_id": self.weights_id,
            "adapter_id": self.adapter_id,
            "num_layers": self.num_layers,
            "layer_index": self.layer_index,
            "fingerprint": self.fingerprint,
            "source": self.source,
        }

    @property
    def fingerprint(self) -> str:
        """A stable id of (weights, adapter, template, demonstrations, layer, pooling, dtype, text handling)."""
        c = self.config
        payload = {
            "weights": self.weights_id,
            "adapter": self.adapter_id,
            "template": c.template.to_dict(),
            "demonstrations": [d.to_dict() for d in c.demonstrations],
            "layer": self.layer_index,
            "pooling": c.pooling,
            "dtype": c.dtype,
            "quantization": c.quantization,
            "normalize_text": c.normalize_text,
            "max_length": c.max_length,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]

    def __repr__(self) -> str:
        c = self.config
        return (
            f"Encoder(model={c.model!r}, template={c.template.name!r}, demonstrations={len(c.demonstrations)}, "
            f"layer={self.layer_index}/{self.num_layers}, pooling={c.pooling!r}, dtype={c.dtype!r})"
        )

    # ------------------------------------------------------------------ pure steps
    @staticmethod
    def check_texts(texts) -> list[str]:
        """A list of strings, or :class:`InputError` naming the first bad item."""
        if isinstance(texts, str):
            raise InputError("texts should be a list of strings, got a single string; wrap it in a list")
        if isinstance(texts, np.ndarray):
            texts = texts.tolist()
        try:
            items = list(texts)
        except TypeError:
            raise InputError(f"texts should be a list of strings, got {type(texts).__name__}") from None
        for i, t in enumerate(items):
            if not isinstance(t, str):
                raise InputError(f"texts[{i}] should be a string, got {type(t).__name__}: {t!r:.60}")
        return items

    def prepare(self, texts: Sequence[str], max_length: int | None = None, warn_cut: bool = True) -> list[str]:
        """Validate, normalise (if configured) and truncate (if ``max_length``) the sentences.

        ``warn_cut=False`` silences the truncation warning (training cuts every long sentence on purpose).
        """
        from .templates import normalize_sentence

        items = self.check_texts(texts)
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
        """Token ids of the full prompts, with the tokenizer's own special tokens; no padding."""
        prompts = [self.render(s) for s in sentences]
        ids = self.tokenizer(prompts, add_special_tokens=True)["input_ids"] if prompts else []
        for i, seq in enumerate(ids):
            if not seq:
                raise InputError(
                    f"texts[{i}] gives an empty prompt ({prompts[i]!r} has no tokens); "
                    f"use a template or a non-empty text"
                )
        return ids

    # ------------------------------------------------------------------ forward
    def _collate(self, seqs: Sequence[Sequence[int]]):
        import torch

        width = max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, s in enumerate(seqs):
            if self.padding_side == "left":
                ids[row, width - len(s) :] = torch.tensor(s)
                mask[row, width - len(s) :] = 1
            else:
                ids[row, : len(s)] = torch.tensor(s)
                mask[row, : len(s)] = 1
        return ids.to(self.device), mask.to(self.device)

    def _run(self, ids, mask, positions, cache=None):
        kwargs = {"input_ids": ids, "attention_mask": mask, "position_ids": positions, "use_cache": cache is not None}
        if cache is not None:
            kwargs[self._cache_kwarg] = cache
        return self.model(**kwargs).last_hidden_state  # the cache, if given, is filled in place

    def _full(self, seqs):
        from .pooling import pool

        ids, mask = self._collate(seqs)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T): padding side never shifts positions
        hidden = self._run(ids, mask, positions)  # (B, T, H)
        return pool(self.config.pooling, hidden, mask)

    def prefix_ids(self) -> list[int]:
        text = self.config.template.prefix(self.config.demonstrations)
        return self.tokenizer(text, add_special_tokens=True)["input_ids"]

    def _get_prefix(self) -> _Prefix | None:
        import torch
        from transformers import DynamicCache

        if not self._prefix_stale:
            return self._prefix
        self._prefix_stale = False
        self._prefix = None
        ids = self.prefix_ids()
        if len(ids) < 1 or self.layer_index == 0:  # nothing to share below the first block
            return None
        tensor = torch.tensor([ids], device=self.device)
        mask = torch.ones_like(tensor)
        positions = torch.arange(len(ids), device=self.device).unsqueeze(0)
        cache = DynamicCache()  # plain full-length layers: exact for sliding-window models too
        hidden = self._run(tensor, mask, positions, cache=cache)
        kv = [(layer.keys, layer.values) for layer in cache.layers if getattr(layer, "keys", None) is not None]
        if len(kv) != self.layer_index or any(k.shape[-2] != len(ids) for k, _ in kv):
            log.info("the shared-prefix cache is not exact for this architecture; computing prompts in full")
            return None
        self._prefix = _Prefix(ids=ids, kv=kv, hidden_sum=hidden.sum(dim=1))
        return self._prefix

    def _with_prefix(self, prefix: _Prefix, suffixes):
        import torch
        from transformers import DynamicCache

        from .pooling import pool

        ids, mask = self._collate(suffixes)  # (B, T)
        b, p = ids.shape[0], len(prefix.ids)
        kv = [(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)) for k, v in prefix.kv]
        cache = DynamicCache(kv)
        full_mask = torch.cat([torch.ones((b, p), dtype=mask.dtype, device=mask.device), mask], dim=1)
        positions = p + (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T)
        hidden = self._run(ids, full_mask, positions, cache=cache)  # (B, T, H)
        return pool(self.config.pooling, hidden, mask, prefix.hidden_sum, p)

    def forward_ids(self, seqs: Sequence[Sequence[int]], use_prefix: bool | None = None):
        """Pooled vectors (B, H) for token-id sequences of full prompts (a torch tensor).

        With the shared-prefix cache, sequences that start with the exact prefix tokens run
        only their remaining tokens against the cached keys/values; any other sequence (the
        tokenizer merged tokens across the prefix boundary) is computed in full.
        """
        import torch

        if use_prefix is None:
            use_prefix = self.config.prefix_cache and not torch.is_grad_enabled()
        prefix = self._get_prefix() if use_prefix else None
        if prefix is None:
            return self._full(seqs)
        p = len(prefix.ids)
        hit = [i for i, s in enumerate(seqs) if len(s) > p and list(s[:p]) == prefix.ids]
        hit_set = set(hit)
        miss = [i for i in range(len(seqs)) if i not in hit_set]
        parts: dict[int, torch.Tensor] = {}
        if hit:
            vecs = self._with_prefix(prefix, [seqs[i][p:] for i in hit])
            parts.update(zip(hit, vecs))
        if miss:
            vecs = self._full([seqs[i] for i in miss])
            parts.update(zip(miss, vecs))
        return torch.stack([parts[i] for i in range(len(seqs))])

    # ------------------------------------------------------------------ public API
    def embed(self, texts: Sequence[str], max_length: int | None = None):
        """Vectors (B, H) as a torch tensor with gradients (training); no caches, no sorting."""
        self._prefix_stale = True  # the weights may change after a differentiable call
        seqs = self.tokenize(self.prepare(texts, max_length=max_length, warn_cut=False))
        return self.forward_ids(seqs, use_prefix=False)

    def invalidate_prefix(self) -> None:
        """Forget the cached shared prefix (call after changing the weights in place)."""
        self._prefix_stale = True

    def iter_batches(
        self, sentences: Sequence[str], batch_size: int = 32, max_batch_tokens: int | None = None
    ) -> Iterator[tuple[list[int], np.ndarray]]:
        """Yield ``(indices, vectors)`` for prepared sentences, longest batches first."""
        import torch

        seqs = self.tokenize(sentences)
        for batch in plan_batches([len(s) for s in seqs], batch_size, max_batch_tokens):
            with torch.inference_mode():
                vecs = self.forward_ids([seqs[i] for i in batch])
            yield batch, vecs.float().cpu().numpy()

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = 32,
        normalize: bool = False,
        show_progress: bool | None = None,
        max_batch_tokens: int | None = None,
        use_cache: bool = True,
    ) -> np.ndarray:
        """Embed ``texts`` -> float32 array (N, H) in input order.

        Duplicate sentences are computed once; with an attached cache, known sentences are
        read from it and new ones are written batch by batch (so an interrupted run keeps
        its progress). ``normalize=True`` returns unit-length rows.
        """
        sentences = self.prepare(texts)
        if not sentences:
            return np.zeros((0, self.dim), dtype=np.float32)
        unique = list(dict.fromkeys(sentences))
        cache = self.cache if use_cache else None
        found = cache.get_many(self.fingerprint, unique) if cache is not None else {}
        todo = [s for s in unique if s not in found]
        if todo:
            show = _want_progress(show_progress, len(todo))
            from tqdm.auto import tqdm

            with tqdm(total=len(todo), unit="sent", disable=not show, file=sys.stderr, desc="encode") as bar:
                for batch, vecs in self.iter_batches(todo, batch_size, max_batch_tokens):
                    batch_sents = [todo[i] for i in batch]
                    found.update(zip(batch_sents, vecs))
                    if cache is not None:
                        cache.put_many(self.fingerprint, batch_sents, vecs)
                    bar.update(len(batch))
        out = np.stack([found[s] for s in sentences]).astype(np.float32, copy=False)
        if normalize:
            out = out / np.clip(np.linalg.norm(out, axis=1, keepdims=True), 1e-12, None)
        return out

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Number of prompt tokens (template and demonstrations included) per text."""
        return [len(s) for s in self.tokenize(self.prepare(texts))]


def _want_progress(show_progress: bool | None, n: int) -> bool:
    if show_progress is not None:
        return show_progress
    return n >= 256 and sys.stderr.isatty()


def _db(cache_dir):
    from .paths import embeddings_db

    return embeddings_db(cache_dir)

