"""text-embeddings-inference routes on a live server: ``POST /embed`` (and ``POST /``), ``POST /tokenize``,
``GET /info`` in TEI's shapes, TEI's error body, auth; token-id input on ``/v1/embeddings``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import require

require("fastapi")
httpx = require("httpx")

from prompteol.serve import ServeSettings, create_app, serve_in_thread  # noqa: E402

pytestmark = pytest.mark.timeout(120)

MODEL = "tiny-random-llama"
KEY = "sk-tei-0123456789"
TEXTS = ["A man is playing a guitar.", "A woman slices a tomato.", "short", "Ünïcödé ✓ 文字"]
INFO_FIELDS = {"model_id", "model_sha", "model_dtype", "model_type", "max_concurrent_requests", "max_input_length",
               "max_batch_tokens", "max_batch_requests", "max_client_batch_size", "auto_truncate",
               "tokenization_workers", "version", "sha", "docker_label"}  # fmt: skip


@pytest.fixture(scope="module")
def server(tiny_encoder):
    settings = ServeSettings(model=MODEL, max_inputs=8, max_input_tokens=200, max_request_bytes=64 * 1024,
                             max_wait_ms=1, max_batch_size=4)  # fmt: skip
    app = create_app(settings, tiny_encoder)
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture(scope="module")
def auth_server(tiny_encoder):
    app = create_app(ServeSettings(model=MODEL, api_key=KEY, max_wait_ms=1), tiny_encoder)
    with serve_in_thread(app) as url:
        yield url


def post(url, path, body, **kw):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(url + path, content=content, headers={"Content-Type": "application/json", **kw}, timeout=60)


# ---------------------------------------------------------------------------------------------- /embed
@pytest.mark.parametrize("path", ["/embed", "/"])
def test_embed_as_inference_client_sends_it(server, tiny_encoder, path):
    """The body of huggingface_hub's InferenceClient.feature_extraction: inputs + root-level parameters."""
    r = post(server, path, {"inputs": TEXTS, "normalize": True, "truncate": False})
    assert r.status_code == 200, r.text
    got = np.array(r.json())
    assert got.shape == (len(TEXTS), tiny_encoder.dim)
    np.testing.assert_allclose(got, tiny_encoder.encode(TEXTS, normalize=True), atol=1e-5)


def test_embed_single_string_defaults_and_raw_vectors(server, tiny_encoder):
    r = post(server, "/embed", {"inputs": TEXTS[0]})  # normalize defaults to true
    body = r.json()
    assert r.status_code == 200 and len(body) == 1 and isinstance(body[0], list)  # always a list of vectors
    np.testing.assert_allclose(body[0], tiny_encoder.encode(TEXTS[:1], normalize=True)[0], atol=1e-5)
    empty = post(server, "/embed", {"inputs": ["", "x"]})  # TEI embeds an empty string (the template is still there)
    np.testing.assert_allclose(empty.json(), tiny_encoder.encode(["", "x"], normalize=True), atol=1e-5)
    raw = np.array(post(server, "/embed", {"inputs": TEXTS, "normalize": False}).json())
    np.testing.assert_allclose(raw, tiny_encoder.encode(TEXTS, normalize=False), atol=1e-5)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)


def test_embed_dimensions_and_ignored_fields(server, tiny_encoder):
    r = post(server, "/embed", {"inputs": TEXTS, "dimensions": 8, "encoding_format": "float", "whatever": 1})
    got = np.array(r.json())
    want = tiny_encoder.encode(TEXTS)[:, :8]
    np.testing.assert_allclose(got, want / np.linalg.norm(want, axis=1, keepdims=True), atol=1e-5)


def test_embed_truncate_cuts_the_sentence_to_fit(server, tiny_encoder):
    long = "word " * 400
    r = post(server, "/embed", {"inputs": ["fine", long]})
    assert r.status_code == 413 and r.json()["error_type"] == "Validation"
    assert "must have less than 200 tokens" in r.json()["error"] and "inputs[1]" in r.json()["error"]
    for direction in ("right", "Left"):
        r = post(server, "/embed", {"inputs": ["fine", long], "truncate": True, "truncation_direction": direction})
        assert r.status_code == 200, r.text
        assert np.array(r.json()).shape == (2, tiny_encoder.dim)
    tok = post(server, "/tokenize", {"inputs": "fine"}).json()  # the short input is untouched
    np.testing.assert_allclose(post(server, "/embed", {"inputs": "fine", "truncate": True}).json()[0],
                               tiny_encoder.encode(["fine"], normalize=True)[0], atol=1e-5)  # fmt: skip
    assert tok and len(tok[0]) > 2


