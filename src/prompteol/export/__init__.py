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
Importing this package imports neither torch nor sentence-transformers; ``PromptEOLModule`` is
built (importing both) on first access. Modules: ``folder`` (writing the folder), ``card`` (the model
card), ``module`` (the module class and reading a record back).
"""

from __future__ import annotations

from typing import Any

from .card import load_results, model_card
from .folder import export_sentence_transformers
from .record import CONFIG_FILE, FORMAT, MODULE_TYPE, load_export_record

__all__ = [
    "export_sentence_transformers", "PromptEOLModule", "CONFIG_FILE", "FORMAT", "MODULE_TYPE", "load_export_record",
    "load_results", "model_card",
]  # fmt: skip

#: the sentence-transformers module class, built on first access (module ``__getattr__`` below)
PromptEOLModule: type


def __getattr__(name: str) -> Any:
    if name == "PromptEOLModule":
        from .module import _module_class

        cls = _module_class()
        globals()["PromptEOLModule"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
