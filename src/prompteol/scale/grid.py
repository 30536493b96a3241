"""The cells of a scaling sweep and their file names.

A cell is one evaluation: a model reference x a demonstration setting x a layer, on a task
set and a mode. Its results live in ``<output>/<cell id>.json``; the id is deterministic and
readable::

    <model-slug>__<demo-slug>__L<layer>__<tasks>-<mode>[__o<options hash>].json
    e.g.  smollm2-135m__paper__L-1__sts-test.json
          facebook--opt-1.3b__none__L-1__all-fast.json

The ``__o<hash>`` part appears only when encoder options other than the defaults were given
(``--template``, ``--pooling``, an explicit ``--dtype``, ...), so sweeps with different options
never share a file. A model given as a path is named by its last path component (so a sweep
continued on another machine, with the model somewhere else, finds the same files).

Demonstration settings (``--demos``):

- ``none``: no demonstration;
- ``paper``: the paper's demonstration for the OPT size closest to the model's parameter count
  (the registry's count for packaged models, else the loaded model's);
- ``default``: the model's own leak-free searched preset (``searched-leakfree``, else
  ``searched-stsb-dev``; see :mod:`prompteol.encoder.prompts.presets`);
- ``stsb-dev``: the preset ``searched-stsb-dev`` (selected on STS-B dev, as the paper did);
- any other preset name (``paper-opt-2.7b``, ``searched-leakfree``, a saved preset);
- an explicit ``"sentence|word"``.

Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..encoder.prompts.templates import Demonstration, parse_demonstration
from ..errors import ConfigError
from ..fileio import write_json_atomic

__all__ = [
    "Cell",
    "SPECIAL_DEMOS",
    "CELL_SCHEMA",
    "build_cells",
    "split_list",
    "parse_demo_settings",
    "parse_layers",
    "resolve_demo",
    "tasks_slug",
    "options_tag",
    "slugify",
    "write_json_atomic",
    "read_cell_file",
    "cell_state",
]

#: version tag of the ``cell`` block of a cell file
CELL_SCHEMA = "prompteol.scale-cell/1"

#: demonstration settings with a meaning of their own (any other name is a preset name)
SPECIAL_DEMOS = {
    "none": "no demonstration",
    "paper": "the paper's demonstration for the closest OPT size (by parameter count)",
    "default": "the model's own leak-free searched preset (searched-leakfree, else searched-stsb-dev)",
    "stsb-dev": "the preset searched-stsb-dev (selected on STS-B dev, as the paper did; not leak-free)",
}

#: encoder options that never change a vector, left out of the options hash of a file name: the device, and
#: every runtime option declared ``vector=False`` (prefix_cache, packing, fused, backend, ...)
_NOT_IN_TAG_LOAD = ("device",)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def slugify(text: str, limit: int = 60) -> str:
    """Lower-case ``[a-z0-9._-]`` text (other characters become ``-``), at most ``limit`` characters."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-.") or "x"
    return slug[:limit].rstrip("-.")


def _short_hash(value: Any, n: int = 8) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:n]


def model_slug(ref: str) -> str:
    """``facebook/opt-1.3b`` -> ``facebook--opt-1.3b``; a path -> its last component."""
    looks_like_path = ref.startswith((".", "/", "~")) or ref.endswith((".gguf", "/")) or Path(ref).exists()
    if looks_like_path:
        name = Path(ref.rstrip("/")).name or ref
        return slugify(name.removesuffix(".gguf") + ("-gguf" if name.endswith(".gguf") else ""))
    return slugify(ref.replace("/", "--"))


def demo_slug(setting: str) -> str:
    """A preset name as it is; an explicit ``sentence|word`` as ``demo-<word>-<hash>``."""
    if "|" in setting:
        word = setting.rpartition("|")[2]
        return f"demo-{slugify(word, 24)}-{_short_hash(setting)}"
    return slugify(setting, 40)


