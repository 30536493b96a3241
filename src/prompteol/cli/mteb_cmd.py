"""``prompteol mteb``: run MTEB tasks with mteb's own runner on an encoder (the ``[mteb]`` extra)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import ConfigError
from .common import add_encode_args, add_encoder_args, build_encoder, console, progress_wanted


def register(sub) -> None:
    p = sub.add_parser(
        "mteb",
        help="evaluate an encoder on MTEB tasks (mteb's own runner and data)",
        description="Run MTEB tasks with mteb.evaluate on the encoder (prompteol.evaluation.PromptEOLMTEB) and save "
        "mteb's results under --output. The tasks' datasets come from the Hugging Face hub or its local cache: "
        "offline, a task whose data is not cached fails at once, before any model is loaded. Queries and documents "
        "get the encoder's template unless --prompt-query / --prompt-document name others. See docs/ecosystem.md.",
    )
    p.add_argument("--tasks", required=True, help="comma-separated MTEB task names, e.g. STSBenchmark,SciFact")
    p.add_argument("--output", "-o", required=True, metavar="DIR",
                   help="folder of mteb's results (mteb.ResultCache: DIR/results/<model>/<revision>/<task>.json)")  # fmt: skip
    p.add_argument("--prompt-query", default=None, metavar="TEMPLATE",
                   help="template of MTEB's queries (retrieval, reranking, ...): a preset or a text with {sentence} "
                   "(default: the encoder's template)")  # fmt: skip
    p.add_argument("--prompt-document", default=None, metavar="TEMPLATE",
                   help="template of MTEB's documents (default: the encoder's template)")
    add_encode_args(p, ("batch_size", "use_embedding_cache"))
    p.add_argument("--overwrite", action="store_true",
                   help="run every task again (default: only the splits missing from --output)")
    prog = p.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=None)
    prog.add_argument("--no-progress", dest="progress", action="store_false")
    add_encoder_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..encoder.prompts.templates import get_template
    from ..errors import require

    names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not names:
        raise ConfigError("--tasks is empty; give MTEB task names, e.g. --tasks STSBenchmark,SciFact")
    prompts = {k: v for k, v in (("query", args.prompt_query), ("document", args.prompt_document)) if v}
    for value in prompts.values():
        get_template(value)  # an unknown preset fails now
    out_dir = Path(args.output).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--output {str(out_dir)!r} is a file; give a folder")
    mteb = require("mteb", "mteb", "`prompteol mteb`")
    from ..evaluation.mteb_adapter import PromptEOLMTEB, check_datasets

    try:
        tasks = list(mteb.get_tasks(tasks=names))
    except KeyError as exc:
        raise ConfigError(f"unknown MTEB task in --tasks {args.tasks!r}: {exc.args[0] if exc.args else exc}") from None
    check_datasets(tasks)  # offline with data not cached: a DataError now, before the model is loaded
    out_dir.mkdir(parents=True, exist_ok=True)
    encoder = build_encoder(args, use_embedding_cache=args.use_embedding_cache)
    model = PromptEOLMTEB(encoder, batch_size=args.batch_size, prompts=prompts or None)
    progress = progress_wanted(args.progress)
    results = mteb.evaluate(
        model, tasks, cache=mteb.ResultCache(out_dir), encode_kwargs={"batch_size": args.batch_size},
        overwrite_strategy="always" if args.overwrite else "only-missing", show_progress_bar=progress,
    )  # fmt: skip
    console().print(results_table(results.task_results))
    meta = model.mteb_model_meta
    name, revision = (meta.name, meta.revision) if meta is not None else ("?", "?")
    print(f"mteb results under {out_dir} (model {name}, revision {revision})", file=sys.stderr)
    return 0


def results_table(task_results):
    from rich.table import Table

    table = Table(title="MTEB main scores (x100)", title_justify="left")
    for col in ("task", "type", "main score", "score"):
        table.add_column(col, justify="right" if col == "score" else "left")
    for r in task_results:
        try:
            meta = r.task.metadata  # looked up in mteb's registry by name
            kind, main = str(meta.type), str(meta.main_score)
        except Exception:  # noqa: BLE001 - a task mteb does not know: the score alone
            kind = main = ""
        table.add_row(r.task_name, kind, main, f"{100 * float(r.get_score()):.2f}")
    return table
