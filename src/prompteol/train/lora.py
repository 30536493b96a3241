"""The model being trained: the encoder's base model (no LM head) with LoRA on every linear layer.

The LoRA is applied to :attr:`Encoder.model` in place, so the training forward is the
encoder's own (prepare -> render -> tokenize -> forward -> pool); adapters are saved from the
wrapped base model and therefore load onto ``AutoModel`` (see :mod:`prompteol.models.adapters`).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from ..errors import ConfigError, require

__all__ = ["check_4bit_available", "linear_module_names", "build_training_encoder", "add_lora", "trainable_parameters"]

log = logging.getLogger(__name__)


def check_4bit_available() -> None:
    """Raise a clear error unless QLoRA (bitsandbytes NF4 on CUDA) can run here."""
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(
            f"--load-in-4bit (QLoRA) stores the frozen base model in bitsandbytes NF4, whose kernels need a "
            f"CUDA GPU, and torch {torch.__version__} sees none here. Drop --load-in-4bit to train LoRA on the "
            f"full-precision base (works on CPU), or run on a CUDA machine with: pip install 'prompteol[gpu]'"
        )
    require("bitsandbytes", "gpu", "--load-in-4bit (QLoRA)")


def linear_module_names(model) -> list[str]:
    """Names (last path component) of every ``nn.Linear`` in ``model`` except an LM head."""
    import torch

    names = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and name  # bitsandbytes' Linear4bit is an nn.Linear too
    }
    names.discard("lm_head")  # the base model has none; never adapt one that slipped in
    if not names:
        raise ConfigError(f"{type(model).__name__} has no linear layers to put LoRA on")
    return sorted(names)


def build_training_encoder(cfg, device: str, cache_dir=None, progress: bool = True):
    """The encoder (template, pooling, layer, text handling of ``cfg``) with its base model loaded."""
    from ..encoder.encoder import Encoder

    if (Path(cfg.model).expanduser() / "adapter_config.json").is_file():
        raise ConfigError(
            f"{cfg.model} is an adapter folder; training starts from a base model. Pass its base model "
            f"(recorded in its prompteol_train.json) as --model"
        )
    config = cfg.encoder.replace(device=device, quantization="4bit" if cfg.load_in_4bit else None)
    return Encoder.from_config(config, embedding_cache=None, cache_dir=cache_dir, progress=progress)


def add_lora(encoder, cfg):
    """Wrap ``encoder.model`` with LoRA (r, alpha, dropout of ``cfg``) and turn gradient checkpointing on."""
    require("peft", "train", "prompteol train")
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    model = encoder.model
    ckpt_kwargs = {"use_reentrant": False}  # the non-reentrant variant needs no input gradients
    if cfg.load_in_4bit:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.gradient_checkpointing, gradient_checkpointing_kwargs=ckpt_kwargs
        )
    elif cfg.gradient_checkpointing:
        if not getattr(model, "supports_gradient_checkpointing", False):
            raise ConfigError(
                f"{type(model).__name__} does not support gradient checkpointing; pass --no-gradient-checkpointing"
            )
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.20 renamed it
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=ckpt_kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=ckpt_kwargs)
    targets = linear_module_names(model)
    lora = LoraConfig(
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules=targets, bias="none"
    )
    with warnings.catch_warnings():  # peft still asks the deprecated `is_gradient_checkpointing`
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = get_peft_model(model, lora)  # adapters stay float32 over a half-precision base
    peft_model.train()
    encoder.model = peft_model  # the shared prefix follows the weights state by itself
    n_train, n_all = _count(peft_model)
    log.info("LoRA r=%d alpha=%d dropout=%g on %s: %s trainable of %s parameters (%.2f%%)", cfg.lora_r,
             cfg.lora_alpha, cfg.lora_dropout, ",".join(targets), f"{n_train:,}", f"{n_all:,}", 100 * n_train / n_all)  # fmt: skip
    return peft_model


def trainable_parameters(model) -> list:
    return [p for p in model.parameters() if p.requires_grad]


def _count(model) -> tuple[int, int]:
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    return n_train, n_all
