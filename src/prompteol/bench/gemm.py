"""The float32 / bfloat16 matmul peaks of the machine at the thread count (``gemm``, ``gemm-bf16``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def _sync(device: str) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def measure_gemm(threads: int, device: str = "cpu", dtype: str = "float32", budget_s: float = 4.0) -> dict:
    """Best matmul FLOP/s over square sizes, ``a @ b`` and ``linear(a, b)`` (``a @ b.T``, what a Linear
    layer runs). An operation stops growing at the size whose one product would take over
    ``budget_s`` at its own rate so far (a CPU without native bfloat16 runs ``a @ b`` ~100x slower
    than float32)."""
    import torch
    import torch.nn.functional as F

    sizes = (512, 1024, 2048, 3072, 4096) if device == "cpu" else (4096, 8192)
    ops: dict[str, Callable[..., Any]] = {"matmul": torch.matmul, "linear": F.linear}
    rate = dict.fromkeys(ops, 0.0)
    measured: dict[str, list[int]] = {name: [] for name in ops}
    for n in sizes:
        flops = 2 * n**3
        todo = [name for name in ops if not rate[name] or flops / rate[name] <= budget_s]
        if not todo:
            break
        a = torch.randn(n, n, device=device, dtype=getattr(torch, dtype))
        b = torch.randn(n, n, device=device, dtype=getattr(torch, dtype))
        for name in todo:
            t = time.perf_counter()
            ops[name](a, b)  # warm-up
            _sync(device)
            first = time.perf_counter() - t
            reps = 3 if first < 1.0 else 1
            for _ in range(reps):
                t = time.perf_counter()
                ops[name](a, b)
                _sync(device)
                rate[name] = max(rate[name], flops / (time.perf_counter() - t))
            measured[name].append(n)
    best = max(rate, key=lambda k: rate[k])
    return {"gemm_flops": rate[best], "gemm_dtype": dtype, "gemm_op": best, "gemm_sizes": measured[best],
            "gemm_flops_by_op": rate}  # fmt: skip
