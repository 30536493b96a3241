"""text-embeddings-inference's routes (``/embed``, ``/``, ``/tokenize``, ``/info``) beside OpenAI's.

text-embeddings-inference (TEI) routes beside the OpenAI ones: ``POST /embed`` (and ``POST /``, TEI's
route for embedding models, which ``huggingface_hub.InferenceClient(base_url).feature_extraction``
posts to), ``POST /tokenize``, ``GET /info``, with TEI's request and response shapes; errors leave in
TEI's body ``{"error": "...", "error_type": "Validation"}`` (:mod:`prompteol.serve.errors`). Tokenizing,
the batcher and the post-processing are the server's one path, shared with the OpenAI routes.

What differs from TEI, on purpose (docs/serving.md, "text-embeddings-inference routes"):

- the prompt template and demonstrations are the server's; ``prompt_name`` (a sentence-transformers
  prompt) cannot be chosen (a non-null one is a 413 Validation error);
- ``/tokenize`` returns the tokens of the *rendered prompt* (what the model reads), with ``start`` /
  ``stop`` character offsets into that prompt;
- token-id inputs (``[1, 2, 3]`` or ``[[...], ...]``) are decoded to text (special tokens dropped)
  and embedded through the template, as on ``/v1/embeddings``;
- ``truncate: true`` cuts the *sentence* (never the template) until the prompt fits the server's
  limit (``max_input_length`` of ``/info``), at the end (``right``) or the start (``left``).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request, Response

from .. import __version__
from ..encoder.encode_options import EncodeOptions
from ..encoder.postprocess import postprocess
from ..encoder.prompts.builder import ContextLengthError, Tokenized
from ..errors import InputError
from .errors import ServeError
from .schemas import (
    TEIEmbeddingModel,
    TEIEmbedRequest,
    TEIErrorResponse,
    TEIInfo,
    TEISimpleToken,
    TEITokenizeRequest,
)
from .state import ServerState, decode_token_ids

__all__ = ["install_tei", "build_truncated", "tokens_of"]

#: TEI's default, reported by /info: this server has no cap on concurrent requests (they queue)
MAX_CONCURRENT_REQUESTS = 512


def _names(n: int, single: bool) -> list[str]:
    return ["'inputs'"] if single else [f"inputs[{i}]" for i in range(n)]


def _cut(tokenizer, text: str, keep: int, direction: str) -> str:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if keep >= len(ids):
        return text
    part = ids[:keep] if direction == "right" else ids[len(ids) - keep :] if keep > 0 else []
    return tokenizer.decode(part)


def build_truncated(prompts, texts: list[str], limit: int, direction: str) -> Tokenized:
    """Prompts of ``texts`` with every sentence cut (never the template) until its prompt has at most
    ``limit`` tokens; a template that alone is over the limit is an :class:`InputError`."""
    tokenizer = prompts.tokenizer
    overhead = len(prompts.build([""]).ids[0])
    if overhead > limit:
        raise InputError(f"the prompt template alone is {overhead} tokens, more than the limit of {limit}")
    room = limit - overhead
    texts = [_cut(tokenizer, t, room, direction) for t in texts]
    for _ in range(4):  # a cut text can tokenize differently inside the template: cut the excess again
        built = prompts.build(texts)
        over = [i for i, n in enumerate(built.lengths) if n > limit]
        if not over:
            return built
        for i in over:
            room_i = len(tokenizer(texts[i], add_special_tokens=False)["input_ids"]) - (built.lengths[i] - limit)
            texts[i] = _cut(tokenizer, texts[i], max(room_i, 0), direction)
    return prompts.build(texts)


def tokens_of(prompts, texts: list[str], add_special_tokens: bool) -> list[list[dict[str, Any]]]:
    """TEI's ``SimpleToken`` lists of the rendered prompts of ``texts``."""
    tokenizer = prompts.tokenizer
    built = prompts.build(texts)
    special_ids = set(getattr(tokenizer, "all_special_ids", ()) or ())
    out = []
    for sentence, ids in zip(built.sentences, built.ids):
        prompt = prompts.render(sentence)
        enc = None
        try:
            enc = tokenizer(prompt, add_special_tokens=add_special_tokens, return_offsets_mapping=True,
                            return_special_tokens_mask=True)  # fmt: skip
        except (NotImplementedError, TypeError, ValueError):  # a slow tokenizer has no offsets
            enc = None
        if enc is not None and (not add_special_tokens or list(enc["input_ids"]) == list(ids)):
            seq = list(enc["input_ids"])
            offsets = enc["offset_mapping"]
            specials = enc.get("special_tokens_mask") or [int(t in special_ids) for t in seq]
        else:
            seq = list(ids) if add_special_tokens else tokenizer(prompt, add_special_tokens=False)["input_ids"]
            offsets = [None] * len(seq)
            specials = [int(t in special_ids) for t in seq]
        pieces = tokenizer.convert_ids_to_tokens(seq)
        row = []
        for tid, off, special, piece in zip(seq, offsets, specials, pieces):
            if special or off is None:
                row.append(TEISimpleToken(id=tid, text=piece, special=bool(special), start=None, stop=None))
            else:
                start, stop = int(off[0]), int(off[1])
                row.append(TEISimpleToken(id=tid, text=prompt[start:stop], special=False, start=start, stop=stop))
        out.append([t.model_dump() for t in row])
    return out


