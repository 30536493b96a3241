"""The model card (``README.md``) of an export: configuration, base model and identity, scores when given."""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError
from .record import CONFIG_FILE

if TYPE_CHECKING:  # pragma: no cover
    from ..encoder.encoder import Encoder

log = logging.getLogger(__name__)

def load_results(results: dict | str | os.PathLike) -> dict:
    if isinstance(results, dict):
        data = results
    else:
        try:
            data = json.loads(Path(results).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read the results file {str(results)!r}: {exc}") from None
    if isinstance(data.get("runs"), list):  # `prompteol eval` with baselines: the encoder's own run
        runs = [r for r in data["runs"] if "fingerprint" in r.get("encoder", {})] or data["runs"]
        data = runs[0]
    if not isinstance(data.get("tasks"), dict):
        raise InputError("the results file holds no 'tasks'; give the JSON written by `prompteol eval -o FILE`")
    return data


def _cell(text: str) -> str:
    """Text for a Markdown table cell (a ``|`` would end the cell)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _fmt_demo(demo: dict) -> str:
    return f"`{_cell(demo['sentence'])}` -> `{_cell(demo['word'])}`"


def model_card(encoder: Encoder, record: dict, run: dict | None = None) -> str:
    """The README.md of an export: what it computes, how to load it, and the scores of ``run``."""
    c = encoder.config
    cfg = record["encoder"]
    base = record["exported_from"]["model"]
    hub = (encoder.source or {}).get("kind") == "hub"
    front = ["---", "library_name: sentence-transformers", "pipeline_tag: sentence-similarity",
             "tags:", "- sentence-transformers", "- sentence-similarity", "- feature-extraction", "- prompteol"]  # fmt: skip
    if hub:
        front.append(f"base_model: {base}")
    front.append("---")
    demos = "; ".join(_fmt_demo(d.to_dict()) for d in c.demonstrations) or "none"
    defaults = type(c)().to_dict()
    shown = ("model", "adapter", "template", "demonstrations", "layer", "pooling", "device", "dtype", "normalize_text",
             "max_length")  # fmt: skip
    changed = {k: v for k, v in cfg.items() if k not in shown and v != defaults.get(k)}
    weights = "copied into `model/` (self-contained)" if record["paths"].get("model") else (
        f"referenced as `{cfg['model']}` (resolved by prompteol when loading)")  # fmt: skip
    lines = [
        *front, "",
        f"# PromptEOL sentence embeddings of `{base}`",
        "",
        f"Sentence embeddings without training from the decoder LLM `{base}` with the PromptEOL method "
        "(Jiang et al., *Scaling Sentence Embeddings with Large Language Models*): each sentence is rendered "
        "in a prompt template, the base model is run, and the hidden state of the last token is read out. "
        f"Exported by prompteol {record['prompteol_version']} on {record['date']}.",
        "",
        "## Usage",
        "",
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "",
        "# needs `pip install prompteol` (the module class is prompteol's); sentence-transformers >= 6 imports",
        "# a module class outside its own package only with trust_remote_code=True (nothing is downloaded)",
        'model = SentenceTransformer("PATH/TO/THIS/FOLDER", trust_remote_code=True)',
        'embeddings = model.encode(["A man is playing a guitar.", "A man plays the guitar."])',
        "similarities = model.similarity(embeddings, embeddings)",
        "```",
        "",
        "The vectors equal `prompteol.Encoder.encode` of the same configuration (the module runs it). "
        "Pass raw sentences: the template is applied by the module (a sentence-transformers `prompt` is "
        "prepended to the sentence, inside the template).",
        "",
        "## Configuration",
        "",
        "| | |",
        "|---|---|",
        f"| template | `{_cell(c.template.name)}`: `{_cell(c.template.text)}` |",
        f"| demonstrations | {demos} |",
        f"| layer | {c.layer} (block output {encoder.layer_index} of {encoder.num_layers}) |",
        f"| pooling | `{c.pooling}` |",
        f"| dimension | {record['dim']} |",
        "| similarity | cosine |",
        f"| dtype | `{c.dtype}` |",
        f"| text normalisation | {'on' if c.normalize_text else 'off'} |",
        f"| max_length | {c.max_length if c.max_length is not None else 'none (never cut)'} |",
    ]
    lines += [f"| {k} | `{_cell(json.dumps(v, ensure_ascii=False))}` |" for k, v in changed.items()]
    lines += [
        "",
        "## Base model",
        "",
        f"- model: `{base}` ({(encoder.source or {}).get('kind', 'unknown')}); weights {weights}",
    ]
    if record["exported_from"].get("adapter") or record["paths"].get("adapter"):
        lines.append(f"- adapter: `{record['exported_from'].get('adapter') or cfg.get('adapter')}`")
    lines += [
        f"- identity: `{json.dumps(record['identity'], sort_keys=True)}`",
    ]
    if record.get("adapter_identity"):
        lines.append(f"- adapter identity: `{json.dumps(record['adapter_identity'], sort_keys=True)}`")
    lines += [f"- prompteol fingerprint: `{record['fingerprint']}`", "", "## Scores", ""]
    lines += _scores_section(run, record["fingerprint"])
    lines += ["", f"The full configuration is in `{CONFIG_FILE}`.", ""]
    return "\n".join(lines)


def _scores_section(run: dict | None, fingerprint: str) -> list[str]:
    if run is None:
        return ["No scores were measured for this export (export with `--results FILE`, a `prompteol eval` "
                "output, to record them here)."]  # fmt: skip
    from ..evaluation.tasks import TASKS

    tasks = run["tasks"]
    out = []
    measured = run.get("encoder", {}).get("fingerprint")
    when = f" on {run['date']}" if run.get("date") else ""
    out.append(f"Measured with `prompteol eval`{when} (SentEval protocol, mode `{run.get('mode', 'test')}`; "
               "Spearman x100 of cosine similarities for STS, accuracy for transfer tasks).")  # fmt: skip
    if measured and measured != fingerprint:
        warnings.warn(f"the results were measured with encoder fingerprint {measured}, not this export's "
                      f"{fingerprint}; the model card says so", stacklevel=3)  # fmt: skip
        out.append("")
        out.append(f"**Note:** these scores were measured with another configuration (encoder fingerprint "
                   f"`{measured}`, this export's is `{fingerprint}`); they may not apply to this model.")  # fmt: skip
    sts = [n for n in tasks if n in TASKS and TASKS[n].kind == "sts"]
    other = [n for n in tasks if n not in sts]
    if sts:
        out += ["", "| STS task | Spearman x100 |", "|---|---:|"]
        out += [f"| {n} | {tasks[n]['score']:.2f} |" for n in sts]
        if "sts" in run.get("averages", {}):
            out.append(f"| **Avg** ({len(sts)}) | **{run['averages']['sts']:.2f}** |")
    if other:
        out += ["", "| task | score |", "|---|---:|"]
        out += [f"| {n} | {tasks[n]['score']:.2f} |" for n in other]
        if "transfer" in run.get("averages", {}):
            out.append(f"| **Avg transfer** | **{run['averages']['transfer']:.2f}** |")
    return out
