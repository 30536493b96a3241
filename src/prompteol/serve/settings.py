"""Server settings: one validated object, filled from CLI flags, then ``PROMPTEOL_*`` variables, then defaults.

Every field ``name`` is read from the environment variable ``PROMPTEOL_<NAME>`` (for
example ``PROMPTEOL_API_KEY``, ``PROMPTEOL_MAX_BATCH_TOKENS``); ``cache_dir`` is the one
exception and reads ``PROMPTEOL_CACHE``, the variable the rest of prompteol already uses.
An empty variable counts as unset. List fields (``demo``) take a JSON list.

The template and the demonstrations are fixed here, on the server: a request can never
change how a sentence is embedded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from ..errors import ConfigError

__all__ = ["ServeSettings", "ENV_PREFIX", "env_name"]

ENV_PREFIX = "PROMPTEOL_"
_ENV_OVERRIDES = {"cache_dir": "PROMPTEOL_CACHE"}


def env_name(field: str) -> str:
    """The environment variable that sets ``field``."""
    return _ENV_OVERRIDES.get(field, ENV_PREFIX + field.upper())


class ServeSettings(BaseModel):
    """Everything ``prompteol serve`` needs; see ``docs/serving.md`` for each option."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- what is served (the encoder; same meaning as the encoder options of every command)
    model: str = Field("smollm2-135m", min_length=1)
    #: the name clients put in ``"model"``; defaults to ``model``
    served_model_name: str | None = Field(None, min_length=1)
    template: str = "prompteol"
    #: demonstrations as ``'SENTENCE|WORD'`` strings, rendered in order after ``demo_preset``
    demo: tuple[str, ...] = ()
    demo_preset: str | None = None
    layer: int = -1
    pooling: Literal["last", "mean"] = "last"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = "cpu"
    quantization: Literal["int8-dynamic", "4bit", "8bit"] | None = None
    adapter: str | None = None
    max_length: int | None = Field(None, ge=1)
    normalize_text: bool = True
    prefix_cache: bool = True
    #: read and write the persistent embedding cache (off: a public server should not grow a
    #: disk cache with every client's sentences unless asked to)
    embedding_cache: bool = False
    cache_dir: str | None = None
    #: torch intra-op threads (``None``: torch's default, one per core)
    threads: int | None = Field(None, ge=1)

    # --- HTTP
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    #: when set, every ``/v1`` request needs ``Authorization: Bearer <key>``
    api_key: SecretStr | None = Field(None, min_length=1)
    access_log: bool = True

    # --- request limits
    #: inputs per request (2048 is OpenAI's limit)
    max_inputs: int = Field(2048, ge=1)
    #: tokens of one rendered prompt (template and demonstrations included); PromptEOL targets
    #: sentences, and a CPU forward over a few thousand tokens already takes seconds
    max_input_tokens: int = Field(2048, ge=1)
    #: request body size (checked on ``Content-Length``); 16 MiB holds 2048 inputs of ~8 kB
    max_request_bytes: int = Field(16 * 1024 * 1024, ge=1024)

    # --- batching
    #: prompt tokens merged into one group of concurrent requests (counted with ``token_counts``);
    #: ~100 STS-length sentences, about three model batches, i.e. a second or two of a 135M model
    #: on two CPU cores: enough to sort by length under load, short enough to keep latency sane
    max_batch_tokens: int = Field(2048, ge=1)
    #: sentences per model batch inside a group (32: ``Encoder.encode``'s default ``batch_size``)
    max_batch_size: int = Field(32, ge=1)
    #: how long a group that is not full waits for more requests to join
    max_wait_ms: float = Field(5.0, ge=0, le=10_000)
    #: return unit-length vectors, as OpenAI does (``--no-normalize`` returns the raw pooled vectors)
    normalize: bool = True

    @property
    def model_name(self) -> str:
        """The model id clients send and ``/v1/models`` lists."""
        return self.served_model_name or self.model

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ServeSettings:
        """Settings from ``overrides`` (``None`` values skipped), then ``PROMPTEOL_*`` variables, then defaults."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            raw = environ.get(env_name(name), "")
            if raw == "":
                continue
            if name == "demo":
                try:
                    parsed = json.loads(raw)
                except json.JSONDecodeError:
                    parsed = None
                if not isinstance(parsed, list):
                    raise ConfigError(
                        f"{env_name(name)} should be a JSON list of 'SENTENCE|WORD' strings, got {raw!r}; "
                        f"""for example {env_name(name)}='["A man is smoking.|Smoking"]'"""
                    )
                values[name] = parsed
            else:
                values[name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.validated(**values)

    @classmethod
    def validated(cls, **values: Any) -> ServeSettings:
        """Build settings, turning pydantic's errors into a :class:`ConfigError` naming the variable."""
        try:
            return cls(**values)
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                name = str(err["loc"][0]) if err["loc"] else "?"
                given = err.get("input")
                shown = "<hidden>" if name == "api_key" else repr(given)
                flag = "--" + name.replace("_", "-")
                problems.append(f"{name} ({flag} or {env_name(name)}): {err['msg']}, got {shown}")
            raise ConfigError("invalid server settings: " + "; ".join(problems)) from None

    def encoder_config(self):
        """The :class:`~prompteol.EncoderConfig` of the served encoder (raises ``ConfigError``)."""
        from ..config import config_from_options

        return config_from_options(
            self.model, self.demo_preset, self.demo, template=self.template, layer=self.layer, pooling=self.pooling,
            dtype=self.dtype, device=self.device, normalize_text=self.normalize_text, max_length=self.max_length,
            adapter=self.adapter, quantization=self.quantization, prefix_cache=self.prefix_cache,
        )  # fmt: skip
