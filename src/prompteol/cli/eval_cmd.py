"""``prompteol eval``: SentEval-protocol STS / transfer scores of an encoder (and baselines), as a table and JSON."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..encoder.config import EVAL_ENCODER_DEFAULTS
from ..fileio import write_atomic, write_text_atomic
from ..options import positive_int
from .common import add_encode_args, add_encoder_args, build_encoder, console, encode_options_from_args, progress_wanted
from .output import check_output

_BASELINE_NAMES = ("all-minilm-l6-v2", "all-mpnet-base-v2")  # = evaluation.baselines.BASELINES (checked by a test)


def register(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate an encoder on STS and transfer tasks (SentEval protocol)",
        description="Score an encoder on SentEval tasks: STS12-16, STS-B, SICK-R (Spearman x100) and MR, CR, SUBJ, "
        "MPQA, SST2, TREC, MRPC (logistic regression accuracy). Verifies the data before loading any model, prints a "
        "table and writes a results JSON. Vectors come from the persistent embedding cache when known, so a repeated "
        "run does no forward pass. Protocol and deviations from SentEval: docs/evaluation.md.",
    )
    p.add_argument("--tasks", default="sts",
                   help="sts (7 STS tasks, default), transfer (7), all, or a comma-separated list of tasks and groups, "
                   "e.g. STS12,STSBenchmark-dev,MR")  # fmt: skip
    p.add_argument("--mode", choices=["test", "fast"], default="test",
                   help="transfer protocol: test = 10-fold (SentEval's full mode), fast = 5-fold; STS is identical "
                   "in both (default: %(default)s)")  # fmt: skip
    p.add_argument("--classifier", choices=["lbfgs", "newton", "senteval"], default="lbfgs",
                   help="transfer classifier: lbfgs = scikit-learn L-BFGS logistic regression to convergence (or "
                   "--max-iter); newton = the same objective solved to its optimum by Newton-Cholesky (for features "
                   "on which L-BFGS stops at its cap, e.g. MRPC); senteval = SentEval's PyTorch classifier (Adam/RMSprop, early stopping) with the --mode's "
                   "settings (default: %(default)s)")  # fmt: skip
    p.add_argument("--max-iter", type=positive_int, default=None, metavar="N",
                   help="the lbfgs classifier's iteration cap; fits that reach it are counted in each task's "
                   "not_converged (default: 1000; lbfgs only)")  # fmt: skip
    p.add_argument("--seeds", type=positive_int, default=1, metavar="N",
                   help="run the transfer classifiers with N seeds (1111, 1112, ...), encoding once; the score is "
                   "the mean, the results also hold each seed's score and the sample std (default: %(default)s)")  # fmt: skip
    p.add_argument("--data-dir", default=None,
                   help="SentEval data root, the folder that holds downstream/ (default: $PROMPTEOL_DATA)")  # fmt: skip
    p.add_argument("--output", "-o", default=None, help="write the results JSON to this file (atomically)")
    p.add_argument("--json", action="store_true",
                   help="print the results JSON to stdout instead of the table (one document; logs and "
                   "progress stay on stderr)")  # fmt: skip
    add_encode_args(p, ("batch_size", "use_embedding_cache"))
    p.add_argument("--baseline", action="append", default=[], choices=_BASELINE_NAMES, metavar="NAME",
                   help=f"also (or, without --model, only) evaluate a sentence-transformers baseline; repeatable; "
                   f"one of {', '.join(_BASELINE_NAMES)}")  # fmt: skip
    prog = p.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=None,
                      help="show progress (default: a bar on a terminal, a line every 30 s in a log)")
    prog.add_argument("--no-progress", dest="progress", action="store_false", help="show no progress")
    add_encoder_args(p, defaults=EVAL_ENCODER_DEFAULTS)
    p.set_defaults(func=run, check=check)
    esub = p.add_subparsers(dest="eval_command", metavar="[plot]", required=False,
                            description="without an action, `prompteol eval` evaluates (the options above)")  # fmt: skip
    pl = esub.add_parser("plot", help="bar chart of results JSON files (one group per task, runs side by side)",
                         description="Draw one bar per run and task from `prompteol eval` results files (a file "
                         "may hold several runs), labelled by each run's label or model. Needs matplotlib: "
                         "pip install 'prompteol[plot]'.")  # fmt: skip
    pl.add_argument("results", nargs="+", metavar="RESULTS.json", help="results files of `prompteol eval -o`")
    pl.add_argument("-o", "--output", dest="plot_output", required=True,
                    help="image file to write: .png, .svg or .pdf (by extension)")  # fmt: skip
    pl.add_argument("--title", default=None, help="the plot's title (default: the runs' labels)")
    pl.set_defaults(func=run_plot)


def check(args: argparse.Namespace) -> None:
    """Part of the CLI's one validation step: the task list and the output, before any data or model."""
    if getattr(args, "eval_command", None) == "plot":
        return
    from ..evaluation import resolve_tasks

    resolve_tasks(args.tasks)
    if args.output:
        check_output(args.output)  # an unwritable -o fails now, not after the whole evaluation


