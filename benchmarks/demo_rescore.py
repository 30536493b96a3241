"""Score given demonstrations (and none) on a whole selection split: the rescoring stage of a
demonstration search, alone, with a record.

    python benchmarks/demo_rescore.py --model smollm2-135m --threads 1 \
        --candidates src/prompteol/data/candidates/wordnet-200.jsonl src/prompteol/data/candidates/stsb-train-selflabel-smollm2-135m.jsonl \
        --demo "either of the two large fleshy masses of muscular tissue that form the human rump.|Buttock" ... \
        -o docs/results/demo_rescore_smollm2-135m.json

``--candidates`` are excluded from the split exactly as ``prompteol demos search`` excludes them (the split
is the one the search selected on). Every score is Spearman x100 of the cosines on the split's pairs,
through the same encoder path as the search (``Encoder.derive(demonstrations=...)``); the persistent
embedding cache is used when it holds the vectors.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", "-m", default="smollm2-135m")
    ap.add_argument("--split", default="stsb-train-heldout")
    ap.add_argument("--candidates", nargs="*", default=[], help="candidate files excluded from the split")
    ap.add_argument("--demo", action="append", default=[], help="'sentence|word' to score (repeatable)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from prompteol import Encoder
    from prompteol.demos.candidates import read_candidates
    from prompteol.demos.search import load_selection_split, score_split
    from prompteol.records import provenance

    candidates = [c for path in args.candidates for c in read_candidates(path)[0]]
    split = load_selection_split(args.split, candidates, args.data_dir)
    base = Encoder.from_pretrained(args.model, embedding_cache=True, progress=False)
    demos = [tuple(d.rsplit("|", 1)) for d in args.demo]
    rows = []
    for demo in [None, *demos]:
        enc = base.derive(demonstrations=[demo] if demo else [])
        t = time.perf_counter()
        score = score_split(enc, split, args.batch_size)
        rows.append({"demonstration": {"sentence": demo[0], "word": demo[1]} if demo else None, "score": score,
                     "seconds": round(time.perf_counter() - t, 1), "fingerprint": enc.fingerprint})  # fmt: skip
        print(f"{demo[1] if demo else '(none)':>14}: {score:.2f}", flush=True)
    record = {
        "schema": "prompteol.bench-demo-rescore/1", "model": args.model, "split": split.name,
        "split_description": split.description, "n_pairs": len(split), "excluded_candidates": len(candidates),
        "candidate_files": args.candidates, "rows": rows,
        "provenance": provenance(["python", "benchmarks/demo_rescore.py", *(sys.argv[1:] if argv is None else argv)],
                                 threads=args.threads),
    }  # fmt: skip
    Path(args.output).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
