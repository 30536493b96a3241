"""Which forward runs an encoder's model calls (torch, fused blocks, ONNX Runtime, OpenVINO), and what describe() says.

``fused=True`` attaches the model's compiled block forwards (:mod:`.fused`), ``backend="onnxruntime"`` /
``backend="openvino"`` its forward on the exported graph at the encoder's read-out layer (:mod:`.onnx`); both
belong to the loaded model and are shared by every encoder derived from it. Methods that hook inside the
forward run on eager torch.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ...records import native_bf16
from .onnx import DISK_FACTOR, MEMORY_FACTOR

__all__ = ["attach_forwards", "fused_state", "backend_state", "BackendChoice", "resolve_backend", "rows_per_call"]

#: backend="auto" takes OpenVINO when this many bytes per parameter are free in memory: the float32 torch model
#: (4), OpenVINO's bfloat16 copy (2) and the one-off export's tracing (:data:`.onnx.MEMORY_FACTOR` x 4) at once
AUTO_MEMORY_BYTES_PER_PARAMETER = 4 + 2 + 4 * MEMORY_FACTOR
#: ... and this many on disk under the cache folder (the float32 export, once per read-out layer)
AUTO_DISK_BYTES_PER_PARAMETER = 4 * DISK_FACTOR


@dataclass(frozen=True)
class BackendChoice:
    """Which backend runs an encoder's forwards, and why (``backend="auto"`` resolved when loading)."""

    backend: str
    requested: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def resolve_backend(config, model_path: str | Path | None, cache_dir=None) -> BackendChoice:
    """``config.backend``, or for ``"auto"`` (``config.dtype`` already resolved): OpenVINO where it is the faster
    bfloat16 path and fits (a CPU with native bfloat16, OpenVINO installed, no method that hooks inside the
    forward, room for the float32 weights, OpenVINO's copy and the export), torch everywhere else. float32 stays
    on torch: exact reproduction; ``--backend onnxruntime``/``openvino`` run it faster on request."""
    if config.backend != "auto":
        return BackendChoice(config.backend, config.backend, "given")
    from ..methods.base import METHODS

    hooking = [cls.name for cls in METHODS.values() if cls.hooks_forward and cls.applies(config)]
    why_torch = next((why for why, bad in (
        (f"device={config.device!r}: torch (OpenVINO runs on the CPU here)", config.device != "cpu"),
        (f"quantization={config.quantization!r}: torch", config.quantization is not None),
        ("fused=True: torch (the compiled blocks)", config.fused),
        (f"dtype {config.dtype}: torch (exact; --backend onnxruntime or openvino run float32 faster, on request)",
         config.dtype != "bfloat16"),
        ("a CPU without native bfloat16: torch", not native_bf16()),
        (f"{', '.join(hooking)} hooks inside the forward: torch", bool(hooking)),
        ("OpenVINO is not installed (pip install 'prompteol[openvino]'): torch",
         importlib.util.find_spec("openvino") is None or importlib.util.find_spec("onnx") is None),
    ) if bad), None)  # fmt: skip
    if why_torch is None:
        why_torch = _room_for_openvino(model_path, cache_dir)
    if why_torch is not None:
        return BackendChoice("torch", "auto", why_torch)
    return BackendChoice("openvino", "auto", "CPU with native bfloat16 and OpenVINO installed: openvino (bfloat16), "
                         "measured faster than torch's bfloat16 and closer to float32 (docs/performance.md)")  # fmt: skip


