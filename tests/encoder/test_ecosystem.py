"""sentence-transformers conveniences (similarity, truncate_dim, precision, per-call prompts) and the export."""

from __future__ import annotations

import functools
import json
import shutil

import numpy as np
import pytest
from conftest import require

from prompteol import Encoder
from prompteol.encoder.postprocess import PRECISIONS, quantize
from prompteol.errors import ConfigError, InputError

TEXTS = ["A man is playing a guitar.", "A man plays the guitar.", "A dog runs in the park.", "Is it raining?", ""]


@pytest.fixture(autouse=True)
def _cache_env(monkeypatch, test_cache_dir):
    """Exports reference tiny models by alias: resolve them in the test cache (and undo --cache-dir)."""
    monkeypatch.setenv("PROMPTEOL_CACHE", str(test_cache_dir))


@pytest.fixture(scope="module")
def demo_encoder(test_cache_dir):
    """A tiny encoder with a demonstration and layer -2: a shared prefix and a non-default read-out."""
    return Encoder.from_pretrained("tiny-random-llama", cache_dir=test_cache_dir,
                                   demonstrations=[("A man is smoking.", "Smoking")], layer=-2)  # fmt: skip


# ---------------------------------------------------------------------------------------- precision
def test_quantize_matches_sentence_transformers():
    st_quant = require("sentence_transformers.util.quantization")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(150, 37)).astype(np.float32)  # 37: binary packing pads the last byte
    calib = rng.normal(scale=2.0, size=(400, 37))
    for precision in ("float32", "int8", "uint8", "binary", "ubinary"):
        ours, theirs = quantize(x, precision), st_quant.quantize_embeddings(x, precision=precision)
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, precision
        np.testing.assert_array_equal(ours, theirs)
        if precision.endswith("int8"):
            ours = quantize(x, precision, calibration=calib)
            theirs = st_quant.quantize_embeddings(x, precision=precision, calibration_embeddings=calib)
            assert ours.dtype == theirs.dtype
            np.testing.assert_array_equal(ours, theirs)
    assert quantize(x, "float16").dtype == np.float16
    np.testing.assert_array_equal(quantize(x, "float16"), x.astype(np.float16))
    with pytest.raises(InputError, match="single embedding"):
        quantize(x[:1], "int8")
    with pytest.raises(InputError, match="calibration should be"):
        quantize(x, "int8", calibration=calib[:, :5])
    with pytest.raises(ConfigError, match="precision should be"):
        quantize(x, "int4")
    assert quantize(x[:0], "binary").shape == (0, 5) and quantize(x[:0], "int8").shape == (0, 37)


def test_encode_precision_truncate_normalize(tiny_encoder):
    st_quant = require("sentence_transformers.util.quantization")
    full = tiny_encoder.encode(TEXTS)
    cut = tiny_encoder.encode(TEXTS, truncate_dim=8)
    np.testing.assert_array_equal(cut, full[:, :8])
    unit = tiny_encoder.encode(TEXTS, truncate_dim=8, normalize=True)  # truncated, then re-normalised
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(unit, full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True), atol=1e-6)
    for precision in ("int8", "uint8", "binary", "ubinary"):
        got = tiny_encoder.encode(TEXTS, normalize=True, precision=precision)
        np.testing.assert_array_equal(got, st_quant.quantize_embeddings(tiny_encoder.encode(TEXTS, normalize=True),
                                                                        precision=precision))  # fmt: skip
    # int8 codes of two calls are comparable only with the same calibration
    calib = tiny_encoder.encode(TEXTS + ["Another sentence.", "A cat sleeps."], truncate_dim=8)
    a = tiny_encoder.encode(TEXTS[:2], truncate_dim=8, precision="int8", calibration=calib)
    b = tiny_encoder.encode(TEXTS, truncate_dim=8, precision="int8", calibration=calib)
    np.testing.assert_array_equal(a, b[:2])
    assert tiny_encoder.encode(TEXTS, precision="float16").dtype == np.float16
    assert tiny_encoder.encode([], precision="ubinary", truncate_dim=16).shape == (0, 2)
    with pytest.raises(ConfigError, match="truncate_dim"):
        tiny_encoder.encode(TEXTS, truncate_dim=tiny_encoder.dim + 1)
    with pytest.raises(ConfigError, match="truncate_dim"):
        tiny_encoder.encode(TEXTS, truncate_dim=0)
    with pytest.raises(ConfigError, match="precision should be"):
        tiny_encoder.encode(TEXTS, precision="bf16")
    assert set(PRECISIONS) == {"float32", "float16", "int8", "uint8", "binary", "ubinary"}


