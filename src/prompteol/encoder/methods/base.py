"""The Method protocol: every training-free method is one class, registered by name.

A method acts at one or more of the pipeline's seams, and implements only those:

- **prompts**: token-level edits of every prompt (:meth:`Method.edit_ids`), of the shared prefix
  (:meth:`Method.prefix_ids`), and how many tokens it inserts before the sentence
  (:meth:`Method.sentence_offset`); the :class:`~prompteol.encoder.prompts.builder.PromptBuilder`
  applies them after tokenizing;
- **interventions**: hooks inside the forward, installed for every model call of the encoder
  (:meth:`Method.interventions`) or computed for one call from its sentences
  (:meth:`Method.call_interventions`);
- **pooling**: per-row spans (:meth:`Method.pool_starts`);
- **read-out**: a map of the pooled vectors (:meth:`Method.readout`);
- **members**: a composite method (an ensemble) computes its vectors with member encoders and
  combines them (:attr:`Method.composite`, :meth:`Method.batches`, :meth:`Method.embed`).

The encoder builds, for its config, every registered method whose :meth:`Method.applies` says so
(:func:`build_methods`); a composite method is built alone, its members apply the others. A new
method is a new module with a :func:`register`-ed subclass, imported by this package's
``__init__``: :class:`~prompteol.encoder.encoder.Encoder` needs no other change. Its options are
fields of :class:`~prompteol.encoder.config.EncoderConfig` (docs/development.md); ``dim_fields``
names those that change the vectors' dimension.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from ..config import EncoderConfig
    from ..forward.runner import Batch, Intervention
    from ..prompts.builder import PromptBuilder

__all__ = ["Method", "MethodSetup", "ModelCall", "METHODS", "register", "build_methods", "dim_fields",
           "hidden_arg", "with_hidden", "first_real"]  # fmt: skip


@dataclass(frozen=True)
class MethodSetup:
    """What a method may use when it is built for one encoder (the loaded model is shared)."""

    model: Any
    tokenizer: Any
    config: EncoderConfig
    num_layers: int
    layer_index: int
    source: dict
    #: ``"bfloat16"`` when the encoder's forwards run under autocast (``bf16-mixed``), else ``None``
    autocast: str | None
    #: changes whenever the weights change in place (the shared-prefix caches recompute then)
    weights_state: Callable[[], Hashable]
    #: another encoder on the same loaded model, for a config (an ensemble's members)
    make_encoder: Callable[[EncoderConfig], Any]


@dataclass(frozen=True)
class ModelCall:
    """One call of the encoder's forward: what :meth:`Method.call_interventions` may need."""

    sentences: list[str]  #: the prepared sentences behind the call's token ids
    use_prefix: bool  #: whether the shared-prefix cache is used for this call


class Method:
    """A training-free method; every seam is a no-op unless the method overrides it."""

    #: the name the method is registered under (its option, or options, in ``EncoderConfig``)
    name: ClassVar[str] = ""
    #: the options that change the vectors' dimension (an encoder derived with other values re-probes it)
    dim_fields: ClassVar[tuple[str, ...]] = ()
    #: installs hooks inside the forward: the forward then runs eagerly (never fused, never packed)
    hooks_forward: ClassVar[bool] = False
    #: computes the vectors with member encoders (an ensemble): built alone, its members apply the others
    composite: ClassVar[bool] = False

    def __init__(self, setup: MethodSetup):
        self.setup = setup

    @classmethod
    def applies(cls, config: EncoderConfig) -> bool:
        """Whether ``config`` turns this method on."""
        raise NotImplementedError

    # ------------------------------------------------------------------ prompts
    def edit_ids(self, ids: list[list[int]]) -> list[list[int]]:
        """The token ids of full prompts, edited (called after tokenizing and the length checks)."""
        return ids

    def prefix_ids(self, ids: list[int]) -> list[int]:
        """The shared prefix's token ids, edited (the part of every prompt that is computed once)."""
        return ids

    def sentence_offset(self) -> int:
        """Tokens this method inserts before the sentence's own tokens."""
        return 0

    # ------------------------------------------------------------------ the forward
    def interventions(self) -> list[Intervention]:
        """Interventions installed on the encoder's runner for every model call."""
        return []

    def call_interventions(self, call: ModelCall) -> list[Intervention]:
        """Interventions for one model call, computed from its sentences."""
        return []

    def pool_starts(self, prompts: PromptBuilder, sentences: Sequence[str]) -> list[int] | None:
        """Per sentence, the index (into its full prompt) of the first token to pool; ``None``: all."""
        return None

    def readout(self, vectors: Any) -> Any:
        """The pooled vectors (B, H) mapped (B, D); called only when a method overrides it."""
        return vectors

    # ------------------------------------------------------------------ members (composite methods)
    def dim(self) -> int:
        raise NotImplementedError

    def batches(self, sentences: list[str], batch_size: int, max_batch_tokens: int | None
                ) -> Iterator[tuple[list[int], np.ndarray]]:  # fmt: skip
        """``(indices, vectors)`` of prepared sentences, as :meth:`Encoder.encode` computes them."""
        raise NotImplementedError

    def embed(self, texts: Sequence[str], max_length: int | None = None) -> Any:
        """Vectors with gradients (training), as :meth:`Encoder.embed`."""
        raise NotImplementedError


#: name -> method class, in the order the encoder builds them
METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: add a method to :data:`METHODS` under its ``name``."""
    if not cls.name or cls.name in METHODS:
        raise ValueError(f"a method needs a name of its own, got {cls.name!r} (registered: {sorted(METHODS)})")
    METHODS[cls.name] = cls
    return cls


def build_methods(setup: MethodSetup) -> list[Method]:
    """The methods ``setup.config`` turns on, built for one encoder (a composite method alone)."""
    chosen = [cls for cls in METHODS.values() if cls.applies(setup.config)]
    composite = [cls for cls in chosen if cls.composite]
    return [cls(setup) for cls in (composite[:1] or chosen)]


def dim_fields() -> tuple[str, ...]:
    """The options that change the vectors' dimension: pooling and those the methods declare."""
    return ("pooling", *(f for cls in METHODS.values() for f in cls.dim_fields))


# ---------------------------------------------------------------------------------------------- hook helpers
def hidden_arg(args, kwargs):
    """A decoder block's hidden-states input, however it was passed."""
    return args[0] if args else kwargs["hidden_states"]


def with_hidden(args, kwargs, hidden):
    """``(args, kwargs)`` of a block call with ``hidden`` as its hidden states."""
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


def first_real(batch: Batch):
    """(B,) index of the first real token of each row of a model call."""
    return batch.mask.long().argmax(dim=1)
