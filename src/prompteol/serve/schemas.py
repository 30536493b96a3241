"""Request and response bodies of the OpenAI and text-embeddings-inference routes.

Request and response bodies, mirroring OpenAI's embeddings API (``POST /v1/embeddings``) and
text-embeddings-inference's (``POST /embed``, ``POST /tokenize``, ``GET /info``; the ``TEI*`` models).

Differences from OpenAI, on purpose: token-id input (an array of ints, or an array of such arrays,
as OpenAI accepts) is decoded to text with the tokenizer (special tokens dropped) and that text is
embedded through the prompt template like any other, so the vector equals the decoded text's
(ids outside the vocabulary are a 400); the template, demonstrations and layer are fixed by the
server and cannot be sent.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator

__all__ = [
    "EmbeddingRequest",
    "Embedding",
    "Usage",
    "EmbeddingResponse",
    "ModelCard",
    "ModelList",
    "ErrorDetail",
    "ErrorResponse",
    "TEIEmbedRequest",
    "TEITokenizeRequest",
    "TEISimpleToken",
    "TEIInfo",
    "TEIErrorResponse",
]


class EmbeddingRequest(BaseModel):
    """``POST /v1/embeddings``. Unknown fields are refused (as OpenAI does), so typos are not ignored."""

    model_config = ConfigDict(extra="forbid")

    input: str | list[str] | list[StrictInt] | list[list[StrictInt]] = Field(
        description="a text, a list of texts, or token ids (an array of ints, or an array of such arrays): "
        "ids are decoded to text, which is embedded through the prompt template"
    )
    model: str = Field(description="the served model name (see GET /v1/models)")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="'float': JSON numbers; 'base64': little-endian float32 bytes, base64-encoded"
    )
    #: strict: "8", 8.0 and true are refused (a lax int would take true as 1 and answer 1-dimensional vectors)
    dimensions: StrictInt | None = Field(
        None, ge=1, description="keep the first N dimensions, then re-normalise to unit length (an integer)"
    )
    user: str | None = Field(None, description="accepted for compatibility; not used")

    @field_validator("input", mode="before")
    @classmethod
    def _check_input(cls, value: Any) -> Any:
        """Say exactly what is wrong (pydantic's union errors would list every member type)."""
        return check_input(value, "input")

    def texts(self) -> list[str]:
        """The texts (token-id input: see :meth:`token_ids`)."""
        if isinstance(self.input, str):
            return [self.input]
        return [x for x in self.input if isinstance(x, str)]

    def token_ids(self) -> list[list[int]] | None:
        """The token-id sequences of token-id input, else ``None``."""
        if isinstance(self.input, str) or not self.input or isinstance(self.input[0], str):
            return None
        if isinstance(self.input[0], int):
            return [list(self.input)]  # type: ignore[arg-type]
        return [list(x) for x in self.input]  # type: ignore[union-attr]

    @property
    def single(self) -> bool:
        """One input (a string or one array of ids), named ``'input'`` in messages rather than ``input[i]``."""
        return isinstance(self.input, str) or bool(self.input) and isinstance(self.input[0], int)


def _is_id(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_input(value: Any, name: str, *, mixed: bool = False) -> Any:
    """``value`` if it is a string, a list of strings, a list of token ids or a list of lists of token ids
    (``mixed``: strings and id lists in one list, as TEI allows), else a ``ValueError`` saying what is wrong."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise ValueError(f"'{name}' should be a string, a list of strings or token ids, got {_json_type(value)}")
    if value and all(_is_id(v) for v in value):
        bad = next((v for v in value if v < 0), None)
        if bad is not None:
            raise ValueError(f"'{name}' holds the negative token id {bad}")
        return value
    kinds = {"text" if isinstance(v, str) else "ids" if isinstance(v, list) else "other" for v in value}
    if "ids" in kinds and "text" in kinds and not mixed:
        raise ValueError(f"'{name}' mixes strings and token arrays; send either texts or token ids")
    for i, v in enumerate(value):
        if isinstance(v, str):
            continue
        if isinstance(v, list):
            if not v:
                raise ValueError(f"{name}[{i}] is an empty token array")
            for t in v:
                if not _is_id(t):
                    raise ValueError(f"{name}[{i}] should hold token ids (integers), got {_json_type(t)}")
                if t < 0:
                    raise ValueError(f"{name}[{i}] holds the negative token id {t}")
            continue
        if _is_id(v):
            raise ValueError(f"'{name}' mixes strings and token ids; send either texts or token ids")
        raise ValueError(f"{name}[{i}] should be a string or a token array, got {_json_type(v)}")
    return value


def _json_type(value: Any) -> str:
    names = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", dict: "an object"}
    return names.get(type(value), type(value).__name__)


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    embedding: list[float] | str = Field(description="floats, or a base64 string of little-endian float32")
    index: int


class Usage(BaseModel):
    """Token counts of the rendered prompts (template and demonstrations included), as the model sees them."""

    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "prompteol"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


# ---------------------------------------------------------------------------------------------- TEI
class TEIEmbedRequest(BaseModel):
    """``POST /embed`` of text-embeddings-inference. Unknown fields are ignored, as TEI does."""

    model_config = ConfigDict(extra="ignore")

    inputs: str | list[StrictInt] | list[str | list[StrictInt]] = Field(
        description="a text, a list of texts, token ids or a list of token-id arrays (decoded to text)"
    )
    normalize: StrictBool = Field(True, description="unit-length vectors")
    truncate: StrictBool | None = Field(
        False, description="cut the sentence (never the template) until the prompt fits max_input_length"
    )
    truncation_direction: str = Field("right", description="'right' (cut the end) or 'left' (cut the start)")
    prompt_name: str | None = Field(None, description="not supported: the server applies its own template")
    dimensions: StrictInt | None = Field(None, ge=1, description="keep the first N dimensions (then normalise)")

    @field_validator("inputs", mode="before")
    @classmethod
    def _check_inputs(cls, value: Any) -> Any:
        return check_input(value, "inputs", mixed=True)

    @field_validator("truncation_direction", mode="before")
    @classmethod
    def _check_direction(cls, value: Any) -> Any:
        if not isinstance(value, str) or value.lower() not in ("left", "right"):
            raise ValueError(f"truncation_direction should be 'left' or 'right', got {value!r}")
        return value

    def items(self) -> tuple[list[str | list[int]], bool]:
        """``(inputs as a list, whether a single input was sent)``."""
        if isinstance(self.inputs, str):
            return [self.inputs], True
        if self.inputs and all(isinstance(x, int) for x in self.inputs):
            return [[int(x) for x in self.inputs if isinstance(x, int)]], True
        return list(self.inputs), False  # type: ignore[arg-type]

    def direction(self) -> str:
        return self.truncation_direction.lower()


class TEITokenizeRequest(BaseModel):
    """``POST /tokenize`` of text-embeddings-inference."""

    model_config = ConfigDict(extra="ignore")

    inputs: str | list[str]
    add_special_tokens: StrictBool = True
    prompt_name: str | None = None


class TEISimpleToken(BaseModel):
    id: int
    text: str
    special: bool
    start: int | None = None
    stop: int | None = None


class TEIEmbeddingModel(BaseModel):
    pooling: str


class TEIInfo(BaseModel):
    """``GET /info``: TEI's ``Info``; ``model_sha`` is the encoder fingerprint (what identifies the vectors)."""

    model_config = ConfigDict(protected_namespaces=())

    model_id: str
    model_sha: str | None
    model_dtype: str
    model_type: dict[str, TEIEmbeddingModel]
    max_concurrent_requests: int
    max_input_length: int
    max_batch_tokens: int
    max_batch_requests: int | None
    max_client_batch_size: int
    auto_truncate: bool
    tokenization_workers: int
    version: str
    sha: str | None = None
    docker_label: str | None = None


class TEIErrorResponse(BaseModel):
    error: str
    error_type: Literal["Unhealthy", "Backend", "Overloaded", "Validation", "Tokenizer", "Empty"]
