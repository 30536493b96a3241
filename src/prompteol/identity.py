"""The identity of an encoder: the fingerprint that keys the embedding cache.

A fingerprint is the sha256 of:

- :data:`FINGERPRINT_VERSION`, bumped whenever a change to prompteol's code changes the
  vectors it computes (rendering, normalisation, pooling, the forward pass), so vectors cached
  by an older version are never served;
- the model's identity (:mod:`prompteol.models.loading`): the sha256 of the GGUF file and the
  versions of the libraries that converted it, or the sha256 of every weight, tokenizer and
  config file of a local folder, or the hub id with the resolved commit;
- the adapter's identity: the sha256 of its weights and of ``adapter_config.json``;
- every encoder option that changes the vectors (``Option.vector`` in :mod:`prompteol.config`),
  with the layer resolved to an index.

Changing any one of them changes the fingerprint and misses the cache (tests/test_identity.py).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["FINGERPRINT_VERSION", "fingerprint", "fingerprint_payload"]

#: History: 1 = the first release (implicit); 2 = model identity covers tokenizer/config files,
#: conversion versions, hub commit and adapter config; the forward stops at the layer by a hook.
FINGERPRINT_VERSION = 2


def fingerprint_payload(config, model_identity: dict, layer_index: int, adapter_identity: dict | None) -> dict:
    """Everything the fingerprint hashes, as JSON-serialisable data."""
    values = config.to_dict()
    options = {name: values[name] for name in config.vector_fields()}
    options["layer"] = layer_index
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
