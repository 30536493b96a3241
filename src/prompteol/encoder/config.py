"""The frozen, validated, JSON-serialisable configuration of an :class:`~prompteol.Encoder`.

Every encoder option is declared exactly once, here, as a field with an
:class:`~prompteol.options.Option` in its metadata. The CLI flags, the server's
``PROMPTEOL_*`` variables and settings, the training config (which nests an
``EncoderConfig``), :meth:`Encoder.derive`, the adapter-compatibility check, the demo-search
resume header and the fingerprint are all derived from these fields. Adding an option is one
field here plus its behaviour (docs/development.md).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..options import Option, option, optional_int, options_of
from .pooling import POOLERS
from .prompts.templates import Demonstration, Template, get_template, parse_demonstration, parse_demonstrations

COMBINES = ("mean", "concat")
CONTRASTIVE_MODES = ("scaled", "norm")
#: EmbedFilter's bands of the LM head's right singular vectors (by descending singular value); the
#: authors' names: middle = edge (their default), top = tail, bottom = head, ends = mid
EMBED_FILTER_BANDS = ("middle", "top", "bottom", "ends")


def parse_layer_range(text: str) -> tuple[int, int] | None:
    """``"START:EXIT"`` -> ``(start, exit)`` (blocks ``start`` .. ``exit - 1``); ``none`` -> ``None``."""
    text = str(text).strip().lower()
    if text in ("", "none", "off"):
        return None
    start, sep, stop = text.partition(":")
    if not sep:
        raise ValueError(f"expected START:EXIT (e.g. 1:7), got {text!r}")
    return int(start), int(stop)

__all__ = ["EncoderConfig", "POOLINGS", "DTYPES", "QUANTIZATIONS", "BACKENDS", "DEMO_PRESET", "encoder_options",
           "SPEED_ENCODER_DEFAULTS", "EVAL_ENCODER_DEFAULTS"]

POOLINGS = tuple(POOLERS)
#: ``bf16-mixed``: bfloat16 matmuls (Linear weights in bfloat16, under autocast) with the residual
#: stream, norms and read-out in float32
DTYPES = ("float32", "auto", "bfloat16", "float16", "bf16-mixed")
#: ``int8-dynamic`` is torch's dynamic int8 quantisation of Linear layers (CPU);
#: ``4bit``/``8bit`` use bitsandbytes on CUDA.
QUANTIZATIONS = (None, "int8-dynamic", "4bit", "8bit")
#: what runs the forward: torch (every option), or ONNX Runtime on a float32 export of the same weights
#: (CPU; measured 1.1-1.3x torch float32 on the packaged models: docs/performance.md)
BACKENDS = ("torch", "onnxruntime", "openvino", "auto")


#: encoder options whose default differs on the server: packing, measured on the load test
#: (docs/performance.md, "Server"): arrival-order micro-batches pad much more than the library's
#: length-sorted batches, and packed rows compute no padding (vectors equal to float rounding)
SERVER_ENCODER_DEFAULTS: dict[str, Any] = {"packing": True}
#: encoder options whose default differs on the commands where speed matters most (eval, scale, the
#: demonstration and settings searches): the fastest accurate precision of the machine (bfloat16 measured
#: 2.1-2.4x float32 on an AVX512-BF16 CPU, STS-B dev within 0.25; docs/performance.md, "Defaults chosen");
#: ``--dtype float32`` reproduces float32 exactly. Fused forwards stay opt-in (``--fused``): measured 1.18x on
#: one model, none on another, and recompiling on a third
SPEED_ENCODER_DEFAULTS: dict[str, Any] = {"dtype": "auto", "fused": False}
#: ``prompteol eval`` also takes ``backend="auto"``: OpenVINO's bfloat16 where the computation is bfloat16 on a CPU
#: (the main job, embedding cache off, 390.9 s against torch bfloat16's 450.8 s, STS avg 64.05 against 63.89,
#: float32 64.03: docs/performance.md); scale and the searches stay on torch (many read-out layers, one export each; the
#: study's cells computed one way)
EVAL_ENCODER_DEFAULTS: dict[str, Any] = {**SPEED_ENCODER_DEFAULTS, "backend": "auto"}


@dataclass(frozen=True)
class EncoderConfig:
    """Everything that decides which vector a sentence gets (and how it is computed).

    Build one directly, with :meth:`from_options` (which also resolves ``demo_preset``), or
    from JSON (:meth:`from_dict`). It is immutable: :meth:`replace` returns a changed copy.
    The meaning of each field is its ``help`` below (also shown by ``prompteol encode --help``).
    """

    model: str = option(
        "smollm2-135m", kind="load", vector=False, short="-m", metavar="MODEL",
        help="packaged alias (see `prompteol models list`), local folder, .gguf file, adapter folder or hub id",
    )  # fmt: skip
    revision: str | None = option(
        None, kind="load", vector=False, metavar="REV",
        help="hub models: the branch, tag or commit to load (the resolved commit is part of the fingerprint)",
    )  # fmt: skip
    template: Template = option(
        "prompteol", short="-t", metavar="TEMPLATE",  # type: ignore[assignment]
        help="preset (prompteol, promptbert, raw, ...) or a text with {sentence}",
    )  # fmt: skip
    demonstrations: tuple[Demonstration, ...] = option(
        (), flag="--demo", repeat=True, parse=parse_demonstration, metavar="'SENTENCE|WORD'",
        help="in-context demonstration, rendered in order before the sentence",
    )  # fmt: skip
    layer: int = option(-1, help="hidden layer to read; -1 = last (after the final norm), 0 = the embeddings")
    pooling: str = option("last", choices=POOLINGS, help="last (last real token) or mean (masked mean)")
    dtype: str = option(
        "float32", kind="load", choices=DTYPES,
        help="compute precision: float32, auto (bfloat16 on CUDA and on CPUs with native bfloat16: AVX512-BF16 or "
        "AMX; else float32), bfloat16 (everything), bf16-mixed (bfloat16 matmuls, float32 residual stream, norms "
        "and read-out), float16",
    )  # fmt: skip
    device: str = option("cpu", kind="load", vector=False, help="cpu, cuda, cuda:1 or auto (CUDA when available)")
    normalize_text: bool = option(True, help="apply the reference's evaluation-time sentence normalisation")
    max_length: int | None = option(
        None, parse=optional_int, metavar="N",
        help="cut sentences to N tokens before templating, with a warning (none: never cut)",
    )  # fmt: skip
    adapter: str | None = option(
        None, kind="load", vector=False, metavar="DIR", help="LoRA adapter folder made by `prompteol train`"
    )
    quantization: str | None = option(
        None, kind="load", choices=QUANTIZATIONS,
        help="4bit/8bit (CUDA, bitsandbytes); int8-dynamic (CPU, torch, per-tensor activation scales) ruins the "
        "vectors and is refused unless PROMPTEOL_ALLOW_LOSSY_INT8=1",
    )  # fmt: skip
    prefix_cache: bool = option(
        True, kind="runtime", vector=False,
        help="compute the shared prompt prefix (demonstrations + template start) once and reuse its key/value cache",
    )  # fmt: skip
    token_prepending: tuple[int, int] | None = option(
        None, parse=parse_layer_range, metavar="START:EXIT",
        help="Token Prepending (Fu et al. 2025): a placeholder before the sentence's opening quote takes the last "
        "token's hidden state before each block START..EXIT-1 (none: off)",
    )  # fmt: skip
    contrastive_layer: int | None = option(
        None, parse=optional_int, metavar="L",
        help="Contrastive Prompting (Cheng et al. 2025): at block L the last token's attention output is steered "
        "away from the auxiliary prompt's (none: off)",
    )  # fmt: skip
    contrastive_alpha: float = option(
        0.5, parse=float, requires="contrastive_layer", help="Contrastive Prompting strength: A -> alpha * (A - B)"
    )
    contrastive_mode: str = option(
        "scaled", choices=CONTRASTIVE_MODES, requires="contrastive_layer",
        help="scaled: alpha * (A - B); norm: (A - B) * |A| / |A - B|",
    )  # fmt: skip
    prompts: tuple[Template, ...] = option(
        (), flag="--prompt", repeat=True, parse=get_template, metavar="TEMPLATE",
        help="an ensemble (MetaEOL): more prompt templates, each encoded and combined with the template's vector",
    )  # fmt: skip
    combine: str = option(
        "mean", choices=COMBINES, requires="prompts", help="how an ensemble's vectors are combined: mean or concat"
    )
    embed_filter: int | None = option(
        None, parse=optional_int, metavar="TAU",
        help="EmbedFilter (2026): the final hidden state's coordinates in a band of hidden/TAU right singular vectors "
        "of the LM head (tied models: the token embeddings), so the vector has hidden/TAU dimensions; last layer "
        "only (none: off; 1: keep all, the same as off)",
    )  # fmt: skip
    embed_filter_band: str = option(
        "middle", choices=EMBED_FILTER_BANDS, requires="embed_filter",
        help="the singular vectors EmbedFilter keeps, by descending singular value: middle (the authors' default), "
        "top, bottom, or ends (the first and last half of them)",
    )  # fmt: skip
    packing: bool = option(
        False, kind="runtime", vector=False,
        help="pack the sentences of a batch into rows with attention confined to each sentence, so no padding "
        "token is computed (vectors equal the padded path's to float rounding)",
    )  # fmt: skip
    fused: bool = option(
        False, kind="runtime", vector=False,
        help="compile each decoder block's forward with torch.compile (element-wise work fused; compiled once per "
        "loaded model, checked against eager on the first batch, eager on any failure; vectors equal eager's to "
        "float rounding); methods that hook inside the forward run eagerly",
    )  # fmt: skip

    backend: str = option(
        "torch", kind="runtime", vector=False, choices=BACKENDS,
        help="what runs the forward: torch; onnxruntime (CPU, float32) or openvino (CPU, float32 or bfloat16; dtype "
        "auto: bfloat16 where the CPU has it): the model up to the read-out layer exported once to ONNX under the "
        "cache folder and run by that runtime, checked against torch on the first batch, torch (float32) on any "
        "failure and for methods that hook inside the forward; float32 vectors equal torch's to float rounding; pip "
        "install 'prompteol[onnx]' / 'prompteol[openvino]'; auto (eval's default): openvino where the computation "
        "is bfloat16 on a CPU, OpenVINO is installed and the model fits, else torch",
    )  # fmt: skip

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise the values once, here
        set_(self, "template", get_template(self.template))
        set_(self, "demonstrations", parse_demonstrations(self.demonstrations))
        for demo in self.demonstrations:
            self.template.render_demonstration(demo)  # raises if the template takes no demonstrations
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError(f"model should be a non-empty string, got {self.model!r}")
        if self.revision is not None and (not isinstance(self.revision, str) or not self.revision):
            raise ConfigError(f"revision should be a non-empty string or None, got {self.revision!r}")
        if not isinstance(self.layer, int) or isinstance(self.layer, bool):
            raise ConfigError(f"layer should be an int (negative counts from the top), got {self.layer!r}")
        if self.pooling not in POOLERS:
            raise ConfigError(f"pooling should be one of {sorted(POOLERS)}, got {self.pooling!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype should be one of {list(DTYPES)}, got {self.dtype!r}")
        if self.quantization not in QUANTIZATIONS:
            raise ConfigError(f"quantization should be one of {list(QUANTIZATIONS)}, got {self.quantization!r}")
        if self.quantization == "int8-dynamic" and os.environ.get("PROMPTEOL_ALLOW_LOSSY_INT8") != "1":
            raise ConfigError(
                "quantization='int8-dynamic' (torch's per-tensor dynamic int8) ruins the vectors: STS-B dev 67.04 -> "
                "29.09 on smollm2-135m (docs/results/smollm2-135m_int8_stsb-dev.json). For speed use dtype='auto' "
                "(bfloat16 where the CPU has it) and fused=True; set PROMPTEOL_ALLOW_LOSSY_INT8=1 to run it anyway"
            )
        if self.max_length is not None and (
            not isinstance(self.max_length, int) or isinstance(self.max_length, bool) or self.max_length < 1
        ):
            raise ConfigError(f"max_length should be a positive int or None, got {self.max_length!r}")
        set_(self, "prompts", tuple(get_template(t) for t in (self.prompts or ())))
        if self.token_prepending is not None:
            given: Any = self.token_prepending
            tp: Any = parse_layer_range(given) if isinstance(given, str) else given
            if tp is not None:
                tp = tuple(tp)
                ints = all(isinstance(x, int) and not isinstance(x, bool) for x in tp)
                if len(tp) != 2 or not ints or not 0 <= tp[0] <= tp[1]:
                    raise ConfigError(f"token_prepending should be (start, exit) with 0 <= start <= exit, got {given!r}")
                if tp[0] == tp[1]:
                    tp = None  # an empty range: no Token Prepending at all (no placeholder either)
            set_(self, "token_prepending", tp)
        if self.contrastive_layer is not None and (
            not isinstance(self.contrastive_layer, int) or isinstance(self.contrastive_layer, bool) or self.contrastive_layer < 0
        ):
            raise ConfigError(f"contrastive_layer should be a block index >= 0 or None, got {self.contrastive_layer!r}")
        if not isinstance(self.contrastive_alpha, (int, float)) or isinstance(self.contrastive_alpha, bool):
            raise ConfigError(f"contrastive_alpha should be a number, got {self.contrastive_alpha!r}")
        set_(self, "contrastive_alpha", float(self.contrastive_alpha))
        if self.contrastive_mode not in CONTRASTIVE_MODES:
            raise ConfigError(f"contrastive_mode should be one of {list(CONTRASTIVE_MODES)}, got {self.contrastive_mode!r}")
        if self.embed_filter is not None:
            tau = self.embed_filter
            if not isinstance(tau, int) or isinstance(tau, bool) or tau < 1:
                raise ConfigError(f"embed_filter should be an int TAU >= 1 (keep hidden/TAU dimensions; 1 = keep all) "
                                  f"or None (off), got {tau!r}")  # fmt: skip
            if tau == 1:
                set_(self, "embed_filter", None)  # the authors' filter keeping every dimension is the identity
        if self.embed_filter_band not in EMBED_FILTER_BANDS:
            bands = list(EMBED_FILTER_BANDS)
            raise ConfigError(f"embed_filter_band should be one of {bands}, got {self.embed_filter_band!r}")
        if self.combine not in COMBINES:
            raise ConfigError(f"combine should be one of {list(COMBINES)}, got {self.combine!r}")
        if self.pooling == "echo" and not self.template.echo:
            raise ConfigError("pooling='echo' averages the second copy of the sentence: use an echo template "
                              "(e.g. template='echo'), which writes the sentence twice")  # fmt: skip
        for name in ("normalize_text", "prefix_cache", "packing", "fused"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} should be true or false, got {getattr(self, name)!r}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend should be one of {list(BACKENDS)}, got {self.backend!r}")
        if self.backend in ("onnxruntime", "openvino"):
            runs = ("float32", "auto") if self.backend == "onnxruntime" else ("float32", "bfloat16", "auto")
            note = ("it runs float32; 'auto' resolves to float32 with it" if self.backend == "onnxruntime"
                    else "it runs float32 or bfloat16; 'auto' picks bfloat16 where the CPU has it")  # fmt: skip
            clash = [what for what, bad in (
                (f"dtype={self.dtype!r} ({note})", self.dtype not in runs),
                (f"quantization={self.quantization!r}", self.quantization is not None),
                ("fused=True (the exported graph is the fused path)", self.fused),
                (f"device={self.device!r} (CPU only)", self.device != "cpu"),
            ) if bad]  # fmt: skip
            if clash:
                raise ConfigError(f"backend={self.backend!r} cannot run with " + "; ".join(clash))
        if not isinstance(self.device, str) or not self.device:
            raise ConfigError(f"device should be a device string (cpu, cuda, cuda:1, auto), got {self.device!r}")
        if self.adapter is not None:
            set_(self, "adapter", str(self.adapter))

    # ------------------------------------------------------------------ derived views of the fields
    @classmethod
    def fields_of_kind(cls, *kinds: str) -> tuple[str, ...]:
        """Names of the fields of these kinds (``load``, ``prompt``, ``runtime``)."""
        return tuple(name for name, opt, _ in options_of(cls) if opt.kind in kinds)

    @classmethod
    def vector_fields(cls) -> tuple[str, ...]:
        """Names of the fields that change the computed vectors (part of the fingerprint)."""
        return tuple(name for name, opt, _ in options_of(cls) if opt.vector)

    def replace(self, **changes: Any) -> EncoderConfig:
        """A copy with ``changes`` applied (validated like a new config)."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ConfigError(f"unknown encoder options {unknown}; valid: {sorted(known)}")
        return dataclasses.replace(self, **changes)

    def differences(self, other: EncoderConfig | dict, names: Sequence[str] | None = None) -> dict[str, tuple]:
        """``{name: (self's value, other's value)}`` for the fields (``names``, default all) that differ,
        compared in their JSON form."""
        mine = self.to_dict()
        theirs = other.to_dict() if isinstance(other, EncoderConfig) else dict(other)
        names = list(names) if names is not None else list(mine)
        return {n: (mine[n], theirs.get(n)) for n in names if n in theirs and mine[n] != theirs.get(n)}

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "template":
                value = value.to_dict()
            elif f.name == "demonstrations":
                value = [d.to_dict() for d in value]
            elif f.name == "prompts":
                value = [t.to_dict() for t in value]
            elif f.name == "token_prepending" and value is not None:
                value = list(value)
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
        if data.get("prompts"):
            data["prompts"] = tuple(Template.from_dict(t) if isinstance(t, dict) else t for t in data["prompts"])
        return cls(**data)

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2, ensure_ascii=False)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    @classmethod
    def from_json(cls, path: str | Path) -> EncoderConfig:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    @classmethod
    def from_options(cls, demo_preset: str | None = None, preset: str | None = None, **options: Any) -> EncoderConfig:
        """A config from user options (CLI flags, server settings, ``PROMPTEOL_*`` variables).

        ``preset`` names a method preset (``metaeol``, ``pretended-cot``, the model's
        ``best-training-free``, ...): its options apply first and the explicit options override them.
        ``demo_preset`` names a demonstration preset (``paper``, ``default``, ...) resolved for
        the model; its demonstrations come first, then the explicit ``demonstrations``.
        """
        if preset:
            from .prompts.presets import get_method_preset

            model = options.get("model", cls.__dataclass_fields__["model"].default)
            options = {**get_method_preset(preset, model=model), **options}
        if demo_preset:
            from .prompts.presets import get_preset

            model = options.get("model", cls.__dataclass_fields__["model"].default)
            explicit = parse_demonstrations(options.get("demonstrations", ()))
            options["demonstrations"] = tuple(get_preset(demo_preset, model=model)) + explicit
        return cls(**options)


#: not an encoder option but a way to fill ``demonstrations``: declared once, here, for every command
DEMO_PRESET = (
    "demo_preset",
    Option(
        help="a named demonstration preset (see `prompteol demos presets`), added before --demo",
        metavar="NAME", kind="prompt",
    ),  # fmt: skip
    None,
)


#: a named bundle of encoder options (a method preset), declared once for every command
PRESET = (
    "preset",
    Option(
        help="a method preset (see `prompteol methods presets`): metaeol, pretended-cot, knowledge-enhancement, "
        "echo, or the model's best-training-free; explicit flags override its options",
        metavar="NAME", kind="prompt",
    ),  # fmt: skip
    None,
)


def encoder_options(exclude: Sequence[str] = ()) -> list[tuple[str, Option, Any]]:
    """The user-facing encoder options: every :class:`EncoderConfig` field plus ``demo_preset`` and ``preset``."""
    opts = options_of(EncoderConfig)
    out: list[tuple[str, Option, Any]] = [PRESET] if "preset" not in exclude else []
    for item in opts:
        if item[0] in exclude:
            continue
        out.append(item)
        if item[0] == "demonstrations" and "demo_preset" not in exclude:
            out.append(DEMO_PRESET)
    return out
