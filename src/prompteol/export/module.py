"""``PromptEOLModule``: the sentence-transformers module class an exported folder names.

``PromptEOLModule``: the sentence-transformers module class an exported folder names, rebuilt from its
config record (imports torch and sentence-transformers when built: :mod:`prompteol.export` builds it on
first access)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from .record import CONFIG_FILE, MODULE_TYPE, check_identity, load_export_record, write_json

if TYPE_CHECKING:  # pragma: no cover
    from ..encoder.encoder import Encoder

log = logging.getLogger(__name__)

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
            write_json(out / CONFIG_FILE, record)

        @classmethod
        def load(cls, model_name_or_path: str, subfolder: str = "", token: bool | str | None = None,
                 cache_folder: str | None = None, revision: str | None = None, local_files_only: bool = False,
                 **kwargs):  # fmt: skip
            """Rebuild the encoder from ``prompteol_config.json`` (a local folder, or a hub repo via
            sentence-transformers' ``load_dir_path``)."""
            from ..encoder.config import EncoderConfig
            from ..encoder.encoder import Encoder

            folder = Path(model_name_or_path) / subfolder
            if not folder.is_dir() and hasattr(cls, "load_dir_path"):
                found = cls.load_dir_path(model_name_or_path, subfolder=subfolder, token=token,
                                          cache_folder=cache_folder, revision=revision,
                                          local_files_only=local_files_only)  # fmt: skip
                folder = Path(found) if found else folder
            record = load_export_record(folder)
            config = EncoderConfig.from_dict(record["encoder"])
            encoder = Encoder.from_config(config, embedding_cache=None, progress=False)
            check_identity(encoder, record)
            return cls(encoder, record=record, folder=str(folder))

        def __repr__(self) -> str:
            return f"PromptEOLModule({self.encoder!r})"

    PromptEOLModule.__module__ = MODULE_TYPE.rpartition(".")[0]  # prompteol.export, the name folders hold
    PromptEOLModule.__qualname__ = "PromptEOLModule"
    return PromptEOLModule
