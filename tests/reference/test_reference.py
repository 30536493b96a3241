"""prompteol against an independent reference (``reference_scorer.py``: transformers + numpy + scipy, no
prompteol), on the tiny models, on golden vectors of a real model, and on STS-B dev (slow).

What these tests compare against is computed by the reference scorer, never by the code under test: the
tiny models' reference vectors in the test itself, the golden vectors by ``make_golden.py`` (the
reference scorer), the STS-B dev score by the reference's own reader and Spearman.
"""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from reference_scorer import ReferenceScorer, normalize, read_stsb_dev, score_stsb_dev, sts_spearman

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden_smollm2-135m.json"
ROOT = HERE.parents[1]
#: the record of prompteol's STS-B dev score of smollm2-135m (float32, no demonstration, no cache)
STSB_DEV_RECORD = ROOT / "docs" / "methods" / "smollm2-135m" / "plain.json"
SENTENCES = json.loads(GOLDEN.read_text(encoding="utf-8"))["sentences"]
ALLOWED_IMPORTS = {"__future__", "pathlib", "numpy", "torch", "transformers", "scipy"}


def test_the_reference_imports_nothing_of_prompteol():
    tree = ast.parse((HERE / "reference_scorer.py").read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}  # fmt: skip
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= ALLOWED_IMPORTS, imported - ALLOWED_IMPORTS


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [("A man plays", "A man plays."), ("Is it?", "Is it."), ('He said "hi"', "He said 'hi'"),
     ('Quote "x".', "Quote 'x'."), ("", ""), ("It's 'done'", "It's 'done'")],
)  # fmt: skip
def test_reference_normalisation(raw, normalised):
    assert normalize(raw) == normalised


# ---------------------------------------------------------------------------------------------- tiny models
#: left padding is neutral for relative positions (RoPE) and OPT's mask-counted positions; GPT-2 counts
#: absolute positions from the token index and Gemma 3's sliding window masks by token index: one at a time
REFERENCE_BATCH = {"llama": 16, "qwen2": 16, "opt": 16, "gpt2": 1, "gemma3": 1}


@pytest.mark.parametrize("arch", sorted(REFERENCE_BATCH))
def test_prompteol_equals_the_reference_on_tiny_models(arch, tmp_path):
    from prompteol import Encoder
    from prompteol.models.testing import save_tiny_model

    folder = save_tiny_model(f"tiny-random-{arch}", tmp_path / arch)  # the input: random weights, no vectors
    want = ReferenceScorer(folder).encode(SENTENCES, batch_size=REFERENCE_BATCH[arch])
    got = Encoder.from_pretrained(str(folder), embedding_cache=False).encode(SENTENCES, batch_size=3)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * max(1.0, float(np.abs(want).max())))


# ---------------------------------------------------------------------------------------------- golden vectors
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def test_smollm2_equals_the_reference_golden_vectors(smollm2_encoder):
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    weights = Path(smollm2_encoder.source["path"]) / "model.safetensors"
    if _sha256(weights) != golden["weights_sha256"]:
        pytest.skip(f"{weights} is not the conversion the golden vectors were computed from (another transformers "
                    f"or gguf version): rerun tests/reference/make_golden.py for it")  # fmt: skip
    want = np.asarray(golden["vectors"], dtype=np.float32)  # (8, 576), by the reference scorer
    got = smollm2_encoder.encode(golden["sentences"], use_embedding_cache=False)
    scale = float(np.abs(want).max())  # hidden states of this model reach ~50
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * scale)
    cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert cos.min() > 1 - 1e-6


# ---------------------------------------------------------------------------------------------- STS-B dev
class _NoCache:
    """The encoder with every vector computed (the persistent embedding cache may hold STS-B dev)."""

    def __init__(self, encoder):
        self.encoder = encoder

    def encode(self, sentences, batch_size=32):
        return self.encoder.encode(sentences, batch_size=batch_size, use_embedding_cache=False)


@pytest.mark.slow
def test_stsb_dev_of_smollm2_is_67_04_with_prompteol_and_with_the_reference(smollm2_encoder, data_dir):
    """STS-B dev (1,500 pairs, 2,909 unique sentences) of smollm2-135m, float32, no demonstration: prompteol's
    harness without the embedding cache, and the reference from its own reader, prompt and Spearman."""
    from prompteol.evaluation import evaluate

    recorded = json.loads(STSB_DEV_RECORD.read_text(encoding="utf-8"))["tasks"]["STSBenchmark-dev"]["score"]
    assert round(recorded, 2) == 67.04
    reference = ReferenceScorer(Path(smollm2_encoder.source["path"]))
    ref_score = score_stsb_dev(reference, data_dir, batch_size=16)
    ours = evaluate(_NoCache(smollm2_encoder), tasks="STSBenchmark-dev", data_dir=data_dir)
    our_score = ours["tasks"]["STSBenchmark-dev"]["score"]
    print(f"STS-B dev, smollm2-135m: reference {ref_score:.4f}, prompteol {our_score:.4f}, record {recorded:.4f}")
    assert round(ref_score, 2) == 67.04
    assert round(our_score, 2) == 67.04
    assert abs(our_score - ref_score) < 0.01


def test_reference_spearman_on_constructed_pairs():
    """The reference's scorer itself: cosines rising with the gold score give 100, falling give -100."""
    angles = np.linspace(1.4, 0.1, 6)  # pair i: cosine cos(angle_i), rising along the gold scores
    a = np.tile([1.0, 0.0], (6, 1))
    b = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    gold = np.arange(6.0)
    assert sts_spearman(a, b, gold) == pytest.approx(100.0)
    assert sts_spearman(a, b, gold[::-1]) == pytest.approx(-100.0)


def test_reference_reads_stsb_dev_as_senteval(data_dir):
    s1, s2, gold = read_stsb_dev(data_dir)
    assert len(s1) == len(s2) == len(gold) == 1500
    assert len(set(s1 + s2)) == 2909  # the unique sentences the harness encodes (record: "sentences": 2909)
