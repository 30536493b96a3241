"""Helpers of the fault-injection tests (tests/*/test_*_faults.py): the CLI in this process and its
one-line errors, requests to a live server on a tiny model and its error bodies.

Every CLI case runs ``prompteol.cli.main.main([...])`` and asserts the exit code, a one-line
``error: ...`` on stderr and no traceback; the server cases run a real uvicorn on a loopback
port (``serve_in_thread``, the ``fault_server`` fixture of conftest.py) around the session's tiny encoder.
"""

from __future__ import annotations

from pathlib import Path

FAULT_MODEL = "tiny-random-llama"  # 2048 positions, byte-level tokenizer (one token per UTF-8 byte)


def _cli(capsys, monkeypatch, cache_dir: Path, *args: str) -> tuple[int, str]:
    """``prompteol --cache-dir CACHE ARGS`` in this process: (exit code, stderr)."""
    from prompteol.cli.main import main

    monkeypatch.setenv("PROMPTEOL_CACHE", str(cache_dir))  # main() sets it from --cache-dir; restored after
    capsys.readouterr()
    code = main(["--cache-dir", str(cache_dir), *args])
    return code, capsys.readouterr().err


def _assert_one_line_error(code: int, err: str, *words: str) -> str:
    """Exit code 2, one ``error: ...`` line holding every word, no traceback; returns the line."""
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def refuse_model_loads(monkeypatch, message: str, *more_targets: str) -> None:
    """Resolving or loading a model (and each of ``more_targets``) fails the test with ``message``: every
    check must come before."""

    def refuse(*args, **kwargs):
        raise AssertionError(message)

    for target in ("prompteol.models.loading.resolve_model", "prompteol.encoder.Encoder.from_config", *more_targets):
        monkeypatch.setattr(target, refuse)


def _encode_args(src: Path, out: Path, *more: str) -> list[str]:
    return ["encode", "--model", FAULT_MODEL, "--no-progress", "--no-cache", str(src), "-o", str(out), *more]


def _post(server, body) -> tuple[int, dict]:
    import json

    import httpx

    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(server.url + "/v1/embeddings", content=content, headers={"Content-Type": "application/json"},
                   timeout=60)  # fmt: skip
    return r.status_code, r.json()


def _assert_server_error(server, body, status: int, param: str | None, code: str, *words: str) -> dict:
    import httpx

    got, payload = _post(server, body)
    assert got == status, payload
    error = payload["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and error["code"] == code, error
    for word in words:
        assert word in error["message"], error["message"]
    assert httpx.get(server.url + "/health").status_code == 200  # still up
    return error


SURROGATE_JSON = b'"a\\ud800b"'  # the JSON text of a string holding U+D800 at character 1
