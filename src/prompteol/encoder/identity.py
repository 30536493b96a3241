"""The identity of an encoder: the fingerprint that keys the embedding cache.

A fingerprint is the sha256 of:

- :data:`FINGERPRINT_VERSION`, bumped whenever a change to prompteol's code changes the
  vectors it computes (rendering, normalisation, pooling, the forward pass), so vectors cached
  by an older version are never served;
- the model's identity: for a folder (:func:`folder_identity`), the sha256 of every file that
  can change a vector (weights, ``config.json``, tokenizer files, generation config, chat
  template, ...); a folder prompteol converted from a GGUF file carries a marker naming the
  GGUF's sha256 and the versions that converted it, which stands for its weight files (no need to
  hash 0.5-6 GB again) but never for the other files: those are hashed and compared with what the
  marker recorded. A hub model: its id with the resolved commit;
- the adapter's identity: the sha256 of its weights and of ``adapter_config.json``;
- every encoder option that changes the vectors (``Option.vector`` in :mod:`prompteol.encoder.config`),
  with the layer resolved to an index.

Changing any one of them changes the fingerprint and misses the cache (tests/test_identity.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import weakref
from pathlib import Path
from typing import Any

__all__ = [
    "FINGERPRINT_VERSION", "fingerprint", "fingerprint_payload", "folder_identity", "converted_identity",
    "folder_record", "record_files", "files_sha256", "hashed_files", "WEIGHT_SUFFIXES", "MARKER", "weights_state",
]  # fmt: skip

log = logging.getLogger(__name__)

#: the marker prompteol writes in a folder it made (a GGUF conversion, a tiny random model)
MARKER = "prompteol_model.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
#: files of a model folder that never change a vector (documentation, VCS, our own marker)
_IGNORED = ("README", "LICENSE", "NOTICE", ".git")

#: History: 1 = the first release (implicit); 2 = model identity covers tokenizer/config files,
#: conversion versions, hub commit and adapter config; the forward stops at the layer by a hook.
FINGERPRINT_VERSION = 2


def fingerprint_payload(config, model_identity: dict, layer_index: int, adapter_identity: dict | None) -> dict:
    """Everything the fingerprint hashes, as JSON-serialisable data."""
    values = config.to_dict()
    options = {name: values[name] for name in config.vector_fields()}
    options["layer"] = layer_index
    if values.get("backend") == "openvino" and values.get("dtype") == "bfloat16":
        # OpenVINO's bfloat16 rounds elsewhere than torch's: other vectors, never mixed with them in a cache (its
        # float32, like ONNX Runtime's, equals torch's to float rounding: the same fingerprint)
        options["runtime"] = "openvino-bfloat16"
    return {
        "fingerprint_version": FINGERPRINT_VERSION,
        "model": model_identity,
        "adapter": adapter_identity,
        "options": options,
    }


def fingerprint(config, model_identity: dict, layer_index: int, adapter_identity: dict | None = None) -> str:
    """A stable 32-hex-digit id of the vectors an encoder computes."""
    payload: Any = fingerprint_payload(config, model_identity, layer_index, adapter_identity)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


# ---------------------------------------------------------------------------------------------- folders
def hashed_files(folder: Path) -> list[Path]:
    """Every top-level file that can change a vector: weights, config, tokenizer files, generation
    config, chat template, ... (not documentation, version control, nor the marker)."""
    return sorted(
        p for p in Path(folder).iterdir()
        if p.is_file() and not p.name.startswith(_IGNORED) and p.suffix != ".md" and p.name != MARKER
    )  # fmt: skip


def files_sha256(files: list[Path], cache_dir=None) -> dict[str, str]:
    """``{file name: sha256}``, memoised by (path, size, mtime) in ``<cache root>/fingerprints.json``."""
    from ..models.pull import sha256_file
    from ..paths import cache_root

    memo_path = cache_root(cache_dir) / "fingerprints.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    out, changed = {}, False
    for p in files:
        st = p.stat()
        key = f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        if key not in memo:
            memo[key] = sha256_file(p)
            changed = True
        out[p.name] = memo[key]
    if changed:
        try:
            from ..fileio import write_text_atomic

            write_text_atomic(memo_path, json.dumps(memo, indent=1))
        except OSError:
            log.warning("could not write %s; file hashes will be recomputed next time", memo_path)
    return out


def converted_identity(info: dict) -> dict:
    """The weights of a folder prompteol converted from a GGUF file, as its marker names them."""
    return {
        "weights": f"gguf-sha256:{info['gguf_sha256']}",
        # the tokenizer and weights of a conversion depend on the libraries that did it
        "conversion": info.get("conversion") or "unrecorded (converted before prompteol recorded versions)",
    }


def folder_record(folder: Path) -> dict:
    """What a marker records of its folder: the sha256 of every file that is not a weight file
    (``files``: config, tokenizer, templates; small, hashed each time) and the size of each weight
    file (``weight_sizes``), so that a later edit is seen."""
    from ..models.pull import sha256_file

    files = hashed_files(folder)
    return {
        "files": {p.name: sha256_file(p) for p in files if p.suffix not in WEIGHT_SUFFIXES},
        "weight_sizes": {p.name: p.stat().st_size for p in files if p.suffix in WEIGHT_SUFFIXES},
    }


def _owned(folder: Path, cache_dir=None) -> bool:
    """A folder prompteol made in its own cache (a pulled or converted model)."""
    from ..paths import cache_root

    root = cache_root(cache_dir).resolve()
    here = folder.resolve()
    return any(here.parent == root / sub for sub in ("models", "gguf"))


def folder_identity(folder: str | Path, cache_dir=None) -> dict:
    """The identity of a transformers folder: what the fingerprint hashes of its files.

    Without a marker: the sha256 of every file that can change a vector. With prompteol's marker
    (a GGUF conversion, a tiny random model): the marker's identity of the weights (the GGUF's sha256
    and the conversion's versions), and every other file hashed and compared with what the marker
    recorded at conversion; a file edited, added or removed since (or a weight file of another size)
    adds the hashes of all of them, so the fingerprint changes. A marker written before prompteol
    recorded its files is completed the first time the folder is read, if it is in prompteol's own
    cache; anywhere else (a copy) the hashes are always added.
    """
    from ..errors import ModelNotFoundError

    folder = Path(folder)
    marker = folder / MARKER
    info = _read_marker(marker)
    if info is not None and (info.get("gguf_sha256") or info.get("weights_id")):
        base = converted_identity(info) if info.get("gguf_sha256") else {"weights": str(info["weights_id"])}
        now = folder_record(folder)
        recorded = {k: info[k] for k in ("files", "weight_sizes") if k in info}
        if not recorded and _owned(folder, cache_dir):
            _write_marker(marker, {**info, **now})  # trust on first use, in prompteol's own cache only
            recorded = now
        if recorded == now:
            return base
        if now["weight_sizes"] != recorded.get("weight_sizes"):  # the weights themselves changed: hash them
            return {**base, "files": files_sha256(hashed_files(folder), cache_dir)}
        return {**base, "files": now["files"]}
    files = hashed_files(folder)
    if not any(p.suffix in WEIGHT_SUFFIXES for p in files):
        raise ModelNotFoundError(f"{folder} holds no weight files ({', '.join(WEIGHT_SUFFIXES)})")
    hashes = files_sha256(files, cache_dir)
    digest = hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()
    return {"weights": f"files-sha256:{digest}", "files": hashes}


def _read_marker(marker: Path) -> dict | None:
    if not marker.is_file():
        return None
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None  # an unreadable marker vouches for nothing: every file is hashed
    return info if isinstance(info, dict) else None


def record_files(folder: str | Path) -> None:
    """Record the files of a folder prompteol made (or copied: an export) in its marker, if the marker
    has no record yet, so that the folder keeps its identity while its files stay as they are."""
    marker = Path(folder) / MARKER
    info = _read_marker(marker)
    if info is not None and "files" not in info:
        _write_marker(marker, {**info, **folder_record(Path(folder))})


def _write_marker(marker: Path, info: dict) -> None:
    from ..fileio import write_text_atomic

    try:
        write_text_atomic(marker, json.dumps(info, indent=2) + "\n")
    except OSError:  # a read-only cache: the record is recomputed next time, the identity is the same
        log.debug("could not record the files of %s in its marker", marker.parent)


# ------------------------------------------------------------------------------ weights changed in place
_registrations = [0]  # parameters and submodules registered anywhere in this process (torch's global hooks)
_params_of: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (registrations then, its parameters)


def _count_registration(*args) -> None:
    _registrations[0] += 1


def weights_state(model) -> tuple[int, int, int]:
    """Changes whenever ``model``'s weights change in place (an optimizer step bumps each tensor's version) or a
    parameter or submodule is added or replaced anywhere (an adapter injected in place). The parameter list is
    walked once and kept until the next registration, so the check costs a sum over the tensors, not a walk of
    the module tree (it runs a few times a batch)."""
    import torch

    if not _registrations[0]:  # first use: count every later registration of a parameter or module
        _registrations[0] = 1
        torch.nn.modules.module.register_module_parameter_registration_hook(_count_registration)
        torch.nn.modules.module.register_module_module_registration_hook(_count_registration)
    known = _params_of.get(model)
    if known is None or known[0] != _registrations[0]:
        known = _params_of[model] = (_registrations[0], list(model.parameters()))
    params = known[1]
    return (id(model), len(params), sum(p._version for p in params))
