"""Forwards on a graph exported once (``backend="onnxruntime"`` / ``backend="openvino"``).

The base model up to the read-out layer is exported once with ``torch.onnx`` (float32) and run by
ONNX Runtime (float32) or OpenVINO (float32, or bfloat16 inference precision where the CPU has native
bfloat16), with the shared-prefix cache kept.

Why: on the CPUs measured here ONNX Runtime's float32 kernels (MLAS) run a decoder's forward closer to
the float32 matmul peak than torch's eager path, and OpenVINO's CPU plugin, which fuses the norms,
rotary embeddings and element-wise work into its oneDNN matmuls, runs the same graph in bfloat16
closer to the bfloat16 peak than torch's eager bfloat16 (docs/performance.md); torch.compile did not
close either gap. The export (:mod:`prompteol.encoder.forward.export`) takes the shared prefix's keys and values as inputs
(``past_k{i}`` / ``past_v{i}``, batch 1, any length, zero included) and an additive 4-D attention mask,
so the demonstrations and the template's opening are still computed once per encoder, by torch.

The export is one ONNX graph per (weights, adapter, read-out layer), shared by both runtimes: blocks above
the read-out layer are not in it (ONNX Runtime computes every node of a graph, whatever output is asked
for: measured), so a layer search exports once per layer. It is written atomically under
``<cache>/onnx/<key>/model.onnx`` (above 2 GB its weights are files beside it), one process at a time
(a lock), and reused by every later process. The loaded torch model (float32) stays: it computes the
prefix, and every call the graph cannot take (methods that hook inside the forward, calls with
gradients, a packed 4-D mask, a prompt longer than a sliding window).

Safety, as for the fused forwards (:mod:`prompteol.encoder.forward.fused`): the first call is computed by
torch too and compared (float32: max abs difference <= 1e-4 x max(1, max |h|); bfloat16: every hidden
state's cosine to torch's float32 >= 0.99); beyond it, or on any export or runtime error, or once the
weights changed in place (training), the model goes back to torch (float32) with one warning.
``describe()`` reports the runtime, its precision, the export, its time, the check and any fallback.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

from ...fileio import FileLock, write_folder_atomic
from .export import GraphExport, default_attention

__all__ = ["OnnxForward", "onnx_forward", "EXPORT_VERSION", "TOLERANCE", "RUNTIMES", "check_runtime", "openvino_streams"]

log = logging.getLogger(__name__)

#: bumped whenever the exported graph changes (inputs, outputs, how it is traced): a new export. A graph whose
#: attention is not the version-1 ``expanded`` one has its own key too (:mod:`prompteol.encoder.forward.export`)
EXPORT_VERSION = 1
#: the first call's check: float32, max abs difference relative to max(1, max |hidden|), as fused float32;
#: bfloat16 (OpenVINO), 1 - the lowest cosine to torch's float32 hidden states, as fused 16-bit
TOLERANCE = 1e-4
COSINE_TOLERANCE = 1e-2
#: backend name -> (the runtime's package, the extra that installs it)
RUNTIMES = {"onnxruntime": ("onnxruntime", "onnx"), "openvino": ("openvino", "openvino")}
#: an export needs this many times the float32 weights' bytes free in memory (tracing, then the session's own
#: copy) and on disk (the graph and its weights); less: torch, with one warning saying so
MEMORY_FACTOR = 1.2
DISK_FACTOR = 1.1


def check_runtime(backend: str) -> str:
    """The runtime's version; a clear error when it (or onnx, which the export needs) is not installed."""
    import importlib

    from ...errors import ConfigError

    package, extra = RUNTIMES[backend]
    try:
        module = importlib.import_module(package)
        importlib.import_module("onnx")
    except ImportError as exc:
        raise ConfigError(f"backend={backend!r} needs {package} and onnx: pip install 'prompteol[{extra}]'") from exc
    return str(getattr(module, "__version__", "?"))


