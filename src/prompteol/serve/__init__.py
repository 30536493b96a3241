"""An OpenAI-compatible embeddings server (install the extra: ``pip install 'prompteol[serve]'``).

>>> from prompteol.serve import ServeSettings, create_app            # doctest: +SKIP
>>> app = create_app(ServeSettings(model="smollm2-135m", api_key="s3cret"))  # doctest: +SKIP

``uvicorn --factory prompteol.serve:app_from_env`` serves with settings from ``PROMPTEOL_*``
variables only. See ``docs/serving.md``.
"""

from __future__ import annotations

from ..errors import require

for _module, _package in (("fastapi", None), ("uvicorn", None), ("prometheus_client", "prometheus-client")):
    require(_module, "serve", "prompteol serve", package=_package)

from .app import EmbeddingModel, create_app  # noqa: E402
from .batcher import MicroBatcher  # noqa: E402
from .runner import ServerStartError, serve, serve_in_thread  # noqa: E402
from .settings import ServeSettings  # noqa: E402

__all__ = [
    "ServeSettings",
    "create_app",
    "app_from_env",
    "serve",
    "serve_in_thread",
    "MicroBatcher",
    "EmbeddingModel",
    "ServerStartError",
]


def app_from_env():
    """``create_app()`` with settings from the environment (for ``uvicorn --factory``)."""
    return create_app(ServeSettings.from_env())
