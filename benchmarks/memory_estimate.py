"""The activation-memory estimate of :mod:`prompteol.encoder.limits` against the measured peak of a forward.

    python benchmarks/memory_estimate.py --model smollm2-135m --threads 1 -o docs/results/memory_estimate_smollm2-135m.json

For each attention implementation (SDPA, the default, and eager), without and with a demonstration
(the shared-prefix path), and each batch of B sentences padded to T tokens: the peak RSS of one
``Encoder.encode`` call over the RSS before it (Linux: ``VmHWM`` reset through
``/proc/self/clear_refs`` before each call, freed memory returned with ``malloc_trim``), and the
estimate ``ActivationShape.batch_bytes(B, T)`` the encoder plans its batches with. The estimate
should be at or above the measured peak (the batch planner keeps a batch within 80% of the
memory available, so an estimate somewhat above the peak is the safe side). Memory, not time:
other jobs on the machine do not change it. Writes a JSON record with its provenance.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import re
import sys
from pathlib import Path

#: (sentences, approximate tokens per sentence): from one short sentence to a few thousand tokens
GRID = [(1, 128), (8, 128), (32, 128), (1, 1024), (8, 512), (32, 512), (4, 1024)]


def _kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))  # type: ignore[union-attr]


def measure(encoder, texts: list[str], batch: int) -> int:
    """Peak RSS of one encode call above the RSS before it, in bytes."""
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _kib("VmRSS")
    encoder.encode(texts, batch_size=batch, use_embedding_cache=False, show_progress=False)
    return (_kib("VmHWM") - before) * 1024


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("-o", "--output", type=Path, default=None)
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from prompteol import Encoder
    from prompteol.encoder.limits import activation_shape
    from prompteol.records import provenance

    rows = []
    for attention in ("sdpa", "eager"):
        base = Encoder.from_pretrained(args.model, embedding_cache=False, progress=False)
        base.model.set_attn_implementation(attention)
        for demo in (False, True):
            enc = base.derive(demonstrations=[("A man is smoking.", "Smoking")]) if demo else base
            shape = activation_shape(enc.model, enc.layer_index)
            assert shape is not None and shape.attention == attention, shape
            measure(enc, ["warm up"], 1)
            for batch, tokens in GRID:
                texts = [f"{i} " + "a " * (tokens - 16) for i in range(batch)]  # one token per "a " (BPE)
                length = max(enc.prompts.build(texts).lengths)
                peak = measure(enc, texts, batch)
                estimate = shape.batch_bytes(batch, length)
                rows.append({"attention": attention, "demonstration": demo, "batch": batch, "tokens": length,
                             "measured_mib": round(peak / 2**20, 1), "estimate_mib": round(estimate / 2**20, 1),
                             "estimate_over_measured": round(estimate / max(peak, 1), 3)})  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
        del base
    ratios = [r["estimate_over_measured"] for r in rows if r["measured_mib"] >= 16]  # tiny peaks are noise
    record = {
        "schema": "prompteol.memory-estimate/1",
        "provenance": provenance(["python", "benchmarks/memory_estimate.py", *(sys.argv[1:] if argv is None else argv)],
                                 threads=args.threads),
        "model": args.model, "rows": rows,
        "summary": {"min_ratio": min(ratios), "max_ratio": max(ratios), "of_rows_with_peak_mib_>=_16": len(ratios)},
    }  # fmt: skip
    print(f"estimate / measured peak: {min(ratios):.2f} .. {max(ratios):.2f} ({len(ratios)} rows with peaks >= 16 MiB)")
    if args.output:
        args.output.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
