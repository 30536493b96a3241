"""``prompteol train``: contrastive LoRA / QLoRA fine-tuning; ``prompteol train convert-snli``: triplets."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from ..errors import ConfigError, DataError
from ..options import non_negative_float, non_negative_int, positive_float, positive_int
from .common import add_encoder_args, encoder_values

_DEFAULTS = "(default: %(default)s)"
#: encoder options training does not use (LoRA needs the plain base; --load-in-4bit, --cutoff-len instead)
_NOT_TRAINED = ("adapter", "quantization", "max_length", "prefix_cache")


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="fine-tune an encoder contrastively on NLI triplets (LoRA / QLoRA)",
        description="Contrastive fine-tuning (PromptEOL + CSE, method.md section 4): InfoNCE over cosine / "
        "temperature, each anchor against all positives and hard negatives of the global batch; LoRA on every "
        "linear layer of the base model; gradient caching for big batches in small memory; checkpoints, "
        "--resume, STS-B dev evaluation and a best/ adapter. Several processes: "
        "torchrun --nproc-per-node N -m prompteol.cli.main train ...",
    )
    g = p.add_argument_group("data")
    g.add_argument("--data", help="triplets: .csv with sent0,sent1,hard_neg (SimCSE's NLI format) or .jsonl (required)")
    g.add_argument("--output", "-o", default="prompteol-train", help=f"output folder {_DEFAULTS}")
    g.add_argument(
        "--skip-bad-rows", action="store_true", help="train without malformed rows (each is logged) instead of stopping"
    )
    add_encoder_args(p, exclude=_NOT_TRAINED, defaults={"device": "auto"}, title="encoder trained for (--model is required)")

    g = p.add_argument_group("LoRA")
    g.add_argument("--lora-r", type=positive_int, default=64, help=_DEFAULTS)
    g.add_argument("--lora-alpha", type=positive_int, default=16, help=_DEFAULTS)
    g.add_argument("--lora-dropout", type=non_negative_float, default=0.05, help=_DEFAULTS)
    g.add_argument(
        "--load-in-4bit", action="store_true", help="QLoRA: base model in bitsandbytes NF4 + double quantisation (CUDA)"
    )
    g.add_argument("--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_false",
                   help="keep activations instead of recomputing them (faster, more memory)")  # fmt: skip

    g = p.add_argument_group("optimisation")
    g.add_argument("--batch-size", type=positive_int, default=256, help=f"global batch in triplets, all processes {_DEFAULTS}")
    g.add_argument("--micro-batch-size", type=positive_int, default=None,
                   help="triplets per forward pass; smaller than the per-process batch turns on gradient caching "
                   "(default: the whole per-process batch in one pass)")  # fmt: skip
    g.add_argument("--lr", type=positive_float, default=5e-4, help=_DEFAULTS)
    g.add_argument("--warmup-steps", type=non_negative_int, default=100, help=_DEFAULTS)
    g.add_argument("--weight-decay", type=non_negative_float, default=0.0, help=_DEFAULTS)
    g.add_argument("--max-grad-norm", type=non_negative_float, default=1.0, help=f"gradient clipping; 0 = off {_DEFAULTS}")
    g.add_argument("--epochs", type=positive_int, default=1, help=_DEFAULTS)
    g.add_argument("--max-steps", type=positive_int, default=None, help="number of steps (overrides --epochs; cycles the data)")
    g.add_argument("--temperature", type=positive_float, default=0.05, help=_DEFAULTS)
    g.add_argument(
        "--cutoff-len",
        type=non_negative_int,
        default=32,
        help=f"tokens per sentence, cut before templating; 0 = never cut {_DEFAULTS}",
    )
    g.add_argument("--seed", type=int, default=42, help=_DEFAULTS)

    g = p.add_argument_group("evaluation and checkpoints")
    g.add_argument(
        "--eval-every",
        type=non_negative_int,
        default=50,
        help=f"score STS-B dev every N steps (and before/after); 0 = never {_DEFAULTS}",
    )
    g.add_argument(
        "--eval-data",
        default=None,
        help="SentEval data root with downstream/STS/STSBenchmark (default: $PROMPTEOL_DATA)",
    )
    g.add_argument("--eval-batch-size", type=positive_int, default=64, help=_DEFAULTS)
    g.add_argument(
        "--save-every", type=non_negative_int, default=50, help=f"resumable checkpoint every N steps; 0 = none {_DEFAULTS}"
    )
    g.add_argument("--keep-checkpoints", type=non_negative_int, default=1, help=f"resumable checkpoints kept {_DEFAULTS}")
    g.add_argument("--resume", action="store_true", help="continue the latest checkpoint in --output exactly")
    g.add_argument("--stop-after", type=positive_int, default=None, metavar="STEP",
                   help="stop after this step with a checkpoint (continue later with --resume)")  # fmt: skip
    g.add_argument("--time-limit", type=positive_float, default=None, metavar="MINUTES",
                   help="stop with a checkpoint once this much wall time has passed (continue later with --resume)")  # fmt: skip
    g.add_argument("--log-every", type=positive_int, default=10, help=f"log a line every N steps {_DEFAULTS}")
    prog = g.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=None)
    prog.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=run, train_command=None)

    tsub = p.add_subparsers(dest="train_command", metavar="[convert-snli]", title="subcommands (optional)")
    c = tsub.add_parser(
        "convert-snli",
        help="write (premise, entailment, contradiction) triplets from SentEval's SNLI files",
        description="Triplets from SentEval's SNLI s1/s2/labels files: each premise with both an entailment and a "
        "contradiction hypothesis gives (anchor, positive, hard negative); about 2.9k per dev/test split.",
    )
    c.add_argument("--data-dir", default=None,
                   help="folder with s1.<split>, s2.<split>, labels.<split> (default: snli-devtest beside $PROMPTEOL_DATA)")  # fmt: skip
    c.add_argument("--splits", nargs="+", default=["dev", "test"], help=_DEFAULTS)
    c.add_argument("-o", "--output", required=True, help="triplet file to write: .csv (sent0,sent1,hard_neg) or .jsonl")
    c.set_defaults(func=run_convert)


def config_from_args(args: argparse.Namespace):
    from ..train.config import TrainConfig

    missing = [flag for flag, value in (("--model", args.model), ("--data", args.data)) if not value]
    if missing:
        raise ConfigError(f"prompteol train needs {' and '.join(missing)} (see `prompteol train --help`)")
    return TrainConfig.build(
        **encoder_values(args, _NOT_TRAINED), data=args.data, output_dir=args.output,
        lora_r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, load_in_4bit=args.load_in_4bit,
        gradient_checkpointing=args.gradient_checkpointing, batch_size=args.batch_size,
        micro_batch_size=args.micro_batch_size, lr=args.lr, warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay, max_grad_norm=args.max_grad_norm, epochs=args.epochs, max_steps=args.max_steps,
        temperature=args.temperature, cutoff_len=args.cutoff_len or None, eval_every=args.eval_every,
        save_every=args.save_every, keep_checkpoints=args.keep_checkpoints, eval_data=args.eval_data,
        eval_batch_size=args.eval_batch_size, log_every=args.log_every, seed=args.seed,
        skip_bad_rows=args.skip_bad_rows,
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from ..train.trainer import train
    from .common import console, progress_wanted

    cfg = config_from_args(args)
    if getattr(args, "quiet", False):  # training logs INFO lines; -q keeps the console to errors
        for handler in logging.root.handlers:
            handler.setLevel(logging.ERROR)
    limit = None if args.time_limit is None else args.time_limit * 60
    result = train(cfg, resume=args.resume, stop_after=args.stop_after, time_limit=limit,
                   progress=progress_wanted(args.progress))  # fmt: skip
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    if not result.history:
        if result.steps == result.total_steps:
            print(f"trained {result.steps} steps (not evaluated); adapter: {result.final_dir}", file=sys.stderr)
    else:
        from rich.table import Table

        def fmt(x):
            return "-" if x is None else f"{x:.2f}"

        done = result.steps == result.total_steps
        table = Table(title=f"prompteol train: {result.steps}/{result.total_steps} steps", show_header=True)
        table.add_column("STS-B dev (Spearman x100)")
        table.add_column("score", justify="right")
        table.add_column("adapter")
        table.add_row("before training", fmt(result.before), "")
        table.add_row(f"last evaluated (step {result.history[-1]['step']})", fmt(result.after),
                      str(result.final_dir) if done else "")  # fmt: skip
        table.add_row(
            f"best (step {result.best_step})", fmt(result.best), str(result.best_dir) if result.best is not None else ""
        )
        console().print(table)
    if result.steps < result.total_steps:
        print(f"stopped at step {result.steps}; continue with --resume --output {cfg.output_dir}", file=sys.stderr)
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from ..train.data import write_triplets
    from ..train.snli import snli_triplets

    folder = args.data_dir
    if folder is None:
        root = os.environ.get("PROMPTEOL_DATA")
        if not root:
            raise DataError("pass --data-dir: the folder with SentEval's SNLI s1/s2/labels files (snli-devtest)")
        folder = str(Path(root).parent / "snli-devtest")
    triplets = snli_triplets(folder, splits=args.splits)
    write_triplets(args.output, triplets)
    print(f"wrote {len(triplets)} triplets from {folder} ({', '.join(args.splits)}) to {args.output}", file=sys.stderr)
    return 0
