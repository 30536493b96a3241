"""Server settings: one validated object, filled from CLI flags, then ``PROMPTEOL_*`` variables, then defaults.

Every field ``name`` is read from the environment variable ``PROMPTEOL_<NAME>`` (for
example ``PROMPTEOL_API_KEY``, ``PROMPTEOL_MAX_BATCH_TOKENS``); ``cache_dir`` is the one
exception and reads ``PROMPTEOL_CACHE``, the variable the rest of prompteol already uses.
The encoder is an :class:`~prompteol.EncoderConfig`: its options (and ``demo_preset``) are
read from ``PROMPTEOL_<OPTION>`` the same way (``PROMPTEOL_MODEL``, ``PROMPTEOL_LAYER``,
``PROMPTEOL_DEMONSTRATIONS`` as a JSON list, ...), derived from its declaration, never
repeated here. An empty variable counts as unset.

The template and the demonstrations are fixed here, on the server: a request can never
change how a sentence is embedded.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from ..encoder.config import SERVER_ENCODER_DEFAULTS, EncoderConfig, encoder_options
from ..errors import ConfigError
from ..options import values_from_env

__all__ = ["ServeSettings", "ENV_PREFIX", "env_name"]

ENV_PREFIX = "PROMPTEOL_"
_ENV_OVERRIDES = {"cache_dir": "PROMPTEOL_CACHE"}


def env_name(field: str) -> str:
    """The environment variable that sets ``field`` (a server setting or an encoder option)."""
    return _ENV_OVERRIDES.get(field, ENV_PREFIX + field.upper())


class ServeSettings(BaseModel):
    """Everything ``prompteol serve`` needs; see ``docs/serving.md`` for each option."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    # --- what is served: the encoder (its options may also be given at the top level:
    # ``ServeSettings(model="smollm2-135m", layer=-2)``)
    encoder: EncoderConfig = Field(default_factory=lambda: EncoderConfig(**SERVER_ENCODER_DEFAULTS))
    #: the name clients put in ``"model"``; defaults to ``model``
    served_model_name: str | None = Field(None, min_length=1)
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
    #: prompt tokens merged into one group of concurrent requests (the prompts' token ids, ``prompts.build``);
    #: ~100 STS-length sentences, about three model batches, i.e. a second or two of a 135M model
    #: on two CPU cores: enough to sort by length under load, short enough to keep latency sane
    max_batch_tokens: int = Field(2048, ge=1)
    #: sentences per model batch inside a group (32: ``Encoder.encode``'s default ``batch_size``)
    max_batch_size: int = Field(32, ge=1)
    #: how long a group that is not full waits for more requests to join
    max_wait_ms: float = Field(5.0, ge=0, le=10_000)
    #: return unit-length vectors, as OpenAI does (``--no-normalize`` returns the raw pooled vectors)
    normalize: bool = True
    #: at shutdown, accepted requests are still answered for up to this long; then the ones not yet
    #: started get 503 (the group already running is always finished and answered)
    drain_timeout_s: float = Field(30.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _encoder_options_at_top_level(cls, data: Any) -> Any:
        if isinstance(data, dict):
            names = {name for name, _, _ in encoder_options()}
            given = {k: data.pop(k) for k in list(data) if k in names}
            if given:
                if "encoder" in data:
                    raise ValueError(f"give either encoder= or the encoder options {sorted(given)}, not both")
                data["encoder"] = EncoderConfig.from_options(**{**SERVER_ENCODER_DEFAULTS, **given})
        return data

    @property
    def model(self) -> str:
        """The model reference being served."""
        return self.encoder.model

    @property
    def model_name(self) -> str:
        """The model id clients send and ``/v1/models`` lists."""
        return self.served_model_name or self.encoder.model

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        encoder_options_given: Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> ServeSettings:
        """Settings from ``overrides`` (``None`` values skipped) and ``encoder_options_given``
        (CLI flags), then ``PROMPTEOL_*`` variables, then defaults."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            if name == "encoder":
                continue
            raw = environ.get(env_name(name), "")
            if raw != "":
                values[name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        opts = {**SERVER_ENCODER_DEFAULTS, **values_from_env(environ, encoder_options(), ENV_PREFIX),
                **(encoder_options_given or {})}  # fmt: skip
        try:
            encoder = EncoderConfig.from_options(**opts)
        except ConfigError as exc:
            raise ConfigError(f"invalid encoder settings (flags or PROMPTEOL_* variables): {exc}") from None
        return cls.validated(encoder=encoder, **values)

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

    def encoder_config(self) -> EncoderConfig:
        """The :class:`~prompteol.EncoderConfig` of the served encoder."""
        return self.encoder
