"""Writing an exported sentence-transformers folder, under a temporary name renamed into place.

Writing the exported folder: the config record, ``modules.json``, the sentence-transformers config, the
model card and (``copy_weights``) the weights, built under a temporary name and renamed into place."""

from __future__ import annotations

import logging
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..encoder.identity import record_files
from ..errors import ConfigError
from ..fileio import give_umask_modes, write_folder_atomic
from ..records import provenance
from .card import load_results, model_card
from .record import CONFIG_FILE, FORMAT, MODULE_TYPE, PATH_FIELDS, write_json

if TYPE_CHECKING:  # pragma: no cover
    from ..encoder.encoder import Encoder

log = logging.getLogger(__name__)

def export_sentence_transformers(
    encoder: Encoder,
    out: str | os.PathLike,
    *,
    copy_weights: bool = False,
    results: dict | str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``encoder`` as a sentence-transformers folder at ``out``; returns its path.

    ``copy_weights`` copies the model (and adapter) folder into ``out``; ``results`` is a
    ``prompteol eval`` results dict or JSON file whose scores go into the model card.
    ``overwrite`` replaces an existing non-empty ``out`` (else :class:`~prompteol.errors.ConfigError`).
    """
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{str(out)!r} is a file; give a folder to export to")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{str(out)!r} exists and is not empty; choose another folder or pass overwrite=True (--force)")
    run = load_results(results) if results is not None else None
    config = encoder.config
    with write_folder_atomic(out) as tmp:
        paths: dict[str, str] = {}
        fields: dict[str, Any] = {}
        if copy_weights:
            shutil.copytree(_model_folder(encoder), tmp / "model", ignore=shutil.ignore_patterns(".git"))
            if "files" not in encoder.identity:  # the source's files matched its marker (or it has none):
                record_files(tmp / "model")  # the copy's marker records them, so the copy keeps the identity
            fields["model"], paths["model"] = "model", "model"
            adapter = _adapter_folder(encoder)
            if adapter is not None:
                shutil.copytree(adapter, tmp / "adapter", ignore=shutil.ignore_patterns(".git"))
                fields["adapter"], paths["adapter"] = "adapter", "adapter"
            else:
                fields["adapter"] = None
            give_umask_modes(tmp)  # copies keep the source's modes (0600 weights): an export is for sharing
        else:
            for name in PATH_FIELDS:
                value = getattr(config, name)
                if value is not None and Path(value).expanduser().exists():
                    fields[name] = str(Path(value).expanduser().resolve())  # a local path works from anywhere
        record = {
            "format": FORMAT,
            "encoder": {**config.to_dict(), **fields},
            "paths": paths,
            "exported_from": {"model": config.model, "adapter": config.adapter},
            "identity": encoder.identity,
            "adapter_identity": encoder.adapter_identity,
            "source": {k: (encoder.source or {}).get(k) for k in ("kind", "ref")},  # no local cache paths
            "fingerprint": encoder.fingerprint,
            "dim": encoder.dim,
            "num_layers": encoder.num_layers,
            "layer_index": encoder.layer_index,
            "prompteol_version": __version__,
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "provenance": provenance(device=str(config.device)),
        }
        write_json(tmp / CONFIG_FILE, record)
        write_json(tmp / "modules.json", [{"idx": 0, "name": "0", "path": "", "type": MODULE_TYPE}])
        write_json(tmp / "config_sentence_transformers.json", _st_config())
        (tmp / "README.md").write_text(model_card(encoder, record, run), encoding="utf-8")
    return out


def _st_config() -> dict:
    from ..records import versions_of

    keys = {"sentence-transformers": "sentence_transformers", "transformers": "transformers", "torch": "pytorch"}
    versions = {keys[d]: v for d, v in versions_of(keys).items()}
    return {
        "model_type": "SentenceTransformer",
        "__version__": {**versions, "prompteol": __version__},
        "prompts": {},
        "default_prompt_name": None,
        "similarity_fn_name": "cosine",
        "requirements": {"prompteol": {"specifier": f">={__version__}", "reason": "the PromptEOLModule module class"}},
    }


def _model_folder(encoder: Encoder) -> Path:
    """The transformers folder the encoder's base model was loaded from (downloaded for a hub id)."""
    source = encoder.source or {}
    path = source.get("path")
    if source.get("kind") == "hub":
        from huggingface_hub import snapshot_download

        revision = encoder.identity.get("commit") or encoder.config.revision
        return Path(snapshot_download(str(path), revision=revision))
    if not path or not Path(path).is_dir():
        raise ConfigError(f"cannot copy the weights of {encoder.config.model!r}: no model folder is known ({path!r})")
    return Path(path)


def _adapter_folder(encoder: Encoder) -> Path | None:
    from ..models.loading import ADAPTER_CONFIG

    adapter = encoder.config.adapter
    if adapter is None and (Path(encoder.config.model).expanduser() / ADAPTER_CONFIG).is_file():
        adapter = encoder.config.model  # an adapter folder given as the model (it records its base)
    return Path(adapter).expanduser() if adapter else None
