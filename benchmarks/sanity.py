"""Paraphrase vs unrelated cosines, dimension and load time for every pulled packaged model.

Usage: python benchmarks/sanity.py [--threads 2] [--models smollm2-135m ...] [--loads 2] [-o record.json]

Each model is loaded ``--loads`` times in a row (the first load of a process also imports the model's
code; later ones show what reloading a pulled, converted model costs) and encodes 3 paraphrase pairs and
3 unrelated pairs; ``-o`` writes every number with the run's provenance.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

PARAPHRASES = [
    ("A man is playing a guitar.", "A man plays the guitar."),
    ("A woman is slicing an onion.", "Someone is cutting an onion."),
    ("The cat sleeps on the sofa.", "A cat is napping on the couch."),
]
UNRELATED = [
    ("A man is playing a guitar.", "The stock market fell sharply today."),
    ("A woman is slicing an onion.", "The train leaves at noon."),
    ("The cat sleeps on the sofa.", "Parliament passed a new tax law."),
]


def main() -> None:
    import torch

    from prompteol import PACKAGED_MODELS, Encoder
    from prompteol.models.pull import is_pulled
    from prompteol.records import provenance

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", nargs="*", default=list(PACKAGED_MODELS))
    ap.add_argument("--loads", type=int, default=1, help="loads of each model in a row (default: %(default)s)")
    ap.add_argument("-o", "--output", default=None, help="write the JSON record here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch threads: {args.threads}")
    print(f"{'model':22} {'dim':>5} {'load s':>12} {'paraphrase cos':>24} {'unrelated cos':>24}  ok")
    models = {}
    for alias in args.models:
        if not is_pulled(alias):
            print(f"{alias:22} not pulled (prompteol models pull {alias})")
            continue
        loads = []
        for _ in range(max(1, args.loads)):
            t = time.perf_counter()
            enc = Encoder.from_pretrained(alias)
            loads.append(round(time.perf_counter() - t, 2))

        def cos(pairs, enc=enc):
            v = enc.encode([s for p in pairs for s in p], normalize=True, use_embedding_cache=False)
            return np.array([v[2 * i] @ v[2 * i + 1] for i in range(len(pairs))])

        para, unrel = cos(PARAPHRASES), cos(UNRELATED)
        fmt = lambda a: " ".join(f"{x:.3f}" for x in a)  # noqa: E731
        shown = " / ".join(f"{x:.1f}" for x in loads)
        print(f"{alias:22} {enc.dim:>5} {shown:>12} {fmt(para):>24} {fmt(unrel):>24}  {para.min() > unrel.max()}")
        models[alias] = {"dim": enc.dim, "load_s": loads, "paraphrase_cos": para.round(4).tolist(),
                         "unrelated_cos": unrel.round(4).tolist(), "ranks_paraphrases_first": bool(para.min() > unrel.max())}  # fmt: skip
        del enc
    if args.output:
        record = {"schema": "prompteol.bench-sanity/1", "models": models, "paraphrases": PARAPHRASES,
                  "unrelated": UNRELATED, "provenance": provenance(threads=args.threads)}  # fmt: skip
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