def run(args: argparse.Namespace) -> int:
    from ..encoder.config import EncoderConfig
    from ..evaluation import evaluate, resolve_data_dir, resolve_tasks, verify_data

    tasks = resolve_tasks(args.tasks)
    root = resolve_data_dir(args.data_dir)
    verify_data(root, tasks)  # a missing or changed file fails here, before any model is loaded
    # without --model, a run with --baseline evaluates only the baselines; otherwise the default model
    model = args.model or (None if args.baseline else EncoderConfig.model)
    jobs = ([("model", model)] if model else []) + [("baseline", b) for b in dict.fromkeys(args.baseline)]
    progress = progress_wanted(args.progress, logs=True)
    out = console(stderr=True)
    runs = []
    for kind, name in jobs:
        out.print(f"[bold]evaluating {name}[/bold] on {', '.join(t.name for t in tasks)} ({args.mode} mode)")
        encoder = _load(kind, name, args)
        try:
            options = encode_options_from_args(args, show_progress=progress)
            res = evaluate(encoder, tasks, data_dir=root, mode=args.mode, options=options,
                           classifier=args.classifier, seeds=args.seeds, max_iter=args.max_iter,
                           on_task=_task_line(out, name, len(tasks), getattr(args, "quiet", False)))  # fmt: skip
        except KeyboardInterrupt:
            print(_interrupted(encoder, kind, args), file=sys.stderr)
            raise
        res["label"] = name
        runs.append(res)
        enc_s = res.get("encode_s") or {}
        once = f", of which {enc_s['one_off']:.1f} s the backend's one-off export/compile" if enc_s.get("one_off") else ""
        took = f" (encoding {enc_s['total']:.1f} s{once})" if "total" in enc_s else ""
        out.print(f"{name}: done in {res['elapsed_s']:.1f} s{took}")
        del encoder  # free the weights before the next encoder
    payload = runs[0] if len(runs) == 1 else {"schema": "prompteol.eval-multi/1", "runs": runs}
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
        sys.stdout.flush()
    else:
        console().print(results_table(runs, verbose=getattr(args, "verbose", 0) > 0))
    if args.output:
        path = Path(args.output)
        write_text_atomic(path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {path}", file=sys.stderr)
    return 0


def run_plot(args: argparse.Namespace) -> int:
    from ..evaluation.plot import load_runs, plot_results

    out = Path(args.plot_output)
    if out.suffix.lower() not in (".png", ".svg", ".pdf"):
        from ..errors import InputError

        raise InputError(f"-o {args.plot_output!r} should end in .png, .svg or .pdf")
    runs = load_runs(args.results)  # a bad file fails before matplotlib is imported or anything written
    check_output(out)
    write_atomic(out, lambda tmp: plot_results(runs, tmp, title=args.title))  # tmp has out's suffix
    print(f"wrote {out} ({len(runs)} run{'s' if len(runs) != 1 else ''})", file=sys.stderr)
    return 0


def _task_line(out, name: str, total: int, quiet: bool):
    """``on_task``: one line per finished task (a log of a long run shows it moving)."""
    done: list[str] = []

    def line(task: str, res: dict) -> None:
        done.append(task)
        if not quiet:
            took = res.get("elapsed_s", {}).get("total", 0.0)
            out.print(f"{name}: {task} {res['main_score']} = {res['score']:.2f} ({took:.0f} s; {len(done)} of "
                      f"{total} tasks done)", highlight=False)  # fmt: skip

    return line


def _interrupted(encoder, kind: str, args: argparse.Namespace) -> str:
    """What an interrupted evaluation keeps, and how to continue."""
    cache = getattr(encoder, "embedding_cache", None)
    if not args.use_embedding_cache or cache is None:
        return "evaluation interrupted; nothing is kept (--no-cache): a rerun starts from the beginning"
    where = getattr(cache, "path", None)
    return (f"evaluation interrupted; every finished batch of vectors is kept in the embedding cache "
            f"({where or 'the cache folder'}): run the same command again to continue (cached sentences "
            "are not encoded again)")  # fmt: skip


def _load(kind: str, name: str, args: argparse.Namespace):
    if kind == "model":
        return build_encoder(args, use_embedding_cache=args.use_embedding_cache, **{**EVAL_ENCODER_DEFAULTS, "model": name})
    from ..evaluation.baselines import load_baseline

    device = args.device or "cpu"
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return load_baseline(name, device=device, cache=args.use_embedding_cache)


def results_table(runs: list[dict], verbose: bool = False):
    """A rich table: one row per task (STS subsets and SentEval's mean/wmean with ``verbose``), one column per run."""
    from rich.table import Table

    from ..evaluation import TASK_GROUPS

    table = Table(title="Spearman x100 (STS) / accuracy (transfer)", title_justify="left")
    table.add_column("task")
    for run in runs:
        table.add_column(str(run.get("label") or run["encoder"].get("model", "encoder")), justify="right")
    names = list(dict.fromkeys(n for run in runs for n in run["tasks"]))
    for name in names:
        table.add_row(name, *[_cell(run["tasks"].get(name)) for run in runs])
        first = next(run["tasks"][name] for run in runs if name in run["tasks"])
        if verbose and "subsets" in first:
            for sub in first["subsets"]:
                table.add_row(f"  {sub}", *[_sub_cell(run["tasks"].get(name), sub) for run in runs], style="dim")
            for agg in ("mean", "wmean"):
                cells = [f"{r['tasks'][name]['spearman'][agg]:.2f}" if name in r["tasks"] else "" for r in runs]
                table.add_row(f"  ({agg})", *cells, style="dim")
    for group in ("sts", "transfer"):
        if any(group in run["averages"] for run in runs):
            cells = [f"{run['averages'][group]:.2f}" if group in run["averages"] else "" for run in runs]
            table.add_row(f"Avg {group} ({len(TASK_GROUPS[group])})", *cells, style="bold")
    return table


def _cell(res: dict | None) -> str:
    if res is None:
        return ""
    text = f"{res['score']:.2f}"
    if "f1" in res:
        text += f" (F1 {res['f1']:.2f})"
    return text


def _sub_cell(res: dict | None, subset: str) -> str:
    if res is None or subset not in res.get("subsets", {}):
        return ""
    return f"{res['subsets'][subset]['spearman']:.2f}"

