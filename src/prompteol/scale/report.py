"""``prompteol scale report DIR``: tables and plots from the cell files alone (no model, no cache).

Writes into the output folder (default: DIR itself):

- ``results.csv``: one row per cell file, every score as stored (full precision);
- ``results.md``: a paper-style table (model, parameters, demonstration, STS12-16, STS-B, SICK-R,
  STS avg, transfer avg when present, dtype, wall time; failed cells marked with their message), then,
  when some cell ran them, a table of the 7 transfer tasks (a transfer-only cell appears there alone),
  followed by the published OPT numbers for reference;
- ``sts_avg_vs_parameters.png``, ``transfer_avg_vs_parameters.png``,
  ``sts_tasks_vs_parameters.png``: one line per demonstration setting over the parameter count
  (log scale), the paper's OPT curves drawn alongside in grey dashes ("published, OPT (other
  models)"). The plots need matplotlib (``pip install 'prompteol[plot]'``).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..evaluation.tasks import TASK_GROUPS, TASKS
from ..fileio import write_atomic, write_text_atomic
from .grid import read_cell_file

__all__ = [
    "PUBLISHED_OPT",
    "PUBLISHED_OPT_TRANSFER",
    "PUBLISHED_SOURCE",
    "STS_COLUMNS",
    "load_cells",
    "cell_rows",
    "build_report",
    "PLOT_FILES",
    "precision_markdown",
    "update_doc_block",
]

#: the seven STS tasks of the paper's table, with their short names
STS_COLUMNS = {"STS12": "STS12", "STS13": "STS13", "STS14": "STS14", "STS15": "STS15", "STS16": "STS16",
               "STSBenchmark": "STS-B", "SICKRelatedness": "SICK-R"}  # fmt: skip

PUBLISHED_SOURCE = (
    "Jiang et al., Scaling Sentence Embeddings with Large Language Models: PromptEOL on OPT, no fine-tuning "
    "(docs/method.md section 5); Spearman x100"
)
#: OPT size -> (parameters, STS12 STS13 STS14 STS15 STS16 STS-B SICK-R with one demonstration,
#: their average, the average without a demonstration)
PUBLISHED_OPT: dict[str, tuple[float, tuple[float, ...], float, float]] = {
    "OPT-125M": (125e6, (62.22, 73.10, 61.84, 71.09, 72.08, 67.80, 64.10), 67.46, 67.00),
    "OPT-350M": (350e6, (63.87, 73.85, 63.41, 72.45, 73.13, 70.84, 65.61), 69.02, 65.03),
    "OPT-1.3B": (1.3e9, (72.78, 83.77, 73.61, 83.42, 80.60, 78.80, 69.69), 77.52, 73.18),
    "OPT-2.7B": (2.7e9, (68.49, 84.72, 75.15, 83.62, 81.34, 80.94, 72.97), 78.18, 69.30),
    "OPT-6.7B": (6.7e9, (70.65, 84.51, 75.01, 83.51, 82.00, 81.12, 76.77), 79.08, 72.10),
    "OPT-13B": (13e9, (71.99, 85.22, 76.04, 82.23, 81.38, 81.42, 75.00), 79.04, 71.86),
    "OPT-30B": (30e9, (69.99, 83.35, 74.75, 83.14, 82.42, 81.45, 77.46), 78.94, 72.43),
    "OPT-66B": (66e9, (69.93, 83.29, 74.88, 80.10, 81.11, 81.76, 76.26), 78.19, 68.84),
}
#: the paper's one transfer average (same source): OPT-6.7B, PromptEOL
PUBLISHED_OPT_TRANSFER = {"OPT-6.7B": (6.7e9, 91.34)}

PLOT_FILES = ("sts_avg_vs_parameters.png", "transfer_avg_vs_parameters.png", "sts_tasks_vs_parameters.png")
_PUBLISHED_LABEL = "published, OPT (other models)"
_SPECIAL_ORDER = {"none": 0, "paper": 1, "default": 2, "stsb-dev": 3}


# ------------------------------------------------------------------------------------ reading
def load_cells(folder: str | Path) -> list[tuple[Path, dict]]:
    """``(path, record)`` of every cell file of ``folder`` (other JSON files are ignored)."""
    out = []
    for path in sorted(Path(folder).glob("*.json")):
        data = read_cell_file(path)
        if data is not None:
            out.append((path, data))
    return out


def _demo_text(demos: list[dict] | None) -> str:
    return " + ".join(f"{d['sentence']}|{d['word']}" for d in demos or [])


def cell_rows(cells: Iterable[tuple[Path, dict]]) -> list[dict[str, Any]]:
    """One flat row per cell: identity, every task's headline score, the averages, dtype, time, status."""
    rows = []
    for path, data in cells:
        c = data["cell"]
        tasks = data.get("tasks") or {}
        row: dict[str, Any] = {
            "id": c.get("id") or path.stem, "file": path.name, "model": c.get("model"),
            "num_parameters": c.get("num_parameters"), "demo": c.get("demo"), "demo_preset": c.get("demo_preset"),
            "demonstrations": _demo_text(c.get("demonstrations")), "layer": c.get("layer"), "tasks": c.get("tasks"),
            "mode": c.get("mode"),
        }  # fmt: skip
        for name in TASKS:
            res = tasks.get(name)
            row[name] = res.get("score") if isinstance(res, dict) else None
        mrpc = tasks.get("MRPC")
        row["MRPC_f1"] = mrpc.get("f1") if isinstance(mrpc, dict) else None
        fitted = [tasks[t].get("classifier") for t in TASK_GROUPS["transfer"] if isinstance(tasks.get(t), dict)]
        row["classifier"] = next((c for c in fitted if c), None)  # the transfer tasks' classifier (lbfgs / senteval)
        # lbfgs fits that stopped at the iteration cap, per task: "MRPC 21/21" (their scores are the capped iterate's)
        row["not_converged"] = ", ".join(f"{t} {n}" for t, n in capped_fits(tasks).items()) or None
        averages = data.get("averages") or {}
        row["sts_avg"] = averages.get("sts")
        row["transfer_avg"] = averages.get("transfer")
        row.update({"dtype": c.get("dtype"), "wall_s": c.get("wall_s"), "status": c.get("status"),
                    "error": c.get("error"), "imported_from": c.get("imported_from")})  # fmt: skip
        rows.append(row)
    rows.sort(key=_row_order)
    return rows


