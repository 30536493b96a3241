"""The llama.cpp peer (``llamacpp``): llama-cpp-python on the GGUF file itself.

llama.cpp (``llama-cpp-python``) on the GGUF file itself (``llamacpp``): same rendered prompts, pooling
``LAST``, token ids checked against prompteol's tokenizer."""

from __future__ import annotations

import time

import numpy as np

from .base import Runner, prompt_builder, register_runner
from .configs import BenchConfig


@register_runner("llamacpp")
class LlamaCppRunner(Runner):
    """llama.cpp through llama-cpp-python, on the GGUF file prompteol's weights are dequantised from."""

    def __init__(self, cfg: BenchConfig, args):
        super().__init__()
        import llama_cpp

        from ..models.pull import gguf_path

        self.prompts, _ = prompt_builder(args)
        tok = self.prompts.tokenizer
        probe = tok("x", add_special_tokens=True)["input_ids"]
        self.add_bos = bool(tok.bos_token_id is not None and probe and probe[0] == tok.bos_token_id)
        gguf = gguf_path(args.model, progress=False)
        # 512 (llama.cpp's default) holds a batch of 16 STS-B prompts; 2048 measured ~25% slower (larger buffers)
        self.n_batch = max(512, args.max_batch_tokens or 0)
        t = time.perf_counter()
        self.llm = llama_cpp.Llama(
            model_path=str(gguf), embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_LAST,
            n_threads=args.threads, n_threads_batch=args.threads, n_ctx=self.n_batch, n_batch=self.n_batch,
            n_ubatch=self.n_batch, verbose=False,
        )  # fmt: skip
        self.load_s = time.perf_counter() - t
        self.seqs_per_decode = max(1, min(args.batch_size, int(self.llm.context_params.n_seq_max)))
        self.weights_mb = gguf.stat().st_size / 2**20
        self.extra.update(
            gguf=str(gguf), add_bos=self.add_bos, n_batch=self.n_batch, seqs_per_decode=self.seqs_per_decode,
            llama_cpp_python=getattr(llama_cpp, "__version__", None),
            system_info=llama_cpp.llama_print_system_info().decode(errors="replace").strip(),
        )  # fmt: skip

    def _tokens(self, prompts: list[str]) -> list[list[int]]:
        return [self.llm.tokenize(p.encode("utf-8"), add_bos=self.add_bos, special=True) for p in prompts]

    def check_tokens(self, sentences: list[str], first: int = 8) -> dict:
        """llama.cpp's token ids vs prompteol's for every prompt: counts and the first mismatches."""
        prepared = self.prompts.prepare(sentences)
        ours = self.prompts.tokenize(prepared)
        theirs = self._tokens([self.prompts.render(s) for s in prepared])
        bad = [i for i, (a, b) in enumerate(zip(ours, theirs)) if list(a) != list(b)]
        return {"checked": len(ours), "mismatched": len(bad), "add_bos": self.add_bos,
                "first_checked_identical": not any(i < first for i in bad),
                "examples": [{"index": i, "prompteol": list(ours[i]), "llama_cpp": list(theirs[i])} for i in bad[:3]]}  # fmt: skip

    def token_counts(self, sentences: list[str]) -> tuple[int, int]:
        n = sum(len(s) for s in self._tokens([self.prompts.render(s) for s in self.prompts.prepare(sentences)]))
        return n, n

    def embed(self, sentences: list[str]) -> np.ndarray:
        """What ``Llama.embed`` does (one decode per batch, one sequence id per prompt, KV cleared before
        each decode), with the tokens made with prompteol's ``add_bos`` and special-token parsing."""
        import llama_cpp

        llm = self.llm
        seqs = self._tokens([self.prompts.render(s) for s in self.prompts.prepare(sentences)])
        n_embd = llm.n_embd()
        out = np.zeros((len(seqs), n_embd), dtype=np.float32)
        done = 0
        batch: list[list[int]] = []

        def decode() -> None:
            nonlocal done
            llm._ctx.kv_cache_clear()
            llm._batch.reset()
            for j, toks in enumerate(batch):
                llm._batch.add_sequence(toks, j, True)
            llm._ctx.decode(llm._batch)
            for j in range(len(batch)):
                out[done + j] = np.ctypeslib.as_array(llama_cpp.llama_get_embeddings_seq(llm._ctx.ctx, j), (n_embd,))
            done += len(batch)
            batch.clear()

        n_tokens = 0
        for toks in seqs:
            if len(toks) > self.n_batch:
                raise ValueError(f"a prompt of {len(toks)} tokens exceeds llama.cpp's batch of {self.n_batch}")
            if batch and (n_tokens + len(toks) > self.n_batch or len(batch) >= self.seqs_per_decode):
                decode()
                n_tokens = 0
            batch.append(toks)
            n_tokens += len(toks)
        if batch:
            decode()
        llm._ctx.kv_cache_clear()
        return out
