"""Seed-to-seed spread of the two transfer classifiers (lbfgs, senteval) on the same embeddings.

For each task, the sentences are encoded once (through ``prompteol.Encoder`` with the persistent
embedding cache, so a rerun does no forward pass), then both classifiers run over N seeds
(1111, 1112, ...: fold shuffles and classifier) with ``prompteol.evaluation.evaluate``. Prints per
task: lbfgs mean +- sd, senteval mean +- sd (sample sd, ddof=1) and the difference of the means,
and writes a JSON record (every per-seed score, timings, machine, torch threads, versions, command).

Usage:
    python benchmarks/classifier_spread.py -o spread.json                      # smollm2-135m, fast, 7 tasks, 5 seeds
    python benchmarks/classifier_spread.py -m smollm2-135m --mode test --tasks MR,CR --seeds 3 --threads 2 -o r.json

CPU cost (fast mode): encoding the 7 tasks (119k sentences, once) plus, per seed, the fits of both
classifiers (MR/CR/SUBJ/MPQA 105 each, TREC/MRPC 21, SST2 4); test mode has about 4x the fits.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from datetime import UTC, datetime

import numpy as np

TRANSFER_TASKS = ("MR", "CR", "SUBJ", "MPQA", "SST2", "TREC", "MRPC")
CLASSIFIERS = ("lbfgs", "senteval")


class _EncodeOnce:
    """Wraps an encoder so that the same sentence list is encoded once (both classifiers, one task)."""

    def __init__(self, encoder):
        self.encoder = encoder
        self._memo: dict[tuple[str, ...], np.ndarray] = {}
        self.encode_s = 0.0

    def encode(self, sentences, batch_size: int = 32, show_progress: bool | None = None):
        key = tuple(sentences)
        if key not in self._memo:
            t = time.perf_counter()
            self._memo[key] = np.asarray(self.encoder.encode(list(sentences), batch_size=batch_size,
                                                             show_progress=show_progress))  # fmt: skip
            self.encode_s += time.perf_counter() - t
        return self._memo[key]

    def clear(self) -> None:
        self._memo.clear()

    def describe(self):
        describe = getattr(self.encoder, "describe", None)
        return describe() if callable(describe) else {}


def _load_encoder(model: str, cache_dir: str | None):
    """``Encoder.from_pretrained`` with the persistent embedding cache (whatever the keyword is called)."""
    from prompteol import Encoder

    params = inspect.signature(Encoder.from_pretrained).parameters
    key = "embedding_cache" if "embedding_cache" in params else "cache"
    return Encoder.from_pretrained(model, cache_dir=cache_dir, **{key: True})


def _summary(res: dict) -> dict:
    """Mean, sample sd (None with one seed) and per-seed accuracies (and F1) of one task's result."""
    per_seed = res.get("per_seed") or {m: [res[m]] for m in ("acc", "f1") if m in res}
    scores = per_seed["acc"]
    out = {
        "mean": float(np.mean(scores)),
        "std": float(np.std(scores, ddof=1)) if len(scores) > 1 else None,
        "per_seed": scores,
    }
    if "f1" in per_seed:
        out["f1_per_seed"] = per_seed["f1"]
    return out


