"""A model's best training-free setting, chosen on a leak-free split (the study's step d).

Families of settings are scored one after the other with
:func:`~prompteol.demos.search.search_options` (one JSONL file each, resumable), each family built
around the best of the ones before it:

1. ``layer-template``: read-out layer (the last ones and intermediate ones: published work finds an
   intermediate layer better than the last for small decoders) x template (``prompteol``, ``cot``, ``ke``);
2. ``echo``: the echo template and pooling at a few layers;
3. ``token-prepending``: ranges x layer, on the best template;
4. ``contrastive``: Contrastive Prompting block x strength, on the best template and layer;
5. ``embed-filter``: EmbedFilter bands (tau) on the best template and on echo (last layer only);
6. ``combination``: every merge of two or more families' bests;
7. ``with-demo``: the model's leak-free demonstration added to plain PromptEOL and to the three best
   settings so far.

Then the ``finalists`` (the best settings of all rows, by sample score) are scored again on the whole
split; the best of them is the choice. Every score is on the selection split, never a test set.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..fileio import write_json_atomic

__all__ = ["FAMILIES", "layer_grid", "choose_setting", "combinations", "ChosenSetting", "SELECTION_SCHEMA", "SETTINGS_NOTE"]

SELECTION_SCHEMA = "prompteol.selection/1"
SETTINGS_NOTE = ("chosen on the leak-free selection split (finalists rescored on the whole split); the STS test "
                 "scores only report it")
TEMPLATES = ("prompteol", "cot", "ke")


def layer_grid(num_layers: int) -> list[int]:
    """The read-out layers searched: the last four, -6, -8, and a quarter and half of the way down."""
    layers = {-1, -2, -3, -4, -6, -8, -(num_layers // 4), -(num_layers // 2)}
    return sorted((layer for layer in layers if -num_layers < layer < 0), reverse=True)


def _best(rows: list[dict]) -> dict:
    return rows[0]["options"] if rows else {}


def _template_layer(best: dict) -> dict:
    return {k: v for k, v in best.items() if k in ("template", "layer")}


def _family_layer_template(n: int, bests: dict[str, dict]) -> list[dict]:
    return [{"template": t, "layer": layer} for t in TEMPLATES for layer in layer_grid(n)]


def _family_echo(n: int, bests: dict[str, dict]) -> list[dict]:
    layers = dict.fromkeys([-1, -2, -4, bests["layer-template"].get("layer", -1)])
    return [{"template": "echo", "pooling": "echo", "layer": layer} for layer in layers]


def _family_token_prepending(n: int, bests: dict[str, dict]) -> list[dict]:
    base = _template_layer(bests["layer-template"])
    out = []
    for rng in ([1, 3], [1, 6], [2, 8]):
        if rng[1] > n - 1:
            continue
        for layer in dict.fromkeys([base.get("layer", -1), -1, -2]):
            out.append({**base, "layer": layer, "token_prepending": rng})
    return out


def _family_contrastive(n: int, bests: dict[str, dict]) -> list[dict]:
    base = _template_layer(bests["layer-template"])
    read_out = n + base.get("layer", -1) + 1  # the block index the read-out layer follows
    blocks = [b for b in dict.fromkeys([2, 4, n // 4, n // 2]) if 0 < b < read_out]
    return [{**base, "contrastive_layer": b, "contrastive_alpha": a} for b in blocks for a in (0.25, 0.5, 1.0)]


def _family_embed_filter(n: int, bests: dict[str, dict]) -> list[dict]:
    template = bests["layer-template"].get("template", "prompteol")
    out = [{"template": template, "embed_filter": tau} for tau in (2, 4, 8)]
    out += [{"template": "echo", "pooling": "echo", "embed_filter": tau} for tau in (2, 4, 8)]
    return out


#: family name -> grid builder (number of layers, the bests so far) -> settings, in search order
FAMILIES: dict[str, Callable[[int, dict[str, dict]], list[dict]]] = {
    "layer-template": _family_layer_template,
    "echo": _family_echo,
    "token-prepending": _family_token_prepending,
    "contrastive": _family_contrastive,
    "embed-filter": _family_embed_filter,
}


def combinations(bests: dict[str, dict]) -> list[dict]:
    """Every merge of two or more families' best settings (a later family's value wins a conflict)."""
    parts = [opts for opts in bests.values() if opts]
    out: list[dict] = []
    for r in range(2, len(parts) + 1):
        for combo in itertools.combinations(parts, r):
            merged: dict = {}
            for opts in combo:
                merged.update(opts)
            if merged not in out and merged not in parts:
                out.append(merged)
    return out


def _key(options: dict) -> str:
    return json.dumps(options, sort_keys=True, default=list)


def choose_setting(
    base, split, full_split, out_dir: Path, demonstrations: list[dict], *, finalists: int = 5, batch_size: int = 32,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:  # fmt: skip
    """Run the families, combinations, demonstration settings and the finalists' rescoring; return
    (and write to ``out_dir/selection.json``) the selection record. Resumable file by file."""
    from ..demos.search import search_options
    from ..records import provenance

    n = base.num_layers
    usable = set(base.config.to_dict())
    rows_by_family: dict[str, list[dict]] = {}
    bests: dict[str, dict] = {}

    def run(name: str, grid: list[dict], encoder=base) -> list[dict]:
        grid = [g for g in grid if set(g) - {"demonstrations"} <= usable]
        rows = search_options(encoder, grid, split, out_dir / f"{name}.jsonl", batch_size=batch_size, progress=False)
        rows_by_family[name] = rows
        if rows:
            log(f"  {name}: {len(rows)} settings, best {rows[0]['score']:.2f} {json.dumps(rows[0]['options'])}")
        return rows

    run("plain", [{}])
    bests["layer-template"] = {}  # (the later families build on it; stays empty if it scored nothing)
    for family, build in FAMILIES.items():
        rows = run(family, build(n, bests))
        if rows:
            bests[family] = _best(rows)
    run("combination", combinations(bests))
    everything = sorted((r for rows in rows_by_family.values() for r in rows), key=lambda r: -r["score"])
    top3 = [r["options"] for r in everything[:3]]
    if demonstrations:
        with_demo = base.derive(demonstrations=tuple((d["sentence"], d["word"]) for d in demonstrations))
        demo_rows = run("with-demo", [dict(o) for o in [{}, *top3]], with_demo)
        for r in demo_rows:
            r["options"] = {**r["options"], "demonstrations": demonstrations}
        everything = sorted(everything + demo_rows, key=lambda r: -r["score"])
    # finalists: the best distinct settings of the sample, scored again on the whole split
    picked: list[dict] = []
    for r in everything:
        if r["options"] not in picked:
            picked.append(r["options"])
        if len(picked) == finalists:
            break
    final_rows = []
    for opts in picked:
        demos = opts.get("demonstrations")
        enc = base.derive(demonstrations=tuple((d["sentence"], d["word"]) for d in demos)) if demos else base
        rest = {k: v for k, v in opts.items() if k != "demonstrations"}
        tag = "finalists-demo" if demos else "finalists"
        rows = search_options(enc, [rest], full_split, out_dir / f"{tag}.jsonl", batch_size=batch_size, progress=False)
        final_rows.append({"options": opts, "score": rows[0]["score"],
                           "sample_score": next(r["score"] for r in everything if r["options"] == opts)})  # fmt: skip
    final_rows.sort(key=lambda r: -r["score"])
    plain_full = search_options(base, [{}], full_split, out_dir / "finalists.jsonl", batch_size=batch_size,
                                progress=False)[0]["score"]  # fmt: skip
    lt = rows_by_family.get("layer-template", [])
    plain_layers = {r["options"]["layer"]: r["score"] for r in lt if r["options"].get("template") == "prompteol"}
    best_plain_layer = max(plain_layers, key=lambda k: plain_layers[k]) if plain_layers else -1
    record = {
        "schema": SELECTION_SCHEMA, "split": split.name, "split_description": split.description,
        "n_pairs": len(split), "full_split_description": full_split.description, "n_pairs_full": len(full_split),
        "leak_free": split.leak_free, "num_layers": n, "families": list(FAMILIES),
        "bests": bests, "best": final_rows[0], "finalists": final_rows, "plain_full": plain_full,
        "plain_by_layer": {str(k): v for k, v in sorted(plain_layers.items(), reverse=True)},
        "best_plain_layer": best_plain_layer, "demonstrations": demonstrations,
        "base_fingerprint": base.fingerprint, "dtype": base.config.dtype,
        "provenance": provenance(device=str(base.config.device)),
    }  # fmt: skip
    write_json_atomic(out_dir / "selection.json", record)
    return record


@dataclass(frozen=True)
class ChosenSetting:
    """A selection's best setting split into what a scale cell takes."""

    layer: int
    demonstrations: list[dict]
    options: dict[str, Any]

    @classmethod
    def of(cls, options: dict[str, Any]) -> ChosenSetting:
        rest = dict(options)
        layer = int(rest.pop("layer", -1))
        demos = list(rest.pop("demonstrations", []) or [])
        if "token_prepending" in rest and rest["token_prepending"] is not None:
            rest["token_prepending"] = tuple(rest["token_prepending"])
        return cls(layer, demos, rest)
