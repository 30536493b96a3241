"""Adapters and resumable checkpoints on disk.

Layout of an output folder::

    prompteol_train.json      the run (base model, encoder config, training config, data checksum)
    train.log, metrics.jsonl  log lines; one JSON object per step and per evaluation
    checkpoint-<step>/        adapter + prompteol_train.json + trainer_state.pt + rng-rank<r>.pt
    best/                     adapter + prompteol_train.json (with its STS-B dev score)
    final/                    adapter + prompteol_train.json after the last step
    summary.json              scores before/after/best, steps, time

Every adapter folder holds ``prompteol_train.json`` whose ``base_model`` is the ``--model``
given to ``prompteol train``, so ``Encoder.from_pretrained(adapter_dir)`` loads it alone.
Folders are written under a temporary name and renamed, so a crash never leaves a half one.
"""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from ..fileio import give_umask_modes, replace_folder, write_json_atomic

__all__ = [
    "RUN_FILE",
    "STATE_FILE",
    "save_adapter",
    "save_checkpoint",
    "latest_checkpoint",
    "load_checkpoint",
    "rng_state",
    "set_rng_state",
    "prune_checkpoints",
]

RUN_FILE = "prompteol_train.json"
STATE_FILE = "trainer_state.pt"
_CKPT = re.compile(r"^checkpoint-(\d+)$")


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_json_atomic(path, data)


def save_adapter(peft_model, folder: Path, run_info: dict[str, Any]) -> None:
    """The LoRA weights (peft format, loadable onto ``AutoModel``) and ``prompteol_train.json``."""
    peft_model.save_pretrained(str(folder))
    write_json(folder / RUN_FILE, run_info)
    give_umask_modes(folder)  # save_pretrained leaves the weights 0600: readable by the team, as any output


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def temporary_folder(folder: Path) -> Path:
    """Where a checkpoint or adapter folder is assembled (every rank writes there) before :func:`commit_folder`."""
    return folder.with_name(folder.name + ".tmp")


def begin_folder(folder: Path) -> Path:
    """A fresh temporary folder beside ``folder`` (rank 0 calls this before the others write)."""
    tmp = temporary_folder(folder)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def commit_folder(folder: Path) -> None:
    """Move the temporary folder into place, replacing ``folder``."""
    replace_folder(temporary_folder(folder), folder)


def save_checkpoint(tmp: Path, peft_model, run_info: dict[str, Any], state: dict[str, Any]) -> None:
    """Rank 0's part of a checkpoint (each rank adds its ``rng-rank<r>.pt`` with :func:`save_rng`)."""
    save_adapter(peft_model, tmp, run_info)
    torch.save(state, tmp / STATE_FILE)


def save_rng(tmp: Path, rank: int) -> None:
    torch.save(rng_state(), tmp / f"rng-rank{rank}.pt")


def checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``output_dir``, oldest first."""
    out = []
    if output_dir.is_dir():
        for p in output_dir.iterdir():
            m = _CKPT.match(p.name)
            if m and (p / STATE_FILE).is_file():
                out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(output_dir: Path) -> Path | None:
    found = checkpoints(output_dir)
    return found[-1][1] if found else None


def prune_checkpoints(output_dir: Path, keep: int) -> None:
    for _, path in checkpoints(output_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(path, ignore_errors=True)


def load_checkpoint(folder: Path, peft_model, rank: int) -> dict[str, Any]:
    """Load the adapter weights into ``peft_model``, set this rank's RNG; return the trainer state."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = folder / "adapter_model.safetensors"
    device = next(peft_model.parameters()).device
    result = set_peft_model_state_dict(peft_model, load_file(str(weights), device=str(device)))
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ConfigError(f"{weights} does not fit this model (unexpected keys {unexpected[:3]}...)")
    rng_file = folder / f"rng-rank{rank}.pt"
    if not rng_file.is_file():
        raise ConfigError(f"{folder} has no RNG state for process {rank}; resume with the same number of processes")
    set_rng_state(torch.load(rng_file, weights_only=False))
    return torch.load(folder / STATE_FILE, weights_only=False, map_location="cpu")  # the optimizer moves its state
