"""What the training loop runs on: processes, device, log file, run record, epoch batches.

What the training loop runs on: the process group (torchrun, accelerate), the device, the run's log file,
the run record (``prompteol_train.json``: encoder, data, provenance) and the batches of every epoch, a function
of (seed, epoch), so a resumed run sees exactly the batches it would have seen."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from .config import TrainConfig
from .data import Triplet
from .sts_dev import TASK

__all__ = ["init_distributed", "device_for", "barrier", "log_file", "run_info", "run_provenance", "Batches", "count_cut"]

log = logging.getLogger(__name__)


def init_distributed(device: str) -> tuple[int, int, bool]:
    """Join the process group a launcher (torchrun, accelerate) describes in the environment.

    Returns ``(rank, world_size, initialised_here)``; ``(0, 1, False)`` without a launcher.
    """
    import torch.distributed as dist

    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return 0, 1, False
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    backend = "nccl" if device.startswith("cuda") else "gloo"
    dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size(), True


def device_for(cfg: TrainConfig, world_size: int) -> str:
    import torch

    device = cfg.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and world_size > 1:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    return device


def barrier(world_size: int) -> None:
    if world_size > 1:
        import torch.distributed as dist

        dist.barrier()


@contextlib.contextmanager
def log_file(path: Path | None):
    """Send the package's log records (INFO and up) to ``path`` for the duration of the run."""
    logger = logging.getLogger("prompteol")
    handler = None
    old_level = logger.level
    if path is not None:
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setLevel(logging.INFO)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
    cut_filter = _DropCutWarnings()
    logging.getLogger("prompteol.encoder.encoder").addFilter(cut_filter)
    try:
        yield
    finally:
        logging.getLogger("prompteol.encoder.encoder").removeFilter(cut_filter)
        if handler is not None:
            logger.removeHandler(handler)
            handler.close()
            logger.setLevel(old_level)


class _DropCutWarnings(logging.Filter):
    """The per-batch "N sentences were cut to max_length" warning; training reports the count once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "were cut to max_length" not in str(record.msg)


def _base_model_ref(model: str) -> str:
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def run_provenance(cfg: TrainConfig) -> dict[str, Any]:
    """The run's provenance block (:func:`prompteol.records.provenance`): commit, machine, versions, command."""
    from ..records import provenance

    return provenance(device=str(cfg.encoder.device), packages=("peft", "bitsandbytes"))


def run_info(
    cfg: TrainConfig, encoder, data: dict[str, Any], world_size: int, step: int, score=None
) -> dict[str, Any]:
    enc = cfg.encoder.replace(model=_base_model_ref(cfg.model)).to_dict()
    prov = run_provenance(cfg)
    return {
        "format": 1,
        "base_model": _base_model_ref(cfg.model),
        "encoder": enc,
        "train": cfg.to_dict(),
        "data": data,
        "world_size": world_size,
        "step": step,
        "eval": None if score is None else {"task": TASK, "score": score, "step": step},
        "versions": prov["versions"],
        "provenance": prov,
    }


class Batches:
    """Global batch ``step`` -> row indices; epoch ``e`` is a permutation seeded by (seed, e)."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.per_epoch = n // batch_size  # an incomplete last batch is dropped
        self._epoch = -1
        self._order: list[int] = []

    def rows(self, step: int) -> list[int]:
        import torch

        epoch, k = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._epoch, self._order = epoch, torch.randperm(self.n, generator=gen).tolist()
        return self._order[k * self.batch_size : (k + 1) * self.batch_size]


def count_cut(encoder, data: list[Triplet], limit: int | None, sample: int = 10_000) -> None:
    """Log how many sentences the cutoff shortens (once, instead of a warning per batch)."""
    if limit is None:
        return
    rows = data[:sample]  # a 275k-row file: the first rows tell enough, in a second
    texts = [t for row in rows for t in (row.anchor, row.positive, row.negative) if t is not None]
    lengths = [len(ids) for ids in encoder.tokenizer(texts, add_special_tokens=False)["input_ids"]]
    cut = sum(n > limit for n in lengths)
    scope = "" if len(rows) == len(data) else f" (in the first {len(rows)} rows)"
    log.info("%d of %d training sentences%s are longer than cutoff_len=%d tokens and are cut before templating",
             cut, len(texts), scope, limit)  # fmt: skip
