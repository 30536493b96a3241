"""Export an encoder as a sentence-transformers model folder.

>>> from prompteol import Encoder
>>> from prompteol.export import export_sentence_transformers
>>> export_sentence_transformers(Encoder.from_pretrained("smollm2-135m"), "smollm2-prompteol")  # doctest: +SKIP
>>> from sentence_transformers import SentenceTransformer
>>> st = SentenceTransformer("smollm2-prompteol", trust_remote_code=True)                  # doctest: +SKIP
>>> st.encode(["A man is playing a guitar."])    # == Encoder.encode of the same config     # doctest: +SKIP

The folder holds:

- ``modules.json``: one module, ``prompteol.export.PromptEOLModule`` (path ``""``: the folder itself).
  sentence-transformers imports that class by its dotted name and calls its ``load``; since
  sentence-transformers 6.0 a module class outside ``sentence_transformers.*`` is imported only
  with ``trust_remote_code=True`` (nothing is downloaded: the class is prompteol's, installed
  with it);
- ``prompteol_config.json``: the :class:`~prompteol.EncoderConfig` (template, demonstrations,
  layer, pooling, ...), the model reference and its identity, the fingerprint and the prompteol
  version. The module rebuilds the :class:`~prompteol.Encoder` from it, so
  ``SentenceTransformer(OUT).encode(texts)`` runs ``Encoder.encode(texts)``: the module renders the
  template around each sentence itself (sentence-transformers' prompts are prefix-only), its
  ``preprocess``/``tokenize`` passes the raw texts through in the features dict and its
  ``forward`` returns their ``sentence_embedding``;
- ``config_sentence_transformers.json``: ``similarity_fn_name`` ``cosine``, no prompts, and a
  ``requirements`` entry for prompteol (a missing prompteol is named when loading);
- ``README.md``: the model card (configuration, base model and identity, scores when given);
- ``model/`` (and ``adapter/``) with ``copy_weights=True``: the transformers folder (for a
  packaged alias, its converted folder), so the export is self-contained. Otherwise the config
  references the model (alias, absolute path or hub id) and prompteol resolves it when loading;
  a model whose identity changed since the export is loaded with a warning.

Everything is written into a temporary folder next to ``out`` and renamed into place.
Importing this module imports neither torch nor sentence-transformers; ``PromptEOLModule`` is
built (importing both) on first access.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .encoder.identity import record_files
from .errors import ConfigError, InputError
from .fileio import give_umask_modes, write_folder_atomic
from .records import provenance

if TYPE_CHECKING:  # pragma: no cover
    from .encoder.encoder import Encoder

__all__ = [
    "export_sentence_transformers", "PromptEOLModule", "CONFIG_FILE", "FORMAT", "load_export_record", "load_results",
    "model_card",
]  # fmt: skip

log = logging.getLogger(__name__)

#: the file the module reads and writes, and the version tag of its content
CONFIG_FILE = "prompteol_config.json"
FORMAT = "prompteol.sentence-transformers/1"
MODULE_TYPE = "prompteol.export.PromptEOLModule"
#: the sentence-transformers module class, built on first access (module ``__getattr__`` below)
PromptEOLModule: type

#: config fields that may hold a path relative to the exported folder (with copied weights)
_PATH_FIELDS = ("model", "adapter")


# ---------------------------------------------------------------------------------------- export
def export_sentence_transformers(
    encoder: Encoder,
    out: str | os.PathLike,
    *,
    copy_weights: bool = False,
    results: dict | str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``encoder`` as a sentence-transformers folder at ``out``; returns its path.

    ``copy_weights`` copies the model (and adapter) folder into ``out``; ``results`` is a
    ``prompteol eval`` results dict or JSON file whose scores go into the model card.
    ``overwrite`` replaces an existing non-empty ``out`` (else :class:`~prompteol.errors.ConfigError`).
    """
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{str(out)!r} is a file; give a folder to export to")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{str(out)!r} exists and is not empty; choose another folder or pass overwrite=True (--force)")
    run = load_results(results) if results is not None else None
    config = encoder.config
    with write_folder_atomic(out) as tmp:
        paths: dict[str, str] = {}
        fields: dict[str, Any] = {}
        if copy_weights:
            shutil.copytree(_model_folder(encoder), tmp / "model", ignore=shutil.ignore_patterns(".git"))
            if "files" not in encoder.identity:  # the source's files matched its marker (or it has none):
                record_files(tmp / "model")  # the copy's marker records them, so the copy keeps the identity
            fields["model"], paths["model"] = "model", "model"
            adapter = _adapter_folder(encoder)
            if adapter is not None:
                shutil.copytree(adapter, tmp / "adapter", ignore=shutil.ignore_patterns(".git"))
                fields["adapter"], paths["adapter"] = "adapter", "adapter"
            else:
                fields["adapter"] = None
            give_umask_modes(tmp)  # copies keep the source's modes (0600 weights): an export is for sharing
        else:
            for name in _PATH_FIELDS:
                value = getattr(config, name)
                if value is not None and Path(value).expanduser().exists():
                    fields[name] = str(Path(value).expanduser().resolve())  # a local path works from anywhere
        record = {
            "format": FORMAT,
            "encoder": {**config.to_dict(), **fields},
            "paths": paths,
            "exported_from": {"model": config.model, "adapter": config.adapter},
            "identity": encoder.identity,
            "adapter_identity": encoder.adapter_identity,
            "source": {k: (encoder.source or {}).get(k) for k in ("kind", "ref")},  # no local cache paths
            "fingerprint": encoder.fingerprint,
            "dim": encoder.dim,
            "num_layers": encoder.num_layers,
            "layer_index": encoder.layer_index,
            "prompteol_version": __version__,
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "provenance": provenance(device=str(config.device)),
        }
        _write_json(tmp / CONFIG_FILE, record)
        _write_json(tmp / "modules.json", [{"idx": 0, "name": "0", "path": "", "type": MODULE_TYPE}])
        _write_json(tmp / "config_sentence_transformers.json", _st_config())
        (tmp / "README.md").write_text(model_card(encoder, record, run), encoding="utf-8")
    return out


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _st_config() -> dict:
    from .records import versions_of

    keys = {"sentence-transformers": "sentence_transformers", "transformers": "transformers", "torch": "pytorch"}
    versions = {keys[d]: v for d, v in versions_of(keys).items()}
    return {
        "model_type": "SentenceTransformer",
        "__version__": {**versions, "prompteol": __version__},
        "prompts": {},
        "default_prompt_name": None,
        "similarity_fn_name": "cosine",
        "requirements": {"prompteol": {"specifier": f">={__version__}", "reason": "the PromptEOLModule module class"}},
    }


