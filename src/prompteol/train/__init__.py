"""Contrastive fine-tuning of PromptEOL encoders (``prompteol train``; method.md section 4).

>>> from prompteol.train import TrainConfig, train        # doctest: +SKIP
>>> result = train(TrainConfig.build(model="smollm2-135m", data="triplets.csv", batch_size=64, micro_batch_size=16))
>>> result.best, result.best_dir                           # doctest: +SKIP

Modules: :mod:`.data` (triplet files), :mod:`.snli` (triplets from SentEval's SNLI files),
:mod:`.loss` (InfoNCE, gathered across processes), :mod:`.gradcache` (one step, plain or
with gradient caching), :mod:`.lora` (LoRA / QLoRA on the encoder's base model),
:mod:`.checkpoint` (adapters and resumable checkpoints), :mod:`.sts_dev` (the selection
score), :mod:`.trainer` (the loop). Importing this package does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "TrainConfig": ".config",
    "train": ".trainer",
    "TrainResult": ".trainer",
    "Triplet": ".data",
    "TripletDataError": ".data",
    "read_triplets": ".data",
    "write_triplets": ".data",
    "snli_triplets": ".snli",
    "info_nce": ".loss",
    "contrastive_step": ".gradcache",
    "make_scorer": ".sts_dev",
}

__all__ = [
    "TrainConfig",
    "TrainResult",
    "Triplet",
    "TripletDataError",
    "contrastive_step",
    "info_nce",
    "make_scorer",
    "read_triplets",
    "snli_triplets",
    "train",
    "write_triplets",
]

if TYPE_CHECKING:  # pragma: no cover
    from .config import TrainConfig
    from .data import Triplet, TripletDataError, read_triplets, write_triplets
    from .gradcache import contrastive_step
    from .loss import info_nce
    from .snli import snli_triplets
    from .sts_dev import make_scorer
    from .trainer import TrainResult, train


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
