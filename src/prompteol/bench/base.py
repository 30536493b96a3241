"""The runner every configuration has (load, count tokens, embed) and the registry of runners by kind.

What every configuration's runner is: load once, count the prompt tokens, embed (the harness times
it); :data:`RUNNERS` maps each worker kind to its runner, one module per peer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .configs import BenchConfig


class Runner:
    """What a worker measures: ``embed(texts)`` -> (N, H) float32 vectors of raw sentences."""

    load_s: float = 0.0
    weights_mb: float | None = None
    nonembed_params: int | None = None

    def __init__(self) -> None:
        self.extra: dict[str, Any] = {}

    def token_counts(self, sentences: list[str]) -> tuple[int, int]:
        """(prompt tokens, tokens actually computed) for these sentences."""
        raise NotImplementedError

    def embed(self, sentences: list[str]) -> np.ndarray:
        raise NotImplementedError

    def check_tokens(self, sentences: list[str]) -> dict | None:
        """A peer with its own tokenizer: how its token ids compare with prompteol's (``None``: same ids)."""
        return None


def prompt_builder(args, **options):
    """prompteol's prompts and tokenizer for the model, without loading its weights (for the peers)."""
    from ..encoder.config import EncoderConfig
    from ..encoder.prompts.builder import PromptBuilder
    from ..models.loading import load_tokenizer, resolve_model

    resolved = resolve_model(args.model, progress=False)
    tok = load_tokenizer(resolved.path, offline=resolved.kind != "hub")
    return PromptBuilder(tok, EncoderConfig.from_options(model=args.model, **options)), resolved


#: worker kind -> runner class (``encoder``, ``reference``, ``st``, ``onnx``, ``llamacpp``): filled by the runner modules
RUNNERS: dict[str, Callable[[BenchConfig, Any], Runner]] = {}


def register_runner(kind: str) -> Callable[[type], type]:
    """Class decorator: the runner of the configurations whose ``worker`` is ``kind``."""

    def add(cls: type) -> type:
        RUNNERS[kind] = cls
        return cls

    return add


def error_text(exc: BaseException) -> str:
    """One line of an exception, as a result records it."""
    text = f"{type(exc).__name__}: {exc}".strip()
    return " ".join(text.split())[:600]
