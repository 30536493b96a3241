"""Named demonstration presets (data: part of the core, used by every command and the server).

``paper-opt-*`` are the demonstrations the paper chose for each OPT size (method.md section 2,
selected on STS-B dev). ``paper`` picks the paper's demonstration for the OPT size closest
to the model's parameter count. Per-model presets found by our own search live in
``prompteol/data/demo_presets.json`` (written by ``prompteol demos search --save-preset``):

- ``searched-leakfree``: selected on a split disjoint from every reported test set;
- ``searched-stsb-dev``: selected on STS-B dev, the paper's protocol. STS-B dev is a dev split
  of a reported task (STS-B) drawn from the same pool as STS12-16, so numbers reported with it
  are not leak-free; the name says so.

``default`` is the model's ``searched-leakfree`` preset, else its ``searched-stsb-dev`` one.

Searched presets are read from the package, then the user's file (``<cache root>/demo_presets.json``),
then the files of ``$PROMPTEOL_PRESET_FILES`` (a later one wins for the same model and name).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from ...errors import ConfigError
from .templates import Demonstration

__all__ = [
    "PAPER_DEMOS", "DEFAULT_ORDER", "METHOD_PRESETS", "get_preset", "list_presets", "searched_presets", "save_preset",
    "get_method_preset", "list_method_presets",
]  # fmt: skip

#: the searched presets ``default`` stands for, in order of preference
DEFAULT_ORDER = ("searched-leakfree", "searched-stsb-dev")

#: OPT size (parameters) -> (demonstration, average STS gain reported by the paper)
PAPER_DEMOS: dict[str, tuple[int, Demonstration, float]] = {
    "paper-opt-125m": (125_000_000, Demonstration("A man is smoking.", "Smoking"), 0.46),
    "paper-opt-350m": (350_000_000, Demonstration("A man is playing on a guitar and singing.", "Music"), 3.99),
    "paper-opt-1.3b": (1_300_000_000, Demonstration("relating to switzerland or its people.", "Swiss"), 4.34),
    "paper-opt-2.7b": (2_700_000_000, Demonstration("A jockey riding a horse.", "Equestrian"), 8.88),
    "paper-opt-6.7b": (6_700_000_000, Demonstration("The man is riding a horse.", "Horseback-riding"), 6.98),
    "paper-opt-13b": (13_000_000_000, Demonstration("meat from a deer.", "Venison"), 7.18),
    "paper-opt-30b": (30_000_000_000, Demonstration("The man is riding a motorcycle down the road.", "Motorcycling"), 6.51),
    "paper-opt-66b": (66_000_000_000, Demonstration("of or relating to tutors or tutoring.", "Tutorial"), 9.35),
}


def _packaged_parameters(model: str | None) -> int | None:
    from ...models.registry import PACKAGED_MODELS

    spec = PACKAGED_MODELS.get(model or "")
    return spec.num_parameters if spec is not None and spec.num_parameters else None


def user_presets_path() -> Path:
    from ...paths import cache_root

    return cache_root() / "demo_presets.json"


def searched_presets() -> dict[str, dict]:
    """``{model alias: {preset name: record}}``: the packaged search results, then the user's."""
    out: dict[str, dict] = {}
    try:
        text = resources.files("prompteol").joinpath("data/demo_presets.json").read_text(encoding="utf-8")
        out = json.loads(text)
    except (FileNotFoundError, ModuleNotFoundError):
        pass
    for path in [user_presets_path(), *extra_preset_files()]:
        if path.is_file():
            for model, presets in json.loads(path.read_text(encoding="utf-8")).items():
                out.setdefault(model, {}).update(presets)
    return out


def extra_preset_files() -> list[Path]:
    """Preset files named in ``$PROMPTEOL_PRESET_FILES`` (``os.pathsep``-separated), read after the
    packaged and the user's presets (a later file's preset of the same name wins)."""
    import os

    raw = os.environ.get("PROMPTEOL_PRESET_FILES", "")
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()]


