"""The ONNX Runtime and OpenVINO peers (``onnx-*``) on a torch.onnx export of the same weights.

ONNX Runtime and OpenVINO on a ``torch.onnx`` export of the same weights (``onnx-ort``, ``onnx-openvino``,
``onnx-openvino-bf16``), run on prompteol's token ids."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .base import Runner, error_text, prompt_builder, register_runner
from .configs import ONNX_EXPORT_VERSION, BenchConfig


def _export_onnx(path: str, out: Path) -> Path:
    """Export the base model (last hidden state; eager attention) to ``out/model.onnx``, atomically."""

    import torch
    from transformers import AutoModel

    from ..models.loading import quiet_transformers

    with quiet_transformers():
        model = AutoModel.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()

    class LastHidden(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state

    from ..fileio import write_folder_atomic

    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [5, 6, 7, 8, 1, 1]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    axes = {0: "batch", 1: "tokens"}
    import warnings

    with write_folder_atomic(out) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(LastHidden(model), (ids, mask), str(tmp / "model.onnx"), dynamo=False, opset_version=17,
                          input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                          dynamic_axes={"input_ids": axes, "attention_mask": axes, "last_hidden_state": axes})  # fmt: skip
    return out / "model.onnx"


def _export_child(path: str, out: str, queue) -> None:
    try:
        _export_onnx(path, Path(out))
        queue.put(None)
    except BaseException as exc:
        queue.put(error_text(exc))


def _export_in_child(path: str, out: Path) -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_export_child, args=(path, str(out), queue))
    proc.start()
    proc.join()
    error = queue.get() if not queue.empty() else f"the export process ended with exit status {proc.exitcode}"
    if error is not None or proc.exitcode != 0:
        raise RuntimeError(f"ONNX export failed: {error}")


@register_runner("onnx")
class OnnxRunner(Runner):
    """The base model exported to ONNX once, run by ONNX Runtime or OpenVINO on prompteol's token ids."""

    def __init__(self, cfg: BenchConfig, args):
        super().__init__()
        import hashlib

        import torch

        from ..paths import cache_root

        self.prompts, resolved = prompt_builder(args)
        ident = {"weights": resolved.identity, "torch": torch.__version__, "export": ONNX_EXPORT_VERSION}
        key = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]
        folder = cache_root() / "bench" / "onnx" / key
        t = time.perf_counter()
        onnx_file = folder / "model.onnx"
        if not onnx_file.is_file():  # in a child process, so this one's peak RSS is the runtime's alone
            _export_in_child(resolved.path, folder)
            self.extra["exported_s"] = time.perf_counter() - t
        self.extra["export"] = str(folder)
        self.weights_mb = sum(p.stat().st_size for p in folder.iterdir()) / 2**20
        backend = cfg.options["backend"]
        if backend == "ort":
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = args.threads, 1
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            sess = ort.InferenceSession(str(onnx_file), so, providers=["CPUExecutionProvider"])
            self._run: Callable[[dict], np.ndarray] = lambda feed: sess.run(None, feed)[0]
            self.extra["onnxruntime"] = ort.__version__
        else:
            import openvino as ov

            core = ov.Core()
            props = {"INFERENCE_NUM_THREADS": args.threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
                     "INFERENCE_PRECISION_HINT": cfg.options.get("precision", "f32")}  # fmt: skip
            compiled = core.compile_model(core.read_model(str(onnx_file)), "CPU", props)
            self._run = lambda feed: compiled(feed)[0]
            self.extra["openvino"] = ov.__version__
            self.extra["inference_precision"] = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.load_s = time.perf_counter() - t
        self.pad = self.prompts.tokenizer.pad_token_id or 0
        self.batch_size, self.max_batch_tokens = args.batch_size, args.max_batch_tokens

    def token_counts(self, sentences: list[str]) -> tuple[int, int]:
        n = sum(len(s) for s in self.prompts.tokenize(self.prompts.prepare(sentences)))
        return n, n

    def embed(self, sentences: list[str]) -> np.ndarray:
        from ..encoder.batching import plan_batches

        seqs = self.prompts.tokenize(self.prompts.prepare(sentences))
        out: np.ndarray | None = None
        for batch in plan_batches([len(s) for s in seqs], self.batch_size, self.max_batch_tokens):
            longest = max(len(seqs[i]) for i in batch)
            ids = np.full((len(batch), longest), self.pad, dtype=np.int64)
            mask = np.zeros((len(batch), longest), dtype=np.int64)
            for row, i in enumerate(batch):
                ids[row, : len(seqs[i])] = seqs[i]
                mask[row, : len(seqs[i])] = 1
            hidden = np.asarray(self._run({"input_ids": ids, "attention_mask": mask}))
            last = hidden[np.arange(len(batch)), mask.sum(1) - 1]
            if out is None:
                out = np.zeros((len(seqs), last.shape[-1]), dtype=np.float32)
            out[batch] = last
        return out if out is not None else np.zeros((0, 0), dtype=np.float32)
