"""The paper's 4-bit recipe (method.md section 4) for a short run on one CUDA GPU, offline.

QLoRA: the base model in bitsandbytes NF4 with double quantisation, LoRA r=64 alpha=16
dropout 0.05 on every linear layer, global batch 256, AdamW lr 5e-4 with linear decay,
temperature 0.05, sentences cut to 32 tokens, bf16 compute (fp16 with --dtype float16),
gradient checkpointing; STS-B dev scored before training, every --eval-every steps and at
the end, with the best adapter kept. Then the best adapter is loaded the way users load it
(``Encoder.from_pretrained(best_dir)``: merged into the full-precision base) and scored again.

Usage (from the repository root; prompteol need not be installed, ``src/`` is put on the path)::

    python benchmarks/gpu_qlora.py --model /path/to/smollm2-135m \\
        --data /path/to/snli-devtest --senteval /path/to/senteval [--steps 150] [--out runs/gpu-qlora]

``--model``: a transformers folder (e.g. the converted smollm2-135m from
``~/.cache/prompteol/models/smollm2-135m``) or a ``.gguf`` file. ``--data``: a triplet CSV/JSONL, or
SentEval's SNLI folder (converted to triplets first). Needs torch with CUDA, transformers,
peft, bitsandbytes, scipy (and gguf for a .gguf model); nothing is downloaded. Prints a
JSON summary on the last line and writes it to ``<out>/gpu_qlora.json``. The run stops
itself (with a checkpoint) after --time-limit minutes of training.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="transformers folder or .gguf file of the base model")
    p.add_argument("--data", required=True, help="triplets (.csv/.jsonl) or SentEval's SNLI folder (s1/s2/labels)")
    p.add_argument("--senteval", required=True, help="SentEval data root (downstream/STS/STSBenchmark/sts-dev.csv)")
    p.add_argument("--out", default="runs/gpu-qlora", help="output folder (must not hold a run)")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--micro-batch-size", type=int, default=None, help="GradCache micro-batch (default: none)")
    p.add_argument("--warmup-steps", type=int, default=20, help="the paper uses 100 over ~1000 steps")
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument(
        "--eval-dtype",
        default="float32",
        choices=["float32", "bfloat16", "float16"],
        help="weights of the full-precision base and of the merged best adapter when scoring them",
    )
    p.add_argument("--no-4bit", dest="four_bit", action="store_false", help="LoRA on the bf16 base instead")
    p.add_argument("--time-limit", type=float, default=4.0, help="minutes of training before stopping itself")
    p.add_argument("--device", default="cuda", help="cuda (default); cpu only for a dry run of this script")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stdout)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("PROMPTEOL_CACHE", str(ROOT / ".cache" / "gpu"))

    import torch

    from prompteol import Encoder
    from prompteol.train import TrainConfig, snli_triplets, train, write_triplets
    from prompteol.train.sts_dev import make_scorer

    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print("error: no CUDA GPU visible to torch", file=sys.stderr)
        return 2
    t_start = time.time()
    from prompteol.records import provenance

    report: dict = {"args": vars(args), "provenance": provenance(device=args.device, packages=("peft", "bitsandbytes"))}
    print(json.dumps(report), flush=True)

    out = Path(args.out)
    data = Path(args.data)
    if data.is_dir():  # SentEval's SNLI files -> (premise, entailment, contradiction) triplets
        triplets = snli_triplets(data, splits=[s for s in ("dev", "test") if (data / f"s1.{s}").is_file()])
        data = out.parent / f"{out.name}-triplets.csv"
        write_triplets(data, triplets)
        print(f"{len(triplets)} SNLI triplets -> {data}", flush=True)
    stsb_dev = make_scorer(args.senteval, batch_size=128)  # the evaluation harness, data checked by sha256

    # the full-precision base, as users encode without an adapter
    t0 = time.time()
    base = Encoder.from_pretrained(args.model, device=args.device, dtype=args.eval_dtype, progress=True)
    report["load_s"] = round(time.time() - t0, 1)
    t0 = time.time()
    report["base_stsb_dev"] = stsb_dev(base)
    report["base_eval_s"] = round(time.time() - t0, 1)
    print(f"base ({args.eval_dtype}) STS-B dev: {report['base_stsb_dev']:.2f}", flush=True)
    del base
    if cuda:
        torch.cuda.empty_cache()

    cfg = TrainConfig(
        model=args.model, data=str(data), output_dir=str(out), dtype=args.dtype, device=args.device,
        load_in_4bit=args.four_bit, lora_r=64, lora_alpha=16, lora_dropout=0.05, gradient_checkpointing=True,
        batch_size=args.batch_size, micro_batch_size=args.micro_batch_size, lr=5e-4,
        warmup_steps=args.warmup_steps, max_steps=args.steps, temperature=0.05, cutoff_len=32,
        eval_every=args.eval_every, save_every=args.eval_every, eval_data=args.senteval, eval_batch_size=128,
    )  # fmt: skip
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    result = train(cfg, time_limit=args.time_limit * 60, progress=False)
    report["train_s"] = round(time.time() - t0, 1)
    report["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20) if cuda else None
    report.update(steps=result.steps, total_steps=result.total_steps, last_loss=result.last_loss,
                  before=result.before, after=result.after, best=result.best, best_step=result.best_step)  # fmt: skip
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    speeds = [m["examples_per_s"] for m in metrics if "examples_per_s" in m][2:]  # skip the warm-up steps
    report["triplets_per_s"] = round(sum(speeds) / len(speeds), 1) if speeds else None

    # the best adapter as users load it: merged into the full-precision base
    if result.best_step is not None:
        t0 = time.time()
        tuned = Encoder.from_pretrained(str(out / "best"), device=args.device, dtype=args.eval_dtype, progress=False)
        report["best_merged_stsb_dev"] = stsb_dev(tuned)
        report["best_merged_eval_s"] = round(time.time() - t0, 1)
    report["total_s"] = round(time.time() - t_start, 1)
    (out / "gpu_qlora.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
