"""The model half of the encoder: token ids -> hidden states at the read-out layer -> pooled vectors.

:class:`ModelRunner` collates sequences (padding on one side, position ids computed from the
mask so padding never shifts them), runs the base model (no LM head) and stops it at the
read-out layer: a forward pre-hook on block ``k`` captures that block's input, which is
``hidden_states[k]`` of a full forward, and ends the forward there, so no block above the
read-out layer is ever computed and one loaded model serves any layer. At the top layer the
model runs to its end (the final norm applied), which is ``hidden_states[-1]``.

Seams for the methods (:mod:`prompteol.encoder.methods`): ``interventions``, each a callable
``(runner, batch) -> list of hook handles`` installed for one model call and removed after it (those of
:meth:`ModelRunner.intervening` for the calls inside its block only); and ``readout``, a map applied to
every pooled vector (EmbedFilter's projection).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..pooling import PoolContext, get_pooler

__all__ = ["ModelRunner", "Batch", "Prefix", "Intervention", "StopForward", "pack_rows"]


class StopForward(Exception):
    """Raised by the read-out hook to end a forward once the wanted hidden states are known."""

    def __init__(self, hidden):
        super().__init__()
        self.hidden = hidden


@dataclass
class Prefix:
    """A shared prompt prefix computed once: its token ids, key/value cache and hidden-state sum."""

    ids: list[int]
    kv: list[tuple[Any, Any]]  # per layer below the read-out layer: (keys, values), each (1, heads, P, d)
    hidden_sum: Any  # (1, H) sum of the prefix hidden states (for mean pooling)

    def starts(self, seq: Sequence[int]) -> bool:
        """Whether ``seq`` runs against this prefix (else the tokenizer merged tokens across its boundary)."""
        return len(seq) > len(self.ids) and list(seq[: len(self.ids)]) == self.ids


@dataclass
class Batch:
    """One model call: what an intervention may need to know about it."""

    ids: Any  # (B, T) token ids run now (after a cached prefix, if any)
    mask: Any  # (B, T) 1 for real tokens of ``ids``
    positions: Any  # (B, T) position ids
    prefix_len: int  # tokens of the cached prefix before ``ids`` (0 without one)
    last: Any  # (B,) index into ``ids`` of each row's last real token
    rows: list[int] | None = None  # which of the sequences given to ``vectors`` these rows are (None: the prefix)


Intervention = Callable[["ModelRunner", Batch], list]


class ModelRunner:
    """Runs ``model`` (a transformers base model) up to ``layer_index`` of its ``num_layers`` blocks."""

    def __init__(self, model, tokenizer, num_layers: int, layer_index: int, pooling: str, autocast: str | None = None):
        from ...models.loading import find_decoder_layers

        self.model = model
        self.tokenizer = tokenizer
        self.num_layers = num_layers
        self.layer_index = layer_index
        self.pooling = pooling
        #: side on which batches are padded; vectors do not depend on it
        self.padding_side = "right"
        self.interventions: list[Intervention] = []
        #: applied to the pooled vectors (B, H) -> (B, D), e.g. EmbedFilter's projection; None: as pooled
        self.readout: Callable[[Any], Any] | None = None
        #: ``"bfloat16"``: run every forward under torch.autocast (the ``bf16-mixed`` precision)
        self.autocast = autocast
        #: the model's compiled block forwards (``fused=True``, :mod:`prompteol.encoder.forward.fused`); None: eager
        self.fused: Any = None
        #: the ONNX Runtime forward (``backend="onnxruntime"``, :mod:`prompteol.encoder.forward.onnx`); None: torch
        self.onnx: Any = None
        self.blocks = find_decoder_layers(model, num_layers)[2] if layer_index < num_layers else None
        self._all_blocks = None
        self._all_model = None
        params = inspect.signature(model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"

    @property
    def device(self):
        return next(self.model.parameters()).device

    @contextlib.contextmanager
    def intervening(self, extra: Sequence[Intervention]) -> Iterator[None]:
        """``extra`` interventions added for the model calls inside the block (one encoder call's)."""
        self.interventions.extend(extra)
        try:
            yield
        finally:
            for intervention in extra:
                self.interventions.remove(intervention)

    def all_blocks(self):
        """The model's decoder blocks (all of them, whatever the read-out layer)."""
        from ...models.loading import find_decoder_layers

        if self._all_blocks is None or self._all_model is not self.model:
            self._all_blocks, self._all_model = find_decoder_layers(self.model, self.num_layers)[2], self.model
        return self._all_blocks

    # ------------------------------------------------------------------ one model call
    def collate(self, seqs: Sequence[Sequence[int]]):
        """``(ids, mask)``, each (B, T), padded on :attr:`padding_side`."""
        import torch

        width = max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, s in enumerate(seqs):
            span = slice(width - len(s), width) if self.padding_side == "left" else slice(0, len(s))
            ids[row, span] = torch.tensor(s)
            mask[row, span] = 1
        return ids.to(self.device), mask.to(self.device)

    def hidden(self, ids, mask, positions, kv=None, prefix_len: int = 0, rows: list[int] | None = None,
               eager: bool = False):  # fmt: skip
        """Hidden states (B, T, H) at the read-out layer. ``mask`` covers the prefix too when ``kv``
        (a transformers cache, filled in place) holds one. ``eager`` bypasses the fused forwards (the
        one-off prefix computation: compiling it would specialise every block on an empty cache and a
        batch of one, twice the compilations for one call; the prefix is computed by torch on the ONNX
        Runtime backend too)."""
        if self.onnx is not None and not self.interventions and not eager and not _grad_enabled():  # embed(): torch
            return self.onnx.hidden(ids, mask, positions, kv, prefix_len,
                                    lambda: self._torch_hidden(ids, mask, positions, kv, prefix_len, rows, eager))  # fmt: skip
        return self._torch_hidden(ids, mask, positions, kv, prefix_len, rows, eager)

    def _torch_hidden(self, ids, mask, positions, kv, prefix_len: int, rows: list[int] | None, eager: bool):
        import torch

        kwargs = {"input_ids": ids, "attention_mask": mask, "position_ids": positions, "use_cache": kv is not None}
        if kv is not None:
            kwargs[self._cache_kwarg] = kv
        handles = []
        if self.interventions:
            own = mask[:, prefix_len:]
            last = (own.long() * (torch.arange(own.shape[1], device=own.device) + 1)).argmax(dim=1)
            batch = Batch(ids=ids, mask=own, positions=positions, prefix_len=prefix_len, last=last, rows=rows)
            for intervene in self.interventions:
                handles.extend(intervene(self, batch))
        if self.blocks is not None:
            handles.append(self.blocks[self.layer_index].register_forward_pre_hook(_stop_here, with_kwargs=True))
        fused = self.fused if self.fused is not None and not self.interventions and not eager else None
        try:
            with self._precision():
                if fused is None:
                    return self.model(**kwargs).last_hidden_state.float()
                from .fused import truncate_cache

                reset = (lambda: truncate_cache(kv, prefix_len)) if kv is not None else None
                return fused.run(lambda: self.model(**kwargs), reset).last_hidden_state.float()
        except StopForward as stop:
            return stop.hidden.float()
        finally:
            for h in handles:
                h.remove()

    def _precision(self):
        import contextlib

        import torch

        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=getattr(torch, self.autocast))

    # ------------------------------------------------------------------ pooled vectors
    def full(self, seqs: Sequence[Sequence[int]], rows: list[int] | None = None, pooled: bool = True, starts=None):
        """Pooled vectors (B, H) of whole prompts (``pooled=False``: what the forward returned)."""
        ids, mask = self.collate(seqs)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T): padding side never shifts positions
        hidden = self.hidden(ids, mask, positions, rows=list(range(len(seqs))) if rows is None else rows)
        if not pooled:
            return hidden
        return self._pool(hidden, mask, self._ctx(mask, None, 0, starts))

    def _pool(self, hidden, mask, ctx: PoolContext | None):
        pooled = get_pooler(self.pooling)(hidden, mask, ctx)
        return pooled if self.readout is None else self.readout(pooled)

    def _ctx(self, mask, prefix: Prefix | None, p: int, starts) -> PoolContext | None:
        """The pooling context: the cached prefix, and per-row span starts (indices into the prompt)."""
        import torch

        start = None
        if starts is not None:
            first = mask.long().argmax(dim=1)  # (B,) first real token (left padding)
            start = first + torch.as_tensor([s - p for s in starts], device=mask.device)
        if prefix is None and start is None:
            return None
        return PoolContext(prefix_sum=prefix.hidden_sum if prefix is not None else None, prefix_len=p, start=start)

    def compute_prefix(self, ids: list[int]) -> Prefix | None:
        """Run ``ids`` once and keep its key/value cache; ``None`` where that is not exact."""
        import torch
        from transformers import DynamicCache

        if not ids or self.layer_index == 0:  # nothing to share below the first block
            return None
        tensor = torch.tensor([ids], device=self.device)
        positions = torch.arange(len(ids), device=self.device).unsqueeze(0)
        cache = DynamicCache()  # plain full-length layers: exact for sliding-window models too
        hidden = self.hidden(tensor, torch.ones_like(tensor), positions, kv=cache, eager=True)
        kv: list[Any] = [(layer.keys, layer.values) for layer in cache.layers if getattr(layer, "keys", None) is not None]  # type: ignore[union-attr]
        if len(kv) != self.layer_index or any(k is None or k.shape[-2] != len(ids) for k, _ in kv):
            return None  # the architecture's cache is not one plain entry per block: compute in full
        return Prefix(ids=list(ids), kv=kv, hidden_sum=hidden.sum(dim=1))

    def with_prefix(
        self, prefix: Prefix, suffixes: Sequence[Sequence[int]], rows: list[int] | None = None, pooled: bool = True,
        starts=None,
    ):  # fmt: skip
        """Pooled vectors (B, H) of prompts ``prefix.ids + suffix``, running only the suffixes."""
        import torch
        from transformers import DynamicCache

        ids, mask = self.collate(suffixes)  # (B, T)
        b, p = ids.shape[0], len(prefix.ids)
        cache = DynamicCache([(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)) for k, v in prefix.kv])
        cache.prompteol_prefix = prefix  # type: ignore[attr-defined]  # its source (the ONNX/OpenVINO forward feeds it once)
        full_mask = torch.cat([torch.ones((b, p), dtype=mask.dtype, device=mask.device), mask], dim=1)
        positions = p + (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T)
        rows = list(range(len(suffixes))) if rows is None else rows
        hidden = self.hidden(ids, full_mask, positions, kv=cache, prefix_len=p, rows=rows)  # (B, T, H)
        if not pooled:
            return hidden
        return self._pool(hidden, mask, self._ctx(mask, prefix, p, starts))

    # ------------------------------------------------------------------ packed rows
    def can_pack(self, seqs: Sequence[Sequence[int]], prefix_len: int) -> bool:
        """Packing is exact when no method acts inside the forward and no sequence (with the prefix)
        is longer than a sliding attention window (the packed mask replaces the window's mask). With the
        ONNX Runtime backend active the padded batches go to its graph instead (its 2-D masks only)."""
        if self.interventions or (self.onnx is not None and self.onnx.failed is None):
            return False
        cfg = self.model.config.get_text_config() if hasattr(self.model.config, "get_text_config") else self.model.config
        window = getattr(cfg, "sliding_window", None)
        return window is None or prefix_len + max(len(s) for s in seqs) <= window

    def packed(self, seqs: Sequence[Sequence[int]], prefix: Prefix | None = None, row_tokens: int = 256):
        """Pooled vectors (B, H) with the sequences packed into rows of at most ``row_tokens`` tokens:
        attention is confined to each sequence (a block-diagonal causal mask, plus the shared prefix)
        and positions restart per sequence, so no padding token is computed beyond each row's tail."""
        import torch
        from transformers import DynamicCache

        p = len(prefix.ids) if prefix is not None else 0
        rows = pack_rows([len(s) for s in seqs], row_tokens)
        width = max(sum(len(seqs[i]) for i in row) for row in rows)
        n_rows = len(rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((n_rows, width), pad, dtype=torch.long)
        positions = torch.zeros((n_rows, width), dtype=torch.long)
        allowed = torch.zeros((n_rows, 1, width, p + width), dtype=torch.bool)  # (R, 1, L, P+L)
        idx = torch.arange(width)
        allowed[:, 0, idx, p + idx] = True  # every token sees itself (padding too: no empty rows, no NaN)
        where: list[tuple[int, int, int]] = [(0, 0, 0)] * len(seqs)  # sequence -> (row, start, length)
        for r, row in enumerate(rows):
            start = 0
            for i in row:
                n = len(seqs[i])
                ids[r, start : start + n] = torch.tensor(seqs[i])
                positions[r, start : start + n] = p + torch.arange(n)
                allowed[r, 0, start : start + n, p + start : p + start + n] = torch.ones(n, n, dtype=torch.bool).tril()
                if p:
                    allowed[r, 0, start : start + n, :p] = True
                where[i] = (r, start, n)
                start += n
        ids, positions, allowed = ids.to(self.device), positions.to(self.device), allowed.to(self.device)
        if getattr(self.model.config, "_attn_implementation", "sdpa") == "eager":  # eager adds a float mask
            dtype = next(self.model.parameters()).dtype
            allowed = torch.zeros(allowed.shape, dtype=dtype, device=self.device).masked_fill(
                ~allowed, torch.finfo(dtype).min
            )
        kv = None
        if prefix is not None:
            kv = DynamicCache([(k.expand(n_rows, -1, -1, -1), v.expand(n_rows, -1, -1, -1)) for k, v in prefix.kv])
        hidden = self.hidden(ids, allowed, positions, kv=kv, prefix_len=p)  # (R, L, H)
        # unpack into (B, T, H) padded on the right, then pool as the padded path does
        longest = max(n for _, _, n in where)
        flat = torch.tensor([r * width + min(start + j, start + n - 1) for r, start, n in where for j in range(longest)],
                            device=hidden.device)  # fmt: skip
        unpacked = hidden.reshape(n_rows * width, -1).index_select(0, flat).reshape(len(seqs), longest, -1)
        mask = (torch.arange(longest, device=hidden.device).unsqueeze(0)
                < torch.tensor([n for _, _, n in where], device=hidden.device).unsqueeze(1)).long()  # fmt: skip
        ctx = PoolContext(prefix_sum=prefix.hidden_sum, prefix_len=p) if prefix is not None else None
        return self._pool(unpacked, mask, ctx)

    def vectors(
        self, seqs: Sequence[Sequence[int]], prefix: Prefix | None = None, packed: bool = False,
        pooled: bool = True, starts: Sequence[int] | None = None,
    ):  # fmt: skip
        """Pooled vectors (B, H) of full prompts; those starting with the exact ``prefix`` tokens run
        only their remaining tokens against its cache, any other (the tokenizer merged tokens across
        the prefix boundary) is computed in full."""
        import torch

        if prefix is None:
            if packed and pooled and starts is None and self.can_pack(seqs, 0):
                return self.packed(seqs)
            return self.full(seqs, pooled=pooled, starts=starts)
        p = len(prefix.ids)
        hit = [i for i, s in enumerate(seqs) if prefix.starts(s)]
        hit_set = set(hit)
        miss = [i for i in range(len(seqs)) if i not in hit_set]
        parts: dict[int, Any] = {}
        pick = (lambda idx: [starts[i] for i in idx]) if starts is not None else (lambda idx: None)
        if hit:
            suffixes = [seqs[i][p:] for i in hit]
            if packed and pooled and starts is None and self.can_pack(suffixes, p):
                parts.update(zip(hit, self.packed(suffixes, prefix)))
            else:
                parts.update(zip(hit, self.with_prefix(prefix, suffixes, rows=hit, pooled=pooled, starts=pick(hit))))
        if miss:
            parts.update(zip(miss, self.full([seqs[i] for i in miss], rows=miss, pooled=pooled, starts=pick(miss))))
        return torch.stack([parts[i] for i in range(len(seqs))])


def pack_rows(lengths: Sequence[int], row_tokens: int) -> list[list[int]]:
    """Indices grouped into rows of at most ``row_tokens`` tokens (first fit, longest first); a
    sequence longer than ``row_tokens`` gets a row of its own."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda j: -lengths[j]):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(row_tokens - lengths[i])
    return rows


def _grad_enabled() -> bool:
    import torch

    return torch.is_grad_enabled()


def _stop_here(module, args, kwargs):
    hidden = args[0] if args else kwargs["hidden_states"]
    raise StopForward(hidden)
