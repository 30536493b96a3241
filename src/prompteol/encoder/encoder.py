"""The PromptEOL encoder: a short composition of parts, with one public verb, :meth:`Encoder.encode`.

- :class:`~prompteol.encoder.config.EncoderConfig`: what decides a vector (frozen, validated);
- :class:`~prompteol.encoder.prompts.builder.PromptBuilder` (``encoder.prompts``): texts -> prepared sentences
  -> rendered prompts -> token ids;
- :class:`~prompteol.encoder.forward.runner.ModelRunner` (``encoder.runner``): token ids -> hidden states at
  the read-out layer -> pooled vectors (pooling by name, :mod:`prompteol.encoder.pooling`);
- :class:`~prompteol.encoder.forward.prefix.SharedPrefix` (``encoder.prefix``): the shared prompt prefix's
  key/value cache, computed once per weights state;
- ``encoder.methods``: the training-free methods the config turns on, each a
  :class:`~prompteol.encoder.methods.Method` (prompt edits, interventions in the forward, pooling
  spans, a read-out map, or member encoders), so the encoder holds no method of its own;
- :func:`~prompteol.cache.cached.encode_cached` with an optional persistent
  :class:`~prompteol.cache.store.EmbeddingCache` (``encoder.embedding_cache``), keyed by
  :attr:`Encoder.fingerprint` (:mod:`prompteol.encoder.identity`).

:meth:`Encoder.encode` (CLI, evaluation, demonstration search, serving) and :meth:`Encoder.embed`
(training, with gradients) go through the same prompts and runner.

The conveniences users of sentence-transformers expect (docs/ecosystem.md): ``encode(texts, prompt=...)``
(another template for the call), ``truncate_dim``, ``precision`` (``quantize_embeddings``' semantics) and
``similarity`` / ``similarity_pairwise`` (cosine, of texts or vectors): see :meth:`Encoder.encode`.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..cache.cached import encode_cached
from ..errors import ConfigError
from . import limits
from .batching import plan_batches
from .config import EncoderConfig
from .encode_options import EncodeOptions
from .forward.choice import BackendChoice, attach_forwards, backend_state, fused_state, resolve_backend, rows_per_call
from .forward.prefix import SharedPrefix
from .forward.runner import ModelRunner
from .identity import FINGERPRINT_VERSION, fingerprint, weights_state
from .methods import Method, MethodSetup, ModelCall, build_methods, dim_fields
from .postprocess import postprocess
from .precision import DtypeChoice
from .prompts.builder import PromptBuilder, Tokenized

if TYPE_CHECKING:  # pragma: no cover
    from ..cache.store import EmbeddingCache
    from .prompts.templates import Template

__all__ = ["Encoder", "plan_batches"]

log = logging.getLogger(__name__)


class Encoder:
    """Sentence embeddings from a causal LM with a prompt template (PromptEOL by default).

    Build one with :meth:`from_pretrained` (or :meth:`from_config`); call :meth:`encode`.
    """

    def __init__(
        self,
        model,
        tokenizer,
        config: EncoderConfig,
        *,
        identity: dict,
        num_layers: int,
        adapter_identity: dict | None = None,
        embedding_cache: EmbeddingCache | None = None,
        source: dict | None = None,
        precision: DtypeChoice | None = None,
        backend: BackendChoice | None = None,
        cache_dir=None,
    ):
        from ..models.loading import resolve_layer

        if config.backend == "auto":  # resolved by from_config, before loading; a model loaded elsewhere: torch
            config = config.replace(backend="torch")
            backend = BackendChoice("torch", "auto", "the encoder was built on a model loaded elsewhere: torch")
        #: how the backend was chosen (``backend="auto"``: :func:`prompteol.encoder.forward.choice.resolve_backend`)
        self.backend_choice = backend
        self.config = config
        self.tokenizer = tokenizer
        self.identity = identity
        self.adapter_identity = adapter_identity
        self.num_layers = num_layers
        self.layer_index = resolve_layer(config.layer, num_layers)
        self.source = source or {}
        self.cache_dir = cache_dir  # where exports (backend onnxruntime/openvino) are kept; None: the default cache
        self.max_positions = limits.max_positions(model)  # longer prompts are refused (ContextLengthError)
        autocast = "bfloat16" if config.dtype == "bf16-mixed" else None

        def member(member_config: EncoderConfig) -> Encoder:  # another encoder on this model (an ensemble's)
            return Encoder(model, tokenizer, member_config, identity=identity, num_layers=num_layers,
                           adapter_identity=adapter_identity, source=self.source, cache_dir=cache_dir)  # fmt: skip

        #: the training-free methods this config turns on (:mod:`prompteol.encoder.methods`)
        self.methods: list[Method] = build_methods(MethodSetup(
            model, tokenizer, config, num_layers, self.layer_index, self.source, autocast, self._weights_state, member,
        ))  # fmt: skip
        #: the method that computes the vectors with member encoders (an ensemble), if any
        self.composite = next((m for m in self.methods if m.composite), None)
        self.prompts = PromptBuilder(tokenizer, config, self.max_positions, edits=self.methods)
        self.runner = ModelRunner(model, tokenizer, num_layers, self.layer_index, config.pooling, autocast)
        for method in self.methods:
            self.runner.interventions.extend(method.interventions())
        readouts = [m.readout for m in self.methods if type(m).readout is not Method.readout]
        if readouts:
            self.runner.readout = _chain(readouts)
        #: the dtype decision (``dtype="auto"`` resolved when loading; :mod:`prompteol.encoder.precision`)
        self.precision = precision or DtypeChoice(config.dtype, config.dtype, "given")
        attach_forwards(self.runner, model, config, num_layers, identity, adapter_identity, self._weights_state, cache_dir)
        self.prefix = SharedPrefix(self.prompts.prefix_ids, self._weights_state)
        self._for_prompt: dict[Template, Encoder] = {}  # encode(prompt=...): the derived encoder per template
        self.embedding_cache = embedding_cache
        self._loaded_state = self._weights_state()
        self._warned_weights = False
        self._dim: int | None = None
        self._fingerprint: str | None = None
        if embedding_cache is not None:
            embedding_cache.register(self.fingerprint, self.describe())

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(
        cls,
        model: str = "smollm2-135m",
        *,
        embedding_cache: EmbeddingCache | bool | None = None,
        cache_dir=None,
        progress: bool = True,
        **options: Any,
    ) -> Encoder:
        """Load ``model`` (alias, folder, ``.gguf``, adapter folder or hub id) as an encoder.

        ``options`` are :class:`~prompteol.EncoderConfig` fields (``template``, ``demonstrations``,
        ``layer``, ``pooling``, ``dtype``, ...) and ``demo_preset``. ``embedding_cache=True``
        attaches the default persistent :class:`~prompteol.cache.store.EmbeddingCache` (under
        ``cache_dir``); an ``EmbeddingCache`` instance is used as given.
        """
        config = EncoderConfig.from_options(model=model, **options)
        return cls.from_config(config, embedding_cache=embedding_cache, cache_dir=cache_dir, progress=progress)

    @classmethod
    def from_config(
        cls, config: EncoderConfig, *, embedding_cache=None, cache_dir=None, progress: bool = True
    ) -> Encoder:
        from ..models.loading import load_base_model, load_tokenizer, num_layers, resolve_model
        from .precision import resolve_dtype

        precision = resolve_dtype(config.dtype, config.device, config.backend)
        config = config.replace(dtype=precision.dtype)
        resolved = resolve_model(config.model, cache_dir=cache_dir, progress=progress, revision=config.revision)
        backend = resolve_backend(config, resolved.path, cache_dir)
        config = config.replace(backend=backend.backend)
        adapter = config.adapter or resolved.adapter
        offline = resolved.kind != "hub"
        tokenizer = load_tokenizer(resolved.path, offline=offline, revision=config.revision)
        # backend="openvino" computes in its own precision on a float32 export: torch keeps float32 weights (it
        # computes the shared prefix and any call the graph cannot take)
        weights_dtype = "float32" if config.backend == "openvino" else config.dtype
        model = load_base_model(resolved.path, weights_dtype, config.device, config.quantization, offline=offline,
                                revision=config.revision)  # fmt: skip
        identity = dict(resolved.identity)
        if resolved.kind == "hub":  # the resolved commit: another revision never shares vectors
            identity["commit"] = getattr(model.config, "_commit_hash", None)
        adapter_identity = None
        if adapter:
            from ..models.adapters import apply_adapter, check_training_settings

            model, adapter_identity = apply_adapter(model, adapter, merge=config.quantization is None)
            check_training_settings(adapter, config)
        if embedding_cache is True:
            from ..cache.store import EmbeddingCache
            from ..paths import embeddings_db

            embedding_cache = EmbeddingCache(embeddings_db(cache_dir))
        source = {"kind": resolved.kind, "path": resolved.path, "ref": resolved.ref}
        return cls(
            model, tokenizer, config, identity=identity, num_layers=num_layers(model),
            adapter_identity=adapter_identity, embedding_cache=embedding_cache or None, source=source,
            precision=precision, backend=backend, cache_dir=cache_dir,
        )  # fmt: skip

    def derive(self, **changes: Any) -> Encoder:
        """A new encoder on the same loaded model with other prompt settings.

        Only options that need no other model load may change (the ``prompt`` and ``runtime``
        kinds of :class:`~prompteol.EncoderConfig`: template, demonstrations, layer, pooling,
        text handling, ...). The new encoder shares the model, tokenizer and embedding cache and
        has its own fingerprint and shared prefix (used by demonstration and layer search).
        """
        allowed = EncoderConfig.fields_of_kind("prompt", "runtime")
        bad = sorted(set(changes) - set(allowed))
        if bad:
            raise ConfigError(f"derive() cannot change {bad}; load a new encoder. It can change {sorted(allowed)}")
        derived = Encoder(
            self.model, self.tokenizer, self.config.replace(**changes), identity=self.identity,
            num_layers=self.num_layers, adapter_identity=self.adapter_identity,
            embedding_cache=self.embedding_cache, source=self.source, precision=self.precision,
            backend=None if "backend" in changes else self.backend_choice, cache_dir=self.cache_dir,
        )  # fmt: skip
        derived.runner.padding_side = self.runner.padding_side
        if derived.layer_index == self.layer_index and not self.config.differences(derived.config, dim_fields()):
            derived._dim = self._dim
        return derived

    # ------------------------------------------------------------------ identity
    @property
    def model(self):
        """The loaded base model (no LM head)."""
        return self.runner.model

    @model.setter
    def model(self, value) -> None:  # training wraps it with LoRA
        from ..models.loading import find_decoder_layers

        self.runner.model = value
        if self.runner.blocks is not None:
            self.runner.blocks = find_decoder_layers(value, self.num_layers)[2]

    @property
    def device(self):
        return self.runner.device

    @property
    def dim(self) -> int:
        """Output dimension (read from one probe forward, so projections are accounted for)."""
        if self._dim is None and self.composite is not None:
            self._dim = self.composite.dim()
        if self._dim is None:
            import torch

            with torch.inference_mode():
                ids = [self.tokenizer.pad_token_id or 0]
                self._dim = int(self.runner.full([ids]).shape[-1])
        return self._dim

    @property
    def fingerprint(self) -> str:
        """A stable id of the vectors this encoder computes (weights, tokenizer, adapter, every option
        that changes a vector, prompteol's fingerprint version); keys the embedding cache."""
        if self._fingerprint is None:
            self._fingerprint = fingerprint(self.config, self.identity, self.layer_index, self.adapter_identity)
        return self._fingerprint

    def describe(self) -> dict[str, Any]:
        """The full configuration as JSON-serialisable data (for result files and caches)."""
        return {
            **self.config.to_dict(),
            "identity": self.identity,
            "weights_id": self.identity.get("weights"),
            "adapter_identity": self.adapter_identity,
            "num_layers": self.num_layers,
            "layer_index": self.layer_index,
            "num_parameters": sum(p.numel() for p in self.model.parameters()),
            "fingerprint": self.fingerprint,
            "fingerprint_version": FINGERPRINT_VERSION,
            "source": self.source,
            "precision": self.precision.to_dict(),
            "fused": fused_state(self.config, self.methods, self.runner),
            "backend": backend_state(self.config, self.methods, self.runner, self.backend_choice),
        }

    def __repr__(self) -> str:
        c = self.config
        return (
            f"Encoder(model={c.model!r}, template={c.template.name!r}, demonstrations={len(c.demonstrations)}, "
            f"layer={self.layer_index}/{self.num_layers}, pooling={c.pooling!r}, dtype={c.dtype!r})"
        )

    def _weights_state(self) -> Hashable:
        """Changes whenever the weights change in place (an optimizer step bumps each tensor's version)."""
        return weights_state(self.model)

    def _usable_embedding_cache(self) -> EmbeddingCache | None:
        """The embedding cache, unless the weights changed since loading (their vectors would be
        stored under the fingerprint of the loaded weights)."""
        if self.embedding_cache is None:
            return None
        if self._weights_state() != self._loaded_state:
            if not self._warned_weights:
                log.warning("the weights of %s changed in place since loading; the embedding cache is not used "
                            "(load the encoder again to cache vectors of the new weights)", self.config.model)  # fmt: skip
                self._warned_weights = True
            return None
        return self.embedding_cache

    # ------------------------------------------------------------------ the work
    def _vectors(self, seqs: Sequence[Sequence[int]], use_prefix: bool = True, sentences: Sequence[str] = ()):
        """Pooled vectors (B, H) (a torch tensor) of token-id sequences of full prompts (``sentences``: the
        prepared sentences behind them, which methods may need: echo's spans, Contrastive Prompting's
        auxiliary prompts)."""
        use_prefix = use_prefix and self.config.prefix_cache
        prefix = self.prefix.get(self.runner) if use_prefix else None
        sentences = list(sentences)
        starts = next((s for m in self.methods if (s := m.pool_starts(self.prompts, sentences)) is not None), None)
        call = ModelCall(sentences, use_prefix)
        extra = [intervention for m in self.methods for intervention in m.call_interventions(call)]
        with self.runner.intervening(extra):
            return self.runner.vectors(seqs, prefix, packed=self.config.packing, starts=starts)

    def iter_batches(
        self, sentences: list[str], batch_size: int, max_batch_tokens: int | None, ids_of: dict | None = None
    ) -> Iterator[tuple[list[int], np.ndarray]]:
        """``(indices, vectors)`` of prepared sentences, longest batches first (``ids_of``: their
        prompt token ids when already known): what :meth:`encode` computes, before the embedding cache
        and the post-processing."""
        import torch

        if self.composite is not None:
            yield from self.composite.batches(sentences, batch_size, max_batch_tokens)
            return
        seqs = [ids_of[s] for s in sentences] if ids_of is not None else self.prompts.tokenize(sentences)
        # batches split to fit the memory available now (a sequence too large alone raises before any forward),
        # the prompts that run against the shared prefix apart from those that cannot (one model call a batch)
        prefix = self.prefix.get(self.runner) if self.config.prefix_cache and seqs else None
        groups = [0 if prefix is None or prefix.starts(s) else 1 for s in seqs]
        lengths, layers, rows = [len(s) for s in seqs], self.layer_index, rows_per_call(self.runner.onnx, batch_size)
        for batch in limits.plan_in_memory(lengths, rows, max_batch_tokens, self.model, self.device, layers, groups):
            with torch.inference_mode():
                vecs = self._vectors([seqs[i] for i in batch], sentences=[sentences[i] for i in batch])
            yield batch, vecs.float().cpu().numpy()

    #: ``encode`` takes ``options=`` (:func:`prompteol.encoder.encode_options.encode_with`)
    takes_encode_options = True

    def encode(
        self,
        texts: Sequence[str] | Tokenized,
        batch_size: int | None = None,
        normalize: bool | None = None,
        show_progress: bool | None = None,
        max_batch_tokens: int | None = None,
        use_embedding_cache: bool | None = None,
        *,
        prompt: str | Template | None = None,
        prompt_name: str | None = None,
        truncate_dim: int | None = None,
        precision: str | None = None,
        calibration: Any = None,
        options: EncodeOptions | None = None,
    ) -> np.ndarray:
        """Embed ``texts`` -> float32 array (N, H) in input order.

        The call's options are the fields of :class:`~prompteol.encoder.encode_options.EncodeOptions`,
        given as ``options=`` or one by one as keywords (a keyword that is not ``None`` overrides
        ``options``; the defaults: ``batch_size=32``, ``normalize=False``, ``use_embedding_cache=True``,
        ``precision="float32"``, the rest off).

        Duplicate sentences are computed once; with an attached embedding cache, known sentences
        are read from it and new ones are written batch by batch (an interrupted run keeps its
        progress). ``normalize=True`` returns unit-length rows. ``texts`` may also be the
        :class:`~prompteol.encoder.prompts.builder.Tokenized` output of ``encoder.prompts.build(texts)``.

        - ``prompt`` (or its alias ``prompt_name``, sentence-transformers' keyword): a template
          (preset name, text with ``{sentence}``, or :class:`~prompteol.Template`) for this call
          instead of the config's; the call is encoded by ``self.derive(template=prompt)``, built
          once per prompt and kept on this encoder (demonstrations and every other option are kept;
          for an ensemble it replaces the first template). ``None``: the config's template;
        - ``truncate_dim``: keep the first N dimensions (1..dim), before ``normalize``;
        - ``precision``: ``float32`` (default), ``float16``, ``int8``, ``uint8``, ``binary`` or
          ``ubinary``, with the semantics and dtypes of sentence-transformers'
          ``quantize_embeddings``; ``int8``/``uint8`` buckets come from ``calibration``
          (embeddings (M, D) in the same space: same ``truncate_dim`` and ``normalize``) when given,
          else from this call's own embeddings, so two calls' codes are comparable only when they
          get the same ``calibration``.

        After pooling, the vectors go through :func:`~prompteol.encoder.postprocess.postprocess`
        (truncate, normalise, quantise), the one post-processing function (the server's routes use it too).
        """
        from .prompts.templates import get_template

        if prompt is not None and prompt_name is not None and get_template(prompt) != get_template(prompt_name):
            raise ConfigError(f"prompt={prompt!r} and prompt_name={prompt_name!r} disagree; give one of them")
        opts = EncodeOptions.of(
            options, batch_size=batch_size, normalize=normalize, show_progress=show_progress,
            max_batch_tokens=max_batch_tokens, use_embedding_cache=use_embedding_cache,
            prompt=prompt if prompt is not None else prompt_name, truncate_dim=truncate_dim, precision=precision,
            calibration=calibration,
        )  # fmt: skip
        if opts.prompt is not None and opts.prompt != self.config.template:
            if isinstance(texts, Tokenized):
                raise ConfigError("texts is a Tokenized of this encoder's own template; pass the texts themselves "
                                  "with prompt=, or build them with the derived encoder's prompts")  # fmt: skip
            if opts.prompt not in self._for_prompt:
                self._for_prompt[opts.prompt] = self.derive(template=opts.prompt)
            return self._for_prompt[opts.prompt].encode(texts, options=opts.replace(prompt=None))
        ids_of = None
        if isinstance(texts, Tokenized):
            sentences, ids_of = texts.sentences, dict(zip(texts.sentences, texts.ids))
        else:
            sentences = self.prompts.prepare(texts)
        if not sentences:
            out = np.zeros((0, self.dim), dtype=np.float32)
        else:
            cache = self._usable_embedding_cache() if opts.use_embedding_cache else None
            out = encode_cached(
                sentences, lambda todo: self.iter_batches(todo, opts.batch_size, opts.max_batch_tokens, ids_of),
                fingerprint=self.fingerprint, cache=cache, show_progress=opts.show_progress,
            )  # fmt: skip
        return postprocess(out, opts)

    def similarity(self, a: Any, b: Any, *, batch_size: int = 32) -> np.ndarray:
        """Cosine similarities (len(a), len(b)), float32. ``a`` and ``b`` are texts (a string or a list
        of strings, encoded with this encoder's template) or already computed vectors (an (N, D) or
        (D,) array or tensor), like sentence-transformers' ``similarity``."""
        from .postprocess import as_vectors, cosine_matrix

        def encode(texts: list[str]) -> np.ndarray:
            return self.encode(texts, batch_size=batch_size)

        return cosine_matrix(as_vectors(a, encode), as_vectors(b, encode))

    def similarity_pairwise(self, a: Any, b: Any, *, batch_size: int = 32) -> np.ndarray:
        """Cosine similarity of each pair ``(a[i], b[i])`` (n,), float32; texts or vectors as in
        :meth:`similarity`."""
        from .postprocess import as_vectors, cosine_pairwise

        def encode(texts: list[str]) -> np.ndarray:
            return self.encode(texts, batch_size=batch_size)

        return cosine_pairwise(as_vectors(a, encode), as_vectors(b, encode))

    def embed(self, texts: Sequence[str], max_length: int | None = None):
        """Vectors (B, H) as a torch tensor with gradients (training): no caches (the prefix too is
        computed in full, with this call's dropout), input order."""
        if self.composite is not None:
            return self.composite.embed(texts, max_length)
        sentences = self.prompts.prepare(texts, max_length=max_length, warn_cut=False)
        return self._vectors(self.prompts.tokenize(sentences), use_prefix=False, sentences=sentences)

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Number of prompt tokens (template and demonstrations included) per text."""
        return self.prompts.token_counts(texts)


def _chain(maps):
    """The read-out maps of the methods, applied in order."""

    def readout(vectors):
        for f in maps:
            vectors = f(vectors)
        return vectors

    return readout
