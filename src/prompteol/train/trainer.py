"""The training loop of ``prompteol train`` (method.md section 4).

Per step: this process's shard of the global batch -> :func:`contrastive_step` (plain or
GradCache) -> gradients summed over processes -> clip -> AdamW -> linear schedule. Every
``eval_every`` steps STS-B dev is scored (process 0) and the best adapter kept in ``best/``;
every ``save_every`` steps a resumable checkpoint is written. The data order of every epoch
is a function of (seed, epoch), so a resumed run sees exactly the batches it would have seen.

Launch several processes with an existing launcher; each runs this same loop::

    torchrun --nproc-per-node 2 -m prompteol.cli.main train --model M --data F ...
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError
from . import checkpoint as ckpt
from .config import TrainConfig
from .data import file_sha256, read_triplets
from .runtime import Batches, barrier, count_cut, device_for, init_distributed, log_file, run_info, run_provenance
from .sts_dev import TASK

__all__ = ["train", "TrainResult", "init_distributed"]

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    output_dir: str
    steps: int  # steps done when the run returned
    total_steps: int
    before: float | None = None  # STS-B dev score before training (None: not evaluated)
    after: float | None = None  # at the last step
    best: float | None = None
    best_step: int | None = None
    last_loss: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)  # [{"step", "score"}]

    @property
    def final_dir(self) -> Path:
        return Path(self.output_dir) / "final"

    @property
    def best_dir(self) -> Path:
        return Path(self.output_dir) / "best"


# ---------------------------------------------------------------------------------------------- the loop
def train(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    stop_after: int | None = None,
    time_limit: float | None = None,
    progress: bool | None = None,
    cache_dir=None,
    scorer: Callable[[Any], float] | None = None,
) -> TrainResult:
    """Fine-tune ``cfg.model`` on ``cfg.data``; returns the scores and where the adapters are.

    ``resume`` continues the latest checkpoint in ``cfg.output_dir`` exactly (same batches,
    dropout, optimizer and schedule). ``stop_after`` ends the run, with a checkpoint, after
    that many steps (continue it later with ``resume``); ``time_limit`` (seconds of wall time
    from the call) does the same after the first step that ends past it. ``scorer`` replaces
    the STS-B dev scorer (a function encoder -> score, higher is better).
    """
    import torch

    from .lora import check_4bit_available
    from .sts_dev import make_scorer

    deadline = None if time_limit is None else time.time() + time_limit
    if cfg.load_in_4bit:
        check_4bit_available()
    if stop_after is not None and stop_after < 1:
        raise ConfigError(f"stop_after should be a positive number of steps, got {stop_after!r}")
    # everything that can fail on the user's input fails here, before any model is loaded
    data = read_triplets(cfg.data, skip_bad_rows=cfg.skip_bad_rows)
    data_info = {"path": str(Path(cfg.data).resolve()), "sha256": file_sha256(cfg.data), "rows": len(data)}
    batches = Batches(len(data), cfg.batch_size, cfg.seed)
    if batches.per_epoch < 1:
        raise DataError(f"{cfg.data} has {len(data)} usable rows, fewer than one global batch of {cfg.batch_size}; "
                        f"lower --batch-size")  # fmt: skip
    if not cfg.eval_every:
        scorer = None  # eval_every=0: never evaluate
    elif scorer is None:
        scorer = make_scorer(cfg.eval_data, cfg.eval_batch_size)
    out = Path(cfg.output_dir)
    start = _check_output(out, cfg, data_info, resume)

    wanted = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    rank, world_size, own_group = init_distributed(wanted)
    try:
        cfg.world_batch(world_size)  # the global batch must split evenly
        if cfg.load_in_4bit and world_size > 1 and torch.cuda.device_count() > 1:
            # models/loading.py places 4-bit models with device_map="auto" (all visible GPUs)
            raise ConfigError(
                "--load-in-4bit with several processes on a multi-GPU machine is not supported yet (the 4-bit "
                "loader spreads each process's model over every GPU); run one process, or LoRA without --load-in-4bit"
            )
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
        barrier(world_size)
        with log_file(out / "train.log" if rank == 0 else None):
            trainer = _Trainer(cfg, data, data_info, batches, scorer, rank, world_size, device_for(cfg, world_size),
                               cache_dir)  # fmt: skip
            return trainer.run(start, stop_after, deadline, progress)
    finally:
        if own_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def _check_output(out: Path, cfg: TrainConfig, data_info: dict[str, Any], resume: bool) -> Path | None:
    """The checkpoint to resume from (None: fresh run); refuses to mix two runs in one folder."""
    if not resume:
        if (out / ckpt.RUN_FILE).is_file() or ckpt.latest_checkpoint(out) is not None:
            raise ConfigError(
                f"{out} already holds a training run; pass --resume to continue it, or choose another --output"
            )
        return None
    found = ckpt.latest_checkpoint(out)
    if found is None:
        raise ConfigError(f"--resume: {out} holds no checkpoint-<step> folder to continue; train without --resume")
    info = json.loads((found / ckpt.RUN_FILE).read_text(encoding="utf-8"))
    diff = TrainConfig.from_dict(info["train"]).differences(cfg)
    if diff:
        listed = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
        raise ConfigError(f"--resume: the options differ from the run in {found} ({listed}); "
                          f"resume with the same options, or start a new run in another --output")  # fmt: skip
    if info["data"]["sha256"] != data_info["sha256"]:
        raise ConfigError(f"--resume: {cfg.data} is not the data file of the run in {found} "
                          f"(sha256 {data_info['sha256'][:12]}... != {info['data']['sha256'][:12]}...)")  # fmt: skip
    return found


class _Trainer:
    """One process's share of a run: model, optimizer, schedule, evaluation and checkpoints."""

    def __init__(self, cfg: TrainConfig, data, data_info, batches, scorer, rank, world_size, device, cache_dir):
        import torch
        from transformers import get_linear_schedule_with_warmup

        from .lora import add_lora, build_training_encoder, trainable_parameters

        self.cfg, self.data, self.data_info, self.batches, self.scorer = cfg, data, data_info, batches, scorer
        self.rank, self.world_size = rank, world_size
        self.local_batch = cfg.world_batch(world_size)
        self.total = cfg.max_steps or cfg.epochs * batches.per_epoch
        self.out = Path(cfg.output_dir)
        log.info("training %s on %s (%d triplets): %d steps of %d triplets (%d per process x %d, micro-batch %s), "
                 "%d steps per epoch", cfg.model, cfg.data, len(data), self.total, cfg.batch_size, self.local_batch,
                 world_size, cfg.micro_batch_size or self.local_batch, batches.per_epoch)  # fmt: skip
        torch.manual_seed(cfg.seed)  # the same LoRA initialisation on every process
        self.encoder = build_training_encoder(cfg, device, cache_dir=cache_dir, progress=rank == 0)
        self.model = add_lora(self.encoder, cfg)
        self.params = trainable_parameters(self.model)
        if world_size > 1:
            import torch.distributed as dist

            for p in self.params:
                dist.broadcast(p.data, src=0)
        count_cut(self.encoder, data, cfg.cutoff_len)
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, cfg.warmup_steps, self.total)
        fp16 = cfg.dtype == "float16" and str(device).startswith("cuda")
        self.scaler = torch.amp.GradScaler("cuda") if fp16 else None  # loss scaling for float16 only
        self.result = TrainResult(str(self.out), 0, self.total)

    # ------------------------------------------------------------------ pieces
    def info(self, step: int, score: float | None = None) -> dict[str, Any]:
        return run_info(self.cfg, self.encoder, self.data_info, self.world_size, step, score)

    def restore(self, folder: Path) -> int:
        state = ckpt.load_checkpoint(folder, self.model, self.rank)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        r = self.result
        r.before, r.best, r.best_step = state.get("before"), state.get("best"), state.get("best_step")
        r.history = list(state.get("history", []))
        r.after = r.history[-1]["score"] if r.history else None
        log.info("resumed from %s at step %d of %d", folder, state["step"], self.total)
        return int(state["step"])

    def evaluate(self, step: int) -> None:
        if self.rank == 0:
            r = self.result
            self.model.eval()
            t0 = time.time()
            score = float(self.scorer(self.encoder))
            self.model.train()
            log.info("step %d/%d: %s %.2f (%.0f s)", step, self.total, TASK, score, time.time() - t0)
            _append_metrics(self.out, {"step": step, "eval": TASK, "score": score})
            r.history.append({"step": step, "score": score})
            r.after = score
            if step == 0:
                r.before = score
            elif r.best is None or score > r.best:
                r.best, r.best_step = score, step
                self.save_adapter("best", step, score)
                log.info("new best %.2f at step %d -> %s", score, step, self.out / "best")
        barrier(self.world_size)

    def save_adapter(self, name: str, step: int, score: float | None) -> None:
        folder = self.out / name
        tmp = ckpt.begin_folder(folder)
        ckpt.save_adapter(self.model, tmp, self.info(step, score))
        ckpt.commit_folder(folder)

    def save_checkpoint(self, step: int) -> None:
        folder = self.out / f"checkpoint-{step}"
        if self.rank == 0:
            ckpt.begin_folder(folder)
        barrier(self.world_size)
        tmp = ckpt.temporary_folder(folder)
        ckpt.save_rng(tmp, self.rank)
        if self.rank == 0:
            r = self.result
            state = {"step": step, "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                     "scaler": self.scaler.state_dict() if self.scaler is not None else None, "before": r.before,
                     "best": r.best, "best_step": r.best_step, "history": r.history}  # fmt: skip
            ckpt.save_checkpoint(tmp, self.model, self.info(step), state)
        barrier(self.world_size)
        if self.rank == 0:
            ckpt.commit_folder(folder)
            ckpt.prune_checkpoints(self.out, self.cfg.keep_checkpoints)
            log.info("checkpoint %s", folder)
        barrier(self.world_size)

    def step(self, step: int):
        """One optimisation step on global batch ``step``; returns (loss, lr, grad norm)."""
        import torch

        from .gradcache import contrastive_step
        from .loss import all_reduce_grads

        cfg = self.cfg
        rows = self.batches.rows(step)[self.rank * self.local_batch : (self.rank + 1) * self.local_batch]
        shard = [self.data[i] for i in rows]
        negatives = [t.negative for t in shard] if shard[0].negative is not None else None
        lr = self.scheduler.get_last_lr()[0]
        res = contrastive_step(
            self.encoder, [t.anchor for t in shard], [t.positive for t in shard], negatives,  # type: ignore[misc]
            temperature=cfg.temperature, cutoff_len=cfg.cutoff_len, micro_batch_size=cfg.micro_batch_size,
            scaler=self.scaler,
        )  # fmt: skip
        if not torch.isfinite(torch.tensor(res.loss)):
            raise ConfigError(f"the loss became {res.loss} at step {step + 1}; lower --lr, or use --dtype bfloat16")
        all_reduce_grads(self.params)  # every process now holds the gradient of the global loss
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        limit = cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, limit))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return res.loss, lr, grad_norm

    # ------------------------------------------------------------------ the loop
    def out_of_time(self, deadline: float | None) -> bool:
        """Whether the wall-time budget is spent (process 0's clock decides for all)."""
        if deadline is None:
            return False
        import torch

        device = next(self.model.parameters()).device  # nccl moves only CUDA tensors
        flag = torch.tensor([float(time.time() > deadline)], device=device)
        if self.world_size > 1:
            import torch.distributed as dist

            dist.broadcast(flag, src=0)
        return bool(flag.item())

    def run(self, start: Path | None, stop_after: int | None, deadline: float | None, progress: bool | None):
        import torch
        from tqdm.auto import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        cfg, r, total = self.cfg, self.result, self.total
        if start is not None:
            step = self.restore(start)
        else:
            step = 0
            torch.manual_seed(cfg.seed + 1 + self.rank)  # dropout: one stream per process
        if self.rank == 0:
            ckpt.write_json(self.out / ckpt.RUN_FILE, self.info(step))
        if self.scorer is not None and step == 0:
            self.evaluate(0)
        self.model.train()
        show = (sys.stderr.isatty() if progress is None else progress) and self.rank == 0
        bar = tqdm(total=total, initial=step, desc="train", unit="step", disable=not show, file=sys.stderr,
                   dynamic_ncols=True)  # fmt: skip
        console = any(isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) in (sys.stderr, sys.stdout)
                      for h in logging.root.handlers)  # fmt: skip
        redirect = logging_redirect_tqdm(loggers=[logging.root]) if console else contextlib.nullcontext()
        with bar, redirect:
            while step < total:
                t0 = time.time()
                loss, lr, grad_norm = self.step(step)
                step += 1
                r.steps, r.last_loss = step, loss
                dt = time.time() - t0
                speed = cfg.batch_size / dt  # triplets per second, all processes together
                if self.rank == 0:
                    _append_metrics(self.out, {"step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                                               "examples_per_s": speed, "seconds": dt})  # fmt: skip
                    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", ex_s=f"{speed:.1f}", refresh=False)
                    bar.update(1)
                    if step % cfg.log_every == 0 or step == total:
                        log.info("step %d/%d loss %.4f lr %.3e grad_norm %.3f %.1f ex/s", step, total, loss, lr,
                                 grad_norm, speed)  # fmt: skip
                if self.scorer is not None and (step % cfg.eval_every == 0 or step == total):
                    self.evaluate(step)
                stopping = step < total and (
                    (stop_after is not None and step >= stop_after) or self.out_of_time(deadline)
                )
                if (cfg.save_every and step % cfg.save_every == 0) or stopping:
                    self.save_checkpoint(step)
                if stopping:
                    log.info("stopped after step %d of %d; continue with --resume", step, total)
                    return r
        if self.rank == 0:
            self.save_adapter("final", step, r.after)
            summary = {"task": TASK, "steps": step, "before": r.before, "after": r.after, "best": r.best,
                       "best_step": r.best_step, "last_loss": r.last_loss, "history": r.history,
                       "provenance": run_provenance(self.cfg)}  # fmt: skip
            ckpt.write_json(self.out / "summary.json", summary)
            if r.history:
                log.info("done after %d steps: %s before %s, after %s, best %s (step %s); adapters in %s", step,
                         TASK, _fmt(r.before), _fmt(r.after), _fmt(r.best), r.best_step, self.out)  # fmt: skip
                if r.best is not None and r.before is not None and r.best <= r.before:
                    log.warning("no trained adapter beat the model before training (%.2f <= %.2f)", r.best, r.before)
            else:
                log.info("done after %d steps (not evaluated); adapter in %s", step, self.out / "final")
        barrier(self.world_size)
        return r


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _append_metrics(out: Path, record: dict[str, Any]) -> None:
    with open(out / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
