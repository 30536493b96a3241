"""Limits checked before any forward: the model's context length and the memory a batch needs.

- :func:`max_positions`: the model's maximum number of positions, from its config
  (``max_position_embeddings``, GPT-2's ``n_positions``, or those of the text config of a
  composite model). :class:`~prompteol.encoder.prompts.builder.PromptBuilder` refuses longer prompts.
- :func:`plan_in_memory`: :func:`~prompteol.encoder.batching.plan_batches` with every batch's estimated
  activation memory (:meth:`ActivationShape.batch_bytes`) within ``MEMORY_FRACTION`` of the
  memory available now (:func:`available_memory`): batches are split so each fits, and a
  sequence that cannot fit even alone raises :class:`~prompteol.encoder.batching.MemoryLimitError`
  before anything is computed. The estimate is arithmetic on the lengths (no allocation);
  :class:`~prompteol.Encoder` calls it once per ``encode`` call.

The estimate (bytes) of a batch of ``B`` sequences padded to ``T`` tokens, for a model with
hidden size ``H``, MLP size ``I``, ``nh`` attention heads, key/value width ``kv`` (key/value
heads x head size), ``L`` blocks run (up to the read-out layer), activations of ``s`` bytes::

    B*T*s*(10*H + 4*I + 4*kv*L)  +  B*T*T*a

- ``10*H + 4*I``: the hidden states, residual, norm, queries/keys/values and attention output
  (the ``H`` terms) and the MLP's gate, up and activated products (``I``) of one block, with
  the transient copies in between (measured peak of smollm2-135m, float32, CPU, batches of 1-64 x
  100-4000 tokens: at most 46 KB per token, the estimate 47.6 KB);
- ``4*kv*L``: the keys and values of every block run, which the shared-prefix path keeps for
  the whole batch in a transformers cache (measured: about two copies of them, 89 KB per token
  for smollm2-135m; the path without a prefix keeps none, so this term is then a margin);
- ``a``, the attention's T x T terms: eager attention materialises the scores and the softmax
  probabilities of every head plus a float mask, ``a = (2*nh + 1)*s`` (measured: 2.2 score
  copies); SDPA (the default) uses a fused kernel that never holds the scores, only the
  boolean B x 1 x T x T mask and a float copy of it, ``a = 1 + s``; flash attention holds no
  T x T tensor, ``a = 0``.

The weights are already loaded, so they are not part of what is compared with the available
memory (``MemAvailable`` of ``/proc/meminfo``, capped by the cgroup's memory limit, psutil where
there is no ``/proc``; on CUDA ``torch.cuda.mem_get_info`` plus what torch's allocator holds
unused).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .batching import MemoryLimitError, _size, plan_batches

__all__ = [
    "MEMORY_FRACTION", "ActivationShape", "activation_shape", "available_memory", "cpu_free_memory", "max_positions",
    "plan_in_memory", "MemoryLimitError",
]  # fmt: skip

log = logging.getLogger(__name__)

#: a batch may use this fraction of the memory available when ``encode`` is called
MEMORY_FRACTION = 0.8


def _text_config(config):
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _first_int(config, *names: str) -> int | None:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def max_positions(model_or_config) -> int | None:
    """The model's maximum number of positions (``None`` when its config does not say)."""
    config = getattr(model_or_config, "config", model_or_config)
    if config is None:
        return None
    for cfg in (_text_config(config), config):
        value = _first_int(cfg, "max_position_embeddings", "n_positions")
        if value is not None:
            return value
    return None


@dataclass(frozen=True)
class ActivationShape:
    """What the activation memory of a forward depends on (see the module docstring)."""

    hidden: int
    intermediate: int
    heads: int
    kv: int  # key/value heads x head size
    layers: int  # blocks run
    dtype_bytes: int
    attention: str  # the transformers attention implementation

    @property
    def square_bytes(self) -> int:
        """Bytes per element of the batch's T x T attention terms (per sequence)."""
        if self.attention.startswith("flash"):
            return 0
        if self.attention == "eager":
            return (2 * self.heads + 1) * self.dtype_bytes
        return 1 + self.dtype_bytes

    def batch_bytes(self, batch: int, length: int) -> int:
        """Estimated peak activation bytes of ``batch`` sequences padded to ``length`` tokens."""
        per_token = self.dtype_bytes * (10 * self.hidden + 4 * self.intermediate + 4 * self.kv * self.layers)
        return batch * length * per_token + batch * length * length * self.square_bytes


