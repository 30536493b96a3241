"""Tiny randomly initialised models for tests and offline demos (no weights are downloaded).

``tiny-random-<arch>`` (llama, qwen2, gemma3, opt, gpt2) builds a 2-layer model from a
config with a fixed seed and a byte-level tokenizer (one token per UTF-8 byte, no merges).
The special-token conventions mirror the real families: Llama and Gemma add a BOS
token, OPT prepends ``</s>``, Qwen2 and GPT-2 add nothing; GPT-2 has no pad token.
Their vectors mean nothing; they exercise the real render/tokenize/forward/pool path fast.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["RANDOM_MODELS", "build_tiny_model", "save_tiny_model", "byte_level_tokenizer"]

RANDOM_MODELS = {f"tiny-random-{a}": a for a in ("llama", "qwen2", "gemma3", "opt", "gpt2")}
_VERSION = 1  # bump when the construction below changes (part of the weights fingerprint)
HIDDEN = 32
LAYERS = 2


def weights_id(name: str) -> str:
    return f"random:{name}:v{_VERSION}"


def byte_level_tokenizer(bos: str | None, eos: str, pad: str | None, prefix_bos: bool):
    """A fast tokenizer with one token per byte and the given special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    specials = [t for t in dict.fromkeys([bos, eos, pad]) if t]
    vocab = {t: i for i, t in enumerate(specials)}
    for ch in bytes_to_unicode().values():
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    if prefix_bos and bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, vocab[bos])]
        )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad)
    return fast, len(vocab)


def _config(arch: str, vocab_size: int, tok):
    from transformers import Gemma3TextConfig, GPT2Config, LlamaConfig, OPTConfig, Qwen2Config

    common = dict(vocab_size=vocab_size, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                  pad_token_id=tok.pad_token_id)  # fmt: skip
    if arch == "llama":
        return LlamaConfig(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=LAYERS,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, **common)  # fmt: skip
    if arch == "qwen2":
        return Qwen2Config(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=LAYERS,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, **common)  # fmt: skip
    if arch == "gemma3":
        return Gemma3TextConfig(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=LAYERS,
                                num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                max_position_embeddings=2048, sliding_window=16, **common)  # fmt: skip
    if arch == "opt":
        return OPTConfig(hidden_size=HIDDEN, ffn_dim=64, num_hidden_layers=LAYERS, num_attention_heads=4,
                         max_position_embeddings=2048, word_embed_proj_dim=HIDDEN, **common)  # fmt: skip
    if arch == "gpt2":
        return GPT2Config(n_embd=HIDDEN, n_layer=LAYERS, n_head=4, n_positions=2048, **common)
    raise ValueError(f"unknown tiny architecture {arch!r}; valid: {sorted(RANDOM_MODELS.values())}")


def build_tiny_model(arch: str, seed: int = 0, causal_lm: bool = True):
    """Return ``(model, tokenizer)`` for a tiny random model of the given family."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    conventions = {
        "llama": ("<s>", "</s>", "</s>", True),
        "gemma3": ("<bos>", "<eos>", "<pad>", True),
        "opt": ("</s>", "</s>", "<pad>", True),
        "qwen2": (None, "<|endoftext|>", "<|endoftext|>", False),
        "gpt2": (None, "<|endoftext|>", None, False),
    }
    bos, eos, pad, prefix_bos = conventions[arch]
    tok, vocab_size = byte_level_tokenizer(bos, eos, pad, prefix_bos)
    config = _config(arch, vocab_size, tok)
    torch.manual_seed(seed)
    cls = AutoModelForCausalLM if causal_lm else AutoModel
    model = cls.from_config(config, dtype=torch.float32)
    model.eval()
    return model, tok


def save_tiny_model(name: str, folder: Path) -> Path:
    model, tok = build_tiny_model(RANDOM_MODELS[name])
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder
