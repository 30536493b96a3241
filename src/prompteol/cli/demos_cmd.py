"""``prompteol demos``: demonstration presets, candidate sets, and the leak-free search."""

from __future__ import annotations

import argparse
import json

from ..encoder.config import SPEED_ENCODER_DEFAULTS
from .common import add_encode_args, add_encoder_args, console, progress_wanted


def register(sub) -> None:
    p = sub.add_parser("demos", help="in-context demonstrations: presets, candidates, search")
    dsub = p.add_subparsers(dest="demos_command", metavar="ACTION", required=True)

    pr = dsub.add_parser("presets", help="list the named demonstration presets (for a model)")
    pr.add_argument("--model", "-m", default=None, help="also list the presets found for this model by search")
    pr.set_defaults(func=run_presets)

    b = dsub.add_parser("build", help="build a candidate set (self-labelled sentences or WordNet definitions)")
    b.add_argument("--source", choices=["selflabel", "wordnet"], required=True)
    b.add_argument("--model", "-m", default="smollm2-135m", help="labelling model for selflabel (default: %(default)s)")
    b.add_argument("--split", default="STSBenchmark-train",
                   help="training split to draw sentences from for selflabel (default: %(default)s)")  # fmt: skip
    b.add_argument("--n", type=int, default=200, help="number of candidates (default: %(default)s)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--wordnet-dir", default="/usr/share/wordnet")
    b.add_argument("--data-dir", default=None, help="SentEval data root (default: $PROMPTEOL_DATA)")
    b.add_argument("-o", "--output", required=True, help="candidates file (.jsonl)")
    b.set_defaults(func=run_build)

    s = dsub.add_parser(
        "search",
        help="score candidates on a selection split (resumable) and report the best",
        description="Scores every candidate demonstration (k=1) and greedy/beam combinations (k>1) on a "
        "selection split; results are appended to --results as they come, and a rerun resumes.",
    )
    s.add_argument("--candidates", nargs="+", required=True, help="candidate files (.jsonl or 'sentence|word' lines)")
    s.add_argument("--split", default="stsb-dev", help="stsb-dev (paper), stsb-train-heldout or sick-train (leak-free)")
    s.add_argument("--k", type=int, default=1, help="demonstrations per prompt (default: %(default)s)")
    s.add_argument("--beam", type=int, default=1, help="sequences kept per round for k>1 (1 = greedy)")
    s.add_argument("--pool", type=int, default=20, help="best single candidates tried in rounds k>1")
    s.add_argument("--top", type=int, default=10, help="rows to print (default: %(default)s)")
    s.add_argument("--max-pairs", type=int, default=None, help="score on a seeded sample of this many pairs")
    s.add_argument("--max-candidates", type=int, default=None, metavar="N",
                   help="score a seeded sample of N candidates (the split still excludes every candidate given)")
    s.add_argument("--rescore", type=int, default=0, metavar="N",
                   help="with --max-pairs: rescore the N best on the whole split and select among them")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--results", default=None, help="results JSONL (default: outputs/demos/<model>_<split>.jsonl)")
    s.add_argument("--report", default=None, help="evaluate the best demonstration on these tasks afterwards (e.g. sts)")
    s.add_argument("--save-preset", default=None, metavar="NAME", help="store the best as a named preset for the model")
    s.add_argument("--preset-file", default=None, help="presets JSON to write (default: the user's, in the cache root)")
    add_encode_args(s, ("batch_size",), defaults={"batch_size": 64})
    s.add_argument("--data-dir", default=None)
    prog = s.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=None)
    prog.add_argument("--no-progress", dest="progress", action="store_false")
    add_encoder_args(s, defaults=SPEED_ENCODER_DEFAULTS)
    s.set_defaults(func=run_search)