def _room_for_openvino(model_path, cache_dir) -> str | None:
    """Why OpenVINO would not fit (None: it fits), from the weights' parameter count before loading them."""
    import shutil

    from ...paths import cache_root
    from ..limits import cpu_free_memory

    params = _parameters_on_disk(model_path)
    if params is None:
        return "the model's size is unknown before loading: torch"
    gb = 2**30
    free = cpu_free_memory()[0]
    need = AUTO_MEMORY_BYTES_PER_PARAMETER * params
    if free is not None and free < need:
        return f"not enough free memory for OpenVINO ({need / gb:.1f} GB needed, {free / gb:.1f} GB free): torch"
    root = cache_root(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    disk, need = shutil.disk_usage(root).free, AUTO_DISK_BYTES_PER_PARAMETER * params
    if disk < need:
        return f"not enough disk under {root} for the export ({need / gb:.1f} GB needed, {disk / gb:.1f} GB free): torch"
    return None


def _parameters_on_disk(model_path) -> int | None:
    """Parameters in a model folder's safetensors files, from their headers (None: no such files)."""
    from ...models.model_size import folder_size

    if model_path is None or not Path(model_path).is_dir():
        return None
    size = folder_size(Path(model_path))
    return size.num_parameters if size.source == "safetensors" else None


def attach_forwards(runner, model, config, num_layers: int, identity: dict, adapter_identity: dict | None,
                    weights_state: Callable[[], Hashable], cache_dir=None) -> None:  # fmt: skip
    """Give ``runner`` the fused blocks and/or the ONNX Runtime forward ``config`` asks for."""
    if not config.fused and config.backend == "torch":
        return
    from ...models.loading import find_decoder_layers

    blocks = find_decoder_layers(model, num_layers)[2]
    if config.fused:
        from .fused import fused_blocks

        runner.fused = fused_blocks(model, blocks)
    if config.backend in ("onnxruntime", "openvino") and runner.layer_index > 0:
        from .onnx import check_runtime, onnx_forward

        check_runtime(config.backend)
        ident = {"weights": identity, "adapter": adapter_identity}
        precision = "bfloat16" if config.dtype == "bfloat16" else "float32"
        runner.onnx = onnx_forward(model, blocks, runner.layer_index, num_layers, ident, weights_state, cache_dir,
                                   config.backend, precision)  # fmt: skip


def _hooking(methods: Sequence) -> str | None:
    names = [m.name for m in methods if m.hooks_forward]
    return f"a method hooks into the forward ({', '.join(names)})" if names else None


def fused_state(config, methods: Sequence, runner) -> dict[str, Any] | None:
    """Whether the forwards are compiled, and why not where they were asked for but are not."""
    if not config.fused:
        return None
    hooking = _hooking(methods)
    eager = f"{hooking}: eager" if hooking else None
    state = runner.fused.describe() if runner.fused is not None else {}
    return {"requested": True, "active": eager is None and not state.get("fallback"), "eager_because": eager,
            **state}  # fmt: skip


def backend_state(config, methods: Sequence, runner, choice: BackendChoice | None = None) -> dict[str, Any] | None:
    """The exported-graph backend's runtime, precision, export and checks, and why calls run on torch where they do
    (``choice``: how ``backend="auto"`` was resolved)."""
    auto = choice is not None and choice.requested == "auto"
    decided = {"auto": choice.to_dict()} if choice is not None and auto else {}
    if config.backend == "torch":
        return {"requested": "auto", "active": False, "torch_because": choice.reason, **decided} if choice and auto else None
    hooking = _hooking(methods)
    torch_because = f"{hooking}: torch" if hooking else None
    if runner.onnx is None:
        torch_because = "layer 0 (the embeddings): torch"
    state = runner.onnx.describe() if runner.onnx is not None else {}
    return {"requested": "auto" if auto else config.backend, "active": torch_because is None and not state.get("fallback"),
            "torch_because": torch_because, **state, **decided}  # fmt: skip


def rows_per_call(forward, batch_size: int) -> int:
    """Sentences one model call takes for ``batch_size``: on the OpenVINO backend ``batch_size`` per stream (each
    stream computes its own part of a call, so a stream's products keep the rows of a batch), else ``batch_size``.
    Measured with two streams (docs/performance.md): 32 a stream 1.2x 16 a stream on smollm2-135m on an AMX CPU,
    the same speed on an AVX512-BF16 CPU without AMX."""
    if forward is None or forward.runtime != "openvino" or forward.failed is not None:
        return batch_size
    import torch

    from .onnx import openvino_streams

    return batch_size * (forward.streams if forward.session is not None else openvino_streams(torch.get_num_threads()))
