"""Where a result was computed: the machine (CPU model and the flags that decide low-precision speed,
cores, threads) and whether the CPU runs bfloat16 natively. One collector for every record.

Nothing here imports torch at the top.
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["CPU_FLAGS", "cpu_info", "cpu_model", "cpu_flags", "machine_info", "native_bf16"]

#: the CPU flags recorded with every speed or precision number
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


@lru_cache(maxsize=1)
def cpu_info() -> tuple[str, frozenset[str]]:
    """The CPU model name and flags from ``/proc/cpuinfo`` (empty where it cannot be read)."""
    model, flags = "", frozenset[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = frozenset(value.split())
    except OSError:
        pass
    return model, flags


def cpu_model() -> str:
    """The CPU model name (``/proc/cpuinfo``), else ``platform.processor()``: what records name."""
    return cpu_info()[0] or platform.processor()


def cpu_flags() -> dict[str, bool]:
    """``{flag: present}`` for each of :data:`CPU_FLAGS`."""
    flags = cpu_info()[1]
    return {f: f in flags for f in CPU_FLAGS}


def native_bf16() -> bool:
    """Whether the CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16): there bfloat16 is about 2-3x
    faster than float32; without it (AVX2 only) several times slower."""
    flags = cpu_info()[1]
    return "avx512_bf16" in flags or "amx_bf16" in flags


def machine_info(threads: int | None = None, device: str = "cpu") -> dict[str, Any]:
    """CPU model and flags, cores, threads used, torch's CPU capability, the GPU (if any)."""
    model = cpu_model() or platform.machine()
    info: dict[str, Any] = {"platform": platform.platform(), "hostname": platform.node(), "processor": model,
                            "cpus": os.cpu_count(), "threads": threads, "flags": cpu_flags()}  # fmt: skip
    try:
        import torch

        if threads is None:
            info["threads"] = torch.get_num_threads()
        info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        info["gpu"] = torch.cuda.get_device_name(torch.device(device)) if str(device).startswith("cuda") else None
    except Exception:  # pragma: no cover - a broken CUDA setup must not lose the results
        info["gpu"] = None
    return info
