"""``prompteol scale``: the scaling study's sweep, report, import and queue commands.

``prompteol scale``: the paper's scaling study (models x demonstration settings x layers) as one
resumable sweep, one results file per cell; ``scale report`` and ``scale import`` (docs/scaling.md).

Nothing here imports torch or matplotlib at the top.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys

from ..encoder.config import SPEED_ENCODER_DEFAULTS
from .common import (
    add_encode_args,
    add_encoder_args,
    console,
    encode_options_from_args,
    encoder_values,
    progress_wanted,
)

#: options the sweep sets per cell (and dtype, which scale takes as auto | float32 | bfloat16 | float16)
EXCLUDED = ("model", "demonstrations", "demo_preset", "layer", "dtype")
_DTYPES = ("auto", "float32", "bfloat16", "float16")


def register(sub) -> None:
    p = sub.add_parser(
        "scale",
        help="scaling study: a resumable sweep of models x demonstration settings (x layers), then a report",
        description="Evaluate every cell of --models x --demos (x --layers) on --tasks, one results JSON per cell "
        "in --output. A cell whose file says status ok is skipped, so a killed sweep resumes (also on another "
        "machine, from the cell files alone); failed cells are recorded and run again next time. Before it starts, "
        "it prints the cells, the dtype of each (the memory rule) and an estimated time from a short throughput "
        "probe. `prompteol scale report DIR` builds tables and plots; `prompteol scale import` turns an eval "
        "results file into a cell. Details: docs/scaling.md.",
    )
    ssub = p.add_subparsers(dest="scale_command", metavar="[report | import | queue]")
    r = ssub.add_parser("report", help="results.csv, results.md and plots from the cell files of DIR (no model)",
                        description="Build results.csv, results.md and three PNG plots (STS avg, transfer avg, each "
                        "STS task vs parameters, with the paper's OPT curves) from the cell files of DIR alone.")  # fmt: skip
    r.add_argument("dir", help="the --output folder of a sweep")
    r.add_argument("--output", "-o", default=None, help="where to write the report (default: DIR)")
    r.add_argument("--precision", default=None, metavar="PDIR",
                   help="also a table of STS-B dev in float32 vs bfloat16 from the precision cells of PDIR")  # fmt: skip
    r.add_argument("--doc", default=None, metavar="FILE.md",
                   help="also put the tables into FILE.md between '<!-- scale-report:start/end -->' (and "
                   "'<!-- scale-precision:start/end -->') comments")  # fmt: skip
    r.set_defaults(func=run_report)
    i = ssub.add_parser("import", help="turn a `prompteol eval` results JSON into a cell file",
                        description="Write the cell file of an existing `prompteol eval` results file (it must hold "
                        "the scores, the mode, the encoder config with model/dtype/demonstrations, and the versions); "
                        "the cell is marked as imported, with the source file's name.")  # fmt: skip
    i.add_argument("results", help="a results JSON written by `prompteol eval -o`")
    i.add_argument("--demo", required=True, metavar="SETTING",
                   help="the demonstration setting it was run with: none, paper, default, stsb-dev, a preset name "
                   "or 'sentence|word' (checked against the recorded demonstrations)")  # fmt: skip
    i.add_argument("--output", "-o", required=True, help="the sweep folder to write the cell file into")
    i.add_argument("--force", action="store_true", help="replace a finished cell file")
    i.set_defaults(func=run_import)
    q = ssub.add_parser(
        "queue", help="the study of the packaged models as one resumable queue (status, estimate, run)",
        description="Work through the study's plan in priority order (precision checks and `none` cells, leak-free "
        "demonstrations, `paper`/`default` cells, the settings search and best training-free cells, then the "
        "stsb-dev and transfer cells), writing every record under --root as soon as it is done. Prints what is "
        "done, what remains and the time it should take at the measured rates; run it again at any time to "
        "continue. Details: docs/scaling.md, 'The study queue'.",
    )  # fmt: skip
    q.add_argument("--root", default=".", help="the checkout the records go to (docs/, the presets file; default: .)")
    q.add_argument("--models", default=None, metavar="A,B", help="only these packaged models (default: all four)")
    q.add_argument("--stages", default="abcdf", help="stages to run, in order (default: %(default)s)")
    q.add_argument("--max-steps", type=int, default=None, metavar="N", help="stop after N steps")
    add_encode_args(q, ("batch_size",))
    q.add_argument("--data-dir", default=None, help="SentEval data root (default: $PROMPTEOL_DATA)")
    q.add_argument("--dry-run", "--status", dest="dry_run", action="store_true",
                   help="print the state and the estimate only")  # fmt: skip
    q.set_defaults(func=run_queue)

    g = p.add_argument_group("sweep")
    g.add_argument("--models", "-m", action="append", metavar="A,B,...",
                   help="comma-separated models: packaged aliases, folders, .gguf files, hub ids, adapter folders "
                   "(repeatable)")  # fmt: skip
    g.add_argument("--demos", action="append", metavar="S,T,...",
                   help="comma-separated demonstration settings: none, paper (the paper's demonstration for the "
                   "closest OPT size), default (the model's leak-free searched preset), stsb-dev (the preset "
                   "searched-stsb-dev), a preset name, or 'sentence|word' (repeatable; default: none)")  # fmt: skip
    g.add_argument("--layers", action="extend", nargs="+", metavar="L,M",
                   help="hidden layers, comma- or space-separated: --layers -1,12,6 (-1 = last, the default)")  # fmt: skip
    # let "-1,12" be a value, as "-1" already is (argparse only knows single negative numbers)
    p._negative_number_matcher = re.compile(r"^-\d+(,-?\d+)*$|^-\d*\.\d+$")
    g.add_argument("--tasks", default="sts", help="sts (default), transfer, all, or a comma-separated list of tasks")
    g.add_argument("--mode", choices=["test", "fast"], default="test",
                   help="transfer protocol: test = 10-fold, fast = 5-fold; STS is the same (default: %(default)s)")  # fmt: skip
    g.add_argument("--output", "-o", default=None, help="folder of the cell files (required)")
    g.add_argument("--data-dir", default=None, help="SentEval data root (default: $PROMPTEOL_DATA)")
    add_encode_args(g, ("batch_size", "max_batch_tokens"))
    g.add_argument("--classifier", choices=["lbfgs", "newton", "senteval"], default="lbfgs",
                   help="transfer classifier (see `prompteol eval --help`; default: %(default)s)")  # fmt: skip
    g.add_argument("--seeds", type=int, default=1, metavar="N", help="transfer classifier seeds (default: 1)")
    g.add_argument("--dtype", choices=_DTYPES, default="auto",
                   help="auto (default): the device's fastest accurate precision (bfloat16 on CUDA and on CPUs with "
                   "native bfloat16, else float32) if it fits in memory, else bfloat16, else the cell is refused; an "
                   "explicit dtype is used as given (and refused if it cannot fit)")  # fmt: skip
    g.add_argument("--dry-run", action="store_true", help="print the cells, dtypes and estimates, then stop")
    g.add_argument("--no-probe", dest="probe", action="store_false",
                   help="skip the throughput probe (no time estimates; each model is loaded only by the sweep)")  # fmt: skip
    add_encode_args(g, ("use_embedding_cache",))
    prog = g.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=None)
    prog.add_argument("--no-progress", dest="progress", action="store_false")
    add_encoder_args(p, exclude=EXCLUDED, defaults=SPEED_ENCODER_DEFAULTS, title="encoder options (for every cell)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import ConfigError
    from ..scale.grid import parse_demo_settings, parse_layers, split_list
    from ..scale.run import SweepOptions, run_sweep

    models = split_list(args.models)
    if not models:
        raise ConfigError("give the models of the sweep: --models ALIAS,FOLDER,FILE.gguf,HUB/ID "
                          "(or `prompteol scale report DIR` / `prompteol scale import FILE`)")  # fmt: skip
    if not args.output:
        raise ConfigError("give the folder of the cell files: --output DIR")
    if args.seeds < 1 or args.batch_size < 1:
        raise ConfigError("--seeds and --batch-size should be >= 1")
    opts = SweepOptions(
        models=models, demos=parse_demo_settings(args.demos or ["none"]), layers=parse_layers(args.layers),
        output=Path(args.output), tasks=args.tasks, mode=args.mode, data_dir=args.data_dir,
        encode=encode_options_from_args(args),
        classifier=args.classifier,
        seeds=args.seeds, dtype=args.dtype,
        encoder_options={"fused": SPEED_ENCODER_DEFAULTS["fused"], **encoder_values(args, exclude=EXCLUDED)},
        dry_run=args.dry_run, probe=args.probe,
        progress=progress_wanted(args.progress),
        command="prompteol " + shlex.join(getattr(args, "argv", None) or sys.argv[1:]),
    )  # fmt: skip
    result = run_sweep(opts, console=console())
    print(result.summary(opts.output))
    return result.exit_code


def run_report(args: argparse.Namespace) -> int:
    from ..scale.report import build_report

    report = build_report(args.dir, args.output)
    failed = sum(1 for r in report["rows"] if r["status"] != "ok")
    for path in report["files"]:
        print(f"wrote {path}")
    if args.doc:
        from ..scale.report import precision_markdown, to_markdown, update_doc_block

        table = to_markdown(report["rows"], args.dir).split("\n\nPublished for reference")[0]
        table = table.removeprefix("# prompteol scale: results\n\n")
        print(f"wrote {update_doc_block(args.doc, 'scale-report', table)}")
        if args.precision:
            print(f"wrote {update_doc_block(args.doc, 'scale-precision', precision_markdown(args.precision))}")
    print(f"report: {report['cells']} cells ({failed} failed) from {args.dir}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    from ..scale.importer import import_results

    path = import_results(args.results, args.demo, args.output, force=args.force)
    print(f"wrote {path} (imported from {args.results})")
    return 0


def run_queue(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import ConfigError
    from ..scale.grid import split_list
    from ..scale.study import STUDY_MODELS, StudyOptions, run_queue

    models = tuple(split_list(args.models)) if args.models else STUDY_MODELS
    unknown = [m for m in models if m not in STUDY_MODELS]
    if unknown:
        raise ConfigError(f"the study queue covers the packaged models {list(STUDY_MODELS)}; got {unknown}")
    if set(args.stages) - set("abcdf") or not args.stages:
        raise ConfigError(f"--stages takes letters of 'abcdf', got {args.stages!r}")
    if args.batch_size < 1 or (args.max_steps is not None and args.max_steps < 1):
        raise ConfigError("--batch-size and --max-steps should be >= 1")
    root = Path(args.root).resolve()
    if not (root / "src" / "prompteol" / "data").is_dir():
        raise ConfigError(f"--root {root} is not a prompteol checkout (no src/prompteol/data); the records and the "
                          "shipped presets are written there")  # fmt: skip
    from ..evaluation import resolve_data_dir

    opts = StudyOptions(root=root, models=models, data_dir=str(resolve_data_dir(args.data_dir)), stages=args.stages,
                        batch_size=args.batch_size, dry_run=args.dry_run, max_steps=args.max_steps,
                        command="prompteol " + shlex.join(getattr(args, "argv", None) or sys.argv[1:]))  # fmt: skip
    return run_queue(opts)