# ---------------------------------------------------------------------------------------- similarity
def test_similarity_of_texts_and_vectors(tiny_encoder):
    import torch

    a, b = TEXTS[:3], TEXTS[2:]
    va, vb = tiny_encoder.encode(a), tiny_encoder.encode(b)
    m = tiny_encoder.similarity(a, b)
    assert m.shape == (3, 3) and m.dtype == np.float32
    ua, ub = va / np.linalg.norm(va, axis=1, keepdims=True), vb / np.linalg.norm(vb, axis=1, keepdims=True)
    np.testing.assert_allclose(m, ua @ ub.T, atol=1e-6)
    np.testing.assert_allclose(tiny_encoder.similarity(va, vb), m, atol=1e-6)  # arrays: not re-encoded
    np.testing.assert_allclose(tiny_encoder.similarity(torch.from_numpy(va), b), m, atol=1e-6)
    assert tiny_encoder.similarity(a[0], b).shape == (1, 3)  # one text, one vector: one row
    assert tiny_encoder.similarity(va[0], vb).shape == (1, 3)
    pw = tiny_encoder.similarity_pairwise(a, b)
    assert pw.shape == (3,) and pw.dtype == np.float32
    np.testing.assert_allclose(pw, np.diag(m), atol=1e-6)
    np.testing.assert_allclose(tiny_encoder.similarity_pairwise(va, b), pw, atol=1e-6)
    np.testing.assert_allclose(np.diag(tiny_encoder.similarity(a, a)), 1.0, atol=1e-6)
    assert tiny_encoder.similarity([], b).shape == (0, 3)
    with pytest.raises(InputError, match="as many"):
        tiny_encoder.similarity_pairwise(a, TEXTS)
    with pytest.raises(InputError, match="different dimensions"):
        tiny_encoder.similarity(va, vb[:, :8])


# ---------------------------------------------------------------------------------------- prompts
def test_prompt_selects_a_derived_encoder_once(tiny_encoder, monkeypatch):
    enc = tiny_encoder.derive()  # a fresh encoder: its own cache of derived encoders
    derived = []
    original = Encoder.derive

    @functools.wraps(original)
    def spy(self, **changes):
        derived.append(changes)
        return original(self, **changes)

    monkeypatch.setattr(Encoder, "derive", spy)
    got = enc.encode(TEXTS, prompt="promptbert")
    np.testing.assert_allclose(got, tiny_encoder.derive(template="promptbert").encode(TEXTS), atol=1e-6)
    assert not np.allclose(got, enc.encode(TEXTS), atol=1e-4)  # another template, other vectors
    np.testing.assert_array_equal(enc.encode(TEXTS, prompt_name="promptbert"), got)  # the alias, same encoder
    assert len(derived) == 2, "derived once for prompt= / prompt_name=, plus the reference above"
    text = 'In one word, "{sentence}" is:"'
    enc.encode(TEXTS, prompt=text, normalize=True, truncate_dim=4)
    enc.encode(TEXTS, prompt=text)
    assert len(derived) == 3 and derived[-1]["template"].text == text
    np.testing.assert_array_equal(enc.encode(TEXTS, prompt="prompteol"), enc.encode(TEXTS))  # its own template
    assert len(derived) == 3
    with pytest.raises(ConfigError, match="disagree"):
        enc.encode(TEXTS, prompt="raw", prompt_name="promptbert")
    with pytest.raises(ConfigError, match="unknown template"):
        enc.encode(TEXTS, prompt="no-such-template")
    with pytest.raises(ConfigError, match="Tokenized"):
        enc.encode(enc.prompts.build(TEXTS), prompt="raw")