def run_presets(args: argparse.Namespace) -> int:
    from rich.table import Table

    from ..encoder.prompts.presets import DEFAULT_ORDER, PAPER_DEMOS, list_presets, searched_presets

    table = Table(title="Demonstration presets" + (f" for {args.model}" if args.model else ""))
    for col in ("name", "demonstrations", "chosen on", "score"):
        table.add_column(col)
    searched = searched_presets().get(args.model or "", {})
    for name, demos in list_presets(args.model).items():
        text = " + ".join(f"{d.sentence!r} -> {d.word}" for d in demos)
        if name in PAPER_DEMOS:
            info, score = "paper (OPT, STS-B dev)", f"+{PAPER_DEMOS[name][2]:.2f} avg STS"
        elif name in searched:
            rec = searched[name]
            info, score = f"{rec.get('split')} ({rec.get('n_pairs')} pairs)", f"{rec.get('score', float('nan')):.2f}"
        elif name == "default":
            src = next(n for n in DEFAULT_ORDER if n in searched)
            info, score = f"= {src}", ""
        else:
            info, score = "paper, closest OPT size", ""
        table.add_row(name, text, info, score)
    console().print(table)
    return 0


def run_build(args: argparse.Namespace) -> int:
    from ..demos import candidates as C

    exclude = C.test_sentences(args.data_dir)  # never a sentence of a reported test set
    if args.source == "wordnet":
        cands = C.wordnet_candidates(args.n, args.seed, args.wordnet_dir, exclude=exclude)
        prov = C.provenance(source="WordNet 3.0 (Debian wordnet-base)", wordnet_dir=args.wordnet_dir, n=args.n,
                            seed=args.seed, command=" ".join(["prompteol", *args.argv]))  # fmt: skip
    else:
        # oversample: not every continuation is a one-word answer
        sentences = C.sample_training_sentences(args.split, 5 * args.n, args.seed, args.data_dir, exclude=exclude)
        cands = C.self_labelled_candidates(args.model, sentences, progress=progress_wanted(None), limit=args.n)
        prov = C.provenance(source=f"{args.split} sentences labelled by {args.model} (greedy one-word continuation "
                            f"of the PromptEOL template)", model=args.model, split=args.split, n_requested=args.n,
                            seed=args.seed, command=" ".join(["prompteol", *args.argv]))  # fmt: skip
    path = C.write_candidates(args.output, cands, prov)
    print(f"wrote {len(cands)} candidates to {path}")
    return 0


def run_search(args: argparse.Namespace) -> int:
    from rich.table import Table

    from ..demos.select import DemoSearch, run_demo_search
    from ..evaluation.tasks import resolve_tasks
    from .common import build_encoder

    search = DemoSearch(
        tuple(args.candidates), split=args.split, results=args.results, k=args.k, beam=args.beam, pool=args.pool,
        max_pairs=args.max_pairs, max_candidates=args.max_candidates, rescore=args.rescore, seed=args.seed,
        batch_size=args.batch_size, data_dir=args.data_dir,
        report=tuple(t.name for t in resolve_tasks(args.report)) if args.report else (),
        save_preset=args.save_preset, preset_file=args.preset_file, command=" ".join(["prompteol", *args.argv]),
    )  # fmt: skip
    search.check()  # before any model is loaded
    con = console()
    base = build_encoder(args, **SPEED_ENCODER_DEFAULTS)
    outcome = run_demo_search(base, search, progress=progress_wanted(args.progress), say=con.print)
    sel = outcome.selection
    rows, none_score = sel.rows, sel.no_demo_score
    table = Table(title=f"best demonstrations on {sel.split.name} (no demonstration: {none_score:.2f})")
    for col in ("rank", "score", "gain", "demonstrations"):
        table.add_column(col)
    for i, r in enumerate(rows[: args.top], start=1):
        demos = " + ".join(f"{d['sentence']!r} -> {d['word']}" for d in r["demonstrations"]) or "(none)"
        table.add_row(str(i), f"{r['score']:.2f}", f"{r['score'] - none_score:+.2f}", demos)
    con.print(table)
    if not sel.best["demonstrations"]:
        con.print("no candidate beat the score without a demonstration: the best choice is none")
    if outcome.preset_path is not None:
        con.print(f"saved preset {args.save_preset!r} for {base.config.model} in {outcome.preset_path}")
    if outcome.report is not None:
        res = outcome.report
        con.print(json.dumps({"tasks": {t: round(r["score"], 2) for t, r in res["tasks"].items()}, "averages": res["averages"]}, indent=1))
    return 0