def save_preset(model: str, name: str, record: dict, path: str | Path | None = None) -> Path:
    """Store a searched demonstration preset for ``model`` (default: the user's presets file)."""
    p = Path(path) if path else user_presets_path()
    data = json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}
    data.setdefault(model, {})[name] = record
    from ...fileio import write_json_atomic

    return write_json_atomic(p, data)


def closest_paper_preset(params: int) -> str:
    import math

    return min(PAPER_DEMOS, key=lambda n: abs(math.log(PAPER_DEMOS[n][0]) - math.log(params)))


def list_presets(model: str | None = None, num_parameters: int | None = None) -> dict[str, list[Demonstration]]:
    """Every preset available for ``model``; ``paper`` needs its parameter count (known for the
    packaged models; pass ``num_parameters`` for others)."""
    out = {name: [demo] for name, (_, demo, _) in PAPER_DEMOS.items()}
    params = num_parameters or _packaged_parameters(model)
    if params:
        out["paper"] = [PAPER_DEMOS[closest_paper_preset(params)][1]]
    for name, record in searched_presets().get(model or "", {}).items():
        if "demonstrations" in record and "options" not in record:  # (method presets have options)
            out[name] = [Demonstration(d["sentence"], d["word"]) for d in record["demonstrations"]]
    # the model's default: our leak-free search result where there is one, else the STS-B dev one
    for name in DEFAULT_ORDER:
        if name in out:
            out["default"] = out[name]
            break
    return out


def get_preset(name: str, model: str | None = None, num_parameters: int | None = None) -> list[Demonstration]:
    presets = list_presets(model, num_parameters)
    if name == "paper" and name not in presets:
        raise ConfigError(
            f"the 'paper' preset picks the paper's demonstration for the closest OPT size, and the parameter "
            f"count of {model!r} is not known before loading it; name the size instead: one of {sorted(PAPER_DEMOS)}"
        )
    if name not in presets:
        raise ConfigError(
            f"unknown demonstration preset {name!r} for model {model!r}; valid: {sorted(presets)}"
        )
    return presets[name]


#: Method presets: named bundles of encoder options, each with the published setting it follows
#: (``--preset NAME``; explicit options override them). Per-model presets found by
#: ``prompteol methods search`` (``best-training-free``) are stored like searched demonstrations,
#: with an ``options`` record.
METHOD_PRESETS: dict[str, dict] = {
    "pretended-cot": {"options": {"template": "cot", "layer": -2},
                      "source": "Zhang et al. 2024: the CoT template, read out hidden_states[-2]"},
    "knowledge-enhancement": {"options": {"template": "ke", "layer": -2},
                              "source": "Zhang et al. 2024: the KE template, read out hidden_states[-2]"},
    "metaeol": {"options": {"template": "metaeol-1", "prompts": [f"metaeol-{i}" for i in range(2, 9)], "combine": "mean"},
                "source": "Lei et al. 2024: the eight MetaEOL task prompts, last layer, averaged"},
    "echo": {"options": {"template": "echo", "pooling": "echo"},
             "source": "Springer et al. 2024: the sentence twice, mean over the second copy"},
}  # fmt: skip


def list_method_presets(model: str | None = None) -> dict[str, dict]:
    """``{name: {"options": {...}, ...}}``: the published method presets, then the model's searched ones."""
    out = {name: dict(rec) for name, rec in METHOD_PRESETS.items()}
    for name, record in searched_presets().get(model or "", {}).items():
        if "options" in record:
            out[name] = record
    return out


def get_method_preset(name: str, model: str | None = None) -> dict:
    """The encoder options of a method preset (a copy)."""
    presets = list_method_presets(model)
    if name not in presets:
        raise ConfigError(f"unknown preset {name!r} for model {model!r}; valid: {sorted(presets)}")
    return dict(presets[name]["options"])
