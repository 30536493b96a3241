"""A bar chart of ``prompteol eval`` results: one group of bars per task, one bar per run, side by side.

>>> from prompteol.evaluation.plot import load_runs, plot_results     # doctest: +SKIP
>>> plot_results(load_runs(["a.json", "b.json"]), "plot.png")           # doctest: +SKIP

Each results file holds one run (``prompteol eval -o``) or several (``{"schema":
"prompteol.eval-multi/1", "runs": [...]}``, from ``--baseline``). A run is labelled by its
``label``, else its encoder's model; labels that repeat get the file name added. The task
averages (``Avg sts`` / ``Avg transfer``) come last, in their own group. matplotlib is imported
when a plot is drawn (``pip install 'prompteol[plot]'``); nothing else here needs it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError, MissingExtraError

__all__ = ["load_runs", "plot_results"]

_MULTI = "prompteol.eval-multi/1"


def load_runs(paths: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Every run of the results files, in order, each with a ``_label`` unique among them."""
    runs: list[tuple[dict[str, Any], str]] = []
    for p in paths:
        path = Path(p)
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise InputError(f"{path} is not a JSON file ({exc})") from None
        found = payload.get("runs") if isinstance(payload, dict) and payload.get("schema") == _MULTI else [payload]
        if not isinstance(found, list) or not found:
            raise InputError(f"{path}: no runs in it")
        for i, run in enumerate(found):
            if not isinstance(run, dict) or not isinstance(run.get("tasks"), dict):
                where = f"{path}" + (f" run {i}" if len(found) > 1 else "")
                raise InputError(f"{where} is not a `prompteol eval` results file (no 'tasks')")
            runs.append((run, path.stem))
    labels = [str(run.get("label") or (run.get("encoder") or {}).get("model") or stem) for run, stem in runs]
    out = []
    for (run, stem), label in zip(runs, labels):
        if labels.count(label) > 1 and stem != label:  # told apart by the rest of the file name
            rest = stem[len(label) :].lstrip("_-. ") if stem.startswith(label) else stem
            label = f"{label} ({rest or stem})"
        out.append({**run, "_label": label})
    seen: dict[str, int] = {}
    for run in out:  # the same label twice in one file: number them
        n = seen.get(run["_label"], 0)
        seen[run["_label"]] = n + 1
        if n:
            run["_label"] = f"{run['_label']} #{n + 1}"
    return out


def _rows(runs: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[float | None]]]:
    """Task names (first-seen order, then the averages) and per run its scores (``None``: not run)."""
    names = list(dict.fromkeys(n for run in runs for n in run["tasks"]))
    averages = [g for g in ("sts", "transfer") if any(g in (run.get("averages") or {}) for run in runs)]
    scores: list[list[float | None]] = []
    for run in runs:
        row: list[float | None] = []
        for n in names:
            res = run["tasks"].get(n)
            row.append(float(res["score"]) if isinstance(res, dict) and res.get("score") is not None else None)
        for g in averages:
            value = (run.get("averages") or {}).get(g)
            row.append(float(value) if value is not None else None)
        scores.append(row)
    return names + [f"Avg {g}" for g in averages], scores


def plot_results(runs: Sequence[dict[str, Any]], path: str | os.PathLike, title: str | None = None) -> Path:
    """Draw the runs (from :func:`load_runs`) as grouped bars and save the figure to ``path`` (PNG, SVG, PDF
    by suffix); :class:`MissingExtraError` if matplotlib is not installed."""
    try:
        from matplotlib import colormaps
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingExtraError("matplotlib", "plot", "`prompteol eval plot`") from None
    if not runs:
        raise InputError("no runs to plot")
    tasks, scores = _rows(runs)
    n_runs, n_tasks = len(runs), len(tasks)
    group = 0.84  # width of a task's group of bars
    width = group / n_runs
    # about 0.24 in per bar (room for a horizontal "72.4" at 7 pt) plus the gaps, within 6-16 in
    fig_width = min(16.0, max(6.0, 1.2 + n_tasks * (0.24 * n_runs + 0.3)))
    fig = Figure(figsize=(fig_width, 4.8), dpi=130)
    FigureCanvasAgg(fig)  # the Agg backend, without pyplot's global state
    ax = fig.add_subplot()
    cmap = colormaps["tab10"]
    bar_inches = (fig_width - 1.2) / n_tasks * width
    for r, (run, row) in enumerate(zip(runs, scores)):
        xs = [t - group / 2 + width * (r + 0.5) for t in range(n_tasks)]
        present = [(x, v) for x, v in zip(xs, row) if v is not None]
        bars = ax.bar([x for x, _ in present], [v for _, v in present], width * 0.9, label=run["_label"],
                      color=cmap(r % 10), zorder=2)  # fmt: skip
        if bar_inches >= 0.12:  # the value over each bar, while there is room for it
            upright = bar_inches < 0.2
            ax.bar_label(bars, fmt="%.1f", fontsize=6.5 if upright else 7, padding=1.5, rotation=90 if upright else 0)
    for t in range(n_tasks):  # a faint band behind every other group, so groups read apart
        if tasks[t].startswith("Avg "):
            ax.axvspan(t - 0.5, t + 0.5, color="0.93", zorder=0)
    ax.set_xticks(range(n_tasks))
    ax.set_xticklabels(tasks, rotation=30 if n_tasks > 6 else 0, ha="right" if n_tasks > 6 else "center", fontsize=9)
    ax.set_xlim(-0.6, n_tasks - 0.4)
    values = [v for row in scores for v in row if v is not None]
    top = max(values) if values else 100.0
    ax.set_ylim(0, min(100.0, top * 1.15) if top <= 100 else top * 1.15)
    ax.set_ylabel("Spearman x100 (STS) / accuracy % (transfer)")
    ax.grid(axis="y", color="0.88", zorder=0)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_title(title or f"prompteol eval: {n_runs} run{'s' if n_runs != 1 else ''}", fontsize=10)
    longest = max(len(run["_label"]) for run in runs)
    ncol = max(1, min(n_runs, int(fig_width * 10 // (longest + 6))))
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16 if n_tasks > 6 else -0.08), ncol=ncol, fontsize=8,
              frameon=False)  # fmt: skip
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight")
    return out