def _model_folder(encoder: Encoder) -> Path:
    """The transformers folder the encoder's base model was loaded from (downloaded for a hub id)."""
    source = encoder.source or {}
    path = source.get("path")
    if source.get("kind") == "hub":
        from huggingface_hub import snapshot_download

        revision = encoder.identity.get("commit") or encoder.config.revision
        return Path(snapshot_download(str(path), revision=revision))
    if not path or not Path(path).is_dir():
        raise ConfigError(f"cannot copy the weights of {encoder.config.model!r}: no model folder is known ({path!r})")
    return Path(path)


def _adapter_folder(encoder: Encoder) -> Path | None:
    from .models.loading import ADAPTER_CONFIG

    adapter = encoder.config.adapter
    if adapter is None and (Path(encoder.config.model).expanduser() / ADAPTER_CONFIG).is_file():
        adapter = encoder.config.model  # an adapter folder given as the model (it records its base)
    return Path(adapter).expanduser() if adapter else None


# ---------------------------------------------------------------------------------------- model card
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
    from .evaluation.tasks import TASKS

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


# ---------------------------------------------------------------------------------------- loading
def load_export_record(folder: str | os.PathLike) -> dict:
    """``prompteol_config.json`` of an exported folder, checked, with the paths made absolute."""
    folder = Path(folder)
    path = folder / CONFIG_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{str(folder)!r} has no {CONFIG_FILE}: not a prompteol export") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a {FORMAT} record (format {record.get('format') if isinstance(record, dict) else None!r})")
    encoder = dict(record["encoder"])
    for name, rel in (record.get("paths") or {}).items():
        if name in _PATH_FIELDS and rel:
            encoder[name] = str((folder / rel).resolve())
    return {**record, "encoder": encoder}


def _check_identity(encoder: Encoder, record: dict) -> None:
    """Warn when the referenced model is not the one exported (its weights changed since)."""
    saved = record.get("identity") or {}
    if record.get("paths", {}).get("model") and (record.get("source") or {}).get("kind") == "hub":
        return  # copied from the hub: the copy is a local folder now (another kind of identity)
    now = encoder.identity or {}
    keys = ("weights", "commit")
    if any(saved.get(k) != now.get(k) for k in keys if k in saved or k in now):
        warnings.warn(f"the model of this export ({encoder.config.model!r}) is not the one it was exported with: "
                      f"identity {now} != exported {saved}; its vectors may differ from the model card's", stacklevel=3)  # fmt: skip


