"""The provenance of a result: one collector for every record prompteol writes.

:func:`provenance` is the block that every writer of a result record adds under ``"provenance"``
(evaluation results, benchmarks, scaling cells, demonstration and settings searches, training runs,
exports, the scripts under ``benchmarks/``): the schema, the date, prompteol's version and git commit
(when it runs from a checkout, with a dirty flag), the fingerprint version, the machine (CPU model and
the flags that decide low-precision speed, cores, threads used, memory), the versions of the libraries
that can change a number, the exact command and the environment variables that change a run.
:func:`read_provenance` reads it back from any record, old shapes included.

Nothing here imports torch at the top.
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = [
    "CPU_FLAGS", "LIBRARIES", "PROVENANCE_SCHEMA", "cpu_info", "cpu_model", "cpu_flags", "machine_info",
    "native_bf16", "package_versions", "versions_of", "git_info", "command_line", "provenance", "read_provenance",
]  # fmt: skip

#: version tag of the provenance block
PROVENANCE_SCHEMA = "prompteol.provenance/1"
#: the libraries whose version can change a number (a writer adds its own: peft, the benchmark's peers, ...)
LIBRARIES = ("prompteol", "torch", "transformers", "tokenizers", "safetensors", "gguf", "accelerate", "numpy",
             "scipy", "scikit-learn", "sentence-transformers", "mteb", "peft", "onnx", "onnxruntime", "openvino")  # fmt: skip
#: environment variables that change a run (recorded when set; never secrets such as PROMPTEOL_API_KEY)
ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "PROMPTEOL_DATA", "PROMPTEOL_CACHE",
            "PROMPTEOL_THREADS", "CI", "TORCHINDUCTOR_FREEZING", "PROMPTEOL_ALLOW_LOSSY_INT8", "PROMPTEOL_BACKEND",
            "PROMPTEOL_DTYPE", "PROMPTEOL_OV_STREAMS")  # fmt: skip

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


def memory_gb() -> float | None:
    """Total memory of the machine (``MemTotal`` of ``/proc/meminfo``), GiB."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def versions_of(dists: Iterable[str], missing: str | None = None) -> dict[str, str | None]:
    """``{distribution: installed version}``; ``missing`` for one that is not installed (``None``: left out)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for dist in dict.fromkeys(dists):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            if missing is not None:
                out[dist] = missing
    return out


def package_versions(extra: Iterable[str] = ()) -> dict[str, str | None]:
    """Python's version and those of :data:`LIBRARIES` that are installed, plus ``extra`` (``None`` when
    one of those is not installed: a record then says the package was missing)."""
    out = {"python": platform.python_version(), **versions_of(LIBRARIES)}
    out.update({dist: v or None for dist, v in versions_of(extra, missing="").items()})
    return out


@lru_cache(maxsize=1)
def git_info() -> dict[str, Any] | None:
    """The git commit of the checkout prompteol runs from (``git rev-parse HEAD``), whether its tracked
    files differ from it (``dirty``) and which files under ``src/`` do; None for an installed package
    or without git."""
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(here), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()  # fmt: skip

    try:
        top = Path(git("rev-parse", "--show-toplevel"))
        if not (top / "src" / "prompteol").resolve() == here:  # a checkout, but not of this package
            return None
        commit = git("rev-parse", "HEAD")
        changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]
    except (OSError, subprocess.SubprocessError):
        return None
    src = [c for c in changed if c.startswith("src/")]
    return {"commit": commit, "dirty": bool(changed), "changed_src": src[:50]}


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command as it was typed: ``prompteol ...`` for the CLI, ``python script.py ...`` for a script."""
    argv = list(sys.argv if argv is None else argv)
    if not argv:
        return ""
    first = argv[0]
    package = Path(__file__).resolve().parent
    if first.endswith(".py") and package in Path(first).resolve().parents:  # python -m prompteol.<module>
        module = Path(first).resolve().relative_to(package.parent).with_suffix("")
        head = ["python", "-m", ".".join(p for p in module.parts if p != "__main__")]
    elif first.endswith(".py"):
        path = Path(first)
        try:
            first = str(path.resolve().relative_to(Path.cwd()))
        except ValueError:
            first = str(path)
        head = ["python", first]
    elif first in ("-c", "-m"):
        head = ["python", first]
    else:
        head = [Path(first).name]
    return shlex.join([*head, *argv[1:]])


def provenance(command: str | Sequence[str] | None = None, *, threads: int | None = None, device: str = "cpu",
               packages: Iterable[str] = ()) -> dict[str, Any]:  # fmt: skip
    """The provenance block of a result record.

    Args:
        command: the exact command (a string, or its arguments); default: this process's command line.
        threads: the threads the result used (default: torch's current count).
        device: where it ran (``cpu``, ``cuda:0``): the GPU is named for CUDA devices.
        packages: libraries beyond :data:`LIBRARIES` whose versions matter to this record.
    """
    from . import __version__
    from .encoder.identity import FINGERPRINT_VERSION

    if command is not None and not isinstance(command, str):
        command = shlex.join([str(c) for c in command])
    machine = machine_info(threads, device)
    machine.pop("hostname", None)  # records are committed: the host's name is not provenance
    machine["memory_gb"] = memory_gb()
    if hasattr(os, "getloadavg"):  # when the record is written: a shared machine's load over the last 1, 5, 15 min
        machine["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return {
        "schema": PROVENANCE_SCHEMA,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "prompteol": __version__,
        "git": git_info(),
        "fingerprint_version": FINGERPRINT_VERSION,
        "command": command_line() if command is None else command,
        "machine": machine,
        "versions": package_versions(packages),
        "env": {k: os.environ[k] for k in ENV_VARS if os.environ.get(k)},
    }


def read_provenance(record: Mapping[str, Any]) -> dict[str, Any]:
    """The provenance of any record prompteol wrote: its ``provenance`` block, else what an older record
    holds in its own shape (``date``, ``versions``, ``machine``/``host``, ``command``), with ``schema``
    None and the missing fields None."""
    block = record.get("provenance")
    if isinstance(block, Mapping):
        return dict(block)
    found = record.get("cell")
    cell: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    machine = record.get("machine") or cell.get("host")
    return {
        "schema": None,
        "date": record.get("date") or cell.get("started"),
        "prompteol": (record.get("versions") or {}).get("prompteol") or record.get("prompteol_version"),
        "git": None,
        "fingerprint_version": None,
        "command": record.get("command") or cell.get("command"),
        "machine": dict(machine) if isinstance(machine, Mapping) else None,
        "versions": dict(record.get("versions") or {}) or None,
        "env": None,
    }
