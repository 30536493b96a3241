"""The scaling study's plots, with the published OPT curves beside ours.

Average STS, average transfer and each STS task against the parameter count; matplotlib is imported when a
plot is drawn."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from .report import _PUBLISHED_LABEL, PUBLISHED_OPT, PUBLISHED_OPT_TRANSFER, STS_COLUMNS, _demo_label, fmt_params

__all__ = ["plot_sts_avg", "plot_transfer_avg", "plot_sts_tasks"]


class Series(NamedTuple):
    """One drawn series: ``points`` ``[(parameters, value, model, layer), ...]`` by parameters; ``setting`` (its
    colour); ``joined``: a line through the points (one per model), else markers alone, each named by its layer."""

    setting: str
    points: list[tuple[float, float, str, int]]
    joined: bool


def _series(rows: list[dict], value: str) -> dict[str, Series]:
    """``{label: Series}`` of the ok cells that have ``value``: one line per demonstration setting across the
    models, whatever layer each model's cell reads (a preset such as ``best-training-free`` picks its own layer
    per model; the points are then named by their layer); where a setting has several layers for one model (plain
    PromptEOL at the last layer and at each model's best layer), the layer most models share is the line and the
    others are markers of the same colour, each named by its layer."""
    every_layer = {r["layer"] for r in rows if r["status"] == "ok"}
    by_setting: dict[str, list[tuple[float, float, str, int]]] = {}
    for r in rows:
        v, n = r.get(value), r.get("num_parameters")
        if r["status"] != "ok" or not isinstance(v, (int, float)) or not isinstance(n, (int, float)) or n <= 0:
            continue
        setting = str(r["demo"]) if "|" not in str(r["demo"]) else _demo_label(r)
        by_setting.setdefault(setting, []).append((float(n), float(v), _short(str(r["model"])), int(r["layer"])))
    out: dict[str, Series] = {}
    for setting, points in by_setting.items():
        points.sort()
        layers = {p[3] for p in points}
        per_model: dict[str, set[int]] = {}
        for p in points:
            per_model.setdefault(p[2], set()).add(p[3])
        if all(len(ls) == 1 for ls in per_model.values()):  # one cell per model: one line
            label = setting if len(every_layer) == 1 else f"{setting}, layer {points[0][3]}" if len(layers) == 1 else (
                f"{setting}, its own layer per model")  # fmt: skip
            out[label] = Series(setting, points, True)
            continue
        counts = {layer: sum(layer in ls for ls in per_model.values()) for layer in layers}
        main = max(sorted(layers, reverse=True), key=lambda layer: counts[layer])  # ties: the layer nearest the top
        out[f"{setting}, layer {main}"] = Series(setting, [p for p in points if p[3] == main], True)
        out[f"{setting}, other layers"] = Series(setting, [p for p in points if p[3] != main], False)
    return out


def _short(model: str) -> str:
    name = model.rstrip("/").rsplit("/", 1)[-1]
    return name if len(name) <= 20 else name[:19] + "…"


def _line_xs(axes) -> list[float]:
    return [float(x) for ax in axes for line in ax.get_lines() for x in line.get_xdata() if x > 0]


def _params_axis(ax, xs: list[float] | None = None, minor: bool = True) -> None:
    """Log x axis of parameter counts, labelled 100M / 1B / ..., with ticks at 1-3 per decade when the
    range is short (the limits are those of ``xs``, default the drawn lines', with a margin)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator

    xs = _line_xs([ax]) if xs is None else xs
    ax.set_xscale("log")
    if xs:
        lo, hi = min(xs) / 1.6, max(xs) * 1.6
        ax.set_xlim(lo, hi)
        decades = math.log10(hi / lo)
        subs = (1.0,) if decades > 3 else (1.0, 3.0) if decades > 1.2 else (1.0, 2.0, 5.0)
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: fmt_params(x)))
    ax.xaxis.set_minor_formatter(NullFormatter())
    if minor is False:  # the seven small panels: no minor ticks (drawing them is most of the plot's time)
        ax.xaxis.set_minor_locator(NullLocator())
    ax.grid(True, which="major", alpha=0.3)


def _draw_ours(ax, series: dict[str, Series], colors: dict, small: bool = False) -> dict[str, float]:
    """Our series (colour: the setting); returns ``{model: parameters}`` of the points drawn. Markers alone, and the
    points of a line whose layer differs between models, are named by their layer (not in the small panels)."""
    models: dict[str, float] = {}
    size = 4 if small else 6
    for label, one in series.items():
        xs, ys, names, layers = zip(*one.points)
        style = {"linestyle": "-", "marker": "o"} if one.joined else {"linestyle": "none", "marker": "D"}
        ax.plot(xs, ys, linewidth=1.8, markersize=size, color=colors[one.setting], label=label, zorder=3, **style)
        if not small and (not one.joined or len(set(layers)) > 1):
            for x, y, layer in zip(xs, ys, layers):
                ax.annotate(f"L{layer}", (x, y), xytext=(5, -3), textcoords="offset points", fontsize=7,
                            color=colors[one.setting])  # fmt: skip
        for x, name in zip(xs, names):
            models.setdefault(name, x)
    return models


def _name_models(ax, models: dict[str, float]) -> None:
    """Each model named once, on a top axis at its parameter count, with a faint vertical guide."""
    if not models:
        return
    from matplotlib.ticker import NullLocator

    for x in models.values():
        ax.axvline(x, color="0.9", linewidth=0.8, zorder=0)
    top = ax.twiny()
    top.set_xscale("log")
    top.set_xlim(ax.get_xlim())
    top.set_xticks(list(models.values()))
    top.set_xticklabels(list(models), rotation=35, ha="left", fontsize=7, color="0.3")
    top.xaxis.set_minor_locator(NullLocator())
    top.tick_params(axis="x", length=2, pad=1)


