"""The validated, JSON-serialisable configuration of an :class:`~prompteol.Encoder`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .templates import Demonstration, Template, get_template, parse_demonstrations

__all__ = ["EncoderConfig", "POOLINGS", "DTYPES", "QUANTIZATIONS"]

POOLINGS = ("last", "mean")
DTYPES = ("float32", "bfloat16", "float16")
#: ``int8-dynamic`` is torch's dynamic int8 quantisation of Linear layers (CPU);
#: ``4bit``/``8bit`` use bitsandbytes on CUDA.
QUANTIZATIONS = (None, "int8-dynamic", "4bit", "8bit")


@dataclass
class EncoderConfig:
    """Everything that decides which vector a sentence gets.

    Attributes:
        model: packaged alias, local folder, ``.gguf`` file or hub id.
        template: a preset name or a :class:`Template` (``{sentence}`` slot).
        demonstrations: in-context ``(sentence, word)`` examples, rendered in order.
        layer: hidden layer to read; ``-1`` is the last (after the final norm), ``0`` the embeddings.
        pooling: ``last`` (last real token, from the attention mask) or ``mean`` (masked mean).
        dtype: compute dtype of the model weights.
        device: torch device string; ``auto`` picks CUDA when available.
        normalize_text: apply the reference's evaluation normalisation to each sentence first.
        max_length: if set, sentences longer than this many tokens are cut (before templating,
            so the template always stays intact) and a warning is logged; ``None`` never cuts.
        adapter: a LoRA adapter folder made by ``prompteol train``.
        quantization: ``None``, ``int8-dynamic`` (CPU), ``4bit`` or ``8bit`` (CUDA, bitsandbytes).
        prefix_cache: compute the shared prefix (demonstrations + template start) once and reuse
            its key/value cache; falls back to full computation where tokenization would differ.
    """

    model: str = "smollm2-135m"
    template: Template | str = "prompteol"
    demonstrations: Sequence[Demonstration] = field(default_factory=tuple)
    layer: int = -1
    pooling: str = "last"
    dtype: str = "float32"
    device: str = "cpu"
    normalize_text: bool = True
    max_length: int | None = None
    adapter: str | None = None
    quantization: str | None = None
    prefix_cache: bool = True

    def __post_init__(self) -> None:
        self.template = get_template(self.template)
        self.demonstrations = parse_demonstrations(self.demonstrations)
        for demo in self.demonstrations:
            self.template.render_demonstration(demo)  # raises if the template takes no demonstrations
        if not isinstance(self.layer, int) or isinstance(self.layer, bool):
            raise ConfigError(f"layer should be an int (negative counts from the top), got {self.layer!r}")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling should be one of {list(POOLINGS)}, got {self.pooling!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype should be one of {list(DTYPES)}, got {self.dtype!r}")
        if self.quantization not in QUANTIZATIONS:
            raise ConfigError(f"quantization should be one of {list(QUANTIZATIONS)}, got {self.quantization!r}")
        if self.max_length is not None and (not isinstance(self.max_length, int) or self.max_length < 1):
            raise ConfigError(f"max_length should be a positive int or None, got {self.max_length!r}")
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError(f"model should be a non-empty string, got {self.model!r}")
        if self.adapter is not None:
            self.adapter = str(self.adapter)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "template":
                value = value.to_dict()
            elif f.name == "demonstrations":
                value = [d.to_dict() for d in value]
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown encoder config keys {unknown}; valid keys are {sorted(known)}")
        data = dict(data)
        if isinstance(data.get("template"), dict):
            data["template"] = Template.from_dict(data["template"])
        return cls(**data)

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2, ensure_ascii=False)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    @classmethod
    def from_json(cls, path: str | Path) -> EncoderConfig:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def config_from_options(model: str, demo_preset: str | None = None, demo: Sequence = (), **options: Any) -> EncoderConfig:
    """An :class:`EncoderConfig` from user options (CLI flags, server settings).

    ``demo_preset`` names a preset (``paper``, ``default``, ...) resolved for ``model``; its
    demonstrations come first, then the explicit ``demo`` pairs, in order.
    """
    demos: list[Any] = []
    if demo_preset:
        from .demos.presets import get_preset

        demos.extend(get_preset(demo_preset, model=model))
    demos.extend(demo)
    return EncoderConfig(model=model, demonstrations=demos, **options)