def test_embed_token_ids_are_decoded(server, tiny_encoder):
    ids = tiny_encoder.tokenizer(TEXTS[0], add_special_tokens=False)["input_ids"]
    text = tiny_encoder.tokenizer.decode(ids, skip_special_tokens=True)
    for inputs, n in ((ids, 1), ([ids, TEXTS[1]], 2)):  # one id array; ids and text mixed, as TEI allows
        got = np.array(post(server, "/embed", {"inputs": inputs}).json())
        assert got.shape[0] == n
        np.testing.assert_allclose(got[0], tiny_encoder.encode([text], normalize=True)[0], atol=1e-5)


def test_inference_client_feature_extraction(server, tiny_encoder):
    hub = pytest.importorskip("huggingface_hub")
    got = hub.InferenceClient(base_url=server).feature_extraction(TEXTS[0], normalize=True, truncate=False)
    assert got.dtype == np.float32 and got.shape == (1, tiny_encoder.dim)
    np.testing.assert_allclose(got[0], tiny_encoder.encode(TEXTS[:1], normalize=True)[0], atol=1e-5)
    got = hub.InferenceClient(model=server + "/embed").feature_extraction(TEXTS[1])
    np.testing.assert_allclose(got[0], tiny_encoder.encode(TEXTS[1:2], normalize=True)[0], atol=1e-5)


# ---------------------------------------------------------------------------------------------- /tokenize
def test_tokenize_returns_the_rendered_prompt_tokens(server, tiny_encoder):
    r = post(server, "/tokenize", {"inputs": TEXTS[:2]})
    assert r.status_code == 200, r.text
    rows = r.json()
    assert len(rows) == 2
    built = tiny_encoder.prompts.build(TEXTS[:2])
    for row, sentence, ids in zip(rows, built.sentences, built.ids):
        assert all(set(t) == {"id", "text", "special", "start", "stop"} for t in row)
        assert [t["id"] for t in row] == ids  # exactly what the model reads
        prompt = tiny_encoder.prompts.render(sentence)
        for t in row:
            if t["special"]:
                assert t["start"] is None and t["stop"] is None
            else:
                assert prompt[t["start"] : t["stop"]] == t["text"]
        assert "This sentence" in "".join(t["text"] for t in row if not t["special"])
    plain = post(server, "/tokenize", {"inputs": TEXTS[0], "add_special_tokens": False}).json()
    assert len(plain) == 1 and not any(t["special"] for t in plain[0])
    assert len(plain[0]) == len(rows[0]) - sum(t["special"] for t in rows[0])


# ---------------------------------------------------------------------------------------------- /info
def test_info_has_tei_fields(server, tiny_encoder):
    info = httpx.get(server + "/info").json()
    assert set(info) == INFO_FIELDS
    assert info["model_id"] == MODEL and info["model_sha"] == tiny_encoder.fingerprint
    assert info["model_type"] == {"embedding": {"pooling": "last"}} and info["model_dtype"] == "float32"
    assert info["max_client_batch_size"] == 8 and info["max_input_length"] == 200
    assert info["auto_truncate"] is False and info["tokenization_workers"] == 1


# ---------------------------------------------------------------------------------------------- errors
TEI_ERRORS = [
    # name, path, body, status, error_type, words
    ("empty batch", "/embed", {"inputs": []}, 400, "Empty", "cannot be empty"),
    ("too many inputs", "/embed", {"inputs": ["a"] * 9}, 413, "Validation", "maximum allowed batch size 8"),
    ("prompt_name", "/embed", {"inputs": "a", "prompt_name": "query"}, 413, "Validation", "prompt_name"),
    ("dimensions too large", "/embed", {"inputs": "a", "dimensions": 33}, 413, "Validation", "1..32"),
    ("ids out of vocabulary", "/embed", {"inputs": [[1, 2], [10**9]]}, 413, "Validation", "inputs[1]"),
    ("lone surrogate", "/embed", b'{"inputs": ["ok", "a\\ud800b"]}', 422, "Tokenizer", "inputs[1] contains a lone"),
    ("bad direction", "/embed", {"inputs": "a", "truncation_direction": "up"}, 422, "Validation", "left"),
    ("missing inputs", "/embed", {"normalize": True}, 422, "Validation", "inputs"),
    ("not JSON", "/embed", b'{"inputs": ', 400, "Validation", "JSON"),
    ("empty body", "/embed", b"", 400, "Validation", "the request body is empty"),
    ("not UTF-8", "/tokenize", b'{"inputs": "\xff"}', 400, "Validation", "not UTF-8"),
    ("body too large", "/embed", b"{" + b" " * (65 * 1024) + b"}", 413, "Validation", "max-request-bytes"),
    ("tokenize empty", "/tokenize", {"inputs": []}, 400, "Empty", "cannot be empty"),
    ("tokenize too many", "/tokenize", {"inputs": ["a"] * 9}, 413, "Validation", "batch size 9"),
    ("wrong method", "/info", None, 405, "Validation", "not allowed"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "path", "body", "status", "kind", "words"), TEI_ERRORS, ids=[c[0] for c in TEI_ERRORS])