def activation_shape(model, layers: int | None = None) -> ActivationShape | None:
    """The :class:`ActivationShape` of a transformers model (``None`` when its config lacks the sizes);
    ``layers``: the blocks run (default: all)."""
    config = getattr(model, "config", None)
    if config is None:
        return None
    cfg = _text_config(config)
    hidden = _first_int(cfg, "hidden_size", "n_embd", "d_model")
    heads = _first_int(cfg, "num_attention_heads", "n_head")
    if hidden is None or heads is None:
        return None
    intermediate = _first_int(cfg, "intermediate_size", "ffn_dim", "n_inner") or 4 * hidden
    head_dim = _first_int(cfg, "head_dim") or hidden // heads
    kv_heads = _first_int(cfg, "num_key_value_heads") or heads
    n_layers = layers if layers is not None else (_first_int(cfg, "num_hidden_layers", "n_layer") or 1)
    attention = str(getattr(config, "_attn_implementation", None) or "eager")
    return ActivationShape(hidden, intermediate, heads, kv_heads * head_dim, max(n_layers, 1),
                           _activation_bytes(model), attention)  # fmt: skip


def _activation_bytes(model) -> int:
    dtype = getattr(model, "dtype", None)
    size = getattr(dtype, "itemsize", None)
    floating = getattr(dtype, "is_floating_point", False)
    return int(size) if isinstance(size, int) and floating else 4


def available_memory(device=None) -> int | None:
    """Bytes that a batch on ``device`` can use now (``None`` when unknown)."""
    kind = getattr(device, "type", str(device or "cpu").split(":")[0])
    if kind == "cuda":
        import torch

        try:
            free, _total = torch.cuda.mem_get_info(device)
            cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
            return int(free + max(cached, 0))
        except (RuntimeError, AssertionError):  # no CUDA after all
            return None
    if kind not in ("cpu", "mps"):
        return None
    return cpu_free_memory()[0]


def cpu_free_memory() -> tuple[int | None, str]:
    """Free CPU memory in bytes now, and where the number comes from: ``MemAvailable`` of
    ``/proc/meminfo`` (psutil where there is no ``/proc``), capped by what the cgroup's memory limit
    leaves. The one reader of free memory (the batches here, the scaling study's dtype rule)."""
    free, source = _meminfo_available(), "/proc/meminfo MemAvailable"
    if free is None:
        try:
            import psutil

            free, source = int(psutil.virtual_memory().available), "psutil"
        except Exception:  # noqa: BLE001 - not installed / unsupported platform
            free = None
    limited = _cgroup_available()
    if limited is not None and (free is None or limited < free):
        return limited, "cgroup limit - usage"
    if free is None:
        return None, "unknown (no /proc/meminfo, no psutil)"
    return free, source


def _meminfo_available(path: str = "/proc/meminfo") -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_available() -> int | None:
    """What the cgroup (v2, else v1) memory limit leaves, if one is set."""
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            limit_text = Path(limit_file).read_text().strip()
            if limit_text == "max":
                return None
            limit, usage = int(limit_text), int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit >= 1 << 60:  # v1's "no limit"
            return None
        return max(limit - usage, 0)
    return None


def plan_in_memory(
    lengths: Sequence[int], batch_size: int, max_batch_tokens: int | None, model, device, layers: int | None = None,
    groups: Sequence[int] | None = None,
) -> list[list[int]]:
    """:func:`~prompteol.encoder.batching.plan_batches` (``groups`` passed on), each batch within
    ``MEMORY_FRACTION`` of the memory available now on ``device`` (when the model's sizes and the memory are known)."""
    shape = activation_shape(model, layers) if lengths else None
    available = available_memory(device) if shape is not None else None
    if shape is None or available is None:
        return plan_batches(lengths, batch_size, max_batch_tokens, groups=groups)
    budget = int(available * MEMORY_FRACTION)
    try:
        return plan_batches(
            lengths, batch_size, max_batch_tokens, max_batch_bytes=budget, batch_bytes=shape.batch_bytes, groups=groups
        )
    except MemoryLimitError as exc:
        raise MemoryLimitError(
            f"texts[{exc.index}] is {exc.tokens} tokens once rendered in the prompt template; even alone it needs "
            f"about {_size(exc.need)} of memory for its forward (estimated), more than the {_size(available)} "
            f"available on {device or 'cpu'} (a batch may use {MEMORY_FRACTION:.0%} of it); shorten it, or set "
            f"max_length (--max-length N) to cut sentences to N tokens",
            exc.index, exc.tokens, exc.need, budget,
        ) from None  # fmt: skip
