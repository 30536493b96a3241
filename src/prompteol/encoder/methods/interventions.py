"""Training-free methods published after PromptEOL, as interventions inside the encoder's forward.

Each method is an option of :class:`~prompteol.EncoderConfig` (so it is part of the
fingerprint, the CLI, the server) and composes with any template, demonstrations and layer:

- **Token Prepending** (Fu et al., ACL 2025; ``token_prepending=(start, exit)``): a placeholder
  token is inserted just before the sentence's opening quote; before each decoder block with
  index in ``[start, exit)`` its hidden state is replaced by the last token's hidden state
  (the previous block's output at the last position). Causal mask and positions are unchanged.
  The placeholder's input embedding is a fixed random vector (seeded) with the norm of the
  model's token embeddings. With the shared-prefix cache the shared part stops before the
  placeholder (everything before it is exact to share; the placeholder itself changes per
  sentence from block ``start`` on), so the cache stays exact.
- **Contrastive Prompting** (Cheng et al., ACL 2025; ``contrastive_layer=l``): the auxiliary
  prompt (``cp-irrelevant``) runs up to block ``l``; the input of that block's attention output
  projection at the last token, B, is taken, and in the normal prompt's pass the last token's
  A at the same place becomes ``alpha * (A - B)`` (``contrastive_mode="scaled"``) or
  ``(A - B) * |A| / |A - B|`` (``"norm"``). Only the last position changes. It costs a second
  forward up to block ``l`` (with its own shared-prefix cache).
- Ensembles (MetaEOL) and echo embeddings live in the encoder and the poolers (they need no hook).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from ...errors import ConfigError
from ..forward.runner import Batch, ModelRunner, _Stop

__all__ = ["TokenPrepending", "ContrastivePrompting", "attention_output", "PLACEHOLDER_SEED"]

#: seed of the placeholder's random input embedding (part of the fingerprint through the option values
#: and FINGERPRINT_VERSION: change it and bump the version)
PLACEHOLDER_SEED = 20250701

_ATTN_OUT = ("self_attn.o_proj", "self_attn.out_proj", "attn.c_proj", "attention.dense", "attn.out_proj")


def attention_output(block) -> Any:
    """The attention output projection of a decoder block (its input is the concatenated heads)."""
    modules = dict(block.named_modules())
    for name in _ATTN_OUT:
        if name in modules:
            return modules[name]
    raise ConfigError(
        f"cannot find the attention output projection of {type(block).__name__} (looked for {list(_ATTN_OUT)}); "
        f"Contrastive Prompting does not support this architecture yet"
    )


def _hidden_arg(args, kwargs):
    return args[0] if args else kwargs["hidden_states"]


def _with_hidden(args, kwargs, hidden):
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


def _first_real(batch: Batch):
    return batch.mask.long().argmax(dim=1)  # (B,) index of the first real token of each row


class TokenPrepending:
    """The placeholder and the hooks of Token Prepending for one loaded model."""

    def __init__(self, start: int, exit: int, placeholder_at: int, placeholder_id: int):
        self.start, self.exit = start, exit
        self.placeholder_at = placeholder_at  # index of the placeholder in every full prompt
        self.placeholder_id = placeholder_id
        self._vector = None

    def vector(self, model):
        """The placeholder's input embedding: seeded random, scaled to the mean norm of real token embeddings."""
        import torch

        if self._vector is None:
            emb = model.get_input_embeddings()
            weight = next(emb.parameters())
            n = min(1000, weight.shape[0])
            with torch.no_grad():
                sample = emb(torch.arange(n, device=weight.device).unsqueeze(0))[0].float()  # (n, H) as the model sees them
            gen = torch.Generator().manual_seed(PLACEHOLDER_SEED)
            vec = torch.randn(sample.shape[-1], generator=gen)
            self._vector = (vec / vec.norm() * sample.norm(dim=-1).mean()).to(weight.device)
        return self._vector

    def __call__(self, runner: ModelRunner, batch: Batch) -> list:
        import torch

        index = _first_real(batch) + (self.placeholder_at - batch.prefix_len)  # (B,) placeholder per row
        width = batch.ids.shape[1]
        rows = torch.nonzero((index >= 0) & (index < width)).flatten()
        if len(rows) == 0:  # a call without the placeholder (the shared prefix's own forward)
            return []
        at = index[rows]
        last = batch.last[rows]
        vec = self.vector(runner.model)

        def put_embedding(module, args, output):
            out = output.clone()
            out[rows, at] = vec.to(out.dtype)
            return out

        def copy_last(module, args, kwargs):
            hidden = _hidden_arg(args, kwargs)
            new = hidden.clone()
            new[rows, at] = hidden[rows, last]
            return _with_hidden(args, kwargs, new)

        handles = [runner.model.get_input_embeddings().register_forward_hook(put_embedding)]
        blocks = runner.all_blocks()
        for i in range(self.start, min(self.exit, len(blocks))):
            handles.append(blocks[i].register_forward_pre_hook(copy_last, with_kwargs=True))
        return handles


