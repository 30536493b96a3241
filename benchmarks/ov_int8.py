"""int8 on the OpenVINO backend: does an int8 path keep accuracy? (issue: |STS-B dev change| <= 0.5, cosine >= 0.99)

The OpenVINO backend's float32 export, its weights compressed to int8 per output channel by NNCF
(data-free ``nncf.compress_weights``), run by OpenVINO's CPU plugin in bfloat16 with dynamic
quantization of the activations per group of ``--group`` values (``DYNAMIC_QUANTIZATION_GROUP_SIZE``:
int8 matrix products on VNNI, the granularity of llama.cpp's Q8_0) or without it (weights only),
against the same export in bfloat16 and torch float32, in one run: sentences/s on STS-B train,
STS-B dev (all 1,500 pairs by default) and the lowest cosine to torch float32.

Not a library option: only a path that keeps accuracy would be one (docs/performance.md has the
verdict). Needs ``pip install nncf`` beside the ``openvino`` extra.

    python benchmarks/ov_int8.py --model smollm2-135m --threads 2 -o docs/results/ov_int8_smollm2-135m_avx512bf16.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def _variants(groups: list[int]) -> list[tuple[str, str | None, int]]:
    """(name, NNCF weight mode or None, dynamic quantization group size; 0 = off)."""
    out: list[tuple[str, str | None, int]] = [("bf16", None, 0), ("int8-weights", "INT8_SYM", 0)]
    out += [(f"int8-dq{g}", "INT8_SYM", g) for g in groups]
    out += [(f"int8-asym-dq{g}", "INT8_ASYM", g) for g in groups[:1]]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--n", type=int, default=1000, help="STS-B train sentences timed (default: %(default)s)")
    p.add_argument("--sts-pairs", type=int, default=1500, help="STS-B dev pairs scored (default: all, 1500)")
    p.add_argument("--group", type=int, nargs="+", default=[32, 128], help="dynamic quantization group sizes")
    p.add_argument("--variants", nargs="+", default=None,
                   help="only these variants (names as printed: bf16 int8-weights int8-dqG int8-asym-dqG; default: all)")
    p.add_argument("--rounds", type=int, default=1,
                   help="timing rounds, the variants alternated (each kept compiled; default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--data-dir", default=None)
    p.add_argument("-o", "--output", default=None, help="write the JSON record here")
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import nncf
    import openvino as ov
    from _openvino_ab import reference_and_openvino

    from prompteol.bench import StsDevSubset, cosine_rows, load_sentences
    from prompteol.encoder.forward.onnx import _OpenVinoSession

    subset = StsDevSubset(args.data_dir, args.sts_pairs)
    timed = load_sentences(args.data_dir, args.n)
    ref_dev, ref_score, enc, forward = reference_and_openvino(args.model, subset, timed[:8], args.batch_size)
    core = ov.Core()
    rows = []
    sessions = {}
    variants = [v for v in _variants(args.group) if args.variants is None or v[0] in args.variants]
    if not variants or variants[0][0] != "bf16":
        raise SystemExit("the variants must include bf16 (the reference of the speed column)")
    for name, mode, group in variants:
        started = time.perf_counter()
        model = core.read_model(str(Path(forward.path) / "model.onnx"))
        if mode is not None:
            model = nncf.compress_weights(model, mode=getattr(nncf.CompressWeightsMode, mode))
        props = {"INFERENCE_NUM_THREADS": args.threads, "NUM_STREAMS": forward.streams, "INFERENCE_PRECISION_HINT": "bf16",
                 "DYNAMIC_QUANTIZATION_GROUP_SIZE": group}  # fmt: skip
        forward.session = sessions[name] = _OpenVinoSession(core.compile_model(model, "CPU", props), forward.streams)
        prepare_s = time.perf_counter() - started
        enc.encode(timed[:32], batch_size=args.batch_size, use_embedding_cache=False)  # warm-up
        t = time.perf_counter()
        enc.encode(timed, batch_size=args.batch_size, use_embedding_cache=False)
        rate = len(timed) / (time.perf_counter() - t)
        vectors = enc.encode(subset.sentences, batch_size=args.batch_size, use_embedding_cache=False)
        cos = cosine_rows(vectors, ref_dev)
        sts = subset.score(vectors)
        keeps = abs(sts - ref_score) <= 0.5 and float(cos.min()) >= 0.99
        rows.append({"variant": name, "weights": mode or "float32 export", "dynamic_quantization_group": group,
                     "rates": [round(rate, 2)], "sentences_per_s": round(rate, 2), "sts_b_dev": round(sts, 2), "change": round(sts - ref_score, 2),
                     "cosine_min": round(float(cos.min()), 5), "cosine_mean": round(float(cos.mean()), 5),
                     "prepare_s": round(prepare_s, 1), "keeps_accuracy": keeps})  # fmt: skip
        print(f"{name:16s} {rate:7.1f} sentences/s  STS-B dev {sts:.2f} ({sts - ref_score:+.2f})  cosine min "
              f"{cos.min():.4f}  {'keeps' if keeps else 'loses'} accuracy", flush=True)  # fmt: skip
    for r in range(1, args.rounds):  # more rounds, the variants alternated (a VM's speed drifts within a run)
        for row in rows:
            forward.session = sessions[row["variant"]]
            enc.encode(timed[:32], batch_size=args.batch_size, use_embedding_cache=False)
            t = time.perf_counter()
            enc.encode(timed, batch_size=args.batch_size, use_embedding_cache=False)
            row["rates"].append(round(len(timed) / (time.perf_counter() - t), 2))
            print(f"round {r + 1} {row['variant']:16s} {row['rates'][-1]:7.1f} sentences/s", flush=True)
    for row in rows:
        row["sentences_per_s"] = round(sum(row["rates"]) / len(row["rates"]), 2)
    base = rows[0]["sentences_per_s"]
    for r in rows:
        r["vs_bf16"] = round(r["sentences_per_s"] / base, 2)
    from prompteol.records import provenance

    record = {"schema": "prompteol.ov-int8/1", "model": args.model, "threads": args.threads, "n": len(timed), "rounds": args.rounds,
              "sts_pairs": len(subset), "batch_size": args.batch_size, "float32_sts_b_dev": round(ref_score, 2),
              "streams": forward.streams, "nncf": nncf.__version__, "rows": rows,
              "provenance": provenance(threads=args.threads, packages=("nncf",))}  # fmt: skip
    print(json.dumps({k: v for k, v in record.items() if k != "provenance"}))
    if args.output:
        from prompteol.fileio import write_json_atomic

        write_json_atomic(Path(args.output), record)


if __name__ == "__main__":
    main()