def tasks_slug(tasks: str) -> str:
    """``sts`` / ``transfer`` / ``all`` as they are; a list of tasks joined with ``+`` (hashed when long)."""
    pieces = [p.strip() for p in str(tasks).split(",") if p.strip()]
    slug = "+".join(slugify(p, 30) for p in pieces) or "none"
    if len(slug) > 40:
        slug = f"{slug[:28].rstrip('+-.')}+{_short_hash(','.join(pieces))}"
    return slug


def transfer_tag(tasks: str, classifier: str = "lbfgs", seeds: int = 1) -> dict[str, Any]:
    """The transfer protocol's settings that name a cell apart (with the encoder options of :func:`options_tag`):
    a classifier other than ``lbfgs`` or more than one seed, when the cell's tasks include a transfer task, so a
    sweep with ``--classifier senteval`` never takes an ``lbfgs`` cell of the same encoder for its own."""
    from ..evaluation.tasks import resolve_tasks

    if not any(t.kind == "transfer" for t in resolve_tasks(tasks)):
        return {}
    return {**({"transfer_classifier": classifier} if classifier != "lbfgs" else {}),
            **({"transfer_seeds": int(seeds)} if int(seeds) != 1 else {})}  # fmt: skip


def options_tag(options: dict[str, Any]) -> str | None:
    """A short hash of the encoder options given (other than the defaults), ``None`` without any."""
    from ..encoder.config import EncoderConfig
    from ..options import options_of

    not_in_tag = {*_NOT_IN_TAG_LOAD, *(n for n, o, _ in options_of(EncoderConfig) if o.kind == "runtime" and not o.vector)}
    defaults = EncoderConfig().to_dict()
    given: dict[str, Any] = {}
    for name, value in sorted(options.items()):
        if name in not_in_tag or value is None:
            continue
        if name == "template":  # a name or a recorded template (dict): compared in the JSON form
            value = EncoderConfig.from_dict({"template": value}).to_dict()["template"]
        if name in defaults and value == defaults[name]:
            continue
        given[name] = value
    return _short_hash(given) if given else None


@dataclass(frozen=True)
class Cell:
    """One evaluation of the sweep."""

    model: str
    demo: str
    layer: int
    tasks: str
    mode: str
    options_tag: str | None = None

    @property
    def id(self) -> str:
        base = f"{model_slug(self.model)}__{demo_slug(self.demo)}__L{self.layer}__{tasks_slug(self.tasks)}-{self.mode}"
        return base + (f"__o{self.options_tag}" if self.options_tag else "")

    @property
    def filename(self) -> str:
        return self.id + ".json"

    def path(self, output: str | Path) -> Path:
        return Path(output) / self.filename


