"""Paraphrase vs unrelated cosines, dimension and load time for every pulled packaged model.

Usage: python benchmarks/sanity.py [--threads 2] [--models smollm2-135m ...]
"""

from __future__ import annotations

import argparse
import time

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

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", nargs="*", default=list(PACKAGED_MODELS))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch threads: {args.threads}")
    print(f"{'model':22} {'dim':>5} {'load s':>7} {'paraphrase cos':>24} {'unrelated cos':>24}  ok")
    for alias in args.models:
        if not is_pulled(alias):
            print(f"{alias:22} not pulled (prompteol models pull {alias})")
            continue
        t = time.perf_counter()
        enc = Encoder.from_pretrained(alias)
        load = time.perf_counter() - t

        def cos(pairs, enc=enc):
            v = enc.encode([s for p in pairs for s in p], normalize=True, use_embedding_cache=False)
            return np.array([v[2 * i] @ v[2 * i + 1] for i in range(len(pairs))])

        para, unrel = cos(PARAPHRASES), cos(UNRELATED)
        fmt = lambda a: " ".join(f"{x:.3f}" for x in a)  # noqa: E731
        print(f"{alias:22} {enc.dim:>5} {load:>7.1f} {fmt(para):>24} {fmt(unrel):>24}  {para.min() > unrel.max()}")


if __name__ == "__main__":
    main()