def _fmt(mean: float, std: float | None) -> str:
    return f"{mean:6.2f} ± {std:4.2f}" if std is not None else f"{mean:6.2f}       "


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--model", "-m", default="smollm2-135m", help="packaged alias, folder or hub id (default: %(default)s)"
    )
    ap.add_argument("--mode", choices=["fast", "test"], default="fast", help="transfer protocol (default: %(default)s)")
    ap.add_argument("--tasks", default=",".join(TRANSFER_TASKS), help="comma-separated transfer tasks (default: all 7)")
    ap.add_argument("--seeds", type=int, default=5, help="seeds per classifier, 1111, 1112, ... (default: %(default)s)")
    ap.add_argument("--classifiers", default=",".join(CLASSIFIERS), help="default: %(default)s")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--batch-size", "-b", type=int, default=32, help="encoding batch size (default: %(default)s)")
    ap.add_argument("--data-dir", default=None, help="SentEval data root (default: $PROMPTEOL_DATA)")
    ap.add_argument("--cache-dir", default=None, help="prompteol cache root: models + embedding cache "
                    "(default: $PROMPTEOL_CACHE or ~/.cache/prompteol)")  # fmt: skip
    ap.add_argument("--output", "-o", required=True, help="write the JSON record here")
    args = ap.parse_args(argv)

    import torch

    from prompteol.evaluation import evaluate, resolve_data_dir, resolve_tasks, verify_data
    from prompteol.records import provenance

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.seeds < 1:
        ap.error("--seeds should be >= 1")
    classifiers = [c.strip() for c in args.classifiers.split(",") if c.strip()]
    if not classifiers or any(c not in CLASSIFIERS for c in classifiers):
        ap.error(f"--classifiers should name some of {', '.join(CLASSIFIERS)}")
    tasks = resolve_tasks(args.tasks)
    if any(t.kind != "transfer" for t in tasks):
        ap.error(f"--tasks should be transfer tasks ({', '.join(TRANSFER_TASKS)})")
    root = resolve_data_dir(args.data_dir)
    verify_data(root, tasks)  # before the model is loaded
    started = datetime.now(UTC)
    t_start = time.perf_counter()
    t = time.perf_counter()
    encoder = _EncodeOnce(_load_encoder(args.model, args.cache_dir))
    load_s = time.perf_counter() - t
    print(f"{args.model}: loaded in {load_s:.1f} s; mode {args.mode}, {args.seeds} seeds, "
          f"torch threads {torch.get_num_threads()}", file=sys.stderr)  # fmt: skip

    record: dict = {
        "schema": "prompteol.classifier-spread/1",
        "date": started.isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/classifier_spread.py", *(sys.argv[1:] if argv is None else argv)]),
        "model": args.model, "mode": args.mode, "seeds": [1111 + i for i in range(args.seeds)],
        "classifiers": classifiers, "std": "sample standard deviation over the seeds (ddof=1)",
        "torch_threads": torch.get_num_threads(), "provenance": provenance(),
        "encoder": None, "protocol": {}, "tasks": {},
    }  # fmt: skip
    for task in tasks:
        encoder.clear()
        encode_before = encoder.encode_s
        row: dict = {}
        for clf in classifiers:
            t = time.perf_counter()
            res = evaluate(encoder, [task], data_dir=root, mode=args.mode, batch_size=args.batch_size,
                           progress=False, classifier=clf, seeds=args.seeds)  # fmt: skip
            task_res = res["tasks"][task.name]
            row[clf] = {**_summary(task_res), "score_s": task_res["elapsed_s"]["score"],
                        "wall_s": round(time.perf_counter() - t, 3), "result": task_res}  # fmt: skip
            record["protocol"][clf] = res["protocol"]["transfer"]
            record["encoder"] = record["encoder"] or res["encoder"]
        if "lbfgs" in row and "senteval" in row:
            row["diff_of_means"] = row["senteval"]["mean"] - row["lbfgs"]["mean"]  # senteval - lbfgs
        row["sentences"] = task_res["sentences"]
        row["encode_s"] = round(encoder.encode_s - encode_before, 3)
        record["tasks"][task.name] = row
        cells = "  ".join(f"{c} {_fmt(row[c]['mean'], row[c]['std'])} ({row[c]['score_s']:.0f} s)" for c in classifiers)
        diff = f"  diff {row['diff_of_means']:+.2f}" if "diff_of_means" in row else ""
        print(f"{task.name:5} {cells}{diff}", file=sys.stderr)
    record["elapsed_s"] = round(time.perf_counter() - t_start, 3)
    record["load_s"] = round(load_s, 3)

    # the table
    header = f"{'task':6}" + "".join(f"{c + ' mean ± sd':>21}" for c in classifiers)
    header += f"{'diff of means':>15}" if len(classifiers) == 2 else ""
    print(f"\n{args.model}, {args.mode} mode, seeds {record['seeds'][0]}..{record['seeds'][-1]} "
          f"(sd: sample, ddof=1; diff = senteval - lbfgs)")  # fmt: skip
    print(header)
    for name, row in record["tasks"].items():
        line = f"{name:6}" + "".join(f"{_fmt(row[c]['mean'], row[c]['std']):>21}" for c in classifiers)
        if "diff_of_means" in row:
            line += f"{row['diff_of_means']:>+15.2f}"
        print(line)
    if len(record["tasks"]) > 1:
        means = {c: float(np.mean([row[c]["mean"] for row in record["tasks"].values()])) for c in classifiers}
        line = f"{'avg':6}" + "".join(f"{means[c]:>14.2f}       " for c in classifiers)
        if len(classifiers) == 2:
            line += f"{means['senteval'] - means['lbfgs']:>+15.2f}"
        print(line)
        record["averages"] = means

    from prompteol.fileio import write_json_atomic

    out = write_json_atomic(args.output, record)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