class OnnxForward:
    """One loaded model's forward at one read-out layer on ``runtime`` (``onnxruntime`` or ``openvino``), in
    ``precision`` (``float32``; ``bfloat16``: OpenVINO only), on the export (made on first use)."""

    def __init__(self, model, blocks, layer: int, num_layers: int, identity: dict, weights_state: Callable[[], Hashable],
                 cache_dir=None, runtime: str = "onnxruntime", precision: str = "float32"):  # fmt: skip
        if runtime not in RUNTIMES or precision not in ("float32", "bfloat16"):
            raise ValueError(f"unknown runtime/precision {runtime!r}/{precision!r}")
        if runtime == "onnxruntime" and precision != "float32":
            raise ValueError("ONNX Runtime runs the export in float32 only")
        self.runtime, self.precision = runtime, precision
        self.inference_precision: str | None = None  # what the runtime reports it computes in (OpenVINO)
        self.streams = 1  # OpenVINO's parallel infer requests, each on part of a batch (openvino_streams)
        self.model, self.blocks, self.layer, self.num_layers = model, list(blocks), layer, num_layers
        self.identity = identity
        self._weights_state = weights_state
        self._exported_state: Hashable | None = None
        self.cache_dir = cache_dir
        self.session: Any = None
        self.path: Path | None = None
        self.failed: str | None = None
        self.verified: float | None = None
        self.export_s: float | None = None  # None: the export was already on disk
        self.session_s = 0.0
        self.calls = 0
        self.torch_calls = 0  # calls the graph could not take (a long prompt past a sliding window)
        self._prefix: tuple = (None, 0, [])  # (the shared prefix, its length, its arrays): fed as they are
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.heads = int(getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads)
        self.head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
        self.window = getattr(cfg, "sliding_window", None)

    # ------------------------------------------------------------------ state
    def key(self) -> str:
        import torch
        import transformers

        ident = {"identity": self.identity, "layer": self.layer, "layers": self.num_layers, "export": EXPORT_VERSION,
                 "torch": torch.__version__.split("+")[0], "transformers": transformers.__version__}  # fmt: skip
        attention = default_attention(self.blocks[: self.layer])
        if attention != "expanded":
            ident["attention"] = attention
        dtype = str(next(self.model.parameters()).dtype)
        if dtype != "torch.float32":  # the graph holds the weights in the dtype they were traced in
            ident["dtype"] = dtype
        return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        return {"name": self.runtime, "precision": self.precision, "inference_precision": self.inference_precision,
                "streams": self.streams, "layer": self.layer, "export": str(self.path) if self.path else None,
                "attention": default_attention(self.blocks[: self.layer]),
                "export_s": None if self.export_s is None else round(self.export_s, 1),
                "session_s": round(self.session_s, 1), "calls": self.calls, "torch_calls": self.torch_calls,
                "verified_max_diff": self.verified, "fallback": self.failed}  # fmt: skip

    def _fail(self, reason: str) -> None:
        if self.failed is None:
            log.warning("%s backend switched off for this model, torch (float32) from now on: %s", self.runtime, reason)
        self.failed = reason
        self.session = None

    def _load(self) -> None:
        import torch

        from ...paths import cache_root

        folder = cache_root(self.cache_dir) / "onnx" / self.key()
        if not (folder / "model.onnx").is_file():
            # one exporter at a time (several processes of one corpus job): the others wait, then load its export
            with FileLock(folder.with_name(folder.name + ".lock"), wait=None, remove=False):
                if not (folder / "model.onnx").is_file():
                    self._export(folder)
        started = time.perf_counter()
        self.session = self._session(folder / "model.onnx", torch.get_num_threads())
        self.session_s = time.perf_counter() - started
        self.path = folder
        self._exported_state = self._weights_state()

    def _session(self, path: Path, threads: int):
        """Something with ``run(["hidden"], feed) -> [array]`` on ``path``, in this forward's runtime and precision."""
        if self.runtime == "onnxruntime":
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        import openvino as ov

        core = ov.Core()
        streams = openvino_streams(threads)
        props: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": streams,
                                 "INFERENCE_PRECISION_HINT": "bf16" if self.precision == "bfloat16" else "f32"}  # fmt: skip
        if streams == 1:
            props["PERFORMANCE_HINT"] = "LATENCY"
        compiled = core.compile_model(core.read_model(str(path)), "CPU", props)
        hint = compiled.get_property("INFERENCE_PRECISION_HINT")  # an ov.Type: "bf16" / "f32"
        self.inference_precision = str(hint.get_type_name() if hasattr(hint, "get_type_name") else hint)
        self.streams = int(compiled.get_property("NUM_STREAMS"))
        return _OpenVinoSession(compiled, self.streams)

    def _export(self, folder: Path) -> None:
        self._check_room(folder.parent)
        log.info("exporting the model (layer %d) to ONNX under %s (once)", self.layer, folder)
        started = time.perf_counter()
        with write_folder_atomic(folder) as tmp:
            graph = GraphExport(self.model, self.blocks, self.layer, self.num_layers)
            graph.write(tmp, self.heads, self.head_dim)
            (tmp / "identity.json").write_text(json.dumps({"identity": self.identity, "layer": self.layer, "export": EXPORT_VERSION,
                                                          "attention": graph.attention}, default=str, indent=1))  # fmt: skip
        self.export_s = time.perf_counter() - started

    def _check_room(self, where: Path) -> None:
        """Refuse an export that would not fit: it holds about the float32 weights again in memory while
        tracing (qwen2.5-coder-1.5b: peak RSS 11.7 GB against torch's 5.8 GB) and writes them to disk."""
        import shutil

        need = 4 * sum(p.numel() for p in self.model.parameters())
        gb = 2**30
        free = _free_memory()
        if free is not None and free < MEMORY_FACTOR * need:
            raise RuntimeError(f"not enough free memory to export the model to ONNX: about {MEMORY_FACTOR * need / gb:.1f} GB "
                               f"needed, {free / gb:.1f} GB free")  # fmt: skip
        where.mkdir(parents=True, exist_ok=True)
        disk = shutil.disk_usage(where).free
        if disk < DISK_FACTOR * need:
            raise RuntimeError(f"not enough disk space under {where} for the ONNX export: about "
                               f"{DISK_FACTOR * need / gb:.1f} GB needed, {disk / gb:.1f} GB free")  # fmt: skip

    # ------------------------------------------------------------------ one call
    def takes(self, mask, prefix_len: int) -> bool:
        """Whether the graph computes this call exactly (a 2-D mask; no sliding window shorter than it)."""
        if self.failed is not None or mask.dim() != 2:
            return False
        return self.window is None or mask.shape[1] <= int(self.window)

    def hidden(self, ids, mask, positions, kv, prefix_len: int, torch_call: Callable[[], Any]):
        """Hidden states (B, T, H) at the read-out layer, float32; ``torch_call()`` computes the same with torch
        (the first call's check, and every call after a failure). ``mask`` covers the prefix when ``kv`` has one."""
        import torch

        if not self.takes(mask, prefix_len):
            self.torch_calls += 1
            return torch_call()
        try:
            if self.session is None:
                self._load()
            elif self._weights_state() != self._exported_state:
                self._fail("the weights changed in place since the export (training)")
                return torch_call()
            out = torch.from_numpy(self.session.run(["hidden"], self._feed(ids, mask, positions, kv, prefix_len))[0])
        except Exception as exc:  # noqa: BLE001 - any export/runtime failure: torch, once warned
            self._fail(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            return torch_call()
        self.calls += 1
        if self.verified is None:
            ref = torch_call()
            real = mask[:, prefix_len:].bool()
            if self.precision == "float32":
                diff = float((out - ref)[real].abs().max()) / max(1.0, float(ref[real].abs().max())) if real.any() else 0.0
                tol, what = TOLERANCE, "relative max difference"
            else:  # bfloat16 inside the runtime: compare directions with torch's float32
                from .fused import torch_cosine_rows

                diff = 1.0 - torch_cosine_rows(out[real], ref[real]) if real.any() else 0.0
                tol, what = COSINE_TOLERANCE, "1 - lowest cosine"
            self.verified = diff
            if not diff <= tol:
                self._fail(f"the first call differed from torch: {what} {diff:.2e} (tolerance {tol:g})")
                return ref
        return out.to(ids.device)

    def _feed(self, ids, mask, positions, kv, prefix_len: int) -> dict[str, Any]:
        import numpy as np
        import torch

        b, t = ids.shape
        total = mask.shape[1]
        causal = torch.arange(total).unsqueeze(0) <= (prefix_len + torch.arange(t)).unsqueeze(1)  # (T, P+T)
        allowed = causal.unsqueeze(0).unsqueeze(0) & mask.bool().cpu()[:, None, None, :]  # (B, 1, T, P+T)
        additive = torch.zeros(allowed.shape, dtype=torch.float32).masked_fill(~allowed, torch.finfo(torch.float32).min)
        feed: dict[str, Any] = {"input_ids": ids.cpu().numpy(), "attention_mask": additive.numpy(),
                                "position_ids": positions.cpu().numpy()}  # fmt: skip
        layers = [layer for layer in getattr(kv, "layers", []) if getattr(layer, "keys", None) is not None] if kv else []
        if prefix_len and len(layers) != self.layer:
            raise RuntimeError(f"the prefix cache has {len(layers)} layers, the export takes {self.layer}")
        if prefix_len:  # the prefix's keys and values (batch 1), made once per shared prefix: the same arrays every call
            source = getattr(kv, "prompteol_prefix", None)  # the shared prefix (forward/prefix.py) kv was expanded from
            if source is None or self._prefix[0] is not source or self._prefix[1] != prefix_len:
                arrays = [np.ascontiguousarray(tensor[:1, :, :prefix_len].detach().float().cpu().numpy())
                          for layer in layers for tensor in (layer.keys, layer.values)]  # fmt: skip
                self._prefix = (source, prefix_len, arrays)
            arrays = self._prefix[2]
        else:
            empty = np.zeros((1, self.heads, 0, self.head_dim), dtype=np.float32)
            arrays = [empty] * (2 * self.layer)
        for i in range(self.layer):
            feed[f"past_k{i}"], feed[f"past_v{i}"] = arrays[2 * i], arrays[2 * i + 1]
        return feed


def openvino_streams(threads: int) -> int:
    """OpenVINO streams for ``threads`` threads: ``PROMPTEOL_OV_STREAMS`` when set, else 2 from 2 threads on
    (each stream one half of the threads and of every batch), else 1.

    Why: a small model's forward at 2 threads spends a share of its time in work one thread does while the
    other waits (the prefix's broadcasts, conversions, element-wise nodes); two requests of one thread each,
    on the two halves of a batch, keep both cores busy: STS12 + STS16 with smollm2-135m encoded in 96 s with
    2 streams against 104-113 s with 1 at 2 threads (docs/performance.md); the vectors are the same rows
    computed alone to rounding (no op mixes the rows of a batch)."""
    import os

    from ...errors import ConfigError

    raw = os.environ.get("PROMPTEOL_OV_STREAMS", "").strip()
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            raise ConfigError(f"PROMPTEOL_OV_STREAMS should be a positive integer, got {raw!r}")
        return int(raw)
    return 2 if threads >= 2 else 1


class _OpenVinoSession:
    """An OpenVINO compiled model behind ONNX Runtime's ``run(names, feed)``; with several streams, a batch is
    cut into that many parts along its rows, run at once (one infer request each) and put back in order."""

    #: the inputs with a batch axis (the prefix's keys/values are batch 1, shared by every part)
    ROWS = ("input_ids", "attention_mask", "position_ids")

    def __init__(self, compiled, streams: int = 1):
        self.compiled = compiled
        self.requests = [compiled.create_infer_request() for _ in range(max(1, streams))]
        self._given: list[dict] = [{} for _ in self.requests]  # the shared inputs each request holds already

    span = staticmethod(lambda mask: _real_span(mask))  # the token columns a part computes (all: (0, T))

    def run(self, names, feed):
        import numpy as np

        rows, t = feed["input_ids"].shape
        parts = max(1, min(len(self.requests), rows))
        bounds = [rows * i // parts for i in range(parts + 1)]
        requests = self.requests[:parts]
        spans = [self.span(feed["attention_mask"][a:b]) if parts > 1 else (0, t) for a, b in zip(bounds, bounds[1:])]
        for (a, b), (lo, hi), request, given in zip(zip(bounds, bounds[1:]), spans, requests, self._given):
            shared = {k: v for k, v in feed.items() if k not in self.ROWS and given.get(k) is not v}  # new arrays only
            given.update(shared)  # (a request keeps the inputs it was given: the prefix's are set once, not copied per call)
            request.start_async({**{k: _trim(k, feed[k][a:b], lo, hi, t) for k in self.ROWS}, **shared})
        out = []
        for request, (lo, hi) in zip(requests, spans):
            request.wait()
            part = np.array(request.get_output_tensor(0).data, copy=True)  # the request's buffer is reused
            if (lo, hi) != (0, t):  # the padding columns trimmed off this part: zeros (never read by pooling)
                part = np.pad(part, ((0, 0), (lo, t - hi), (0, 0)))
            out.append(part)
        return [out[0] if parts == 1 else np.concatenate(out, axis=0)]


def _real_span(mask) -> tuple[int, int]:
    """The columns ``[lo, hi)`` of the batch's token axis that hold every real token of these rows (``mask``:
    the additive (B, 1, T, P+T) mask, 0 where a token may attend): each stream's part of a length-sorted batch is
    computed without the padding only its longer rows needed (about 1% of the main job's tokens)."""
    import numpy as np

    t = mask.shape[2]
    p = mask.shape[3] - t
    real = (mask[:, 0, np.arange(t), p + np.arange(t)] == 0).any(axis=0)  # (T,) a real token in some row
    cols = np.flatnonzero(real)
    return (int(cols[0]), int(cols[-1]) + 1) if cols.size else (0, t)


def _trim(name: str, value, lo: int, hi: int, t: int):
    """One input of a part cut to the token columns ``[lo, hi)`` (the prefix's keys/values unchanged)."""
    import numpy as np

    if (lo, hi) == (0, t) or name not in ("input_ids", "position_ids", "attention_mask"):
        return value
    if name != "attention_mask":
        return value[:, lo:hi]
    p = value.shape[3] - t
    return np.ascontiguousarray(np.concatenate([value[:, :, lo:hi, :p], value[:, :, lo:hi, p + lo : p + hi]], axis=3))


def _free_memory() -> int | None:
    """Free CPU memory in bytes now (None: unknown)."""
    from ..limits import cpu_free_memory

    return cpu_free_memory()[0]


def onnx_forward(model, blocks, layer: int, num_layers: int, identity: dict, weights_state, cache_dir=None,
                 runtime: str = "onnxruntime", precision: str = "float32") -> OnnxForward:  # fmt: skip
    """The model's :class:`OnnxForward` at ``layer`` on ``runtime`` in ``precision`` (one per loaded model, layer,
    runtime and precision, shared by derived encoders; the export itself is shared by both runtimes)."""
    forwards = model.__dict__.setdefault("_prompteol_onnx", {})
    key = (layer, runtime, precision, json.dumps(identity, sort_keys=True, default=str))
    if key not in forwards:
        forwards[key] = OnnxForward(model, blocks, layer, num_layers, identity, weights_state, cache_dir, runtime,
                                    precision)  # fmt: skip
    return forwards[key]
