"""The graph the exported-graph backends run: the base model up to the read-out layer, traced once to ONNX.

The graph takes token ids, an additive 4-D attention mask (B, 1, T, P+T), position ids and the shared
prefix's keys/values (``past_k{i}`` / ``past_v{i}``: batch 1, any length, zero included) and returns the
hidden states (B, T, H) at the read-out layer (the output of block ``layer - 1``, before any norm, or the
model's last hidden state at the top). Blocks above the read-out layer are not in it.

Two ways to write its attention (:func:`default_attention` picks one per model, from measurements):

* ``grouped`` has no broadcast in it: the prefix's keys/values stay batch 1 and are multiplied by a
  broadcasting matmul, and the query heads that share a key/value head are one matmul. Used where a key/value
  head serves at most :data:`GROUPED_MAX_QUERY_HEADS` query heads (smollm2-135m: 3, gemma3-270m: 4).
* ``expanded`` is the tracer's eager attention: the prefix expanded to the batch and concatenated with the
  batch's keys/values, which are repeated per query head (OpenVINO runs those as broadcast nodes: 240 in
  smollm2-135m's graph). Used elsewhere (the two Qwen models: 7 and 6 query heads a key/value head), and where
  the blocks do not hold their attention module as ``self_attn`` (gpt2), which ``grouped`` hands the prefix to.

OpenVINO bfloat16, 2 threads, a 2-core AMX CPU, rounds alternated in one run (``benchmarks/ov_graph_variants.py``,
docs/performance.md): ``grouped`` / ``expanded`` 1.10-1.15x on smollm2-135m, 1.09x on gemma3-270m, 0.90-0.94x
on qwen2.5-coder-0.5b; float32 on smollm2-135m 1.00x (its time is in the matrix products). The vectors are the
same to rounding (softmax in float32, as the eager attention). ``prefix-apart`` (only the prefix kept at batch
1) and ``grouped-5d`` (``grouped`` with the query heads of a key/value head as their own axis) were measured too
and are kept for such A/B runs only; a later run on another AMX VM varied more between rounds than between
the graphs (``grouped`` 1.03x / 0.98x, ``grouped-5d`` 0.94x / 0.98x on qwen2.5-coder-0.5b / smollm2-135m).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

__all__ = ["GraphExport", "ATTENTIONS", "GROUPED_MAX_QUERY_HEADS", "default_attention", "grouped_attention"]

#: how the graph's attention is written (module docstring); ``grouped-5d`` and ``prefix-apart`` are for A/B benchmarks
ATTENTIONS = ("grouped", "grouped-5d", "prefix-apart", "expanded")
#: ``grouped`` where a key/value head serves at most this many query heads: measured faster than ``expanded``
#: at 3 and 4 (smollm2-135m, gemma3-270m), slower at 7 (qwen2.5-coder-0.5b)
GROUPED_MAX_QUERY_HEADS = 4
_NAMES = {"grouped": "prompteol_grouped", "grouped-5d": "prompteol_grouped_5d", "prefix-apart": "prompteol_prefix_apart"}


def grouped_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, softcap=None, **kwargs):
    """Eager attention (inference) with the prefix's keys/values (batch 1, ``module.prompteol_prefix``) kept
    apart: scores against the prefix by a broadcasting matmul, the query heads of one key/value head as one
    matmul, softmax in float32 over prefix and batch together. Same signature as transformers' eager attention."""
    import torch

    scaling = module.head_dim**-0.5 if scaling is None else scaling
    b, h, t, d = query.shape
    groups = key.shape[1]
    pk, pv = module.prompteol_prefix
    p = pk.shape[2]
    q = query.reshape(b, groups, (h // groups) * t, d)  # query head j * rep + r uses key/value head j (repeat_kv)
    scores = torch.cat([torch.matmul(q, pk.transpose(2, 3)), torch.matmul(q, key.transpose(2, 3))], dim=-1) * scaling
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    scores = scores.reshape(b, h, t, p + t) + attention_mask[:, :, :, : p + t]
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype).reshape(b, groups, (h // groups) * t, p + t)
    out = torch.matmul(weights[..., :p], pv) + torch.matmul(weights[..., p:], value)
    return out.reshape(b, h, t, d).transpose(1, 2).contiguous(), None


def prefix_apart_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, softcap=None,
                           **kwargs):  # fmt: skip
    """As :func:`grouped_attention`, with the key/value heads repeated for their query heads (as the eager attention
    does) instead of the query heads grouped: only the prefix is kept apart (batch 1)."""
    import torch

    scaling = module.head_dim**-0.5 if scaling is None else scaling
    b, h, t, d = query.shape
    pk, pv = module.prompteol_prefix
    p, rep = pk.shape[2], h // key.shape[1]

    def heads(x):  # transformers' repeat_kv: key/value head j serves query heads j * rep ... j * rep + rep - 1
        return x if rep == 1 else x[:, :, None].expand(x.shape[0], x.shape[1], rep, x.shape[2], d).reshape(x.shape[0], h, x.shape[2], d)

    scores = torch.cat([torch.matmul(query, heads(pk).transpose(2, 3)), torch.matmul(query, heads(key).transpose(2, 3))],
                       dim=-1) * scaling  # fmt: skip
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    weights = torch.softmax(scores + attention_mask[:, :, :, : p + t], dim=-1, dtype=torch.float32).to(query.dtype)
    out = torch.matmul(weights[..., :p], heads(pv)) + torch.matmul(weights[..., p:], heads(value))
    return out.transpose(1, 2).contiguous(), None


def grouped_5d_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, softcap=None,
                         **kwargs):  # fmt: skip
    """As :func:`grouped_attention`, with the query heads of one key/value head kept as their own axis (b, groups,
    rep, T, d), a view of the queries, and the keys/values broadcast over it: no reshape of the queries' rows."""
    import torch

    scaling = module.head_dim**-0.5 if scaling is None else scaling
    b, h, t, d = query.shape
    groups = key.shape[1]
    rep = h // groups
    pk, pv = module.prompteol_prefix
    p = pk.shape[2]
    q = query.reshape(b, groups, rep, t, d)
    scores = torch.cat([torch.matmul(q, pk.transpose(2, 3).unsqueeze(2)), torch.matmul(q, key.transpose(2, 3).unsqueeze(2))],
                       dim=-1) * scaling  # fmt: skip
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    scores = scores.reshape(b, h, t, p + t) + attention_mask[:, :, :, : p + t]
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype).reshape(b, groups, rep, t, p + t)
    out = torch.matmul(weights[..., :p], pv.unsqueeze(2)) + torch.matmul(weights[..., p:], value.unsqueeze(2))
    return out.reshape(b, h, t, d).transpose(1, 2).contiguous(), None


