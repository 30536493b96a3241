"""OpenAI's routes: ``POST /v1/embeddings``, ``GET /v1/models`` and ``GET /v1/models/{id}``.

Only the request and response shapes are this module's: tokenizing, the batcher and the post-processing
are the server's one path (:class:`~prompteol.serve.state.ServerState`,
:func:`~prompteol.encoder.postprocess.postprocess`), shared with the TEI routes.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
from fastapi import FastAPI, Request, Response

from ..encoder.encode_options import EncodeOptions
from ..encoder.postprocess import postprocess
from ..encoder.prompts.builder import ContextLengthError
from ..errors import InputError
from .errors import ServeError
from .schemas import Embedding, EmbeddingRequest, EmbeddingResponse, ErrorResponse, ModelCard, ModelList, Usage
from .state import ServerState, decode_token_ids

__all__ = ["install_openai", "TOKEN_IDS_HEADER", "OPENAI_ERRORS"]

#: response header of /v1/embeddings when token ids were sent: what was done with them
TOKEN_IDS_HEADER = "x-prompteol-token-ids"
#: the error responses documented for the OpenAI routes
OPENAI_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 500, 503)}


def _b64(vector: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode("ascii")


def install_openai(app: FastAPI, state: ServerState) -> None:
    """Add the OpenAI routes."""
    settings = state.settings
    name = settings.model_name

    @app.post("/v1/embeddings", response_model=EmbeddingResponse, responses=OPENAI_ERRORS)
    async def create_embeddings(body: EmbeddingRequest, request: Request) -> Response:
        s = settings
        if body.model != name:
            raise ServeError(404, f"the model {body.model!r} does not exist on this server; it serves {name!r} "
                             f"(see GET /v1/models)", param="model", code="model_not_found")  # fmt: skip
        ids = body.token_ids()
        n = len(ids) if ids is not None else len(body.texts())
        if not n:
            raise ServeError(400, "'input' is an empty list; send at least one text", param="input", code="empty_input")
        if n > s.max_inputs:
            raise ServeError(400, f"'input' has {n} inputs, more than this server's limit of {s.max_inputs} "
                             f"per request (--max-inputs / PROMPTEOL_MAX_INPUTS); split it into several requests",
                             param="input", code="too_many_inputs")  # fmt: skip
        d = body.dimensions
        if d is not None and d > state.dim:
            raise ServeError(400, f"'dimensions' is {d}, but {name!r} gives {state.dim}-dimensional vectors; "
                             f"use 1..{state.dim} or leave it out", param="dimensions", code="invalid_value")  # fmt: skip
        state.require_batcher()
        names = ["'input'"] if body.single else [f"input[{i}]" for i in range(n)]
        if ids is not None:  # decoded to text (special tokens dropped), then embedded like any text
            try:
                texts = await state.in_tokenizer_thread(decode_token_ids, state.tokenizer(), ids, names)
            except InputError as exc:
                raise ServeError(400, str(exc), param="input", code="invalid_value") from None
        else:
            texts = body.texts()
        # an empty string is embedded like any text (the template is still there), as by the library,
        # `prompteol encode` (a blank line) and the TEI routes: one rule on every path
        try:
            prompts = await state.tokenize(texts)
        except InputError as exc:  # a lone surrogate, a prompt over the model's positions, ...
            if body.single:  # a single input: no index to name
                message = str(exc).replace("texts[0]", "'input'")
            else:
                message = str(exc).replace("texts[", "input[")
            code = "context_length_exceeded" if isinstance(exc, ContextLengthError) else "invalid_input"
            raise ServeError(400, message, param="input", code=code) from None
        counts = prompts.lengths
        too_long = [i for i, c in enumerate(counts) if c > s.max_input_tokens]
        if too_long:
            i = too_long[0]
            others = f" ({len(too_long)} inputs are too long)" if len(too_long) > 1 else ""
            raise ServeError(400, f"input[{i}] is {counts[i]} tokens once rendered in the prompt template, more "
                             f"than this server's limit of {s.max_input_tokens} (--max-input-tokens / "
                             f"PROMPTEOL_MAX_INPUT_TOKENS){others}; shorten it",
                             param="input", code="context_length_exceeded")  # fmt: skip
        vectors = await state.vectors(request, prompts)
        if vectors is None:
            return Response(status_code=499)  # client closed the request (nginx's code); nobody reads it
        vectors = postprocess(vectors, EncodeOptions(truncate_dim=d, normalize=s.normalize))  # (N, d or H)
        as_b64 = body.encoding_format == "base64"
        data = [Embedding(embedding=_b64(v) if as_b64 else v.tolist(), index=i) for i, v in enumerate(vectors)]
        usage = Usage(prompt_tokens=sum(counts), total_tokens=sum(counts))
        out = EmbeddingResponse(data=data, model=name, usage=usage)
        headers = {TOKEN_IDS_HEADER: "decoded to text, embedded through the prompt template"} if ids else None
        return Response(out.model_dump_json(), media_type="application/json", headers=headers)

    @app.get("/v1/models", response_model=ModelList, responses=OPENAI_ERRORS)
    async def list_models() -> ModelList:
        return ModelList(data=[ModelCard(id=name, created=state.created)])

    @app.get("/v1/models/{model_id:path}", response_model=ModelCard, responses=OPENAI_ERRORS)
    async def get_model(model_id: str) -> ModelCard:
        if model_id != name:
            raise ServeError(404, f"the model {model_id!r} does not exist on this server; it serves {name!r}",
                             param="model", code="model_not_found")  # fmt: skip
        return ModelCard(id=name, created=state.created)