def test_tei_errors_have_the_tei_shape(server, name, path, body, status, kind, words):
    r = post(server, path, body if body is not None else {})
    assert r.status_code == status, r.text
    payload = r.json()
    assert set(payload) == {"error", "error_type"} and payload["error_type"] == kind
    assert words in payload["error"], payload
    assert httpx.get(server + "/health").status_code == 200


def test_other_routes_keep_the_openai_shape(server):
    r = httpx.get(server + "/nothing-here")
    assert r.status_code == 404 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = post(server, "/v1/embeddings", {"model": MODEL, "input": []})
    assert r.status_code == 400 and r.json()["error"]["code"] == "empty_input"


def test_auth_covers_tei_routes(auth_server):
    for method, path, body in (("POST", "/embed", {"inputs": "a"}), ("POST", "/", {"inputs": "a"}),
                               ("POST", "/tokenize", {"inputs": "a"}), ("GET", "/info", None)):  # fmt: skip
        r = httpx.request(method, auth_server + path, json=body, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and set(r.json()) == {"error", "error_type"}, (path, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
        ok = httpx.request(method, auth_server + path, json=body, headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200, (path, ok.text)
    assert httpx.get(auth_server + "/health").status_code == 200


def test_tei_routes_have_their_own_metrics_label(server):
    post(server, "/embed", {"inputs": "a"})
    text = httpx.get(server + "/metrics").text
    assert 'path="/embed"' in text and 'path="/tokenize"' in text
    assert 'status="500"' not in text


# ---------------------------------------------------------------------------------------------- token ids on /v1
def test_v1_token_ids_equal_the_decoded_text(server, tiny_encoder):
    tok = tiny_encoder.tokenizer
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS[:3]]
    decoded = [tok.decode(s, skip_special_tokens=True) for s in ids]
    want = tiny_encoder.encode(decoded, normalize=True)
    r = post(server, "/v1/embeddings", {"model": MODEL, "input": ids})
    assert r.status_code == 200, r.text
    assert "decoded to text" in r.headers["x-prompteol-token-ids"]
    got = np.array([d["embedding"] for d in r.json()["data"]])
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert r.json()["usage"]["prompt_tokens"] == sum(tiny_encoder.token_counts(decoded))
    one = post(server, "/v1/embeddings", {"model": MODEL, "input": ids[0]}).json()  # one array of ids
    assert len(one["data"]) == 1
    np.testing.assert_allclose(one["data"][0]["embedding"], want[0], atol=1e-5)
    # special tokens are dropped when decoding: ids with a BOS give the same vector
    bos = tok(TEXTS[0])["input_ids"]
    with_bos = post(server, "/v1/embeddings", {"model": MODEL, "input": [bos]}).json()
    np.testing.assert_allclose(with_bos["data"][0]["embedding"], want[0], atol=1e-5)
    assert "x-prompteol-token-ids" not in post(server, "/v1/embeddings", {"model": MODEL, "input": "a"}).headers


@pytest.mark.parametrize(
    ("body", "words"),
    [({"input": [5, 10**9]}, "'input' holds the token id 1000000000, outside this model's vocabulary"),
     ({"input": [[5], [-1]]}, "negative token id -1"), ({"input": [[5], []]}, "input[1] is an empty token array"),
     ({"input": [[5], [1.5]]}, "input[1] should hold token ids")],
    ids=["out of vocabulary", "negative", "empty array", "float"],
)  # fmt: skip
def test_v1_bad_token_ids_are_400s(server, body, words):
    r = post(server, "/v1/embeddings", {"model": MODEL, **body})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input"
    assert words in r.json()["error"]["message"], r.json()


def test_openai_client_with_token_ids(server, tiny_encoder):
    openai = require("openai")
    ids = tiny_encoder.tokenizer(TEXTS[1], add_special_tokens=False)["input_ids"]
    got = openai.OpenAI(base_url=server + "/v1", api_key="x", max_retries=0).embeddings.create(model=MODEL, input=[ids])
    text = tiny_encoder.tokenizer.decode(ids, skip_special_tokens=True)
    np.testing.assert_allclose(got.data[0].embedding, tiny_encoder.encode([text], normalize=True)[0], atol=1e-5)