_FUNCTIONS = {"grouped": grouped_attention, "grouped-5d": grouped_5d_attention, "prefix-apart": prefix_apart_attention}


def default_attention(blocks) -> str:
    """``grouped`` where every block's attention module is its ``self_attn`` (the module the prefix is handed to)
    and a key/value head serves at most :data:`GROUPED_MAX_QUERY_HEADS` query heads, else ``expanded``."""
    if not all(hasattr(blk, "self_attn") for blk in blocks):
        return "expanded"
    groups = max((int(getattr(blk.self_attn, "num_key_value_groups", 1) or 1) for blk in blocks), default=1)
    return "grouped" if groups <= GROUPED_MAX_QUERY_HEADS else "expanded"


class GraphExport:
    """The base model up to block ``layer`` as a traceable module (:meth:`traced`), and its ONNX file (:meth:`write`)."""

    def __init__(self, model, blocks, layer: int, num_layers: int, attention: str | None = None):
        import torch

        self.torch = torch
        self.model, self.blocks, self.layer, self.num_layers = model, list(blocks), layer, num_layers
        self.attention = default_attention(self.blocks[:layer]) if attention is None else attention
        if self.attention not in ATTENTIONS:
            raise ValueError(f"unknown attention {attention!r}; one of {ATTENTIONS}")
        if self.attention != "expanded" and not all(hasattr(blk, "self_attn") for blk in self.blocks[:layer]):
            raise ValueError(f"attention={self.attention!r} needs every block's attention module as ``self_attn``")

    def module(self):
        torch = self.torch
        from transformers import DynamicCache

        model, blocks, layer, top = self.model, self.blocks, self.layer, self.layer == self.num_layers
        grouped = self.attention != "expanded"  # the prefix handed to the attention modules

        class Truncated(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.m = model

            def forward(self, input_ids, attention_mask, position_ids, *past):
                b = input_ids.shape[0]
                kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}
                if grouped:  # the prefix to each attention module, batch 1; no cache
                    for i in range(len(past) // 2):
                        blocks[i].self_attn.prompteol_prefix = (past[2 * i], past[2 * i + 1])
                    kwargs["use_cache"] = False
                else:
                    pairs = [(past[2 * i].expand(b, -1, -1, -1), past[2 * i + 1].expand(b, -1, -1, -1))
                             for i in range(len(past) // 2)]  # fmt: skip
                    kwargs.update(past_key_values=DynamicCache(pairs), use_cache=True)
                got: list = []
                hook = None
                if not top:  # the input of block ``layer`` = the output of block ``layer - 1``, before any norm
                    hook = blocks[layer - 1].register_forward_hook(
                        lambda mod, args, out: got.append(out[0] if isinstance(out, tuple) else out)
                    )
                try:
                    out = self.m(**kwargs).last_hidden_state
                finally:
                    if hook is not None:
                        hook.remove()
                    for blk in blocks[: len(past) // 2] if grouped else ():
                        blk.self_attn.__dict__.pop("prompteol_prefix", None)
                return out if top else got[-1]

        return Truncated()

    @contextlib.contextmanager
    def traced(self):
        """The module of :meth:`module` on the model cut to the read-out layer, with this graph's attention
        implementation; the model is restored after."""
        from ...models.loading import find_decoder_layers

        torch = self.torch
        parent, attr, full = find_decoder_layers(self.model, self.num_layers)
        impl = getattr(self.model.config, "_attn_implementation", None)
        want = "eager"  # the additive float mask, plain matmuls
        if self.attention in _NAMES:
            from transformers import AttentionInterface

            want = _NAMES[self.attention]
            AttentionInterface.register(want, _FUNCTIONS[self.attention])
        training = self.model.training
        setattr(parent, attr, torch.nn.ModuleList(list(full)[: self.layer]))  # no block above the read-out layer
        try:
            if impl != want:
                self.model.set_attn_implementation(want)
            # in eval mode, and left as it was: torch.onnx.export restores the mode the module it is given had, and a
            # new module is in training mode, which used to leave the model training after an export (dropout on: the
            # torch calls after it, the first call's check included, gave other vectors on opt and gpt2)
            yield self.module().eval()
        finally:
            setattr(parent, attr, full)
            if impl != want:
                self.model.set_attn_implementation(impl or "eager")
            self.model.train(training)

    def write(self, folder: Path, heads: int, head_dim: int) -> None:
        """Trace and write ``folder/model.onnx`` (the caller makes the folder atomic)."""
        import warnings

        torch = self.torch
        b, t, p = 2, 3, 2
        ids = torch.tensor([[5, 6, 7], [5, 6, 1]])
        positions = p + torch.tensor([[0, 1, 2], [0, 1, 1]])
        mask = torch.zeros(b, 1, t, p + t)
        past, names = [], []
        axes: dict[str, dict[int, str]] = {"input_ids": {0: "batch", 1: "tokens"}, "position_ids": {0: "batch", 1: "tokens"},
                                           "attention_mask": {0: "batch", 2: "tokens", 3: "total"},
                                           "hidden": {0: "batch", 1: "tokens"}}  # fmt: skip
        for i in range(self.layer):
            for kind in ("k", "v"):
                past.append(torch.zeros(1, heads, p, head_dim))
                names.append(f"past_{kind}{i}")
                axes[names[-1]] = {2: "past"}
        with self.traced() as module, warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (ids, mask, positions, *past), str(folder / "model.onnx"), dynamo=False,
                              opset_version=17, input_names=["input_ids", "attention_mask", "position_ids", *names],
                              output_names=["hidden"], dynamic_axes=axes)  # fmt: skip
