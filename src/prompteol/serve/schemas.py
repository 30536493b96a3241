"""Request and response bodies, mirroring OpenAI's embeddings API (``POST /v1/embeddings``).

Differences from OpenAI, on purpose: ``input`` takes text only (token-id arrays are refused
with a 400 that says so, since the prompt template must be applied to text); the template,
demonstrations and layer are fixed by the server and cannot be sent.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

__all__ = [
    "EmbeddingRequest",
    "Embedding",
    "Usage",
    "EmbeddingResponse",
    "ModelCard",
    "ModelList",
    "ErrorDetail",
    "ErrorResponse",
]


class EmbeddingRequest(BaseModel):
    """``POST /v1/embeddings``. Unknown fields are refused (as OpenAI does), so typos are not ignored."""

    model_config = ConfigDict(extra="forbid")

    input: str | list[str] = Field(description="a text or a list of texts (not token ids)")
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
    def _text_only(cls, value: Any) -> Any:
        """Say exactly what is wrong (pydantic's union errors would list every member type)."""
        if isinstance(value, str):
            return value
        if not isinstance(value, list):
            raise ValueError(f"'input' should be a string or a list of strings, got {_json_type(value)}")
        if any(isinstance(v, int | list) and not isinstance(v, bool) for v in value):
            raise ValueError(
                "token arrays are not supported: this server applies a prompt template to text, "
                "so send 'input' as a string or a list of strings"
            )
        for i, v in enumerate(value):
            if not isinstance(v, str):
                raise ValueError(f"input[{i}] should be a string, got {_json_type(v)}")
        return value

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


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