def _module_class() -> type:
    """Build :class:`PromptEOLModule` on sentence-transformers' module base (imported here, once)."""
    import torch

    base: type
    try:  # sentence-transformers >= 6
        from sentence_transformers.base.modules import InputModule as base
    except ImportError:
        try:  # 5.x
            from sentence_transformers.models import InputModule as base  # type: ignore[no-redef]
        except ImportError:  # 3.x / 4.x: a plain torch module with tokenize/save/load
            base = torch.nn.Module

    class PromptEOLModule(base):  # type: ignore[valid-type, misc]
        """A sentence-transformers module that is a whole :class:`~prompteol.Encoder`.

        ``preprocess(texts)`` (and ``tokenize``) keep the raw texts in the features dict (a
        sentence-transformers ``prompt`` is prepended to each, as sentence-transformers does);
        ``forward(features)`` renders, tokenizes, runs and pools them with the encoder and
        returns ``features["sentence_embedding"]`` (N, dim) float32 on the model's device.
        """

        config_file_name = CONFIG_FILE
        config_keys: list[str] = []
        save_in_root = True
        forward_kwargs: set[str] = set()

        def __init__(self, encoder: Encoder, record: dict | None = None, folder: str | None = None):
            super().__init__()
            self.encoder = encoder  # not a torch module: a plain attribute
            self.model = encoder.model  # registered, so .to(device), .parameters() and the ST device work
            self.tokenizer = encoder.tokenizer
            self.record = record or {}
            self.folder = folder

        def preprocess(self, inputs, prompt: str | None = None, **kwargs) -> dict[str, Any]:
            texts = list(inputs)
            bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
            if bad is not None:
                raise InputError(f"PromptEOLModule embeds text only; input {bad} is a {type(texts[bad]).__name__}")
            if prompt:
                texts = [prompt + t for t in texts]
            return {"texts": texts}

        def tokenize(self, texts, **kwargs) -> dict[str, Any]:
            return self.preprocess(texts, **kwargs)

        def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
            texts = features["texts"]
            if torch.is_grad_enabled() and self.training:  # training through sentence-transformers
                vectors = self.encoder.embed(texts)
            else:
                array = self.encoder.encode(texts, batch_size=max(len(texts), 1), show_progress=False,
                                            use_embedding_cache=False)  # fmt: skip
                vectors = torch.from_numpy(array).to(self.encoder.device)
            features["sentence_embedding"] = vectors
            return features

        def get_embedding_dimension(self) -> int:
            return int(self.encoder.dim)

        def get_sentence_embedding_dimension(self) -> int:  # sentence-transformers < 5.2
            return int(self.encoder.dim)

        def get_config_dict(self) -> dict[str, Any]:
            return dict(self.record.get("encoder", {}))

        def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
            """Write ``prompteol_config.json`` (and copy the in-folder weights when the output is another folder)."""
            out = Path(output_path)
            out.mkdir(parents=True, exist_ok=True)
            record = {k: v for k, v in self.record.items()}
            stored = dict(record.get("encoder", {}))
            for name, rel in (record.get("paths") or {}).items():
                src = Path(self.folder or "") / rel
                if self.folder and src.resolve() != (out / rel).resolve():
                    shutil.rmtree(out / rel, ignore_errors=True)
                    shutil.copytree(src, out / rel)
                stored[name] = rel
            record["encoder"] = stored
            _write_json(out / CONFIG_FILE, record)

        @classmethod
        def load(cls, model_name_or_path: str, subfolder: str = "", token: bool | str | None = None,
                 cache_folder: str | None = None, revision: str | None = None, local_files_only: bool = False,
                 **kwargs):  # fmt: skip
            """Rebuild the encoder from ``prompteol_config.json`` (a local folder, or a hub repo via
            sentence-transformers' ``load_dir_path``)."""
            from .encoder.config import EncoderConfig
            from .encoder.encoder import Encoder

            folder = Path(model_name_or_path) / subfolder
            if not folder.is_dir() and hasattr(cls, "load_dir_path"):
                found = cls.load_dir_path(model_name_or_path, subfolder=subfolder, token=token,
                                          cache_folder=cache_folder, revision=revision,
                                          local_files_only=local_files_only)  # fmt: skip
                folder = Path(found) if found else folder
            record = load_export_record(folder)
            config = EncoderConfig.from_dict(record["encoder"])
            encoder = Encoder.from_config(config, embedding_cache=None, progress=False)
            _check_identity(encoder, record)
            return cls(encoder, record=record, folder=str(folder))

        def __repr__(self) -> str:
            return f"PromptEOLModule({self.encoder!r})"

    PromptEOLModule.__module__ = __name__
    PromptEOLModule.__qualname__ = "PromptEOLModule"
    return PromptEOLModule


def __getattr__(name: str) -> Any:
    if name == "PromptEOLModule":
        cls = _module_class()
        globals()["PromptEOLModule"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
