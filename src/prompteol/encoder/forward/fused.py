"""Fused forwards (``fused=True``): each decoder block's ``forward`` compiled by ``torch.compile``.

Inductor's CPU code generation fuses the element-wise work around the matrix products (RMSNorm's
pow/mean/mul, rotary embeddings, SiLU, residual adds, dtype copies) into a few vectorised loops; the
matrix products stay in the same BLAS/oneDNN kernels. Shapes are dynamic (``dynamic=True``), so a run
compiles once per block and per path (with and without the shared prefix), not once per batch shape.

What stays outside the compiled code: module hooks (the read-out hook that ends the forward at the
requested layer runs before a block's ``forward``), the embeddings, the final norm and pooling.

Safety:

- **verified**: the first fused call of a loaded model is computed eagerly too and compared
  (float32: max abs difference <= 1e-4 x max(1, max |h|); 16-bit: every hidden state's cosine to
  eager's >= 0.99); beyond it, fused is switched off for that model with one warning and the eager
  result is used;
- **fallback**: any exception while compiling or running falls back to eager with one warning (the
  prefix cache is cropped back first, so the retry sees the same inputs); so does a model that keeps
  recompiling after its first calls (new shapes or paths: the compile time would never pay off);
- **timed**: the first call after the warm calls (when the compiling should be over) is timed against
  the same call run eagerly; compiled blocks that are clearly slower switch the model back to eager
  with one warning (a call too short to time, under ``MIN_TIMED_S`` eagerly, keeps them);
- methods that hook inside a forward (Token Prepending, Contrastive Prompting) run eagerly; the
  encoder's ``describe()`` says so.

The compiled forwards belong to the loaded model, so every encoder derived from it shares them.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

__all__ = ["FusedBlocks", "fused_blocks", "truncate_cache"]

log = logging.getLogger(__name__)

#: tolerance of the first-call check: float32, the max abs difference relative to max(1, max |hidden|);
#: 16-bit dtypes, 1 - the lowest cosine between fused and eager hidden states (bfloat16 eager vs float32 is
#: ~1e-3 on the packaged models' vectors: docs/performance.md)
TOLERANCE = {"float32": 1e-4, "other": 1e-2}
#: calls that may compile (the prefix, the first batches' paths); after them, MAX_LATE_COMPILES calls that
#: each compile for over LATE_COMPILE_S seconds switch the model back to eager (a model whose blocks keep
#: recompiling on new shapes, measured on gemma3-270m: 20x slower than eager; docs/performance.md)
WARM_CALLS = 4
LATE_COMPILE_S = 1.0
MAX_LATE_COMPILES = 3
#: the timed call: fused is kept unless it took over SLOWER_FACTOR x the eager time of the same call (one
#: call's time varies by ~10-15% on a busy machine; a fused path within that spread is kept)
SLOWER_FACTOR = 1.25
#: a timed call whose eager time is below this says nothing (a tiny model's call is dispatch overhead and
#: timer noise): fused is kept, and the check is not repeated (it would double the next call's work)
MIN_TIMED_S = 0.05


class FusedBlocks:
    """The compiled forwards of one loaded model's decoder blocks."""

    def __init__(self, blocks):
        self.blocks = list(blocks)
        self.compiled: list[Any] | None = None
        self.failed: str | None = None
        self.verified: float | None = None  # max abs difference of the first call (relative), once checked
        self.compile_s = 0.0  # time spent by dynamo/inductor compiling, summed over the model's life
        self.calls = 0
        self.late_compiles = 0  # calls after the first WARM_CALLS that compiled again
        self.speed_check: dict[str, float] | None = None  # the timed call: fused and eager seconds

    # ------------------------------------------------------------------ state
    def describe(self) -> dict[str, Any]:
        return {"compiled_blocks": len(self.blocks), "calls": self.calls, "compile_s": round(self.compile_s, 1),
                "late_compiles": self.late_compiles, "verified_max_diff": self.verified,
                "speed_check": self.speed_check, "fallback": self.failed}  # fmt: skip

    def _compile(self) -> None:
        import torch
        import torch._dynamo

        cfg = torch._dynamo.config
        # each block is its own guarded entry of the same code object (x2 for the prefix path, x2 margin)
        cfg.recompile_limit = max(int(cfg.recompile_limit), 4 * len(self.blocks) + 8)
        if hasattr(cfg, "accumulated_recompile_limit"):
            cfg.accumulated_recompile_limit = max(int(cfg.accumulated_recompile_limit), 16 * len(self.blocks))
        self.compiled = [torch.compile(b.forward, dynamic=True) for b in self.blocks]

    @contextlib.contextmanager
    def active(self):
        """Within the block, every block's ``forward`` is its compiled one."""
        if self.compiled is None:
            self._compile()
        assert self.compiled is not None
        own = [b.__dict__.get("forward") for b in self.blocks]  # an instance attribute of its own, if any
        for b, f in zip(self.blocks, self.compiled):
            b.forward = f
        try:
            with _no_duck_shapes():
                yield
        finally:
            for b, f in zip(self.blocks, own):
                if f is None:
                    del b.forward
                else:
                    b.forward = f

    # ------------------------------------------------------------------ one call
    def run(self, call, reset=None):
        """``call()`` (a model forward) with the compiled forwards; eager after a failure, or when the
        first call's check against eager fails. ``reset()`` puts the inputs back (the shared-prefix
        cache) before an eager call. The read-out hook's ``StopForward`` passes through as a result."""
        from .runner import StopForward

        if self.failed is not None:
            return call()
        before = _compile_seconds()
        started = time.perf_counter()
        try:
            with self.active():
                out: Any = call()
        except StopForward as stop:  # the read-out hook ended the forward: a result, not a failure
            out = stop
        except Exception as exc:  # noqa: BLE001 - any compile/run failure: eager, once warned
            self._count(before)
            self._fail(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            if reset is not None:
                reset()
            return call()
        fused_s = time.perf_counter() - started
        compiled_now = self._count(before)
        if self.verified is None:
            out = self._verify(out, call, reset)
        elif self.speed_check is None and self.failed is None and self.calls > WARM_CALLS and not compiled_now:
            out = self._time_against_eager(out, fused_s, call, reset)
        if isinstance(out, StopForward):
            raise out
        return out

    def _time_against_eager(self, fused_out, fused_s: float, call, reset):
        """Run the call eagerly too, timed; eager from now on when the fused call was clearly slower."""
        from .runner import StopForward

        if reset is not None:
            reset()
        started = time.perf_counter()
        try:
            eager_out: Any = call()
        except StopForward as stop:
            eager_out = stop
        eager_s = time.perf_counter() - started
        judged = eager_s >= MIN_TIMED_S
        self.speed_check = {"fused_s": round(fused_s, 4), "eager_s": round(eager_s, 4), "call": self.calls,
                            "judged": judged}  # fmt: skip
        if judged and fused_s > SLOWER_FACTOR * eager_s:
            self._fail(f"the compiled blocks were slower than eager on the same call ({fused_s:.3f} s vs "
                       f"{eager_s:.3f} s, call {self.calls})")  # fmt: skip
        return eager_out

    def _count(self, before: float) -> bool:
        """Count one call and the compiling it did; whether it compiled (for over a tenth of a second)."""
        self.calls += 1
        spent = max(0.0, _compile_seconds() - before)
        self.compile_s += spent
        if self.calls > WARM_CALLS and spent > LATE_COMPILE_S:
            self.late_compiles += 1
            if self.late_compiles >= MAX_LATE_COMPILES:
                self._fail(f"still compiling after {self.calls} calls ({self.late_compiles} recompilations for new "
                           f"input shapes or paths, {self.compile_s:.0f} s in all): eager is faster here")  # fmt: skip
        return spent > 0.1

    def _verify(self, fused_out, call, reset):
        """Compute the first call eagerly too; keep the fused result only within tolerance."""
        from .runner import StopForward

        def hidden(out):
            return out.hidden if isinstance(out, StopForward) else out.last_hidden_state

        if reset is not None:
            reset()
        try:
            eager_out: Any = call()
        except StopForward as stop:
            eager_out = stop
        a, b = hidden(fused_out).float(), hidden(eager_out)
        exact = b.dtype.is_floating_point and b.element_size() == 4
        b = b.float()
        if exact:  # float32: the same numbers to rounding
            diff = float((a - b).abs().max()) / max(1.0, float(b.abs().max()))
            tol, what = TOLERANCE["float32"], "relative max difference"
        else:  # 16-bit: two roundings of the same function differ in the last bits of huge activations,
            # so compare directions: 1 - the lowest cosine between fused and eager hidden states
            cos = torch_cosine_rows(a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1]))
            diff, tol, what = 1.0 - cos, TOLERANCE["other"], "1 - lowest cosine"
        self.verified = diff
        if not diff <= tol:
            self._fail(f"the first fused call differed from eager: {what} {diff:.2e} (tolerance {tol:g})")
            return eager_out
        return fused_out

    def _fail(self, reason: str) -> None:
        if self.failed is None:
            log.warning("fused forward switched off for this model, eager from now on: %s", reason)
        self.failed = reason