def capped_fits(tasks: dict) -> dict[str, str]:
    """``{task: "capped/fits"}`` of the transfer tasks whose L-BFGS fits stopped at the iteration cap."""
    return {t: f"{tasks[t]['not_converged']}/{tasks[t].get('fits', '?')}" for t in TASK_GROUPS["transfer"]
            if isinstance(tasks.get(t), dict) and tasks[t].get("not_converged")}  # fmt: skip


def _row_order(row: dict) -> tuple:
    params = row["num_parameters"] if isinstance(row["num_parameters"], (int, float)) else math.inf
    demo = str(row["demo"])
    return (params, str(row["model"]), _SPECIAL_ORDER.get(demo, 9), demo, row["layer"] or 0, row["id"])


# ------------------------------------------------------------------------------------ tables
def csv_columns() -> list[str]:
    return (["id", "model", "num_parameters", "demo", "demo_preset", "demonstrations", "layer", "tasks", "mode"]
            + list(TASK_GROUPS["sts"]) + ["sts_avg"] + [n for n in TASKS if n not in TASK_GROUPS["all"]]
            + list(TASK_GROUPS["transfer"]) + ["MRPC_f1", "transfer_avg", "classifier", "not_converged"]
            + ["dtype", "wall_s", "status", "error", "imported_from", "file"])  # fmt: skip


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=csv_columns(), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in csv_columns()})
    return buf.getvalue()


def fmt_params(n: float | None) -> str:
    if not isinstance(n, (int, float)) or not n:
        return "?"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            value = n / size
            return f"{value:.3g}{unit}" if value < 100 else f"{value:.0f}{unit}"
    return str(int(n))


def _fmt_time(seconds: float | None) -> str:
    if not isinstance(seconds, (int, float)):
        return ""
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _demo_label(row: dict) -> str:
    demo = str(row["demo"])
    words = [part.rpartition("|")[2] for part in row["demonstrations"].split(" + ") if part]
    if "|" in demo:
        return f"explicit (-> {words[0]})" if words else "explicit"
    if words and demo != "none":
        preset = row.get("demo_preset")
        shown = f"{preset}: " if preset and preset != demo else ""
        return f"{demo} ({shown}-> {', '.join(words)})"
    return demo


