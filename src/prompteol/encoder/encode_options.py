"""The options of one encode call, declared once: :class:`EncodeOptions`.

:class:`~prompteol.encoder.config.EncoderConfig` says which vector a sentence gets; ``EncodeOptions``
says how one call computes and returns them (batching, the embedding cache, progress, and the
post-processing: ``truncate_dim``, ``normalize``, ``precision``), plus ``prompt``, another template for
this call. :meth:`Encoder.encode <prompteol.encoder.encoder.Encoder.encode>` takes them as keywords or as
``options=``; every other caller carries one object instead of threading the fields through its
signatures: the evaluation harness and the study (``evaluate(..., options=)``), the server, both corpus
executors. Each field is declared with :func:`~prompteol.options.option`, like the encoder's options
(help, range, flag), and :meth:`EncodeOptions.options` lists the declarations.

An encoder that takes the options sets ``takes_encode_options = True`` (prompteol's ``Encoder``, the
sentence-transformers baselines); :func:`encode_with` calls any other one as ``encode(texts)``.

Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

from ..errors import ConfigError, InputError
from ..options import at_least, option, options_of, positive_int
from .postprocess import PRECISIONS
from .prompts.templates import Template, get_template

__all__ = ["EncodeOptions", "encode_with", "takes_options"]


@dataclass(frozen=True)
class EncodeOptions:
    """How one :meth:`~prompteol.Encoder.encode` call runs and what it returns (never part of the
    fingerprint: the vectors it computes are the encoder's)."""

    batch_size: int = option(
        32, kind="runtime", vector=False, short="-b", parse=positive_int, metavar="N", help="sentences per batch (per stream on the OpenVINO backend)"
    )
    max_batch_tokens: int | None = option(
        None, kind="runtime", vector=False, parse=positive_int, metavar="N",
        help="padded tokens per batch (none: no limit)",
    )  # fmt: skip
    normalize: bool = option(False, kind="runtime", vector=False, help="L2-normalise the vectors")
    truncate_dim: int | None = option(
        None, kind="runtime", vector=False, parse=at_least(1), metavar="N",
        help="keep the first N dimensions, before normalising (plain truncation)",
    )  # fmt: skip
    precision: str = option(
        "float32", kind="runtime", vector=False, choices=PRECISIONS,
        help="float32, float16, int8, uint8, binary or ubinary (sentence-transformers' quantize_embeddings)",
    )  # fmt: skip
    prompt: Template | None = option(
        None, kind="prompt", vector=False, parse=get_template, metavar="TEMPLATE",
        help="another template for this call (a preset name or a text with {sentence})",
    )  # fmt: skip
    show_progress: bool | None = option(
        None, kind="runtime", vector=False, help="a progress bar (none: on a terminal, for long runs)"
    )
    use_embedding_cache: bool = option(
        True, kind="runtime", vector=False, flag="--no-cache",
        help="read and write the persistent embedding cache",
    )  # fmt: skip
    #: int8/uint8 buckets: embeddings (M, D) in the same space as the call's (an array: not an option)
    calibration: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_batch_tokens"):
            value = getattr(self, name)
            if name == "max_batch_tokens" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                none = " or None" if name == "max_batch_tokens" else ""
                raise InputError(f"{name} should be >= 1{none}, got {value}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision should be one of {list(PRECISIONS)}, got {self.precision!r}")
        dim = self.truncate_dim
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
            raise ConfigError(f"truncate_dim should be an int >= 1 (at most the vectors' dimension) or None, got {dim!r}")
        if self.prompt is not None:
            object.__setattr__(self, "prompt", get_template(self.prompt))
        for name in ("normalize", "use_embedding_cache"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} should be true or false, got {getattr(self, name)!r}")

    @classmethod
    def of(cls, options: EncodeOptions | None = None, **given: Any) -> EncodeOptions:
        """``options`` (default: the defaults) with every ``given`` value that is not ``None`` applied."""
        changes = {k: v for k, v in given.items() if v is not None}
        base = options if options is not None else cls()
        return dataclasses.replace(base, **changes) if changes else base

    def replace(self, **changes: Any) -> EncodeOptions:
        """A copy with ``changes`` applied (validated like a new one)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON data (the template as its dict; ``calibration`` is left out)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "calibration"}
        if self.prompt is not None:
            out["prompt"] = self.prompt.to_dict()
        return out

    @classmethod
    def options(cls, names: tuple[str, ...] | None = None) -> list[tuple[str, Any, Any]]:
        """``(name, Option, default)`` of the declared fields (``names``: those only, in that order)."""
        declared = {name: (name, opt, default) for name, opt, default in options_of(cls)}
        return [declared[n] for n in (names if names is not None else tuple(declared))]


def takes_options(encoder: Any) -> bool:
    """Whether ``encoder.encode`` takes ``options=`` (it says so with ``takes_encode_options = True``)."""
    return bool(getattr(encoder, "takes_encode_options", False))


def encode_with(encoder: Any, texts: list[str], options: EncodeOptions | None) -> Any:
    """``encoder.encode(texts, options=options)`` for an encoder that takes the options, else
    ``encoder.encode(texts)`` (any object with ``encode(list[str])``: the options cannot reach it)."""
    if takes_options(encoder):
        return encoder.encode(texts, options=options or EncodeOptions())
    return encoder.encode(texts)
