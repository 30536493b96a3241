"""``prompteol serve``: an OpenAI-compatible embeddings server (FastAPI + uvicorn; the ``[serve]`` extra).

Every option can also come from a ``PROMPTEOL_<OPTION>`` environment variable (flags win).
"""

from __future__ import annotations

import argparse
import sys

from .common import add_encoder_args

# encoder options whose CLI defaults are dropped, so that PROMPTEOL_* variables can fill them
_ENCODER_DESTS = ("model", "template", "demo", "demo_preset", "layer", "pooling", "dtype", "device",
                  "quantization", "adapter", "max_length", "normalize_text", "prefix_cache")  # fmt: skip
_SERVE_DESTS = ("served_model_name", "host", "port", "api_key", "max_batch_tokens", "max_batch_size", "max_inputs",
                "max_input_tokens", "max_wait_ms", "max_request_bytes", "normalize", "embedding_cache",
                "access_log")  # fmt: skip


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
    g.add_argument("--port", type=int, default=None, help="port (default: 8000)")
    g.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' on /v1 routes; prefer PROMPTEOL_API_KEY "
                   "(a flag is visible in the process list)")  # fmt: skip
    g.add_argument("--served-model-name", default=None, help="the model id clients send (default: --model)")
    g.add_argument("--max-inputs", type=int, default=None, help="texts per request (default: 2048)")
    g.add_argument("--max-input-tokens", type=int, default=None,
                   help="tokens of one rendered prompt, template included (default: 2048)")  # fmt: skip
    g.add_argument("--max-request-bytes", type=int, default=None, help="request body size (default: 16 MiB)")
    g.add_argument("--max-batch-tokens", type=int, default=None,
                   help="prompt tokens of concurrent requests merged into one group (default: 2048)")  # fmt: skip
    g.add_argument("--max-batch-size", type=int, default=None,
                   help="sentences per model batch; a group is length-sorted into such batches (default: 32)")  # fmt: skip
    g.add_argument("--max-wait-ms", type=float, default=None,
                   help="how long a group that is not full waits for more requests (default: 5)")  # fmt: skip
    g.add_argument("--no-normalize", dest="normalize", action="store_false", default=None,
                   help="return the raw pooled vectors instead of unit-length ones")  # fmt: skip
    g.add_argument("--embedding-cache", dest="embedding_cache", action="store_true", default=None,
                   help="read and write the persistent embedding cache (default: off)")  # fmt: skip
    g.add_argument("--no-access-log", dest="access_log", action="store_false", default=None,
                   help="do not log one line per request")  # fmt: skip
    add_encoder_args(p)
    for action in p._actions:  # keep the shown defaults, then drop them (None = "not given")
        if action.dest in _ENCODER_DESTS and action.help and "%(default)s" in action.help:
            action.help = action.help.replace("%(default)s", str(action.default))
    p.set_defaults(func=run, **dict.fromkeys(_ENCODER_DESTS))


def settings_from_args(args: argparse.Namespace):
    from ..serve.settings import ServeSettings

    given = {name: getattr(args, name, None) for name in _ENCODER_DESTS + _SERVE_DESTS}
    given["threads"] = getattr(args, "threads", None)
    return ServeSettings.from_env(**given)


def run(args: argparse.Namespace) -> int:
    from ..serve import serve  # raises MissingExtraError (with the pip command) without the [serve] extra

    settings = settings_from_args(args)
    settings.encoder_config()  # a bad template / demonstration / layer fails now, not after loading
    from ..models.loading import resolve_model

    resolve_model(settings.model, cache_dir=settings.cache_dir, progress=True)  # pull now, with a progress bar
    auth = "on" if settings.api_key is not None else "off"
    print(f"prompteol: loading {settings.model!r}, then serving it as {settings.model_name!r} at "
          f"http://{settings.host}:{settings.port}/v1 (API key: {auth}); Ctrl-C stops", file=sys.stderr)  # fmt: skip
    serve(settings)
    return 0