def _score(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else ""


def _has_any(row: dict, names: Iterable[str]) -> bool:
    return any(row.get(n) is not None for n in names)


def _transfer_only(row: dict) -> bool:
    """A cell of the transfer tasks alone (its row goes to the transfer table only)."""
    if row["status"] != "ok":
        return row.get("tasks") == "transfer"
    return _has_any(row, TASK_GROUPS["transfer"]) and not _has_any(row, STS_COLUMNS)


def transfer_markdown(rows: list[dict]) -> list[str]:
    """The transfer tasks' table (accuracy; MRPC accuracy / F1) of the cells that ran them; [] when none did."""
    picked = [r for r in rows if _has_any(r, TASK_GROUPS["transfer"]) or (r["status"] != "ok" and r.get("tasks") in ("transfer", "all"))]
    if not picked:
        return []
    head = ["model", "parameters", "demonstration", "layer", *TASK_GROUPS["transfer"], "transfer avg", "mode", "dtype",
            "wall time", "notes"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in picked:
        failed = r["status"] != "ok"
        cells = [_md(r["model"]), fmt_params(r["num_parameters"]), _md(_demo_label(r)), str(r["layer"])]
        if failed:
            cells += ["**failed**"] + [""] * len(TASK_GROUPS["transfer"])
        else:
            scores = [_score(r.get(n)) for n in TASK_GROUPS["transfer"]]
            if r.get("MRPC_f1") is not None and scores[-1]:
                scores[-1] += f" / {r['MRPC_f1']:.2f}"
            cells += scores + [_score(r.get("transfer_avg"))]
        notes = [f"failed: {r.get('error') or 'no message'}"] if failed else []
        if not failed and r.get("transfer_avg") is None:
            notes.append("not all 7 transfer tasks")
        if not failed and r.get("not_converged"):
            notes.append(f"fits at the L-BFGS iteration cap: {r['not_converged']}")
        cells += [str(r.get("mode") or ""), r.get("dtype") or "", _fmt_time(r.get("wall_s")), _md("; ".join(notes))]
        lines.append("| " + " | ".join(cells) + " |")
    return ["", "Transfer tasks (accuracy; MRPC accuracy / F1; `fast` = 5-fold cross-validation, `test` = 10-fold):", "",
            *lines]  # fmt: skip


def to_markdown(rows: list[dict], source: str = "") -> str:
    transfer_rows, count = transfer_markdown(rows), len(rows)
    rows = [r for r in rows if not _transfer_only(r)]  # the STS table: cells with STS tasks (and others, e.g. dev)
    layers = {r["layer"] for r in rows}
    dev = any(r.get("STSBenchmark-dev") is not None for r in rows)
    transfer = any(r.get("transfer_avg") is not None for r in rows)
    head = ["model", "parameters", "demonstration"] + (["layer"] if len(layers) > 1 else [])
    head += list(STS_COLUMNS.values()) + ["STS avg"] + (["STS-B dev"] if dev else [])
    head += (["transfer avg"] if transfer else []) + ["dtype", "wall time", "notes"]
    lines = ["# prompteol scale: results", ""]
    if source:
        lines += [f"From the cell files of `{source}` ({count} cells). Spearman x100 (STS), accuracy (transfer).",
                  ""]  # fmt: skip
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        failed = r["status"] != "ok"
        cells = [_md(r["model"]), fmt_params(r["num_parameters"]), _md(_demo_label(r))]
        if len(layers) > 1:
            cells.append(str(r["layer"]))
        if failed:
            scores = ["**failed**"] + [""] * (len(STS_COLUMNS) - 1) + [""]
        else:
            scores = [_score(r.get(name)) for name in STS_COLUMNS] + [_score(r.get("sts_avg"))]
        cells += scores + ([_score(r.get("STSBenchmark-dev"))] if dev else [])
        wall = r["wall_s"] if not failed or (r["wall_s"] or 0) > 0 else None
        cells += ([_score(r.get("transfer_avg"))] if transfer else []) + [r.get("dtype") or "", _fmt_time(wall)]
        notes = []
        if failed:
            notes.append(f"failed: {r.get('error') or 'no message'}")
        if r.get("imported_from"):
            notes.append(f"imported from {r['imported_from']}")
        if not failed and r.get("sts_avg") is None and any(r.get(n) is not None for n in STS_COLUMNS):
            notes.append("not all 7 STS tasks")
        cells.append(_md("; ".join(notes)))
        lines.append("| " + " | ".join(cells) + " |")
    lines += transfer_rows
    lines += ["", f"Published for reference ({PUBLISHED_SOURCE}):", ""]
    pub_head = ["model", "parameters", "demonstration"] + list(STS_COLUMNS.values()) + ["STS avg"]
    lines += ["| " + " | ".join(pub_head) + " |", "|" + "|".join("---" for _ in pub_head) + "|"]
    for name, (params, published, avg, avg_none) in PUBLISHED_OPT.items():
        lines.append("| " + " | ".join([name, fmt_params(params), "one (paper)"] + [f"{v:.2f}" for v in published]
                                       + [f"{avg:.2f}"]) + " |")  # fmt: skip
        lines.append("| " + " | ".join([name, fmt_params(params), "none"] + [""] * len(published) + [f"{avg_none:.2f}"])
                     + " |")  # fmt: skip
    lines += ["", f"Transfer average, OPT-6.7B, PromptEOL: {PUBLISHED_OPT_TRANSFER['OPT-6.7B'][1]:.2f} (same source).",
              ""]  # fmt: skip
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ plots
# ------------------------------------------------------------------------------------ the report
def build_report(folder: str | Path, output: str | Path | None = None) -> dict[str, Any]:
    """Write ``results.csv``, ``results.md`` and the three plots from the cell files of ``folder``.

    Returns ``{"rows": [...], "files": [paths], "cells": n}``. Needs matplotlib for the plots
    (:class:`~prompteol.errors.MissingExtraError` otherwise, before anything is written).
    """
    from ..errors import ConfigError, require
    from .plots import plot_sts_avg, plot_sts_tasks, plot_transfer_avg

    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder of cell files (the --output of `prompteol scale`)")
    require("matplotlib", "plot", "`prompteol scale report` (its plots)")
    cells = load_cells(folder)
    if not cells:
        raise ConfigError(f"{folder} holds no cell files (*.json with a 'cell' block); run `prompteol scale` first")
    rows = cell_rows(cells)
    out = Path(output) if output else folder
    out.mkdir(parents=True, exist_ok=True)
    files = [_write_text(out / "results.csv", to_csv(rows)),
             _write_text(out / "results.md", to_markdown(rows, str(folder)))]  # fmt: skip
    for name, plot in zip(PLOT_FILES, (plot_sts_avg, plot_transfer_avg, plot_sts_tasks)):
        files.append(_atomic_plot(out / name, plot, rows))
    return {"rows": rows, "files": files, "cells": len(cells)}


def precision_markdown(folder: str | Path) -> str:
    """Per model, STS-B dev in float32 and bfloat16 from the precision cells of ``folder`` (the study queue's
    ``docs/scaling/precision``: one cell per model and dtype, ``tasks = STSBenchmark-dev``)."""
    by_model: dict[str, dict[str, dict]] = {}
    for _, data in load_cells(folder):
        c = data["cell"]
        task = (data.get("tasks") or {}).get("STSBenchmark-dev")
        if c.get("status") == "ok" and task is not None:
            by_model.setdefault(str(c["model"]), {})[str(c["dtype"])] = {"score": task["score"], "wall_s": c["wall_s"]}
    lines = ["| model | STS-B dev, float32 | STS-B dev, bfloat16 | bfloat16 - float32 | wall time float32 / bfloat16 |",
             "|---|---|---|---|---|"]  # fmt: skip
    for model in sorted(by_model, key=lambda m: by_model[m].get("float32", {}).get("wall_s") or 0):
        f32, bf16 = by_model[model].get("float32"), by_model[model].get("bfloat16")
        diff = f"{bf16['score'] - f32['score']:+.2f}" if f32 and bf16 else ""
        lines.append(f"| {model} | {_score(f32 and f32['score'])} | {_score(bf16 and bf16['score'])} | {diff} | "
                     f"{_fmt_time(f32['wall_s'] if f32 else None)} / {_fmt_time(bf16['wall_s'] if bf16 else None)} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def update_doc_block(doc: str | Path, name: str, text: str) -> Path:
    """Replace what stands between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` in ``doc`` with ``text``
    (a generated table kept in a hand-written document)."""
    from ..errors import ConfigError
    from ..fileio import write_text_atomic

    doc = Path(doc)
    body = doc.read_text(encoding="utf-8")
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in body or end not in body:
        raise ConfigError(f"{doc} has no '{start}' ... '{end}' block to replace")
    head, _, rest = body.partition(start)
    _, _, tail = rest.partition(end)
    return write_text_atomic(doc, f"{head}{start}\n{text.rstrip()}\n{end}{tail}")


def _write_text(path: Path, text: str) -> Path:
    return write_text_atomic(path, text)


def _atomic_plot(path: Path, plot, rows: list[dict]) -> Path:
    return write_atomic(path, lambda tmp: plot(rows, tmp))