class ContrastivePrompting:
    """Captures the auxiliary prompt's attention output at block ``layer`` and steers the normal pass."""

    def __init__(self, layer: int, alpha: float, mode: str):
        if mode not in ("scaled", "norm"):
            raise ConfigError(f"contrastive_mode should be 'scaled' or 'norm', got {mode!r}")
        self.layer, self.alpha, self.mode = layer, alpha, mode

    def capture(self, runner: ModelRunner, seqs: Sequence[Sequence[int]], prefix) -> Any:
        """B (N, D): the input of block ``layer``'s attention output projection at the last token of each
        auxiliary prompt; the forward stops right there."""
        import torch

        target = attention_output(runner.all_blocks()[self.layer])

        def grab(batch: Batch):
            def hook(module, args):
                x = args[0]
                raise _Stop(x[torch.arange(x.shape[0], device=x.device), batch.last])

            return [target.register_forward_pre_hook(hook)]

        saved = runner.interventions
        runner.interventions = [lambda r, b: grab(b)]
        try:
            return runner.vectors(seqs, prefix, pooled=False)
        finally:
            runner.interventions = saved

    def steering(self, b_vectors) -> Any:
        """An intervention applying ``A -> f(A, B)`` at the last token of every row (B aligned by ``batch.rows``)."""
        import torch

        def install(runner: ModelRunner, batch: Batch) -> list:
            if batch.rows is None:  # the shared prefix's own forward: nothing to steer
                return []
            target = attention_output(runner.all_blocks()[self.layer])
            b = b_vectors[torch.as_tensor(batch.rows, device=b_vectors.device)]
            last = batch.last

            def hook(module, args):
                x = args[0]
                new = x.clone()
                idx = torch.arange(x.shape[0], device=x.device)
                a = x[idx, last]
                diff = a - b.to(a.dtype)
                if self.mode == "scaled":
                    new[idx, last] = self.alpha * diff
                else:
                    new[idx, last] = diff * (a.norm(dim=-1, keepdim=True) / (diff.norm(dim=-1, keepdim=True) + 1e-7))
                return (new, *args[1:])

            return [target.register_forward_pre_hook(hook)]

        return install


def placeholder_fingerprint() -> str:
    """A short id of the placeholder construction (recorded in ``describe()``)."""
    return hashlib.sha256(f"randn-seed{PLACEHOLDER_SEED}-meannorm1000".encode()).hexdigest()[:12]


def method_prompts(tokenizer, config, max_positions: int | None = None):
    """The prompt builder of ``config``: a plain :class:`~prompteol.encoder.prompts.builder.PromptBuilder`, or one that
    also inserts Token Prepending's placeholder and knows where an echo template's second copy starts."""
    from ..prompts.builder import PromptBuilder

    class MethodPrompts(PromptBuilder):
        """Token-level parts of the methods: the placeholder (inserted in every prompt, outside the shared
        prefix) and the echo span starts."""

        def __init__(self):
            super().__init__(tokenizer, config, max_positions)
            self.placeholder_at: int | None = None
            self.placeholder_id = 0
            if config.token_prepending is not None:
                full = PromptBuilder.prefix_ids(self)
                # just before the sentence's opening quote (the prefix's last token), else before the sentence
                opens_quote = config.template.before.rstrip().endswith('"') and len(full) > 0
                self.placeholder_at = len(full) - 1 if opens_quote else len(full)
                for candidate in (tokenizer.unk_token_id, tokenizer.pad_token_id, 0):
                    if candidate is not None:  # its embedding is replaced: any id does
                        self.placeholder_id = int(candidate)
                        break

        def tokenize(self, sentences):
            ids = super().tokenize(sentences)
            q = self.placeholder_at
            if q is None:
                return ids
            return [list(s[:q]) + [self.placeholder_id] + list(s[q:]) for s in ids]

        def prefix_ids(self):
            ids = super().prefix_ids()
            return ids[: self.placeholder_at] if self.placeholder_at is not None else ids

        def echo_starts(self, sentences) -> list[int]:
            """Index of the first token of the second copy in each full prompt."""
            # (without its trailing spaces: a space before the copy belongs to the copy's first token)
            heads = [config.template.before_second_copy(s, config.demonstrations).rstrip(" ") for s in sentences]
            ids = self.tokenizer(heads, add_special_tokens=True)["input_ids"] if heads else []
            shift = 1 if self.placeholder_at is not None else 0
            return [len(x) + shift for x in ids]

    return MethodPrompts()