def install_tei(app: FastAPI, state: ServerState) -> None:
    """Add the TEI routes (their errors leave in TEI's shape: :mod:`prompteol.serve.errors`)."""
    settings = state.settings
    tei_errors: dict[int | str, dict[str, Any]] = {
        code: {"model": TEIErrorResponse} for code in (400, 401, 413, 422, 424, 429, 503)
    }
    def limit() -> int:
        positions = getattr(state.encoder, "max_positions", None)
        return min(settings.max_input_tokens, positions) if positions else settings.max_input_tokens

    def check_batch(n: int) -> None:
        if n == 0:
            raise ServeError.tei("`inputs` cannot be empty", "Empty")
        if n > settings.max_inputs:
            raise ServeError.tei(f"batch size {n} > maximum allowed batch size {settings.max_inputs} (--max-inputs / "
                           "PROMPTEOL_MAX_INPUTS)")  # fmt: skip

    def no_prompt_name(name: str | None) -> None:
        if name is not None:
            raise ServeError.tei(f"prompt_name {name!r} is not supported: this server applies its own prompt template "
                           "(and demonstrations) to every input; leave prompt_name out")  # fmt: skip

    async def texts_of(items: list[str | list[int]], single: bool) -> list[str]:
        """Token-id items decoded to text (in the tokenizer thread)."""
        if not any(isinstance(x, list) for x in items):
            return [x for x in items if isinstance(x, str)]
        names = _names(len(items), single)
        id_items = [(i, x) for i, x in enumerate(items) if isinstance(x, list)]
        try:
            decoded = await state.in_tokenizer_thread(
                decode_token_ids, state.tokenizer(), [x for _, x in id_items], [names[i] for i, _ in id_items]
            )
        except InputError as exc:
            raise ServeError.tei(str(exc), "Validation") from None
        out = [x if isinstance(x, str) else "" for x in items]
        for (i, _), text in zip(id_items, decoded):
            out[i] = text
        return out

    def tokenizer_error(exc: InputError, single: bool) -> ServeError:
        message = str(exc)
        message = message.replace("texts[0]", "'inputs'", 1) if single else message.replace("texts[", "inputs[")
        if isinstance(exc, ContextLengthError):
            return ServeError.tei(f"Input validation error: {message}", "Validation")
        return ServeError.tei(message, "Tokenizer")

    async def embed(body: TEIEmbedRequest, request: Request) -> Response:
        items, single = body.items()
        check_batch(len(items))
        no_prompt_name(body.prompt_name)
        d = body.dimensions
        if d is not None and d > state.dim:
            raise ServeError.tei(f"dimensions is {d}, but {settings.model_name!r} gives {state.dim}-dimensional vectors; "
                           f"use 1..{state.dim} or leave it out")  # fmt: skip
        texts = await texts_of(items, single)
        cap = limit()
        direction = body.direction()
        try:
            if body.truncate:
                prompts = await state.in_tokenizer_thread(build_truncated, state.prompts(), texts, cap, direction)
            else:
                prompts = await state.tokenize(texts)
        except InputError as exc:
            raise tokenizer_error(exc, single) from None
        counts = prompts.lengths
        too_long = [i for i, c in enumerate(counts) if c > cap]
        if too_long:
            i = too_long[0]
            where = "'inputs'" if single else f"inputs[{i}]"
            raise ServeError.tei(f"Input validation error: `inputs` must have less than {cap} tokens. Given: {counts[i]} "
                           f"({where}, once rendered in the prompt template; send truncate: true to cut it)")  # fmt: skip
        vectors = await state.vectors(request, prompts)
        if vectors is None:
            return Response(status_code=499)
        vectors = postprocess(vectors, EncodeOptions(truncate_dim=d, normalize=body.normalize))
        return Response(json.dumps(vectors.tolist()), media_type="application/json")

    embed_doc = ("Embeddings of the inputs (TEI's /embed): a list of vectors, one per input, unit length unless "
                 "normalize is false. Token-id inputs are decoded to text and embedded through the template.")  # fmt: skip
    app.post("/embed", response_model=list[list[float]], responses=tei_errors, description=embed_doc,
             tags=["text-embeddings-inference"])(embed)  # fmt: skip
    app.post("/", response_model=list[list[float]], responses=tei_errors, include_in_schema=False)(embed)

    @app.post("/tokenize", response_model=list[list[TEISimpleToken]], responses=tei_errors,
              tags=["text-embeddings-inference"],
              description="The tokens of each input's rendered prompt (template and demonstrations included: what "
              "the model reads); start/stop are character offsets into that prompt, null for special tokens.")  # fmt: skip
    async def tokenize(body: TEITokenizeRequest) -> Response:
        texts = [body.inputs] if isinstance(body.inputs, str) else list(body.inputs)
        single = isinstance(body.inputs, str)
        check_batch(len(texts))
        no_prompt_name(body.prompt_name)
        try:
            tokens = await state.in_tokenizer_thread(tokens_of, state.prompts(), texts, body.add_special_tokens)
        except InputError as exc:
            raise tokenizer_error(exc, single) from None
        return Response(json.dumps(tokens, ensure_ascii=False), media_type="application/json")

    @app.get("/info", response_model=TEIInfo, responses=tei_errors, tags=["text-embeddings-inference"])
    async def info() -> TEIInfo:
        enc = settings.encoder
        return TEIInfo(
            model_id=settings.model_name, model_sha=getattr(state.encoder, "fingerprint", None),
            model_dtype=str(enc.dtype), model_type={"embedding": TEIEmbeddingModel(pooling=str(enc.pooling))},
            max_concurrent_requests=MAX_CONCURRENT_REQUESTS, max_input_length=limit(),
            max_batch_tokens=settings.max_batch_tokens, max_batch_requests=settings.max_batch_size,
            max_client_batch_size=settings.max_inputs, auto_truncate=False, tokenization_workers=1,
            version=__version__, sha=None, docker_label=None,
        )  # fmt: skip
