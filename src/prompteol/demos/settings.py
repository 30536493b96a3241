"""The settings search (``prompteol methods search``) and its method preset.

The settings search (``prompteol methods search``): a grid of encoder settings scored on a selection
split with ``Encoder.derive(**setting)`` on one loaded model (:func:`~prompteol.demos.search.search_options`,
resumable), and the best one stored as a method preset for the model, with its provenance."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from .search import SelectionSplit, load_selection_split, parse_grid, search_options

__all__ = ["SettingsSearch", "SettingsOutcome", "run_settings_search", "settings_record"]


@dataclass(frozen=True)
class SettingsSearch:
    """A settings search: everything but the base encoder (:meth:`check`: before any model loads)."""

    grid: tuple[str, ...]  #: the axes, ``NAME=V1,V2,...``
    split: str = "stsb-train-heldout"
    results: str | None = None  #: default: outputs/methods/<model>_<split>.jsonl
    max_pairs: int | None = None
    seed: int = 0
    batch_size: int = 64
    data_dir: str | None = None
    save_preset: str | None = None  #: the method preset to store the best setting under (for the base's model)
    preset_file: str | None = None
    command: str = ""

    def check(self) -> list[dict]:
        """The grid's settings (bad axes and a refused split fail here); the split's data is read."""
        from .search import check_split

        settings = parse_grid(self.grid)
        check_split(self.split)
        self.load_split()
        return settings

    def load_split(self) -> SelectionSplit:
        return load_selection_split(self.split, (), self.data_dir, self.max_pairs, self.seed)

    def results_path(self, model: str) -> Path:
        return Path(self.results or f"outputs/methods/{Path(model).name}_{self.split}.jsonl")


@dataclass
class SettingsOutcome:
    rows: list[dict]  #: best first
    split: SelectionSplit
    preset_path: Path | None = None


def run_settings_search(base, search: SettingsSearch, *, progress: bool | None = None,
                        say=lambda text: None) -> SettingsOutcome:  # fmt: skip
    """Score the grid on ``base`` and store the best as a preset when asked (a ``leakfree`` name only for a
    leak-free split)."""
    settings = search.check()
    split = search.load_split()
    if search.save_preset and "leakfree" in search.save_preset and not split.leak_free:
        raise ConfigError(f"refusing to save {search.save_preset!r}: {split.name} is not leak-free")
    results = search.results_path(base.config.model)
    say(f"scoring {len(settings)} settings on {split.name}: {split.description}, {len(split)} pairs; "
        f"results -> {results}")  # fmt: skip
    rows = search_options(base, settings, split, results, batch_size=search.batch_size, progress=progress)
    outcome = SettingsOutcome(rows, split)
    if search.save_preset:
        from ..encoder.prompts.presets import save_preset

        record = settings_record(base, rows, split, search.grid, search.command)
        outcome.preset_path = save_preset(base.config.model, search.save_preset, record, search.preset_file)
    return outcome


def settings_record(base, rows: list[dict], split: SelectionSplit, grid: Sequence[str], command: str) -> dict:
    """The method preset of the best row: the base's prompt options that differ from the defaults, then the
    best setting's, with the split, the score and the provenance."""
    from ..encoder.config import EncoderConfig
    from ..records import provenance

    defaults = EncoderConfig().to_dict()
    best = rows[0]
    base_options = {k: v for k, v in base.config.to_dict().items()
                    if k in base.config.fields_of_kind("prompt") and v != defaults[k]}  # fmt: skip
    return {
        "options": {**base_options, **best["options"]}, "score": best["score"], "split": split.name,
        "split_description": split.description, "n_pairs": len(split), "leak_free": split.leak_free,
        "n_scored": len(rows), "grid": list(grid), "command": command,
        "provenance": provenance(command, device=str(base.config.device)),
    }  # fmt: skip
