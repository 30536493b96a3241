"""EmbedFilter (2026, arXiv 2606.07502): a data-free linear filter on the final hidden state.

The right singular vectors of the LM head's weight W (V, H) (tied models: the token embedding
matrix), ordered by descending singular value, form a basis of the hidden space; the filter keeps
a band of ``k = H // tau`` of them and returns the state's *coordinates* in that band, a vector of
``k`` dimensions. Read in the authors' code (CentreChen/EmbFilter, ``models/modeling_qwen2_lr.py``,
``Qwen2ForCausalLM.set_lm_embed``): ``Vh`` from ``torch.linalg.svd(lm_head.weight.float())``, a
bias-free ``Linear(H, k)`` with weight ``Vh[band]`` applied to the output of the final norm at every
position (pooling comes after it); ``k == H`` is the identity. Bands (ours = theirs):
``middle`` = ``edge``, their default (``Vh[(H - k) // 2 : (H - k) // 2 + k]``), ``top`` = ``tail``
(``Vh[:k]``), ``bottom`` = ``head`` (``Vh[-k:]``), ``ends`` = ``mid`` (the first and last ``k // 2``).

Here the projection acts on the pooled vector, in float32 (every pooling is linear in the states,
so this equals projecting each position first); ``Vh`` comes from an eigendecomposition of the
float64 Gram matrix ``W^T W`` (the same vectors as the SVD, in less time and memory), each row's
sign fixed so its largest-magnitude component is positive (the SVD's signs are arbitrary and may
differ between devices and LAPACKs; the cache must not mix two conventions). The basis is
computed once per loaded model and weight (cached on the model). Changing this construction
changes vectors: bump ``FINGERPRINT_VERSION``.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any, cast

from ...errors import ConfigError
from .base import Method, MethodSetup, register

__all__ = ["EmbedFilter", "EmbedFilterProjection", "band_indices", "output_weight", "right_singular_vectors"]

_BASES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {weight key: (H, H) float32 basis}
_HEAD_KEYS = ("lm_head.weight", "embed_out.weight")
_CHUNK = 16384  # rows of W per float64 Gram update (bounds the transient memory)


def band_indices(hidden: int, keep: int, band: str) -> list[int]:
    """Rows of ``Vh`` (descending singular values) that the filter keeps."""
    if band == "middle":
        start = (hidden - keep) // 2
        return list(range(start, start + keep))
    if band == "top":
        return list(range(keep))
    if band == "bottom":
        return list(range(hidden - keep, hidden))
    if band == "ends":
        half = keep // 2
        return list(range(half)) + list(range(hidden - half, hidden))
    raise ConfigError(f"embed_filter_band should be one of middle, top, bottom, ends; got {band!r}")


def _tied(model) -> bool:
    return bool(getattr(model.config, "tie_word_embeddings", True))


def _weight_folder(source: dict, revision: str | None) -> Path:
    path = Path(str(source.get("path", "")))
    if path.is_dir():
        return path
    if source.get("kind") == "hub":
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(source["path"]), revision=revision, local_files_only=True))
    raise ConfigError(f"embed_filter needs the LM head of this untied model, but its folder is unknown ({source!r})")


def _head_from_files(folder: Path) -> Any:
    """The untied LM head (V, H) read from the model folder's safetensors (the encoder loads no LM head)."""
    import json

    from safetensors import safe_open

    index = folder / "model.safetensors.index.json"
    files = sorted(folder.glob("*.safetensors"))
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        files = sorted({folder / f for k, f in weight_map.items() if k.endswith(_HEAD_KEYS)}) or files
    for file in files:
        with safe_open(str(file), "pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is no dict)
                if key.endswith(_HEAD_KEYS):
                    return f.get_tensor(key)
    raise ConfigError(f"embed_filter needs the LM head of this untied model (tie_word_embeddings is false), but no "
                      f"safetensors file in {folder} holds one of {list(_HEAD_KEYS)}")  # fmt: skip


def output_weight(model, source: dict, revision: str | None = None) -> tuple[Any, tuple]:
    """``(W, key)``: the LM head's weight (V, H) and a key of its identity (for the basis cache)."""
    if _tied(model):
        weight = model.get_input_embeddings().weight
        return weight.detach(), ("tied", weight.data_ptr(), weight._version, str(weight.dtype))
    return _head_from_files(_weight_folder(source, revision)), ("file", str(source.get("path")), revision)


def right_singular_vectors(weight) -> Any:
    """``Vh`` (H, H) float32 of ``weight`` (V, H): rows by descending singular value, signs canonical."""
    import torch

    h = weight.shape[1]
    gram = torch.zeros((h, h), dtype=torch.float64, device=weight.device)
    for lo in range(0, weight.shape[0], _CHUNK):
        part = weight[lo : lo + _CHUNK].to(torch.float64)
        gram += part.T @ part
    _, vecs = torch.linalg.eigh(gram)  # ascending eigenvalues (squared singular values)
    vh = vecs.flip(1).T  # (H, H), rows by descending singular value
    top = vh.abs().argmax(dim=1, keepdim=True)
    vh = vh * torch.sign(vh.gather(1, top))
    return vh.to(torch.float32)


def basis(model, source: dict, revision: str | None = None) -> Any:
    """The model's ``Vh``, computed once per loaded model and weight (derived encoders share it)."""
    weight, key = output_weight(model, source, revision)
    per_model = _BASES.setdefault(model, {})
    if key not in per_model:
        import torch

        with torch.no_grad():
            per_model.clear()  # an older weight of this model (changed in place) is never used again
            per_model[key] = right_singular_vectors(weight.to(next(model.parameters()).device))
    return per_model[key]


class EmbedFilterProjection:
    """Pooled vectors (B, H) -> their coordinates (B, k) in the kept band of the LM head's right singular vectors."""

    def __init__(self, model, source: dict, tau: int, band: str, revision: str | None = None):
        import torch

        vh = basis(model, source, revision)
        hidden = vh.shape[0]
        keep = hidden // tau
        if keep < 1 or (band == "ends" and keep < 2):
            most = hidden if band != "ends" else hidden // 2
            raise ConfigError(f"embed_filter={tau} keeps {hidden} // {tau} = {keep} of this model's {hidden} hidden "
                              f"dimensions (band {band!r}); valid: 1..{most}")  # fmt: skip
        self.tau, self.band, self.hidden = tau, band, hidden
        self.weight = vh[torch.as_tensor(band_indices(hidden, keep, band), device=vh.device)]  # (k, H)

    @property
    def dim(self) -> int:
        return int(self.weight.shape[0])

    def __call__(self, vectors):
        if vectors.shape[-1] != self.hidden:
            raise ConfigError(f"embed_filter: the read-out vectors have {vectors.shape[-1]} dimensions but the LM "
                              f"head acts on {self.hidden}")  # fmt: skip
        return vectors @ self.weight.to(device=vectors.device, dtype=vectors.dtype).T


@register
class EmbedFilter(Method):
    """The projection as the encoder's read-out map (last layer only)."""

    name = "embed_filter"
    dim_fields = ("embed_filter", "embed_filter_band")

    @classmethod
    def applies(cls, config) -> bool:
        return config.embed_filter is not None

    def __init__(self, setup: MethodSetup):
        super().__init__(setup)
        c, n = setup.config, setup.num_layers
        if setup.layer_index != n:
            raise ConfigError(f"embed_filter projects the final hidden state (after the final norm) onto the LM "
                              f"head's singular vectors; it is defined for the last layer only (layer=-1 or "
                              f"{n}), got layer={c.layer}")  # fmt: skip
        tau = cast(int, c.embed_filter)  # set: applies() said so
        self.projection = EmbedFilterProjection(setup.model, setup.source, tau, c.embed_filter_band, c.revision)

    def readout(self, vectors):
        return self.projection(vectors)
