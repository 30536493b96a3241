"""Run a prompteol encoder on MTEB tasks: an adapter implementing ``mteb``'s encoder protocol.

>>> import mteb
>>> from prompteol.evaluation.mteb_adapter import PromptEOLMTEB
>>> model = PromptEOLMTEB.from_pretrained("smollm2-135m")                      # doctest: +SKIP
>>> results = mteb.evaluate(model, mteb.get_tasks(tasks=["STSBenchmark"]))     # doctest: +SKIP

The template, demonstrations, layer and pooling are those of the wrapped
:class:`~prompteol.Encoder`: MTEB hands over raw texts and our encoder renders them, so the
same sentence gets the same vector here, in ``prompteol eval`` and in ``prompteol encode``
(and shares the embedding cache).

**Prompts.** By default every text (query, document, STS sentence) gets the encoder's own
template. ``prompts={"query": "...", "document": "..."}`` maps MTEB's prompt types to templates
(a preset name or a text with ``{sentence}``), encoded with ``encoder.encode(texts, prompt=...)``
(the derived encoder of that template, with its own fingerprint). Keys follow MTEB's own lookup
(:func:`mteb.models.abs_encoder.get_prompt_name`), most specific first: ``"TASK-query"``, ``"TASK"``,
``"TASKTYPE-query"`` (e.g. ``"Retrieval-query"``), ``"TASKTYPE"``, ``"query"`` / ``"document"``;
a text no key matches gets the encoder's template. MTEB's task instructions
(``TaskMetadata.prompt``) are not used: PromptEOL renders templates, not instructions.
Needs ``pip install 'prompteol[mteb]'``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..encoder.encode_options import EncodeOptions, encode_with, takes_options
from ..encoder.prompts.templates import Template, get_template
from ..errors import ConfigError, require

require("mteb", "mteb", "the MTEB adapter")

from mteb.models.abs_encoder import AbsEncoder, get_prompt_name  # noqa: E402
from mteb.models.model_meta import ModelMeta, ScoringFunction  # noqa: E402

__all__ = ["PromptEOLMTEB", "local_sts_task", "missing_datasets", "check_datasets"]


class PromptEOLMTEB(AbsEncoder):
    """An ``mteb`` encoder (``mteb.models.EncoderProtocol``) around any object with ``encode(list[str])``.

    Args:
        encoder: a :class:`prompteol.Encoder` (or anything with ``encode(texts) -> (N, H)``; with
            ``prompts``, its ``encode`` must take ``prompt=``).
        name: model name for MTEB's results (``org/name``); default ``prompteol/<model>``.
        revision: recorded by MTEB; default the encoder's fingerprint (combined with the prompts when
            there are any), so a different template, demonstration, layer or prompt mapping never
            reuses another configuration's cached MTEB results.
        batch_size: sentences per forward batch when MTEB gives none.
        prompts: ``{key: template}``, keys as in the module docstring (``"query"``, ``"document"``,
            a task name, a task type, ``"TASK-query"``, ...); ``None``: the encoder's template for all.
        output_dtype: ``float32`` (default) or ``float64``: the dtype handed to MTEB, which computes
            its similarities in the dtype it gets (scikit-learn's paired cosine for STS). Our harness
            computes cosines in float64; where a model's cosines are crowded (a random test model:
            all within 0.993..0.99995), float32 rounding reorders them and moves a Spearman by ~1e-4
            x100, so ``float64`` is what makes MTEB's number equal ours to the last digits.
    """

    def __init__(
        self,
        encoder,
        *,
        name: str | None = None,
        revision: str | None = None,
        batch_size: int = 32,
        prompts: Mapping[str, str | Template] | None = None,
        output_dtype: str = "float32",
    ):
        if output_dtype not in ("float32", "float64"):
            raise ConfigError(f"output_dtype should be float32 or float64, got {output_dtype!r}")
        self.output_dtype = np.dtype(output_dtype)
        self.model = encoder
        self.batch_size = batch_size
        self.prompts: dict[str, Template] = _check_prompts(prompts)
        self.model_prompts = {k: t.text for k, t in self.prompts.items()} or None  # for MTEB's own introspection
        if self.prompts and not takes_options(encoder):
            raise ConfigError(f"prompts were given but {type(encoder).__name__}.encode takes no call options "
                              "(options= with a prompt=; prompteol's Encoder does)")
        config = getattr(encoder, "config", None)
        model_name = getattr(config, "model", None) or getattr(encoder, "name", None) or type(encoder).__name__
        fingerprint = getattr(encoder, "fingerprint", None)
        if revision is None and fingerprint:
            revision = str(fingerprint)
            if self.prompts:
                keyed = {k: t.to_dict() for k, t in sorted(self.prompts.items())}
                text = json.dumps({"fingerprint": revision, "prompts": keyed}, sort_keys=True)
                revision = hashlib.sha256(text.encode()).hexdigest()
        dim = getattr(encoder, "dim", None)
        meta = {
            "name": name or f"prompteol/{re.sub(r'[^A-Za-z0-9._-]+', '-', str(model_name)).strip('-')}",
            "revision": revision,
            "framework": ["PyTorch", "Transformers"],
            "similarity_fn_name": ScoringFunction.COSINE,
            "use_instructions": False,
            "embed_dim": int(dim) if isinstance(dim, int) else None,
            "modalities": ["text"],
        }
        self.mteb_model_meta = ModelMeta.create_empty({k: v for k, v in meta.items() if v is not None})

    @classmethod
    def from_pretrained(
        cls,
        model: str = "smollm2-135m",
        *,
        batch_size: int = 32,
        prompts: Mapping[str, str | Template] | None = None,
        **encoder_kwargs,
    ) -> PromptEOLMTEB:
        """Build the :class:`~prompteol.Encoder` (same arguments as ``Encoder.from_pretrained``; the
        embedding cache is on unless ``embedding_cache=False``) and wrap it."""
        from ..encoder.encoder import Encoder

        encoder_kwargs.setdefault("embedding_cache", True)
        return cls(Encoder.from_pretrained(model, **encoder_kwargs), batch_size=batch_size, prompts=prompts)

    def template_for(self, task_metadata, prompt_type) -> Template | None:
        """The template for this task and prompt type (``None``: the encoder's own)."""
        if not self.prompts:
            return None
        if task_metadata is None:  # called outside a task: the prompt type alone
            key = getattr(prompt_type, "value", prompt_type)
        else:
            key = get_prompt_name(self.prompts, task_metadata, prompt_type)  # type: ignore[arg-type]
        return self.prompts.get(key) if key else None

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
        """Embed every text of MTEB's DataLoader (batches with a ``text`` list) -> (N, H) of ``output_dtype``,
        each text with :meth:`template_for` its task and prompt type."""
        texts: list[str] = []
        for batch in inputs:
            if "text" not in batch:
                raise ValueError(f"PromptEOLMTEB encodes text only; got a batch with keys {sorted(batch)}")
            texts.extend(batch["text"])
        progress = bool(kwargs["show_progress_bar"]) if "show_progress_bar" in kwargs else None
        options = EncodeOptions(batch_size=int(kwargs.get("batch_size") or self.batch_size), show_progress=progress,
                                prompt=self.template_for(task_metadata, prompt_type))  # fmt: skip
        return np.asarray(encode_with(self.model, texts, options), dtype=self.output_dtype)


def local_sts_task(name: str = "STSBenchmark", data_dir=None):
    """An MTEB STS task (``AbsTaskSTS``) whose pairs are our local SentEval files of ``name``
    (:func:`~prompteol.evaluation.load_sts_pairs`: an STS task or split, sentences exactly as our
    harness sees them), so MTEB's own evaluator runs offline on the data of ``prompteol eval``.

    It is named ``<name>-senteval-local`` (never MTEB's ``STSBenchmark``: MTEB's copy of the data is
    not these files, and its results must not be confused with them); one split, ``test``. Its
    ``cosine_spearman`` x100 equals the harness's Spearman of the same encoder (tests/test_eval_mteb.py).
    """
    from datasets import Dataset, DatasetDict
    from mteb.abstasks.sts import AbsTaskSTS
    from mteb.abstasks.task_metadata import TaskMetadata

    from .data import load_sts_pairs

    pairs = load_sts_pairs(name, data_dir)

    class SentEvalLocalSTS(AbsTaskSTS):
        metadata = TaskMetadata(
            name=f"{name}-senteval-local", type="STS", main_score="cosine_spearman",
            description=f"{name} from the local SentEval files (prompteol.evaluation.load_sts_pairs), "
            "sentences as SentEval's batcher presents them",
            reference="https://github.com/facebookresearch/SentEval",
            dataset={"path": "local/senteval", "revision": "local"}, category="t2t", modalities=["text"],
            eval_splits=["test"], eval_langs=["eng-Latn"], date=None, dialect=[], domains=[], task_subtypes=[],
            license="not specified", annotations_creators="human-annotated", sample_creation="found",
            bibtex_citation="",
        )  # fmt: skip
        min_score = 0
        max_score = 5

        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            data = {"sentence1": list(pairs.sentences1), "sentence2": list(pairs.sentences2),
                    "score": [float(x) for x in pairs.scores]}  # fmt: skip
            self.dataset = DatasetDict({"test": Dataset.from_dict(data)})
            self.data_loaded = True

    return SentEvalLocalSTS()


def _dataset_cached(path: str) -> bool:
    """Whether the HF dataset ``path`` is in the local Hugging Face caches (hub snapshots or ``datasets``'
    own cache), or is a local folder."""
    import datasets.config
    import huggingface_hub.constants

    if Path(path).expanduser().is_dir():
        return True
    hub = Path(huggingface_hub.constants.HF_HUB_CACHE) / f"datasets--{path.replace('/', '--')}" / "snapshots"
    if hub.is_dir() and any(hub.iterdir()):
        return True
    local = Path(datasets.config.HF_DATASETS_CACHE) / path.replace("/", "___")
    return local.is_dir() and any(local.iterdir())


def missing_datasets(tasks, hub_reachable: bool | None = None) -> dict[str, str]:
    """``{task name: dataset}`` of the MTEB ``tasks`` whose dataset can be had neither from the Hugging
    Face hub (when it is not reachable) nor from the local caches; empty when every one can be loaded."""
    if hub_reachable is None:
        from ..models.loading import _hub_reachable

        hub_reachable = _hub_reachable()
    if hub_reachable:
        return {}
    wanted = {t.metadata.name: str(t.metadata.dataset.get("path", "")) for t in tasks}
    return {name: path for name, path in wanted.items() if path and not _dataset_cached(path)}


def check_datasets(tasks) -> bool:
    """Raise :class:`~prompteol.errors.DataError` naming every task whose dataset cannot be had (hub not
    reachable and not in the local Hugging Face cache); call it before loading any model. Returns
    whether the hub is reachable (``False``: offline with every dataset cached; the HF libraries are
    then told to read the cache only)."""
    from ..errors import DataError
    from ..models.loading import _hub_reachable

    reachable = _hub_reachable()
    missing = missing_datasets(tasks, reachable)
    if missing:
        listed = ", ".join(f"{name} (dataset {path})" for name, path in missing.items())
        raise DataError(
            f"the Hugging Face hub is not reachable and the MTEB data of {len(missing)} task(s) is not in the local "
            f"Hugging Face cache: {listed}. Run once online (or put the datasets in the cache: HF_HOME / "
            f"HF_HUB_CACHE), or evaluate on the local SentEval files with `prompteol eval`"
        )
    if not reachable:
        _stay_offline()
    return reachable


def _stay_offline() -> None:
    """Every dataset is cached and the hub is unreachable: make the HF libraries read the cache only."""
    import os

    os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
    for module, name in (("huggingface_hub.constants", "HF_HUB_OFFLINE"), ("datasets.config", "HF_HUB_OFFLINE"),
                         ("datasets.config", "HF_DATASETS_OFFLINE")):  # fmt: skip
        import importlib

        mod = importlib.import_module(module)
        if hasattr(mod, name):
            setattr(mod, name, True)


def _check_prompts(prompts: Mapping[str, str | Template] | None) -> dict[str, Template]:
    if not prompts:
        return {}
    if not isinstance(prompts, Mapping):
        raise ConfigError(f"prompts should be a mapping {{key: template}}, got {type(prompts).__name__}")
    out = {}
    for key, value in prompts.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(f"prompts keys should be non-empty strings (query, document, a task name, ...), got {key!r}")
        out[key] = get_template(value)  # an unknown preset or a text without {sentence} fails here
    return out
