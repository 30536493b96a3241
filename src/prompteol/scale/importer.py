"""``prompteol scale import``: an existing evaluation results file as a cell of the study.

``prompteol scale import RESULTS_JSON --demo NAME --output DIR``: an existing ``prompteol eval``
results file as a cell file (marked as imported, with the source file's name).

The results file must carry what a cell needs: the scores (``tasks``, each with a ``score``), the
``mode``, the encoder configuration with ``model``, ``dtype`` and ``demonstrations``, and the
``versions``; otherwise :class:`~prompteol.errors.ConfigError` names what is missing. The
demonstration setting given is checked against the recorded demonstrations where it can be
resolved (``none`` must have none; a preset must match them).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from ..encoder.prompts.templates import parse_demonstrations
from ..errors import ConfigError
from .grid import (
    CELL_SCHEMA,
    Cell,
    cell_state,
    options_tag,
    parse_demo_settings,
    resolve_demo,
    transfer_tag,
    write_json_atomic,
)

__all__ = ["import_results", "REQUIRED"]

#: what a results file must hold to become a cell
REQUIRED = ("tasks (with a score each)", "mode", "encoder.model", "encoder.dtype", "encoder.demonstrations", "versions")

#: recorded encoder options that go into the options hash of a cell file name (as a sweep's flags would)
_TAGGED = ("template", "pooling", "normalize_text", "max_length", "quantization", "adapter", "revision")


def _tasks_text(names: list[str]) -> str:
    from ..evaluation.tasks import TASK_GROUPS

    for group in ("all", "sts", "transfer"):
        if set(names) == set(TASK_GROUPS[group]):
            return group
    return ",".join(names)


def _missing(data: dict) -> list[str]:
    missing = []
    tasks = data.get("tasks")
    scored = isinstance(tasks, dict) and bool(tasks)
    if not scored or not all(isinstance(t, dict) and isinstance(t.get("score"), (int, float))
                             for t in (tasks or {}).values()):  # fmt: skip
        missing.append("tasks (with a score each)")
    if data.get("mode") not in ("test", "fast"):
        missing.append("mode")
    recorded = data.get("encoder")
    enc: dict = recorded if isinstance(recorded, dict) else {}
    for key in ("model", "dtype", "demonstrations"):
        if key not in enc:
            missing.append(f"encoder.{key}")
    if not data.get("versions"):
        missing.append("versions")
    return missing


def import_results(results: str | Path, demo: str, output: str | Path, force: bool = False) -> Path:
    """Write the cell file of the ``prompteol eval`` results file ``results``; returns its path."""
    src = Path(results)
    try:
        data = json.loads(src.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {src}: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{src} is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{src} is not a results object")
    if data.get("schema") == "prompteol.eval-multi/1":
        labels = [r.get("label") for r in data.get("runs", [])]
        raise ConfigError(f"{src} holds {len(labels)} runs ({labels}); import needs the results of one encoder "
                          f"(`prompteol eval -o` with one model)")  # fmt: skip
    if isinstance(data.get("cell"), dict):
        raise ConfigError(f"{src} is already a cell file ({data['cell'].get('id')}); copy it into the folder instead")
    missing = _missing(data)
    if missing:
        raise ConfigError(
            f"{src} cannot be imported as a cell: it lacks {', '.join(missing)} (a cell needs {', '.join(REQUIRED)}; "
            f"`prompteol eval -o FILE` writes them all)"
        )
    settings = parse_demo_settings(demo)
    if len(settings) != 1:
        raise ConfigError(f"--demo takes one demonstration setting, got {settings}")
    setting = settings[0]
    enc = data["encoder"]
    recorded = list(parse_demonstrations(enc["demonstrations"]))
    model = str(enc["model"])
    from ..models.registry import PACKAGED_MODELS

    spec = PACKAGED_MODELS.get(model)
    params = spec.num_parameters if spec and spec.num_parameters else enc.get("num_parameters")
    preset = None
    try:
        preset, expected = resolve_demo(setting, model, params)
    except ConfigError:
        expected = None  # a preset not known here (another machine's search): taken as given
    if expected is not None and list(expected) != recorded:
        shown = [d.to_dict() for d in recorded]
        raise ConfigError(f"--demo {setting!r} means {[d.to_dict() for d in expected]} for {model}, but {src} was "
                          f"computed with {shown}; give the setting it was run with")  # fmt: skip
    names = list(data["tasks"])
    proto = (data.get("protocol") or {}).get("transfer") or {}
    tag = options_tag({**{k: enc[k] for k in _TAGGED if k in enc},
                       **transfer_tag(",".join(names), proto.get("classifier", "lbfgs"), len(proto.get("seeds") or [1]))})  # fmt: skip
    cell = Cell(model, setting, int(enc.get("layer", -1)), _tasks_text(names), data["mode"], tag)
    path = cell.path(output)
    if cell_state(path) == "done" and not force:
        raise ConfigError(f"{path} already holds a finished cell; pass --force to replace it")
    record = dict(data)
    record["cell"] = {
        "schema": CELL_SCHEMA, "id": cell.id, "status": "ok", "error": None, "model": model, "demo": setting,
        "demo_preset": preset, "demonstrations": [d.to_dict() for d in recorded], "layer": cell.layer,
        "tasks": cell.tasks, "task_names": names, "mode": cell.mode,
        "options": {k: enc[k] for k in _TAGGED if k in enc}, "options_tag": tag,
        "dtype": enc["dtype"], "dtype_requested": enc["dtype"], "memory": None,
        "num_parameters": params, "num_parameters_source": "registry" if spec else "recorded (counted after load)",
        "wall_s": data.get("elapsed_s"), "model_load_s": None, "started": data.get("date"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": f"prompteol scale import {src.name} --demo {setting}", "host": None,
        "imported_from": src.name,
    }  # fmt: skip
    return write_json_atomic(path, record)