# ------------------------------------------------------------------------------------ parsing
def split_list(values: str | Iterable[str] | None) -> list[str]:
    """Comma-separated items of one or several (repeated-flag) values, in order, deduplicated."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    out: list[str] = []
    for value in values:
        out.extend(p.strip() for p in str(value).split(",") if p.strip())
    return list(dict.fromkeys(out))


def parse_demo_settings(values: str | Iterable[str] | None) -> list[str]:
    """Demonstration settings from ``--demos`` values (comma-separated, the flag repeatable).

    An explicit ``sentence|word`` may contain commas: a piece that is neither a setting name
    nor a ``sentence|word`` (e.g. ``A man``, from ``A man, a plan.|Word``) is joined with the next.
    """
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    out: list[str] = []
    for value in values:
        pending = ""
        for piece in str(value).split(","):
            if pending:
                piece = pending + "," + piece
                pending = ""
            stripped = piece.strip()
            if not stripped:
                continue
            if "|" in stripped or _NAME.match(stripped):
                out.append(stripped)
            else:
                pending = piece
        if pending:
            raise ConfigError(
                f"--demos: {pending.strip()!r} is neither a setting ({', '.join(SPECIAL_DEMOS)}, a preset name) "
                f"nor a demonstration 'sentence|word'"
            )
    for setting in out:
        if "|" in setting:
            parse_demonstration(setting)  # a malformed demonstration fails before anything runs
    return list(dict.fromkeys(out))


def parse_layers(values: str | Iterable[str] | None) -> list[int]:
    """``--layers -1,12,6`` -> ``[-1, 12, 6]`` (empty: the config's default, the last layer)."""
    out = []
    for item in split_list(values):
        try:
            out.append(int(item))
        except ValueError:
            raise ConfigError(f"--layers takes comma-separated integers (-1 = last), got {item!r}") from None
    return list(dict.fromkeys(out))


def build_cells(
    models: Sequence[str], demos: Sequence[str], layers: Sequence[int], tasks: str, mode: str,
    options: dict[str, Any] | None = None,
) -> list[Cell]:  # fmt: skip
    """Every cell of the grid, model-major (all cells of a model are adjacent, so it loads once)."""
    if not models:
        raise ConfigError("give at least one model: --models ALIAS,FOLDER,FILE.gguf,HUB/ID")
    if not demos:
        raise ConfigError(f"give at least one demonstration setting: --demos {','.join(SPECIAL_DEMOS)}")
    tag = options_tag(options or {})
    cells = [Cell(m, d, layer, tasks, mode, tag) for m in models for d in demos for layer in (layers or [-1])]
    ids: dict[str, Cell] = {}
    for cell in cells:
        if cell.id in ids:
            raise ConfigError(
                f"the cells {ids[cell.id]} and {cell} would share the file {cell.filename}; "
                f"give the models distinct names (e.g. different folder names)"
            )
        ids[cell.id] = cell
    return cells


# ------------------------------------------------------------------------------------ demonstrations
def resolve_demo(setting: str, model: str, num_parameters: int | None = None) -> tuple[str | None, list[Demonstration]]:
    """``(preset name or None, demonstrations)`` of a demonstration setting for ``model``.

    Raises :class:`~prompteol.errors.ConfigError` for an unknown preset (the message lists the valid ones).
    """
    from ..encoder.prompts.presets import DEFAULT_ORDER, closest_paper_preset, get_preset, list_presets

    if setting == "none":
        return None, []
    if "|" in setting:
        return None, [parse_demonstration(setting)]
    if setting == "paper":
        from ..models.registry import PACKAGED_MODELS

        demos = get_preset("paper", model=model, num_parameters=num_parameters)  # raises without a count
        spec = PACKAGED_MODELS.get(model)
        params = num_parameters or (spec.num_parameters if spec is not None else None)
        return (closest_paper_preset(params) if params else "paper"), demos
    if setting == "default":
        available = list_presets(model, num_parameters)
        source = next((n for n in DEFAULT_ORDER if n in available), None)
        if source is None:
            raise ConfigError(
                f"the 'default' demonstration setting is the model's own searched preset "
                f"({' or '.join(DEFAULT_ORDER)}), and {model!r} has none; run `prompteol demos search -m {model} "
                f"--save-preset searched-leakfree` first, or use paper / none / a preset name"
            )
        return source, available[source]
    name = "searched-stsb-dev" if setting == "stsb-dev" else setting
    return name, get_preset(name, model=model, num_parameters=num_parameters)


# ------------------------------------------------------------------------------------ cell files
def read_cell_file(path: str | Path) -> dict | None:
    """The record of a cell file, or ``None`` when it is missing, unreadable or has no ``cell`` block."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("cell"), dict):
        return None
    return data


def cell_state(path: str | Path) -> str:
    """``done`` (a cell file with status ok), ``retry`` (a failed one), ``unreadable`` or ``pending``."""
    path = Path(path)
    if not path.exists():
        return "pending"
    data = read_cell_file(path)
    if data is None:
        return "unreadable"
    return "done" if data["cell"].get("status") == "ok" else "retry"
