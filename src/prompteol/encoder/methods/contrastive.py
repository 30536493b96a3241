"""Contrastive Prompting (Cheng et al., ACL 2025; ``contrastive_layer=l``).

The auxiliary prompt (``cp-irrelevant``) runs up to block ``l``; the input of that block's attention
output projection at the last token, B, is taken, and in the normal prompt's pass the last token's A at
the same place becomes ``alpha * (A - B)`` (``contrastive_mode="scaled"``) or ``(A - B) * |A| / |A - B|``
(``"norm"``). Only the last position changes. It costs a second forward up to block ``l`` (with its own
shared-prefix cache).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ...errors import ConfigError
from ..forward.prefix import SharedPrefix
from ..forward.runner import Batch, ModelRunner, StopForward
from .base import Method, MethodSetup, ModelCall, register

if TYPE_CHECKING:  # pragma: no cover
    from ..config import EncoderConfig
    from ..forward.runner import Intervention

__all__ = ["ContrastivePrompting", "ContrastiveSteering", "attention_output"]

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


class ContrastiveSteering:
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
                raise StopForward(x[torch.arange(x.shape[0], device=x.device), batch.last])

            return [target.register_forward_pre_hook(hook)]

        saved = runner.interventions
        runner.interventions = [lambda r, b: grab(b)]
        try:
            return runner.vectors(seqs, prefix, pooled=False)
        finally:
            runner.interventions = saved

    def steering(self, b_vectors) -> Intervention:
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


@register
class ContrastivePrompting(Method):
    """The auxiliary prompt's builder, runner and shared prefix; steers every model call of the encoder."""

    name = "contrastive_prompting"
    hooks_forward = True

    @classmethod
    def applies(cls, config: EncoderConfig) -> bool:
        return config.contrastive_layer is not None

    def __init__(self, setup: MethodSetup):
        from ..prompts.builder import PromptBuilder

        super().__init__(setup)
        c, n = setup.config, setup.num_layers
        layer = int(c.contrastive_layer)  # type: ignore[arg-type]
        if layer >= n:
            raise ConfigError(f"contrastive_layer {layer} is out of range: the model has {n} blocks (0..{n - 1})")
        aux_config = c.replace(template="cp-irrelevant", demonstrations=(), token_prepending=None,
                               contrastive_layer=None, pooling="last")  # fmt: skip
        self.aux_prompts = PromptBuilder(setup.tokenizer, aux_config)
        self.aux_runner = ModelRunner(setup.model, setup.tokenizer, n, n, "last", setup.autocast)
        self.aux_prefix = SharedPrefix(self.aux_prompts.prefix_ids, setup.weights_state)
        self.steering = ContrastiveSteering(layer, c.contrastive_alpha, c.contrastive_mode)

    def call_interventions(self, call: ModelCall) -> list[Intervention]:
        aux = self.aux_prompts.tokenize(call.sentences)
        prefix = self.aux_prefix.get(self.aux_runner) if call.use_prefix else None
        b = self.steering.capture(self.aux_runner, aux, prefix)  # (B, D)
        return [self.steering.steering(b)]
