"""The record of an export (``prompteol_config.json``): its name and format, and reading it back."""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from ..encoder.encoder import Encoder

log = logging.getLogger(__name__)


#: the file the module reads and writes, and the version tag of its content
CONFIG_FILE = "prompteol_config.json"


FORMAT = "prompteol.sentence-transformers/1"


MODULE_TYPE = "prompteol.export.PromptEOLModule"


#: config fields that may hold a path relative to the exported folder (with copied weights)
PATH_FIELDS = ("model", "adapter")


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def load_export_record(folder: str | os.PathLike) -> dict:
    """``prompteol_config.json`` of an exported folder, checked, with the paths made absolute."""
    folder = Path(folder)
    path = folder / CONFIG_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{str(folder)!r} has no {CONFIG_FILE}: not a prompteol export") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a {FORMAT} record (format {record.get('format') if isinstance(record, dict) else None!r})")
    encoder = dict(record["encoder"])
    for name, rel in (record.get("paths") or {}).items():
        if name in PATH_FIELDS and rel:
            encoder[name] = str((folder / rel).resolve())
    return {**record, "encoder": encoder}


def check_identity(encoder: Encoder, record: dict) -> None:
    """Warn when the referenced model is not the one exported (its weights changed since)."""
    saved = record.get("identity") or {}
    if record.get("paths", {}).get("model") and (record.get("source") or {}).get("kind") == "hub":
        return  # copied from the hub: the copy is a local folder now (another kind of identity)
    now = encoder.identity or {}
    keys = ("weights", "commit")
    if any(saved.get(k) != now.get(k) for k in keys if k in saved or k in now):
        warnings.warn(f"the model of this export ({encoder.config.model!r}) is not the one it was exported with: "
                      f"identity {now} != exported {saved}; its vectors may differ from the model card's", stacklevel=3)  # fmt: skip
