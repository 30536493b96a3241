"""Which forward runs an encoder's model calls (torch eager, fused blocks, ONNX Runtime), and what describe() says.

``fused=True`` attaches the model's compiled block forwards (:mod:`.fused`), ``backend="onnxruntime"`` its
ONNX Runtime forward at the encoder's read-out layer (:mod:`.onnx`); both belong to the loaded model and
are shared by every encoder derived from it. Methods that hook inside the forward run on eager torch.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

__all__ = ["attach_forwards", "fused_state", "backend_state"]


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
    if config.backend == "onnxruntime" and runner.layer_index > 0:
        from .onnx import check_onnxruntime, onnx_forward

        check_onnxruntime()
        ident = {"weights": identity, "adapter": adapter_identity}
        runner.onnx = onnx_forward(model, blocks, runner.layer_index, num_layers, ident, weights_state, cache_dir)


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


def backend_state(config, methods: Sequence, runner) -> dict[str, Any] | None:
    """The ONNX Runtime backend's export and checks, and why calls run on torch where they do."""
    if config.backend == "torch":
        return None
    hooking = _hooking(methods)
    torch_because = f"{hooking}: torch" if hooking else None
    if runner.onnx is None:
        torch_because = "layer 0 (the embeddings): torch"
    state = runner.onnx.describe() if runner.onnx is not None else {}
    return {"requested": config.backend, "active": torch_because is None and not state.get("fallback"),
            "torch_because": torch_because, **state}  # fmt: skip
