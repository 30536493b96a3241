"""``prompteol methods``: the training-free methods after PromptEOL: presets, and a leak-free settings search."""

from __future__ import annotations

import argparse
import json

from ..encoder.config import SPEED_ENCODER_DEFAULTS
from .common import add_encode_args, add_encoder_args, build_encoder, console, progress_wanted


def register(sub) -> None:
    p = sub.add_parser(
        "methods",
        help="training-free methods (Token Prepending, Contrastive Prompting, MetaEOL, CoT/KE, echo): presets, search",
        description="The methods are encoder options of every command (--token-prepending, --contrastive-layer, "
        "--prompt/--combine, --template cot|ke|echo, --pooling echo, --layer) and method presets (--preset). "
        "`methods search` scores a grid of settings on a selection split (leak-free by default), resumably, and "
        "can store the best as a preset for the model. Details: docs/methods.md.",
    )
    msub = p.add_subparsers(dest="methods_command", metavar="ACTION", required=True)

    pr = msub.add_parser("presets", help="list the method presets (with a model: its searched ones too)")
    pr.add_argument("--model", "-m", default=None)
    pr.set_defaults(func=run_presets)

    rp = msub.add_parser("report", help="the methods study's tables from the committed records (no model)",
                         description="Per model with a selection record (docs/methods/<model>/selection): the "
                         "families' best settings with the gain at equal read-out layer, the chosen setting and "
                         "its 7-task STS score against plain PromptEOL at the same layer and at its own best layer.")  # fmt: skip
    rp.add_argument("--root", default=".", help="the checkout holding docs/ (default: .)")
    rp.add_argument("--output", "-o", default=None, help="default: <root>/docs/methods/results.md")
    rp.add_argument("--doc", default=None, metavar="FILE.md",
                    help="also put the tables into FILE.md between '<!-- methods-report:start/end -->' comments")
    rp.set_defaults(func=run_report)

    s = msub.add_parser(
        "search",
        help="score a grid of settings on a selection split and keep the best",
        description="Every combination of the --grid axes is scored (Spearman x100 of cosine similarities) on the "
        "selection split with Encoder.derive(**setting) on one loaded model; results are appended to --results as "
        "they come and a rerun resumes. Searchable: options that need no other model load (layer, pooling, "
        "template, token_prepending, contrastive_layer, contrastive_alpha, contrastive_mode, prompts, embed_filter, "
        "embed_filter_band, ...).",
    )
    s.add_argument("--grid", action="append", required=True, metavar="NAME=V1,V2,...",
                   help="one axis of the grid, e.g. layer=-1,-2,-3 or token_prepending=none,1:4 (repeat for more axes)")  # fmt: skip
    s.add_argument("--split", default="stsb-train-heldout",
                   help="selection split: stsb-train-heldout or sick-train (leak-free), stsb-dev (default: %(default)s)")  # fmt: skip
    s.add_argument("--max-pairs", type=int, default=None, help="score on a seeded sample of this many pairs")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--results", default=None, help="results JSONL (default: outputs/methods/<model>_<split>.jsonl)")
    s.add_argument("--save-preset", default=None, metavar="NAME",
                   help="store the best setting (with the base options) as a method preset for the model")  # fmt: skip
    s.add_argument("--preset-file", default=None, help="presets JSON to write (default: the user's, in the cache root)")
    s.add_argument("--top", type=int, default=10)
    add_encode_args(s, ("batch_size",), defaults={"batch_size": 64})
    s.add_argument("--data-dir", default=None)
    prog = s.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=None)
    prog.add_argument("--no-progress", dest="progress", action="store_false")
    add_encoder_args(s, defaults=SPEED_ENCODER_DEFAULTS, title="base encoder (the grid's settings apply on top)")
    s.set_defaults(func=run_search)


def run_presets(args: argparse.Namespace) -> int:
    from rich.table import Table

    from ..encoder.prompts.presets import list_method_presets

    table = Table(title="Method presets" + (f" for {args.model}" if args.model else ""))
    for col in ("name", "options", "source / chosen on"):
        table.add_column(col)
    for name, rec in list_method_presets(args.model).items():
        src = rec.get("source") or f"{rec.get('split')} ({rec.get('n_pairs')} pairs), score {rec.get('score', float('nan')):.2f}"
        table.add_row(name, json.dumps(rec["options"], ensure_ascii=False), src)
    console().print(table)
    return 0


def run_search(args: argparse.Namespace) -> int:
    from rich.table import Table

    from ..demos.settings import SettingsSearch, run_settings_search

    search = SettingsSearch(
        tuple(args.grid), split=args.split, results=args.results, max_pairs=args.max_pairs, seed=args.seed,
        batch_size=args.batch_size, data_dir=args.data_dir, save_preset=args.save_preset,
        preset_file=args.preset_file, command=" ".join(["prompteol", *args.argv]),
    )  # fmt: skip
    search.check()  # bad axes, a refused split, missing data: before any model is loaded
    con = console()
    base = build_encoder(args, **SPEED_ENCODER_DEFAULTS)
    outcome = run_settings_search(base, search, progress=progress_wanted(args.progress), say=con.print)
    rows, split = outcome.rows, outcome.split
    plain = next((r["score"] for r in rows if not r["options"]), None)
    table = Table(title=f"best settings on {split.name}" + (f" (base: {plain:.2f})" if plain is not None else ""))
    for col in ("rank", "score", "setting"):
        table.add_column(col)
    for i, r in enumerate(rows[: args.top], start=1):
        table.add_row(str(i), f"{r['score']:.2f}", json.dumps(r["options"], ensure_ascii=False) or "(base)")
    con.print(table)
    if outcome.preset_path is not None:
        con.print(f"saved method preset {args.save_preset!r} for {base.config.model} in {outcome.preset_path}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from ..scale.methods_report import write_methods_report

    print(f"wrote {write_methods_report(args.root, args.output)}")
    if args.doc:
        from ..scale.methods_report import methods_markdown, methods_rows
        from ..scale.report import update_doc_block

        rows = methods_rows(args.root)
        text = methods_markdown(rows) if rows else "No selection record yet (the study queue's stage d).\n"
        print(f"wrote {update_doc_block(args.doc, 'methods-report', text)}")
    return 0
