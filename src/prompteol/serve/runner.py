"""Running the app with uvicorn, in the foreground or in a background thread.

Run the app with uvicorn: in the foreground (``prompteol serve``) or in a background thread
(tests, benchmarks, notebooks)."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from ..errors import PrompteolError
from .app import EmbeddingModel, create_app
from .settings import ServeSettings

__all__ = ["serve", "serve_in_thread", "bind", "ServerStartError"]

log = logging.getLogger(__name__)


class ServerStartError(PrompteolError, RuntimeError):
    """The server did not start (the model failed to load, or the port is taken)."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket on ``host:port`` (``port=0``: a free one), or :class:`ServerStartError`."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServerStartError(
            f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port / --host"
        ) from None
    return sock


def _run_quietly(server: uvicorn.Server, sock: socket.socket) -> None:
    """``server.run``, minus the ``sys.exit`` uvicorn calls when the app fails to start (the caller
    checks ``server.started`` and raises :class:`ServerStartError`; uvicorn has logged why)."""
    try:
        server.run(sockets=[sock])
    except SystemExit:
        if server.started:
            raise


def serve(settings: ServeSettings, encoder: EmbeddingModel | None = None) -> None:
    """Serve until interrupted (Ctrl-C / SIGTERM finish the requests in flight, then stop)."""
    if settings.api_key is None and not _is_loopback(settings.host):
        log.warning("serving on %s without an API key: anyone who can reach this port can use it "
                    "(set --api-key or PROMPTEOL_API_KEY)", settings.host)  # fmt: skip
    sock = bind(settings.host, settings.port)  # before loading the model: a taken port fails at once
    app = create_app(settings, encoder)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, lifespan="on",
                            access_log=settings.access_log)  # fmt: skip
    server = uvicorn.Server(config)
    try:
        _run_quietly(server, sock)
    finally:
        sock.close()
    if not server.started:
        raise ServerStartError(
            f"the server did not start on {settings.host}:{settings.port} (see the log above: the model failed "
            f"to load, or the port is in use)"
        )


@contextlib.contextmanager
def serve_in_thread(
    app: FastAPI | None = None,
    *,
    settings: ServeSettings | None = None,
    encoder: EmbeddingModel | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    timeout: float = 300.0,
) -> Iterator[str]:
    """Run ``app`` (or ``create_app(settings, encoder)``) on ``host:port`` in a daemon thread and
    yield its base URL (``http://host:port``); ``port=0`` picks a free port. Stops on exit."""
    if app is None:
        app = create_app(settings, encoder)
    sock = bind(host, port)
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="on", access_log=False, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=_run_quietly, args=(server, sock), name="prompteol-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(10)
            sock.close()
            raise ServerStartError(f"the server did not start within {timeout:.0f} s (see the log)")
        time.sleep(0.02)
    shown = f"[{host}]" if ":" in host else host
    try:
        yield f"http://{shown}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()
