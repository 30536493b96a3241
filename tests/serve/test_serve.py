"""The server end to end: a live uvicorn on a free loopback port, the official ``openai`` client,
vectors compared with ``Encoder.encode``; concurrency, every error case, auth on and off."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import require

require("fastapi")
openai = require("openai")
httpx = require("httpx")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from prompteol.serve import ServeSettings, create_app, serve_in_thread  # noqa: E402

pytestmark = pytest.mark.timeout(120)

MODEL = "tiny-random-llama"
KEY = "sk-test-0123456789"
TEXTS = ["A man is playing a guitar.", "A woman slices a tomato {with braces}.", "short", "Ünïcödé ✓ 文字"]


class GatedEncoder:
    """A real encoder whose ``encode`` can be held by a gate; records the texts of every batch."""

    def __init__(self, inner):
        self.inner = inner
        self.gate = threading.Event()
        self.gate.set()
        self.batches: list[list[str]] = []
        self.running = threading.Event()
        self.held: list[str] = []
        self.batch_tokens: list[int] = []

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def prompts(self):
        return self.inner.prompts

    def encode(self, texts, **kwargs):
        self.held = list(texts.sentences)  # the server sends tokenized prompts (prepared sentences + ids)
        self.running.set()
        self.gate.wait(30)
        self.batches.append(list(texts.sentences))
        self.batch_tokens.append(sum(texts.lengths))
        return self.inner.encode(texts, **kwargs)


def _start(settings, encoder=None):
    app = create_app(settings, encoder)
    ctx = serve_in_thread(app)
    url = ctx.__enter__()
    return app, ctx, url


@pytest.fixture(scope="module")
def server(tiny_encoder):
    """Auth off, small limits so every limit is cheap to hit."""
    gated = GatedEncoder(tiny_encoder)
    settings = ServeSettings(model=MODEL, max_inputs=8, max_input_tokens=200, max_request_bytes=64 * 1024,
                             max_wait_ms=2, max_batch_tokens=600, max_batch_size=4)  # fmt: skip
    app, ctx, url = _start(settings, gated)
    yield SimpleNamespace(url=url, encoder=gated, state=app.state.prompteol, settings=settings)
    ctx.__exit__(None, None, None)


@pytest.fixture(scope="module")
def auth_server(test_cache_dir):
    """Auth on, a served-model alias, and the model loaded by the lifespan hook itself."""
    settings = ServeSettings(
        model=MODEL, served_model_name="prompteol-tiny", api_key=KEY, cache_dir=str(test_cache_dir)
    )
    app, ctx, url = _start(settings)
    yield SimpleNamespace(url=url, state=app.state.prompteol)
    ctx.__exit__(None, None, None)


def client(url, key="unused"):
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=30)


def metric(url, name, sample=None):
    """Value of a metric sample (``sample`` defaults to ``name``), summed over labels."""
    text = httpx.get(url + "/metrics").text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == (sample or name):
                total += s.value
    return total


def cancelled(url) -> float:
    return metric(url, "prompteol_requests_cancelled", "prompteol_requests_cancelled_total")


# ---------------------------------------------------------------------------------------------- parity


def test_openai_client_gets_encoder_vectors(server, tiny_encoder):
    got = client(server.url).embeddings.create(model=MODEL, input=TEXTS)  # the client asks for base64
    want = tiny_encoder.encode(TEXTS, normalize=True)
    vecs = np.array([d.embedding for d in got.data])
    assert [d.index for d in got.data] == list(range(len(TEXTS)))
    assert vecs.shape == want.shape
    assert np.abs(vecs - want).max() < 1e-5
    assert got.model == MODEL
    assert got.usage.prompt_tokens == got.usage.total_tokens == sum(tiny_encoder.token_counts(TEXTS))


def test_float_format_single_string(server, tiny_encoder):
    got = client(server.url).embeddings.create(model=MODEL, input=TEXTS[0], encoding_format="float")
    assert len(got.data) == 1
    want = tiny_encoder.encode(TEXTS[:1], normalize=True)[0]
    assert np.abs(np.array(got.data[0].embedding) - want).max() < 1e-5


def test_base64_is_little_endian_float32(server, tiny_encoder):
    r = httpx.post(server.url + "/v1/embeddings", json={"model": MODEL, "input": TEXTS, "encoding_format": "base64"})
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list" and body["data"][0]["object"] == "embedding"
    vecs = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in body["data"]])
    assert np.abs(vecs - tiny_encoder.encode(TEXTS, normalize=True)).max() < 1e-5


@pytest.mark.parametrize("fmt", ["float", "base64"])
def test_dimensions_truncate_then_renormalise(server, tiny_encoder, fmt):
    got = client(server.url).embeddings.create(model=MODEL, input=TEXTS, dimensions=8, encoding_format=fmt)
    vecs = np.array(
        [d.embedding if fmt == "float" else np.frombuffer(base64.b64decode(d.embedding), "<f4") for d in got.data]
    )
    want = tiny_encoder.encode(TEXTS, normalize=True)[:, :8]
    want = want / np.linalg.norm(want, axis=1, keepdims=True)
    assert vecs.shape == (len(TEXTS), 8)
    assert np.abs(vecs - want).max() < 1e-5
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


def test_models_health_metrics(server):
    models = client(server.url).models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert client(server.url).models.retrieve(MODEL).id == MODEL
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["model"] == MODEL and health["dimensions"] == 32
    text = httpx.get(server.url + "/metrics").text
    for name in ("prompteol_http_requests_total", "prompteol_http_request_seconds_bucket", "prompteol_queue_depth",
                 "prompteol_batch_sentences_bucket", "prompteol_batch_requests_bucket"):  # fmt: skip
        assert name in text


# ---------------------------------------------------------------------------------------------- batching


def test_concurrent_requests_are_merged_and_each_gets_its_own_vectors(server, tiny_encoder):
    requests = [[f"sentence number {i} about {'x' * (i % 7)}", f"another one, {i}"][: 1 + i % 2] for i in range(24)]
    batches_before = metric(server.url, "prompteol_batch_requests", "prompteol_batch_requests_count")
    enc = server.encoder
    enc.running.clear()
    enc.gate.clear()  # hold the model so that the requests pile up and must share batches
    c = client(server.url)
    try:
        with ThreadPoolExecutor(len(requests)) as pool:
            futures = [pool.submit(c.embeddings.create, model=MODEL, input=r) for r in requests]
            assert enc.running.wait(30)
            deadline = time.monotonic() + 30
            total = sum(len(r) for r in requests)  # wait until every sentence is held or queued
            while len(enc.held) + server.state.batcher.queued_sentences < total and time.monotonic() < deadline:
                time.sleep(0.01)
            enc.gate.set()
            results = [f.result(timeout=60) for f in futures]
    finally:
        enc.gate.set()
    flat = [t for r in requests for t in r]
    want = dict(zip(flat, tiny_encoder.encode(flat, normalize=True)))
    for req, res in zip(requests, results):
        vecs = np.array([d.embedding for d in res.data])
        assert np.abs(vecs - np.stack([want[t] for t in req])).max() < 1e-5
    batches = metric(server.url, "prompteol_batch_requests", "prompteol_batch_requests_count") - batches_before
    assert batches < len(requests) / 2, f"{len(requests)} requests ran in {batches} batches"
    assert max(len(b) for b in enc.batches[-int(batches) :]) > 2  # several requests in one model batch
    assert all(n <= server.settings.max_batch_tokens for n in enc.batch_tokens)


def _raw_post(url: str, body: bytes, send_body_bytes: int | None = None) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    head = (f"POST /v1/embeddings HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()  # fmt: skip
    sock.sendall(head + body[: len(body) if send_body_bytes is None else send_body_bytes])
    return sock


def test_cancelled_client_is_dropped_and_blocks_nobody(server):
    enc = server.encoder
    cancelled_before = cancelled(server.url)
    enc.running.clear()
    enc.gate.clear()
    c = client(server.url)
    try:
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(c.embeddings.create, model=MODEL, input="holds the model")
            assert enc.running.wait(30)
            gone = _raw_post(server.url, json.dumps({"model": MODEL, "input": "a client who leaves"}).encode())
            deadline = time.monotonic() + 30
            while server.state.batcher.queued < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            gone.close()
            while time.monotonic() < deadline:
                if cancelled(server.url) > cancelled_before:
                    break
                time.sleep(0.02)
            enc.gate.set()
            assert len(first.result(timeout=60).data) == 1
    finally:
        enc.gate.set()
    assert cancelled(server.url) == cancelled_before + 1
    assert all("a client who leaves." not in b for b in enc.batches)  # (its prepared form)
    assert any("holds the model." in b for b in enc.batches)  # the check above is not vacuous
    assert len(c.embeddings.create(model=MODEL, input="still serving").data) == 1


def test_slow_client_does_not_block_others(server):
    body = json.dumps({"model": MODEL, "input": "a slow upload"}).encode()
    slow = _raw_post(server.url, body, send_body_bytes=10)  # headers and 10 bytes, then nothing
    try:
        start = time.monotonic()
        got = client(server.url).embeddings.create(model=MODEL, input=["others", "go on"])
        assert len(got.data) == 2 and time.monotonic() - start < 10
        slow.sendall(body[10:])  # finishing the upload gets the slow client its answer too
        answer = slow.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200")
    finally:
        slow.close()


# ---------------------------------------------------------------------------------------------- errors


def _long_text(server) -> str:
    return "y" * (server.settings.max_input_tokens + 1)


ERROR_CASES = [
    # name, body (bytes or JSON-able), status, param, words the message must contain
    ("malformed JSON", b'{"model": "tiny-random-llama", "input": ', 400, None, "JSON"),
    ("not an object", b"[1, 2]", 400, None, "JSON object"),
    ("missing model", {"input": "a"}, 400, "model", "model"),
    ("missing input", {"model": MODEL}, 400, "input", "input"),
    ("empty list", {"model": MODEL, "input": []}, 400, "input", "empty"),
    ("token ids out of the vocabulary", {"model": MODEL, "input": [[1, 2], [10**9]]}, 400, "input", "vocabulary"),
    ("token ids mixed with text", {"model": MODEL, "input": ["a", [3]]}, 400, "input", "mixes strings"),
    ("number input", {"model": MODEL, "input": 5}, 400, "input", "input"),
    ("bad encoding_format", {"model": MODEL, "input": "a", "encoding_format": "int8"}, 400, "encoding_format", "float"),
    ("dimensions 0", {"model": MODEL, "input": "a", "dimensions": 0}, 400, "dimensions", "dimensions"),
    ("dimensions too large", {"model": MODEL, "input": "a", "dimensions": 33}, 400, "dimensions", "1..32"),
    ("unknown field", {"model": MODEL, "input": "a", "temperature": 1}, 400, "temperature", "unrecognized"),
    ("unknown model", {"model": "gpt-4", "input": "a"}, 404, "model", MODEL),
    ("too many inputs", {"model": MODEL, "input": ["a"] * 9}, 400, "input", "max-inputs"),
    ("too long input", "LONG", 400, "input", "max-input-tokens"),
    ("body too large", b"{" + b" " * (65 * 1024) + b"}", 413, None, "max-request-bytes"),
]


@pytest.mark.parametrize(("name", "body", "status", "param", "words"), ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_error_cases(server, name, body, status, param, words):
    if body == "LONG":
        body = {"model": MODEL, "input": ["fine", _long_text(server)]}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(server.url + "/v1/embeddings", content=content, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert words in error["message"]
    assert httpx.get(server.url + "/health").status_code == 200  # still up


#: bodies FastAPI would answer with a misleading message (issue 24, cases 12-13): each gets its own,
#: in OpenAI's shape on /v1 and TEI's on the TEI routes
BODY_PROBLEMS = [
    # name, content type, body, status, code, words
    ("JSON sent as text/plain", "text/plain", b'{"model": "tiny-random-llama", "input": "a"}', 415,
     "unsupported_content_type", "Content-Type is 'text/plain'; send the JSON body with 'Content-Type: application/json'"),
    ("form-encoded (curl -d)", "application/x-www-form-urlencoded", b'{"input": "a"}', 415,
     "unsupported_content_type", "application/x-www-form-urlencoded"),
    ("no Content-Type", "", b'{"model": "tiny-random-llama", "input": "a"}', 415, "unsupported_content_type",
     "Content-Type is missing"),
    ("empty body", "application/json", b"", 400, "empty_body", "the request body is empty"),
    ("whitespace body", "application/json", b" \n", 400, "empty_body", "the request body is empty"),
    ("not UTF-8", "application/json", b'{"model": "tiny-random-llama", "input": "caf\xe9"}', 400,
     "invalid_encoding", "not UTF-8 (byte 0xe9 at offset 44)"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "kind", "body", "status", "code", "words"), BODY_PROBLEMS,
                         ids=[c[0] for c in BODY_PROBLEMS])  # fmt: skip
def test_body_problems_are_named(server, name, kind, body, status, code, words):
    headers = {"Content-Type": kind} if kind else {}
    r = httpx.post(server.url + "/v1/embeddings", content=body, headers=headers)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["type"] == "invalid_request_error" and words in error["message"], error
    assert "None" not in error["message"]
    tei = httpx.post(server.url + "/embed", content=body.replace(b'"input"', b'"inputs"'), headers=headers)
    assert tei.status_code == status and set(tei.json()) == {"error", "error_type"}, tei.text
    assert tei.json()["error_type"] == "Validation" and words.split(" (")[0] in tei.json()["error"]
    assert httpx.get(server.url + "/health").status_code == 200


def test_a_body_with_a_byte_order_mark_is_read(server, tiny_encoder):
    """A leading UTF-8 BOM is removed, as from an input file (JSON parsers may ignore it, RFC 8259)."""
    body = b"\xef\xbb\xbf" + json.dumps({"model": MODEL, "input": "a"}).encode()
    r = httpx.post(server.url + "/v1/embeddings", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["data"][0]["embedding"], tiny_encoder.encode(["a"], normalize=True)[0],
                               atol=1e-5)  # fmt: skip


def test_empty_strings_are_embedded_as_by_the_library(server, tiny_encoder):
    """One rule on every path: an empty string is a sentence (the template is still there)."""
    for given, texts in (("", [""]), (["a", ""], ["a", ""])):
        r = httpx.post(server.url + "/v1/embeddings", json={"model": MODEL, "input": given})
        assert r.status_code == 200, r.text
        got = np.array([d["embedding"] for d in r.json()["data"]])
        np.testing.assert_allclose(got, tiny_encoder.encode(texts, normalize=True), atol=1e-5)


def test_chunked_body_over_the_limit(server):
    def chunks():
        yield b'{"model": "tiny-random-llama", "input": "'
        for _ in range(70):
            yield b"z" * 1024
        yield b'"}'

    r = httpx.post(server.url + "/v1/embeddings", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "max-request-bytes" in r.json()["error"]["message"]
    assert httpx.get(server.url + "/health").status_code == 200


def test_routing_errors_have_the_openai_shape(server):
    r = httpx.get(server.url + "/v2/nothing")
    assert r.status_code == 404 and "no route" in r.json()["error"]["message"]
    r = httpx.get(server.url + "/v1/embeddings")
    assert r.status_code == 405 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.get(server.url + "/v1/models/other-model")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_openai_client_raises_the_matching_errors(server):
    c = client(server.url)
    with pytest.raises(openai.NotFoundError):
        c.embeddings.create(model="text-embedding-3-small", input="a")
    with pytest.raises(openai.BadRequestError, match="empty"):
        c.embeddings.create(model=MODEL, input=[])
    with pytest.raises(openai.BadRequestError, match="max-input-tokens"):
        c.embeddings.create(model=MODEL, input=_long_text(server))
    assert len(c.embeddings.create(model=MODEL, input="ok").data) == 1


def test_no_error_was_a_500(server):
    text = httpx.get(server.url + "/metrics").text
    assert 'status="500"' not in text


# ---------------------------------------------------------------------------------------------- auth


def test_auth_off_needs_no_key(server):
    r = httpx.post(server.url + "/v1/embeddings", json={"model": MODEL, "input": "a"})
    assert r.status_code == 200


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-key"}, {"Authorization": KEY}, {"Authorization": f"Basic {KEY}"},
     {"Authorization": "Bearer " + KEY[:-1]}, {"Authorization": "Bearer"}],
    ids=["missing", "wrong", "no scheme", "basic", "prefix", "empty"],
)  # fmt: skip
def test_auth_rejects(auth_server, headers):
    for method, path in (("POST", "/v1/embeddings"), ("GET", "/v1/models"), ("GET", "/v1/unknown")):
        r = httpx.request(method, auth_server.url + path, json={"model": "prompteol-tiny", "input": "a"},
                          headers=headers)  # fmt: skip
        assert r.status_code == 401, (path, r.text)
        assert r.json()["error"]["code"] == "invalid_api_key"
        assert r.headers["www-authenticate"] == "Bearer"


def test_auth_accepts_the_key_and_leaves_probes_open(auth_server, tiny_encoder):
    c = client(auth_server.url, KEY)
    got = c.embeddings.create(model="prompteol-tiny", input=TEXTS[:2])
    assert got.model == "prompteol-tiny"
    want = tiny_encoder.encode(TEXTS[:2], normalize=True)
    assert np.abs(np.array([d.embedding for d in got.data]) - want).max() < 1e-5
    assert [m.id for m in c.models.list().data] == ["prompteol-tiny"]
    with pytest.raises(openai.NotFoundError):  # the alias is served, the underlying name is not
        c.embeddings.create(model=MODEL, input="a")
    with pytest.raises(openai.AuthenticationError):
        client(auth_server.url, "sk-wrong").embeddings.create(model="prompteol-tiny", input="a")
    assert httpx.get(auth_server.url + "/health").status_code == 200
    assert httpx.get(auth_server.url + "/metrics").status_code == 200


# ---------------------------------------------------------------------------------------------- real model


@pytest.mark.slow
def test_smollm2_answers_the_openai_client(smollm2_encoder):
    texts = ["A man is playing a guitar.", "A woman is slicing an onion.", "The cat sleeps."]
    with serve_in_thread(settings=ServeSettings(model="smollm2-135m"), encoder=smollm2_encoder) as url:
        got = client(url).embeddings.create(model="smollm2-135m", input=texts)
    vecs = np.array([d.embedding for d in got.data])
    assert vecs.shape == (3, 576)
    assert np.abs(vecs - smollm2_encoder.encode(texts, normalize=True)).max() < 1e-5


def test_a_model_that_fails_to_load_fails_the_start():
    from prompteol.serve import ServerStartError

    with pytest.raises(ServerStartError), serve_in_thread(settings=ServeSettings(model="./no/such/model"), timeout=60):
        pass


def test_each_request_is_tokenized_once_and_only_in_the_tokenizer_thread(test_cache_dir):
    from prompteol import Encoder

    enc = Encoder.from_pretrained("tiny-random-llama", demonstrations=[("A man is smoking.", "Smoking")],
                                  cache_dir=test_cache_dir)  # fmt: skip
    real = enc.tokenizer
    seen: list[tuple[str, int]] = []

    class Recording:
        def __getattr__(self, name):
            return getattr(real, name)

        def __call__(self, texts, *args, **kwargs):
            seen.append((threading.current_thread().name, len(texts) if isinstance(texts, list) else 1))
            return real(texts, *args, **kwargs)

    enc.tokenizer = enc.prompts.tokenizer = enc.runner.tokenizer = Recording()
    settings = ServeSettings(model=MODEL, max_wait_ms=1)
    app, ctx, url = _start(settings, enc)
    try:
        start = len(seen)
        c = client(url)
        for texts in (["one"], ["two", "three"], ["four"]):
            assert len(c.embeddings.create(model=MODEL, input=texts).data) == len(texts)
        calls = seen[start:]
    finally:
        ctx.__exit__(None, None, None)
    assert [n for _, n in calls] == [1, 2, 1]  # one tokenizer call per request, over its texts
    assert all(name.startswith("prompteol-tokenize") for name, _ in seen), seen  # warm-up included
