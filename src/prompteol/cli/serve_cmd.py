"""``prompteol serve``: an OpenAI-compatible embeddings server (FastAPI + uvicorn; the ``[serve]`` extra).

Every option can also come from a ``PROMPTEOL_<OPTION>`` environment variable (flags win).
"""

from __future__ import annotations

import argparse
import sys

from ..encoder.config import SERVER_ENCODER_DEFAULTS
from ..options import at_least, non_negative_float, positive_int
from .common import add_encoder_args, encoder_values

# server flags (None = not given, so PROMPTEOL_* variables can fill them); the encoder's flags
# are derived from EncoderConfig by add_encoder_args and default to "not given" already
_SERVE_DESTS = ("served_model_name", "host", "port", "api_key", "max_batch_tokens", "max_batch_size", "max_inputs",
                "max_input_tokens", "max_wait_ms", "max_request_bytes", "normalize", "embedding_cache",
                "access_log", "drain_timeout_s")  # fmt: skip


def register(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="serve embeddings over an OpenAI-compatible HTTP API",
        description="Serve POST /v1/embeddings (OpenAI-compatible), GET /v1/models, /health and /metrics. "
        "The template and demonstrations are fixed here, never by a request. Every option can also be set "
        "with a PROMPTEOL_<OPTION> environment variable (e.g. PROMPTEOL_API_KEY); flags win. "
        "Defaults are shown in docs/serving.md.",
    )
    g = p.add_argument_group("server")
    g.add_argument("--host", default=None, help="address to listen on (default: 127.0.0.1, loopback only)")
    g.add_argument("--port", type=_port, default=None, help="port (default: 8000)")
    g.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' on /v1 routes; prefer PROMPTEOL_API_KEY "
                   "(a flag is visible in the process list)")  # fmt: skip
    g.add_argument("--served-model-name", default=None, help="the model id clients send (default: --model)")
    g.add_argument("--max-inputs", type=positive_int, default=None, help="texts per request (default: 2048)")
    g.add_argument("--max-input-tokens", type=positive_int, default=None,
                   help="tokens of one rendered prompt, template included (default: 2048)")  # fmt: skip
    g.add_argument("--max-request-bytes", type=at_least(1024), default=None,
                   help="request body size (default: 16 MiB)")
    g.add_argument("--max-batch-tokens", type=positive_int, default=None,
                   help="prompt tokens of concurrent requests merged into one group (default: 2048)")  # fmt: skip
    g.add_argument("--max-batch-size", type=positive_int, default=None,
                   help="sentences per model batch; a group is length-sorted into such batches (default: 32)")  # fmt: skip
    g.add_argument("--max-wait-ms", type=non_negative_float, default=None,
                   help="how long a group that is not full waits for more requests (default: 5)")  # fmt: skip
    g.add_argument("--no-normalize", dest="normalize", action="store_false", default=None,
                   help="return the raw pooled vectors instead of unit-length ones")  # fmt: skip
    g.add_argument("--embedding-cache", dest="embedding_cache", action="store_true", default=None,
                   help="read and write the persistent embedding cache (default: off)")  # fmt: skip
    g.add_argument("--no-access-log", dest="access_log", action="store_false", default=None,
                   help="do not log one line per request")  # fmt: skip
    g.add_argument("--drain-timeout-s", type=non_negative_float, default=None,
                   help="at shutdown, keep answering accepted requests this long, then 503 (default: 30)")  # fmt: skip
    add_encoder_args(p, defaults=SERVER_ENCODER_DEFAULTS)
    p.set_defaults(func=run, check=check)


def settings_from_args(args: argparse.Namespace):
    from ..serve.settings import ServeSettings

    given = {name: getattr(args, name, None) for name in _SERVE_DESTS}
    given["threads"] = getattr(args, "threads", None)
    return ServeSettings.from_env(encoder_options_given=encoder_values(args), **given)


def check(args: argparse.Namespace) -> None:
    """Part of the CLI's one validation step: the settings from flags and ``PROMPTEOL_*`` variables
    together (the encoder's device and the options that need another included), before any model."""
    import os

    from ..encoder.config import encoder_options
    from ..options import env_of
    from .checks import check_device, check_encoder_config

    try:
        settings = settings_from_args(args)
    except ImportError:
        return  # no [serve] extra: `run` says which pip command installs it
    from_env = {name for name, _, _ in encoder_options() if os.environ.get(env_of(name), "")}
    check_encoder_config(settings.encoder, from_env | set(encoder_values(args)))
    check_device(settings.encoder.device, "--device" if args.device else "PROMPTEOL_DEVICE")
    args.settings = settings


def run(args: argparse.Namespace) -> int:
    from ..serve import serve  # raises MissingExtraError (with the pip command) without the [serve] extra

    settings = getattr(args, "settings", None) or settings_from_args(args)
    from ..models.loading import resolve_model

    # (a bad template / demonstration / option failed above, before anything is loaded)
    resolve_model(settings.model, cache_dir=settings.cache_dir, progress=True, revision=settings.encoder.revision)
    auth = "on" if settings.api_key is not None else "off"
    print(f"prompteol: loading {settings.model!r}, then serving it as {settings.model_name!r} at "
          f"http://{settings.host}:{settings.port}/v1 (API key: {auth}); Ctrl-C stops", file=sys.stderr)  # fmt: skip
    serve(settings)
    return 0


def _port(text: str) -> int:
    port = at_least(0)(text)
    if port > 65535:
        raise argparse.ArgumentTypeError(f"should be a port number 0..65535, got {text!r}")
    return port