def test_prompt_vectors_are_keyed_by_the_derived_fingerprint(test_cache_dir, tmp_path):
    from prompteol.cache import EmbeddingCache

    cache = EmbeddingCache(tmp_path / "embeddings.sqlite")
    enc = Encoder.from_pretrained("tiny-random-llama", cache_dir=test_cache_dir, embedding_cache=cache)
    own = enc.encode(TEXTS)
    other = enc.encode(TEXTS, prompt="promptbert")
    derived = enc.derive(template="promptbert")
    assert derived.fingerprint != enc.fingerprint
    assert cache.count(enc.fingerprint) == len(TEXTS) and cache.count(derived.fingerprint) == len(TEXTS)
    np.testing.assert_array_equal(enc.encode(TEXTS), own)  # read back from the cache, unmixed
    np.testing.assert_array_equal(enc.encode(TEXTS, prompt="promptbert"), other)


# ---------------------------------------------------------------------------------------- export
def _st(folder):
    st = require("sentence_transformers")
    return st.SentenceTransformer(str(folder), trust_remote_code=True, local_files_only=True, device="cpu")


def test_export_loads_in_sentence_transformers_with_the_same_vectors(demo_encoder, tmp_path):
    from prompteol.export import CONFIG_FILE, export_sentence_transformers

    out = export_sentence_transformers(demo_encoder, tmp_path / "st")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["modules.json", "config_sentence_transformers.json", CONFIG_FILE, "README.md"])  # fmt: skip
    assert [p.name for p in tmp_path.iterdir()] == ["st"], "no temporary folder is left behind"
    modules = json.loads((out / "modules.json").read_text())
    assert modules == [{"idx": 0, "name": "0", "path": "", "type": "prompteol.export.PromptEOLModule"}]
    st_config = json.loads((out / "config_sentence_transformers.json").read_text())
    assert st_config["similarity_fn_name"] == "cosine" and st_config["prompts"] == {}
    record = json.loads((out / CONFIG_FILE).read_text())
    assert record["fingerprint"] == demo_encoder.fingerprint and record["encoder"]["layer"] == -2
    assert record["encoder"]["model"] == "tiny-random-llama" and record["paths"] == {}

    model = _st(out)
    expected = demo_encoder.encode(TEXTS)
    got = model.encode(TEXTS)
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-5
    assert model.get_embedding_dimension() == demo_encoder.dim and model.similarity_fn_name == "cosine"
    # sentence-transformers' own post-processing works on the module's output
    np.testing.assert_allclose(model.encode(TEXTS, normalize_embeddings=True, truncate_dim=8),
                               demo_encoder.encode(TEXTS, normalize=True, truncate_dim=8), atol=1e-5)  # fmt: skip
    assert model.encode(TEXTS[:3], precision="ubinary").dtype == np.uint8
    # a sentence-transformers prompt is a prefix of the sentence, inside our template
    np.testing.assert_allclose(model.encode(TEXTS[:2], prompt="query: "),
                               demo_encoder.encode(["query: " + t for t in TEXTS[:2]]), atol=1e-5)  # fmt: skip
    # saved again by sentence-transformers, it still loads and gives the same vectors
    model.save(str(tmp_path / "again"))
    assert np.abs(_st(tmp_path / "again").encode(TEXTS) - expected).max() < 1e-5


def test_export_needs_trust_remote_code_in_sentence_transformers_6(demo_encoder, tmp_path):
    st = require("sentence_transformers")
    from prompteol.export import export_sentence_transformers

    if int(st.__version__.split(".")[0]) < 6:
        pytest.skip("sentence-transformers < 6 imports custom module classes of local folders without asking")
    out = export_sentence_transformers(demo_encoder, tmp_path / "st")
    with pytest.raises(ValueError, match="trust_remote_code"):
        st.SentenceTransformer(str(out), local_files_only=True, device="cpu")


