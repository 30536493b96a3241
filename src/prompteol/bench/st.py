"""sentence-transformers on the same rendered prompts and weights (``st``, ``st-onnx``, ``st-openvino``)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from .base import Runner, prompt_builder, register_runner
from .configs import BenchConfig


@register_runner("st")
class STRunner(Runner):
    """sentence-transformers on the rendered prompts: torch, or the ONNX / OpenVINO backends (optimum)."""

    def __init__(self, cfg: BenchConfig, args):
        super().__init__()
        import torch
        from sentence_transformers import SentenceTransformer, models  # type: ignore[attr-defined]

        self.prompts, resolved = prompt_builder(args)
        backend = cfg.options.get("backend", "torch")
        modality = {"text": {"method": "forward", "method_output_name": "last_hidden_state"}}
        common: dict[str, Any] = {"modality_config": modality, "module_output_name": "token_embeddings"}
        t = time.perf_counter()
        if backend == "torch":
            # A text-only modality config: no chat template, the prompt is tokenized as is.
            tr = models.Transformer(resolved.path, model_kwargs={"dtype": getattr(torch, args.dtype)}, **common)
        else:
            tr = self._exported(models, resolved, backend, args, common)
        dim = self._hidden_size(resolved.path)
        self.st = SentenceTransformer(modules=[tr, models.Pooling(dim, pooling_mode="lasttoken")], device=args.device)
        self.load_s = time.perf_counter() - t
        self.batch_size = args.batch_size
        model = getattr(tr, "model", None) or getattr(tr, "auto_model", None)
        if backend == "torch" and model is not None:
            self.weights_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
        self.extra["backend"] = backend

    @staticmethod
    def _hidden_size(path: str) -> int:
        cfg = json.loads((Path(path) / "config.json").read_text())
        return int(cfg.get("hidden_size") or cfg["text_config"]["hidden_size"])

    def _exported(self, models, resolved, backend: str, args, common: dict):
        """The ONNX / OpenVINO export (optimum), made once and kept under ``<cache>/bench/st-<backend>/``."""
        import hashlib

        from ..paths import cache_root

        key = hashlib.sha256(json.dumps(resolved.identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
        folder = cache_root() / "bench" / f"st-{backend}" / key
        if backend == "onnx":
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = args.threads, 1
            kwargs: dict[str, Any] = {"provider": "CPUExecutionProvider", "session_options": so}
            file_name = "onnx/model.onnx"
        else:
            kwargs = {"ov_config": {"INFERENCE_NUM_THREADS": args.threads, "INFERENCE_PRECISION_HINT": "f32"}}
            file_name = "openvino/openvino_model.xml"
        if not (folder / file_name).is_file():
            tr = models.Transformer(resolved.path, backend=backend, model_kwargs=dict(kwargs), **common)
            from ..fileio import write_folder_atomic

            with write_folder_atomic(folder) as tmp:
                tr.save(str(tmp))
            self.extra["exported"] = True
        self.extra["export"] = str(folder)
        return models.Transformer(str(folder), backend=backend, model_kwargs={**kwargs, "file_name": file_name},
                                  **common)  # fmt: skip

    def token_counts(self, sentences: list[str]) -> tuple[int, int]:
        n = sum(len(s) for s in self.prompts.tokenize(self.prompts.prepare(sentences)))
        return n, n

    def embed(self, sentences: list[str]) -> np.ndarray:
        prompts = [self.prompts.render(s) for s in self.prompts.prepare(sentences)]
        return self.st.encode(prompts, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False)
