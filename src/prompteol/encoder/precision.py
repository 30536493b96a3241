"""Which compute precision runs fast and accurately here: ``dtype="auto"``.

- CUDA: bfloat16 (float16 on a GPU without bfloat16);
- CPU with native bfloat16 (AVX512-BF16 or AMX-BF16: torch's CPU capability reports it): bfloat16,
  measured 2-3x faster than float32 on large matmuls, STS-B dev within 0.3 of float32 on the four
  packaged models (docs/performance.md, docs/scaling/precision);
- any other CPU (AVX2 only): float32, since bfloat16 is emulated there and measured 4-6x slower.

An explicit dtype is used as given; bfloat16 on a CPU without native support works but warns once,
naming the faster choice. The decision (requested, resolved, reason, CPU flags) goes into
``Encoder.describe()`` and so into every result record.

Nothing here imports torch at the top.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

from ..records import cpu_flags, native_bf16

__all__ = ["DtypeChoice", "resolve_dtype"]

log = logging.getLogger(__name__)
_warned: set[str] = set()


@dataclass(frozen=True)
class DtypeChoice:
    """The dtype an encoder computes in, and why."""

    dtype: str
    requested: str
    reason: str
    flags: dict[str, bool] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _on_cuda(device: str) -> bool:
    import torch

    return str(device).startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def resolve_dtype(dtype: str, device: str = "cpu", backend: str = "torch") -> DtypeChoice:
    """Resolve ``auto`` for ``device`` and ``backend``; warn once when an explicit bfloat16 will be slow on this CPU."""
    flags = cpu_flags()
    if backend == "onnxruntime" and dtype == "auto":
        return DtypeChoice("float32", "auto", "backend onnxruntime: float32 (its CPU kernels' fast precision)", flags)
    if backend == "openvino" and dtype == "auto":
        if native_bf16():
            return DtypeChoice("bfloat16", "auto", "backend openvino on a CPU with native bfloat16 (AVX512-BF16/AMX): "
                               "bfloat16 inference precision", flags)  # fmt: skip
        return DtypeChoice("float32", "auto", "backend openvino on a CPU without native bfloat16: float32", flags)
    if _on_cuda(device):
        if dtype != "auto":
            return DtypeChoice(dtype, dtype, "given", flags)
        import torch

        bf16 = torch.cuda.is_bf16_supported()
        return DtypeChoice("bfloat16" if bf16 else "float16", "auto",
                           "CUDA: bfloat16" if bf16 else "CUDA without bfloat16: float16", flags)  # fmt: skip
    native = native_bf16()
    if dtype == "auto":
        if native:
            return DtypeChoice("bfloat16", "auto", "CPU with native bfloat16 (AVX512-BF16/AMX): bfloat16", flags)
        return DtypeChoice("float32", "auto", "CPU without native bfloat16 (no AVX512-BF16/AMX): float32", flags)
    if dtype in ("bfloat16", "bf16-mixed") and not native and dtype not in _warned:
        _warned.add(dtype)
        log.warning("dtype=%s on a CPU without native bfloat16 (no AVX512-BF16 or AMX) is emulated and was measured "
                    "4-6x slower than float32 on such a CPU (docs/performance.md); dtype='float32' (or 'auto') is "
                    "faster here", dtype)  # fmt: skip
    return DtypeChoice(dtype, dtype, "given", flags)
