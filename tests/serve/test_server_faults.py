"""Fault injection with real files (the server: bad fields are 400s, never a 500): damaged inputs never give wrong results or tracebacks."""

from __future__ import annotations

import numpy as np
import pytest
from faults import (
    FAULT_MODEL,
    _assert_server_error,
    _post,
)

# ================================================================================================
# server request fields: types are checked strictly
# ================================================================================================


@pytest.mark.parametrize("dimensions", ["8", True, 8.0, "abc", [8]], ids=["string", "true", "float", "word", "list"])
def test_dimensions_must_be_an_integer(fault_server, dimensions):
    body = {"model": FAULT_MODEL, "input": "a", "dimensions": dimensions}
    _assert_server_error(fault_server, body, 400, "dimensions", "invalid_value", "dimensions", "integer")


def test_dimensions_integer_still_works(fault_server):
    status, payload = _post(fault_server, {"model": FAULT_MODEL, "input": ["a", "b"], "dimensions": 8})
    assert status == 200
    vecs = np.array([d["embedding"] for d in payload["data"]])
    assert vecs.shape == (2, 8) and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)


def test_fault_server_answered_no_500(fault_server):
    import httpx

    assert 'status="500"' not in httpx.get(fault_server.url + "/metrics").text