def test_export_copy_weights_is_self_contained(demo_encoder, tmp_path, monkeypatch):
    from prompteol.export import export_sentence_transformers

    out = export_sentence_transformers(demo_encoder, tmp_path / "st", copy_weights=True)
    assert (out / "model" / "config.json").is_file()
    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(out, moved)
    shutil.rmtree(out)
    monkeypatch.setenv("PROMPTEOL_CACHE", str(tmp_path / "empty-cache"))  # the alias is not resolvable here
    model = _st(moved)
    assert np.abs(model.encode(TEXTS) - demo_encoder.encode(TEXTS)).max() < 1e-5
    assert not (tmp_path / "empty-cache" / "models").exists(), "nothing was resolved outside the folder"
    assert model[0].encoder.identity == demo_encoder.identity  # the copy keeps the model's identity


def test_export_refuses_a_non_empty_folder_and_replaces_with_overwrite(demo_encoder, tmp_path):
    from prompteol.export import export_sentence_transformers

    out = tmp_path / "st"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        export_sentence_transformers(demo_encoder, out)
    assert (out / "keep.txt").is_file()
    export_sentence_transformers(demo_encoder, out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "modules.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["st"]


def test_model_card_records_the_configuration_and_scores(demo_encoder, tmp_path):
    from prompteol import __version__
    from prompteol.export import export_sentence_transformers

    card = (export_sentence_transformers(demo_encoder, tmp_path / "a") / "README.md").read_text()
    assert "No scores were measured" in card
    for needle in ("library_name: sentence-transformers", 'This sentence : "{sentence}" means in one word:"',
                   "`A man is smoking.` -> `Smoking`", "| layer | -2 (block output 1 of 2) |", "| pooling | `last` |",
                   "tiny-random-llama", "random:tiny-random-llama:v1", demo_encoder.fingerprint,
                   f"prompteol {__version__}", "trust_remote_code=True"):  # fmt: skip
        assert needle in card, needle
    results = {"schema": "prompteol.eval/1", "date": "2026-01-01T00:00:00+00:00", "mode": "test",
               "tasks": {"STS12": {"score": 61.234}, "STSBenchmark": {"score": 70.5}, "MR": {"score": 80.0}},
               "averages": {}, "encoder": {"fingerprint": demo_encoder.fingerprint}}  # fmt: skip
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    card = (export_sentence_transformers(demo_encoder, tmp_path / "b", results=path) / "README.md").read_text()
    assert "| STS task | Spearman x100 |" in card and "| STS12 | 61.23 |" in card and "| STSBenchmark | 70.50 |" in card
    assert "| MR | 80.00 |" in card and "No scores were measured" not in card and "another configuration" not in card
    results["encoder"]["fingerprint"] = "0" * 32
    with pytest.warns(UserWarning, match="fingerprint"):
        card = (export_sentence_transformers(demo_encoder, tmp_path / "c", results=results) / "README.md").read_text()
    assert "another configuration" in card
    with pytest.raises(InputError, match="no 'tasks'"):
        export_sentence_transformers(demo_encoder, tmp_path / "d", results={"x": 1})


def test_export_command(tmp_path, test_cache_dir, demo_encoder, capsys):
    from prompteol.cli.main import main

    out = tmp_path / "st"
    rc = main(["--cache-dir", str(test_cache_dir), "export", "sentence-transformers", "--model", "tiny-random-llama",
               "--demo", "A man is smoking.|Smoking", "--layer", "-2", "--copy-weights", str(out)])  # fmt: skip
    assert rc == 0 and "trust_remote_code=True" in capsys.readouterr().err
    assert np.abs(_st(out).encode(TEXTS) - demo_encoder.encode(TEXTS)).max() < 1e-5
    # a non-empty OUT and a bad results file fail before any model is loaded
    assert main(["export", "sentence-transformers", "--model", "tiny-random-llama", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert main(["export", "sentence-transformers", "--results", str(bad), str(tmp_path / "new")]) == 2
    assert "cannot read the results file" in capsys.readouterr().err and not (tmp_path / "new").exists()