def torch_cosine_rows(a, b) -> float:
    """The lowest cosine similarity between matching rows of two (N, H) tensors (zero rows count as equal)."""
    num = (a * b).sum(-1)
    den = a.norm(dim=-1) * b.norm(dim=-1)
    cos = (num / den.clamp(min=1e-12)).where(den > 0, num.new_ones(()))
    return float(cos.min())


def truncate_cache(cache, length: int) -> None:
    """Cut a transformers key/value cache back to its first ``length`` tokens (what a call appended is dropped)."""
    for layer in getattr(cache, "layers", []):
        keys = getattr(layer, "keys", None)
        if keys is not None and keys.shape[-2] > length:
            layer.keys = keys[..., :length, :]
            layer.values = layer.values[..., :length, :]


def _no_duck_shapes():
    """Compile without "duck sizing": by default dynamo gives sizes that are equal in the first call one
    symbol (a first batch of 16 sentences of 16 tokens: batch == length), and every later batch where they
    differ recompiles every block (measured on gemma3-270m: 17 s of recompiling in a 200-sentence run)."""
    try:
        from torch.fx.experimental import _config
    except ImportError:  # a torch without it: its default
        return contextlib.nullcontext()
    return _config.patch(use_duck_shape=False)


def _compile_seconds() -> float:
    """Seconds dynamo/inductor spent compiling so far in this process (0 when torch does not say)."""
    try:
        from torch._dynamo.utils import compilation_time_metrics

        return float(sum(sum(v) for k, v in compilation_time_metrics.items() if k.startswith("_compile")))
    except Exception:  # noqa: BLE001 - a torch without these metrics: compile time unknown
        return 0.0


def fused_blocks(model, blocks) -> FusedBlocks:
    """The model's :class:`FusedBlocks` (made once per loaded model, shared by derived encoders)."""
    fused = model.__dict__.get("_prompteol_fused")
    if fused is None or fused.blocks != list(blocks):
        fused = FusedBlocks(blocks)
        model.__dict__["_prompteol_fused"] = fused
    return fused
