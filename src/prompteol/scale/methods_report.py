"""The methods study's tables from its committed records (``prompteol methods report``).

The methods study's tables from its records alone (``prompteol methods report``): per model, what the
settings search chose on the leak-free split and what it scores on the 7 STS tasks, each gain reported
twice: against plain PromptEOL at the same read-out layer, and against plain PromptEOL at its own best layer.

Records read (all committed):

- ``docs/methods/<model>/selection/selection.json`` (:mod:`prompteol.scale.selection`): the families'
  best settings and scores on the selection sample, plain PromptEOL at every searched layer, the
  finalists rescored on the whole split, the choice;
- ``docs/methods/<model>/selection/<family>.jsonl``: every scored setting (for plain at a given layer);
- the cells of ``docs/scaling/cells``: ``none`` at each layer (plain PromptEOL) and
  ``best-training-free``, each with its 7 STS tasks; where they exist, the transfer cells of the same two
  settings (plain at the last layer, ``best-training-free`` at its layer), shown as a second table.

Nothing here imports torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..evaluation.tasks import TASK_GROUPS
from .report import STS_COLUMNS, capped_fits, load_cells

__all__ = ["methods_rows", "methods_markdown", "write_methods_report"]


def _jsonl(path: Path) -> list[dict]:
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if "score" in rec:
                rows.append(rec)
    return rows


def _plain_at(layer_rows: list[dict], layer: int) -> float | None:
    """Plain PromptEOL (template prompteol, nothing else) at ``layer`` on the selection sample."""
    for r in layer_rows:
        o = r.get("options", {})
        if o.get("template") == "prompteol" and o.get("layer") == layer and len(o) == 2:
            return float(r["score"])
    return None


def _cells_by_model(cells_dir: Path) -> dict[str, dict[tuple[str, int], dict]]:
    """``{model: {(demo, layer): record}}`` of the finished 7-task STS cells (one per key: the last file)."""
    out: dict[str, dict[tuple[str, int], dict]] = {}
    for _, data in load_cells(cells_dir):
        c = data["cell"]
        if c.get("status") != "ok" or c.get("tasks") != "sts" or c.get("mode") != "test":
            continue
        out.setdefault(str(c["model"]), {})[(str(c["demo"]), int(c["layer"]))] = data
    return out


def _transfer_cells_by_model(cells_dir: Path) -> dict[str, dict[tuple[str, int], dict]]:
    """``{model: {(demo, layer): record}}`` of the finished cells that ran the 7 transfer tasks."""
    out: dict[str, dict[tuple[str, int], dict]] = {}
    for path, data in load_cells(cells_dir):
        c = data["cell"]
        if c.get("status") != "ok" or c.get("tasks") not in ("transfer", "all"):
            continue
        if (data.get("averages") or {}).get("transfer") is None:
            continue
        out.setdefault(str(c["model"]), {})[(str(c["demo"]), int(c["layer"]))] = {**data, "file": path.name}
    return out


def _transfer(data: dict | None) -> dict[str, Any] | None:
    """A transfer cell's scores (accuracy; MRPC's F1 too), average, mode, classifier and file; None when absent."""
    if data is None:
        return None
    tasks = data.get("tasks") or {}
    scores = {t: tasks[t]["score"] for t in TASK_GROUPS["transfer"] if isinstance(tasks.get(t), dict)}
    classifier = next((tasks[t].get("classifier") for t in scores if tasks[t].get("classifier")), None)
    capped = capped_fits(tasks)
    return {"scores": scores, "mrpc_f1": (tasks.get("MRPC") or {}).get("f1"), "avg": data["averages"]["transfer"],
            "capped": capped,
            "mode": data["cell"].get("mode"), "classifier": classifier, "dtype": data["cell"].get("dtype"),
            "file": data["file"]}  # fmt: skip


def _sts(data: dict | None) -> float | None:
    return None if data is None else (data.get("averages") or {}).get("sts")


def methods_rows(root: str | Path) -> list[dict[str, Any]]:
    """One summary per model that has a selection record."""
    root = Path(root)
    cells = _cells_by_model(root / "docs" / "scaling" / "cells")
    transfer = _transfer_cells_by_model(root / "docs" / "scaling" / "cells")
    rows = []
    for sel_path in sorted((root / "docs" / "methods").glob("*/selection/selection.json")):
        sel = json.loads(sel_path.read_text(encoding="utf-8"))
        model = sel_path.parent.parent.name
        best = sel["best"]
        layer = int(best["options"].get("layer", -1))
        plain_layer = int(sel.get("best_plain_layer", -1))
        lt_rows = _jsonl(sel_path.parent / "layer-template.jsonl")
        mine = cells.get(model, {})
        best_cell = mine.get(("best-training-free", layer))
        families = []
        for family, options in (sel.get("bests") or {}).items():
            if not options:
                continue
            fam_rows = _jsonl(sel_path.parent / f"{family}.jsonl")
            score = next((float(r["score"]) for r in fam_rows if r.get("options") == options), None)
            f_layer = int(options.get("layer", -1))
            families.append({"family": family, "options": options, "score": score, "layer": f_layer,
                             "plain_same_layer": _plain_at(lt_rows, f_layer),
                             "record": str((sel_path.parent / f"{family}.jsonl").relative_to(root))})  # fmt: skip
        rows.append({
            "model": model, "record": str(sel_path.relative_to(root)), "split": sel["split_description"],
            "n_pairs": sel["n_pairs"], "n_pairs_full": sel["n_pairs_full"], "families": families,
            "best": best, "layer": layer, "plain_full": sel.get("plain_full"), "best_plain_layer": plain_layer,
            "plain_sample_at": {"-1": _plain_at(lt_rows, -1), str(layer): _plain_at(lt_rows, layer),
                                str(plain_layer): _plain_at(lt_rows, plain_layer)},
            "sts": {"best": _sts(best_cell), "plain_last": _sts(mine.get(("none", -1))),
                    "plain_same_layer": _sts(mine.get(("none", layer))),
                    "plain_best_layer": _sts(mine.get(("none", plain_layer)))},
            "tasks": {STS_COLUMNS[t]: s["score"] for t, s in (best_cell or {}).get("tasks", {}).items() if t in STS_COLUMNS},
            "dtype": (best_cell or {}).get("cell", {}).get("dtype"),
            "transfer": {"best": _transfer(transfer.get(model, {}).get(("best-training-free", layer))),
                         "plain_last": _transfer(transfer.get(model, {}).get(("none", -1)))},
        })  # fmt: skip
    return rows


def _f(value: float | None, sign: bool = False) -> str:
    if value is None:
        return "not yet"
    return f"{value:+.2f}" if sign else f"{value:.2f}"


def _gain(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _opts(options: dict) -> str:
    shown = {k: ("<demonstration>" if k == "demonstrations" else v) for k, v in options.items()}
    return "`" + json.dumps(shown, ensure_ascii=False) + "`"


def methods_markdown(rows: list[dict[str, Any]]) -> str:
    out = []
    for r in rows:
        s = r["sts"]
        out.append(f"### {r['model']}\n")
        rows_of = ", ".join(f"`{fam['record']}`" for fam in r["families"] if fam.get("record"))
        layers = r["record"].rsplit("/", 1)[0] + "/layer-template.jsonl"
        out.append(f"Records: `{r['record']}` (the choice), the scored settings {rows_of or '(none)'}"
                   f"{'' if layers in rows_of else f', `{layers}`'} and the cells of `docs/scaling/cells`. "
                   f"Selection split: {r['split']} ({r['n_pairs']} pairs; finalists rescored on all {r['n_pairs_full']}).\n")  # fmt: skip
        out.append("| family | best setting | selection score | plain PromptEOL at the same layer | gain at equal layer |")
        out.append("|---|---|---|---|---|")
        for fam in r["families"]:
            out.append(f"| {fam['family']} | {_opts(fam['options'])} | {_f(fam['score'])} | "
                       f"{_f(fam['plain_same_layer'])} | {_f(_gain(fam['score'], fam['plain_same_layer']), True)} |")  # fmt: skip
        b = r["best"]
        out.append("")
        out.append(f"Chosen (`best-training-free`): {_opts(b['options'])}, {_f(b['score'])} on the whole split "
                   f"(plain PromptEOL there: {_f(r['plain_full'])}).\n")  # fmt: skip
        out.append("| 7 STS tasks | STS avg | vs plain at the same layer | vs plain at its best layer |")
        out.append("|---|---|---|---|")
        out.append(f"| best-training-free (layer {r['layer']}) | {_f(s['best'])} | "
                   f"{_f(_gain(s['best'], s['plain_same_layer']), True)} | "
                   f"{_f(_gain(s['best'], s['plain_best_layer']), True)} |")  # fmt: skip
        out.append(f"| plain PromptEOL, layer -1 | {_f(s['plain_last'])} | | |")
        if r["layer"] != -1:
            out.append(f"| plain PromptEOL, layer {r['layer']} (the chosen layer) | {_f(s['plain_same_layer'])} | | |")
        if r["best_plain_layer"] not in (-1, r["layer"]):
            out.append(f"| plain PromptEOL, layer {r['best_plain_layer']} (its best layer on the selection split) | "
                       f"{_f(s['plain_best_layer'])} | | |")  # fmt: skip
        out.append("")
        out += _transfer_markdown(r)
    return "\n".join(out) + "\n"


def _transfer_markdown(r: dict[str, Any]) -> list[str]:
    """The transfer table of one model: best-training-free against plain PromptEOL (no demonstration, layer -1)."""
    best, plain = r["transfer"]["best"], r["transfer"]["plain_last"]
    if best is None and plain is None:
        return []
    names = TASK_GROUPS["transfer"]
    done = [t for t in (best, plain) if t]
    how = ", ".join(sorted({f"{t['mode']} mode, {t['classifier'] or 'senteval'} classifier, {t['dtype']}" for t in done}))
    files = " and ".join(f"`docs/scaling/cells/{t['file']}`" for t in done)
    out = [f"Transfer, accuracy (MRPC: accuracy / F1; {how}), from {files}:\n",
           "| 7 transfer tasks | " + " | ".join(names) + " | avg |", "|---|" + "---|" * (len(names) + 1)]  # fmt: skip

    def line(label: str, t: dict | None) -> str:
        if t is None:
            return f"| {label} | " + " | ".join(["not yet"] * (len(names) + 1)) + " |"
        cells = [_f(t["scores"].get(n)) for n in names]
        if t["mrpc_f1"] is not None:
            cells[names.index("MRPC")] += f" / {t['mrpc_f1']:.2f}"
        return f"| {label} | " + " | ".join(cells) + f" | {_f(t['avg'])} |"

    out.append(line(f"best-training-free (layer {r['layer']})", best))
    out.append(line("plain PromptEOL, no demonstration, layer -1", plain))
    if best and plain:
        diffs = [_f(_gain(best["scores"].get(n), plain["scores"].get(n)), True) for n in names]
        out.append("| difference | " + " | ".join(diffs) + f" | {_f(_gain(best['avg'], plain['avg']), True)} |")
    capped = [f"{label}: {', '.join(f'{t} {n}' for t, n in t_['capped'].items())}"
              for label, t_ in (("best-training-free", best), ("plain", plain)) if t_ and t_["capped"]]  # fmt: skip
    if capped:
        out += ["", "Fits stopped at the L-BFGS iteration cap (their scores are the capped iterate's; "
                "docs/evaluation.md): " + "; ".join(capped) + "."]  # fmt: skip
    return out + [""]


def write_methods_report(root: str | Path, output: str | Path | None = None) -> Path:
    """Write ``docs/methods/results.md`` (or ``output``) from the records under ``root``."""
    from ..fileio import write_text_atomic

    rows = methods_rows(root)
    path = Path(output) if output else Path(root) / "docs" / "methods" / "results.md"
    head = ("# Training-free settings per model: results\n\nGenerated by `prompteol methods report` from the "
            "committed records alone. Spearman x100.\n\n")  # fmt: skip
    return write_text_atomic(path, head + (methods_markdown(rows) if rows else "No selection record yet.\n"))
