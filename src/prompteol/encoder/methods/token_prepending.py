"""Token Prepending (Fu et al., ACL 2025; ``token_prepending=(start, exit)``).

A placeholder token is inserted just before the sentence's opening quote; before each decoder block
with index in ``[start, exit)`` its hidden state is replaced by the last token's hidden state (the
previous block's output at the last position). Causal mask and positions are unchanged. The
placeholder's input embedding is a fixed random vector (seeded) with the norm of the model's token
embeddings. With the shared-prefix cache the shared part stops before the placeholder (everything
before it is exact to share; the placeholder itself changes per sentence from block ``start`` on), so
the cache stays exact.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from .base import Method, MethodSetup, first_real, hidden_arg, register, with_hidden

if TYPE_CHECKING:  # pragma: no cover
    from ..config import EncoderConfig
    from ..forward.runner import Batch, Intervention, ModelRunner

__all__ = ["TokenPrepending", "TokenPrependingHooks", "PLACEHOLDER_SEED"]

#: seed of the placeholder's random input embedding (part of the fingerprint through the option values
#: and FINGERPRINT_VERSION: change it and bump the version)
PLACEHOLDER_SEED = 20250701


class TokenPrependingHooks:
    """The placeholder and the hooks of Token Prepending for one loaded model (an intervention)."""

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

        index = first_real(batch) + (self.placeholder_at - batch.prefix_len)  # (B,) placeholder per row
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
            hidden = hidden_arg(args, kwargs)
            new = hidden.clone()
            new[rows, at] = hidden[rows, last]
            return with_hidden(args, kwargs, new)

        handles = [runner.model.get_input_embeddings().register_forward_hook(put_embedding)]
        blocks = runner.all_blocks()
        for i in range(self.start, min(self.exit, len(blocks))):
            handles.append(blocks[i].register_forward_pre_hook(copy_last, with_kwargs=True))
        return handles


@register
class TokenPrepending(Method):
    """Inserts the placeholder in every prompt (outside the shared prefix) and installs its hooks."""

    name = "token_prepending"
    hooks_forward = True

    @classmethod
    def applies(cls, config: EncoderConfig) -> bool:
        return config.token_prepending is not None

    def __init__(self, setup: MethodSetup):
        super().__init__(setup)
        config, tokenizer = setup.config, setup.tokenizer
        full = tokenizer(config.template.prefix(config.demonstrations), add_special_tokens=True)["input_ids"]
        # just before the sentence's opening quote (the prefix's last token), else before the sentence
        opens_quote = config.template.before.rstrip().endswith('"') and len(full) > 0
        #: index of the placeholder in every full prompt
        self.placeholder_at = len(full) - 1 if opens_quote else len(full)
        self.placeholder_id = 0
        for candidate in (tokenizer.unk_token_id, tokenizer.pad_token_id, 0):
            if candidate is not None:  # its embedding is replaced: any id does
                self.placeholder_id = int(candidate)
                break
        start, stop = cast("tuple[int, int]", config.token_prepending)
        self.hooks = TokenPrependingHooks(start, stop, self.placeholder_at, self.placeholder_id)

    def edit_ids(self, ids: list[list[int]]) -> list[list[int]]:
        q = self.placeholder_at
        return [list(s[:q]) + [self.placeholder_id] + list(s[q:]) for s in ids]

    def prefix_ids(self, ids: list[int]) -> list[int]:
        return ids[: self.placeholder_at]

    def sentence_offset(self) -> int:
        return 1

    def interventions(self) -> list[Intervention]:
        return [self.hooks]
