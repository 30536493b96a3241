"""Where the OpenVINO backend's time goes: per-node profile of the encoder's compiled graph over many batches.

OpenVINO's ``PERF_COUNT`` gives each node's time for the last inference of a request; this script adds them up over
every batch of an encode (all streams), grouped by node type and by the kernel OpenVINO picked (``exec_type``, e.g.
``brgemm_avx512_amx`` for a product on the AMX tiles), and sets the matrix products' achieved FLOP/s beside the
run's wall time. It answers "is the backend bound by its products or by the rest" on the machine it runs on.

    python benchmarks/ov_node_profile.py --model smollm2-135m --precision bf16 --threads 2 --n 640 \\
        -o docs/results/ov_node_profile_smollm2-135m_amx.json
"""

from __future__ import annotations

import argparse
import collections
import json
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--precision", choices=("bf16", "f32"), default="bf16", help="OpenVINO's inference precision")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--n", type=int, default=640, help="STS-B train sentences profiled (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--top", type=int, default=12, help="node types printed (default: %(default)s)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("-o", "--output", default=None, help="write the JSON record here (atomically)")
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import openvino as ov

    from prompteol import Encoder
    from prompteol.bench import load_sentences
    from prompteol.encoder.forward.onnx import _OpenVinoSession
    from prompteol.records import provenance

    dtype = "bfloat16" if args.precision == "bf16" else "float32"
    sentences = load_sentences(args.data_dir, args.n)
    enc = Encoder.from_pretrained(args.model, embedding_cache=False, dtype=dtype, backend="openvino")
    enc.encode(sentences[:8], use_embedding_cache=False)
    forward = enc.runner.onnx
    if forward is None or forward.session is None or forward.failed:
        raise SystemExit(f"the OpenVINO backend is not active: {enc.describe()['backend']}")
    streams = len(forward.session.requests)
    by_type: collections.Counter = collections.Counter()
    by_kernel: collections.Counter = collections.Counter()
    calls = [0]

    class Profiled(_OpenVinoSession):
        def run(self, names, feed):
            out = super().run(names, feed)
            calls[0] += 1
            for request in self.requests[: max(1, min(len(self.requests), feed["input_ids"].shape[0]))]:
                for info in request.profiling_info:
                    s = info.real_time.total_seconds()
                    by_type[info.node_type] += s
                    by_kernel[f"{info.node_type}:{info.exec_type}"] += s
            return out

    props = {"INFERENCE_NUM_THREADS": args.threads, "NUM_STREAMS": streams,
             "INFERENCE_PRECISION_HINT": args.precision, "PERF_COUNT": True}  # fmt: skip
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(forward.path / "model.onnx")), "CPU", props)
    forward.session = Profiled(compiled, streams)
    enc.encode(sentences[:64], batch_size=args.batch_size, use_embedding_cache=False)  # warm the shapes
    by_type.clear(), by_kernel.clear()
    calls[0] = 0
    started = time.perf_counter()
    enc.encode(sentences, batch_size=args.batch_size, use_embedding_cache=False)
    wall = time.perf_counter() - started
    node_s = sum(by_type.values())
    # node time is summed over the streams, which run at once: per-stream wall time is wall x streams
    shares = {k: round(v / node_s, 4) for k, v in by_type.most_common()}
    kernels = {k: round(v / node_s, 4) for k, v in by_kernel.most_common(args.top)}
    record = {"schema": "prompteol.ov-node-profile/1", "model": args.model, "precision": args.precision,
              "threads": args.threads, "streams": streams, "n": len(sentences), "batch_size": args.batch_size,
              "calls": calls[0], "wall_s": round(wall, 3), "sentences_per_s": round(len(sentences) / wall, 2),
              "node_s": round(node_s, 3), "node_share_of_stream_time": round(node_s / (wall * streams), 4),
              "shares": shares, "kernels": kernels, "provenance": provenance(threads=args.threads)}  # fmt: skip
    for k, v in list(shares.items())[: args.top]:
        print(f"{k:28s} {100 * v:5.1f}%")
    print("kernels:", json.dumps(kernels))
    print(f"{len(sentences) / wall:.1f} sentences/s; node time {node_s:.2f} s over {streams} stream(s), "
          f"{100 * node_s / (wall * streams):.0f}% of their wall time")
    if args.output:
        from prompteol.fileio import write_json_atomic

        write_json_atomic(Path(args.output), record)


if __name__ == "__main__":
    main()