_PUB_STYLE = {"color": "0.45", "linestyle": "--", "linewidth": 1.2, "markerfacecolor": "white"}


def _colors(series: Iterable[Series]) -> dict[str, Any]:
    """One colour per demonstration setting, in the order the settings first appear."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    settings = list(dict.fromkeys(one.setting for one in series))
    return {setting: cmap(i % 10) for i, setting in enumerate(settings)}


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)  # the Agg backend, without pyplot's global state
    return fig


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=9, color="0.3",
            bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.7"})  # fmt: skip


def plot_sts_avg(rows: list[dict], path: Path) -> Path:
    series = _series(rows, "sts_avg")
    fig = _new_figure(8, 5)
    ax = fig.add_subplot()
    models = _draw_ours(ax, series, _colors(series.values()))
    pub = list(PUBLISHED_OPT.values())
    ax.plot([p[0] for p in pub], [p[2] for p in pub], marker="o", label=f"{_PUBLISHED_LABEL}: one demonstration",
            **_PUB_STYLE)  # fmt: skip
    ax.plot([p[0] for p in pub], [p[3] for p in pub], marker="s", label=f"{_PUBLISHED_LABEL}: no demonstration",
            **{**_PUB_STYLE, "linestyle": ":"})  # fmt: skip
    if not series:
        _note(ax, "no cell has all 7 STS tasks yet: only the published curves")
    _params_axis(ax)
    ax.set_xlabel("parameters (log scale)")
    ax.set_ylabel("STS avg (7 tasks, Spearman x100)")
    _name_models(ax, models)
    ax.set_title("PromptEOL: average STS vs model size")  # matplotlib puts it above the top axis's names
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="demonstration", title_fontsize=8,
              frameon=False)  # fmt: skip
    fig.savefig(path, bbox_inches="tight")
    return path


def plot_transfer_avg(rows: list[dict], path: Path) -> Path:
    series = _series(rows, "transfer_avg")
    fig = _new_figure(8, 5)
    ax = fig.add_subplot()
    models = _draw_ours(ax, series, _colors(series.values()))
    for name, (params, value) in PUBLISHED_OPT_TRANSFER.items():
        ax.plot([params], [value], marker="*", markersize=11, linestyle="none", color="0.45",
                label=f"{_PUBLISHED_LABEL}: {name}, one demonstration")  # fmt: skip
    if not series:
        _note(ax, "no cell has all 7 transfer tasks yet")
    fitted = sorted({str(r.get("classifier")) for r in rows if r.get("transfer_avg") is not None and r.get("classifier")})
    if fitted and fitted != ["senteval"]:  # the paper's point is SentEval's classifier: say when ours differs
        ax.text(0.0, -0.13, f"ours: {', '.join(fitted)} classifier; published: SentEval's (not directly comparable)",
                transform=ax.transAxes, ha="left", va="top", fontsize=7, color="0.3")  # fmt: skip
    _params_axis(ax)
    ax.set_xlabel("parameters (log scale)")
    ax.set_ylabel("transfer avg (7 tasks, accuracy)")
    _name_models(ax, models)
    ax.set_title("PromptEOL: average transfer accuracy vs model size")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="demonstration", title_fontsize=8,
              frameon=False)  # fmt: skip
    fig.savefig(path, bbox_inches="tight")
    return path


def plot_sts_tasks(rows: list[dict], path: Path) -> Path:
    per_task = {name: _series(rows, name) for name in STS_COLUMNS}
    colors = _colors(one for s in per_task.values() for one in s.values())
    fig = _new_figure(13, 6.5)
    axes = fig.subplots(2, 4, sharex=True)
    pub = list(PUBLISHED_OPT.values())
    handles: dict[str, Any] = {}
    for i, (name, short) in enumerate(STS_COLUMNS.items()):
        ax = axes.flat[i]
        _draw_ours(ax, per_task[name], colors, small=True)
        ax.plot([p[0] for p in pub], [p[1][i] for p in pub], marker="o", markersize=4,
                label=f"{_PUBLISHED_LABEL}: one demonstration", **_PUB_STYLE)  # fmt: skip
        if not per_task[name]:
            ax.text(0.03, 0.95, "no cell has this task", transform=ax.transAxes, ha="left", va="top", fontsize=8,
                    color="0.4")  # fmt: skip
        ax.set_title(short, fontsize=10)
        ax.tick_params(labelsize=8)
        if i % 4 == 0:
            ax.set_ylabel("Spearman x100", fontsize=9)
        if i >= 3:
            ax.set_xlabel("parameters", fontsize=9)
            ax.xaxis.set_tick_params(labelbottom=True)
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    every_x = _line_xs(axes.flat[:7])
    for ax in axes.flat[:7]:
        _params_axis(ax, every_x, minor=False)
    ours = [lab for lab in handles if not lab.startswith(_PUBLISHED_LABEL)]
    handles = {lab: handles[lab] for lab in ours + [lab for lab in handles if lab not in ours]}
    legend_ax = axes.flat[7]
    legend_ax.axis("off")
    legend_ax.legend(list(handles.values()), list(handles.keys()), loc="center", fontsize=8, title="demonstration",
                     title_fontsize=8, frameon=False)  # fmt: skip
    fig.suptitle("PromptEOL: each STS task vs model size", fontsize=12)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.09, top=0.9, wspace=0.28, hspace=0.3)
    fig.savefig(path, bbox_inches="tight")
    return path
