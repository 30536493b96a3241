"""The validated, JSON-serialisable configuration of a contrastive fine-tuning run."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..encoder.config import EncoderConfig
from ..errors import ConfigError

__all__ = ["TrainConfig", "RESUME_MAY_CHANGE"]

#: fields that may differ between a run and its ``--resume`` (they do not change the weights)
RESUME_MAY_CHANGE = frozenset(
    {"output_dir", "eval_every", "save_every", "keep_checkpoints", "eval_data", "eval_batch_size", "log_every",
     "skip_bad_rows", "data"}  # data: compared by checksum, not by path
)  # fmt: skip


@dataclass
class TrainConfig:
    """Everything that decides the adapter a run produces (the paper's recipe by default, method.md 4).

    Build it with :meth:`build` (encoder options and training options in one call) or directly
    with an :class:`~prompteol.EncoderConfig`.

    Attributes:
        encoder: the encoder trained for: base model (recorded as ``base_model`` beside every
            adapter so the adapter folder alone loads), template, demonstrations, pooling, layer,
            text handling (saved, so evaluation renders and pools exactly as training did);
            ``dtype`` is the base weights' (``float32`` on CPU; on CUDA ``bfloat16``, or
            ``float16`` with loss scaling); ``device`` is ``cpu``, ``cuda``, ``cuda:N`` or
            ``auto`` (multi-process runs use ``cuda:LOCAL_RANK``). Its ``adapter``,
            ``quantization`` and ``max_length`` are not used in training (``load_in_4bit`` and
            ``cutoff_len`` are).
        data: triplet file (``sent0,sent1,hard_neg`` CSV, or JSONL with those fields).
        output_dir: where checkpoints, ``best/``, ``final/``, the log and the metrics go.
        lora_r, lora_alpha, lora_dropout: LoRA on every linear layer of the base model (it has no LM head).
        load_in_4bit: QLoRA: the frozen base in bitsandbytes NF4 with double quantisation (CUDA only).
        gradient_checkpointing: recompute activations in the backward pass (less memory, ~30% more time).
        batch_size: global batch in triplets (all processes together); every anchor is scored
            against all ``batch_size`` positives and ``batch_size`` hard negatives.
        micro_batch_size: triplets per forward pass; below the per-process batch it turns on
            gradient caching (GradCache), so the loss still sees the whole global batch.
        lr, warmup_steps, weight_decay, max_grad_norm: AdamW with linear warm-up then linear decay
            to 0; the reference's HF Trainer defaults (no weight decay, clip at 1.0).
        epochs, max_steps: run length; ``max_steps`` wins (the data is cycled if needed). An
            incomplete last batch of an epoch is dropped, so every step sees a full global batch.
        temperature: the softmax temperature of the InfoNCE loss (cosine / 0.05).
        cutoff_len: each sentence is cut to this many tokens *before* templating.
        eval_every: score STS-B dev every N steps (and before training, and at the end); 0 = never.
        save_every: write a resumable checkpoint every N steps; 0 = only at the end.
        keep_checkpoints: how many resumable checkpoints to keep (older ones are deleted).
        eval_data: SentEval data root holding ``downstream/STS/STSBenchmark/sts-dev.csv``
            (default: ``$PROMPTEOL_DATA``).
        eval_batch_size: sentences per batch when scoring.
        log_every: write a log line every N steps (the metrics file gets every step).
        seed: data order, LoRA initialisation and dropout.
        skip_bad_rows: drop malformed data rows (each reported with its line number) instead of stopping.
    """

    encoder: EncoderConfig
    data: str
    output_dir: str = "prompteol-train"
    lora_r: int = 64
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    load_in_4bit: bool = False
    gradient_checkpointing: bool = True
    batch_size: int = 256
    micro_batch_size: int | None = None
    lr: float = 5e-4
    warmup_steps: int = 100
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    epochs: int = 1
    max_steps: int | None = None
    temperature: float = 0.05
    cutoff_len: int | None = 32
    eval_every: int = 50
    save_every: int = 50
    keep_checkpoints: int = 1
    eval_data: str | None = None
    eval_batch_size: int = 64
    log_every: int = 10
    seed: int = 42
    skip_bad_rows: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.encoder, dict):
            self.encoder = EncoderConfig.from_dict(self.encoder)
        if not isinstance(self.encoder, EncoderConfig):
            raise ConfigError(f"encoder should be an EncoderConfig, got {type(self.encoder).__name__}")
        for name, hint in (("adapter", "training starts from a base model"),
                           ("quantization", "use load_in_4bit (--load-in-4bit) for QLoRA"),
                           ("max_length", "use cutoff_len (--cutoff-len)")):  # fmt: skip
            if getattr(self.encoder, name) is not None:
                raise ConfigError(f"the encoder's {name} is not used in training ({hint}); leave it unset")
        if not isinstance(self.data, str) or not self.data:
            raise ConfigError(f"data should be the path of a triplet file (.csv or .jsonl), got {self.data!r}")
        for name in (
            "lora_r",
            "lora_alpha",
            "batch_size",
            "epochs",
            "eval_batch_size",
            "log_every",
            "keep_checkpoints",
        ):
            _positive_int(name, getattr(self, name))
        for name in ("warmup_steps", "eval_every", "save_every", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{name} should be an int >= 0, got {value!r}")
        for name in ("micro_batch_size", "max_steps", "cutoff_len"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        if not 0.0 <= float(self.lora_dropout) < 1.0:
            raise ConfigError(f"lora_dropout should be in [0, 1), got {self.lora_dropout!r}")
        if not float(self.lr) > 0:
            raise ConfigError(f"lr should be > 0, got {self.lr!r}")
        if not float(self.temperature) > 0:
            raise ConfigError(f"temperature should be > 0 (the paper uses 0.05), got {self.temperature!r}")
        if float(self.weight_decay) < 0 or float(self.max_grad_norm) < 0:
            raise ConfigError(
                f"weight_decay and max_grad_norm should be >= 0 (0 turns clipping off), "
                f"got {self.weight_decay!r} and {self.max_grad_norm!r}"
            )
        if self.load_in_4bit and self.encoder.dtype == "float32":
            # the NF4 compute dtype; fp32 compute would waste the 4-bit kernels
            self.encoder = self.encoder.replace(dtype="float16")

    @classmethod
    def build(cls, **options: Any) -> TrainConfig:
        """A config from encoder options (``model``, ``template``, ``layer``, ..., ``demo_preset``) and
        training options in one call; the device defaults to ``auto`` (CUDA when available)."""
        names = {f.name for f in fields(EncoderConfig)} | {"demo_preset", "preset"}
        enc = {k: options.pop(k) for k in list(options) if k in names}
        enc.setdefault("device", "auto")
        if not enc.get("model"):
            raise ConfigError("model should be a model reference (alias, folder, hub id), got nothing")
        return cls(encoder=EncoderConfig.from_options(**enc), **options)

    @property
    def model(self) -> str:
        return self.encoder.model

    @property
    def dtype(self) -> str:
        return self.encoder.dtype

    @property
    def device(self) -> str:
        return self.encoder.device

    # ------------------------------------------------------------------ derived
    def world_batch(self, world_size: int) -> int:
        """Triplets per process for ``world_size`` processes (the global batch must divide evenly)."""
        if self.batch_size % world_size:
            raise ConfigError(
                f"batch_size {self.batch_size} is not divisible by the {world_size} processes; "
                f"use a multiple of {world_size}"
            )
        return self.batch_size // world_size

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["encoder"] = self.encoder.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """From :meth:`to_dict`'s form (also the flat form of older runs, encoder options at the top)."""
        data = dict(data)
        enc_names = {f.name for f in fields(EncoderConfig)}
        flat = {k: data.pop(k) for k in list(data) if k in enc_names}
        if flat:
            data["encoder"] = {**flat, **(data.get("encoder") or {})}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown training config keys {unknown}; valid keys are {sorted(known)}")
        if "encoder" not in data:
            raise ConfigError("a training config needs its encoder (model, template, ...)")
        return cls(**data)

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    def differences(self, other: TrainConfig) -> dict[str, tuple[Any, Any]]:
        """Fields (outside :data:`RESUME_MAY_CHANGE`) whose values differ: ``{name: (self, other)}``."""
        mine, theirs = self.to_dict(), other.to_dict()
        out = {}
        for name in mine:
            if name in RESUME_MAY_CHANGE:
                continue
            if name == "encoder":
                out.update({f"encoder.{k}": v for k, v in self.encoder.differences(other.encoder).items()})
            elif mine[name] != theirs[name]:
                out[name] = (mine[name], theirs[name])
        return out


def _positive_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} should be a positive int, got {value!r}")
