"""The MTEB adapter, run through mteb's own offline mock tasks."""

from __future__ import annotations

import numpy as np
import pytest

mteb = pytest.importorskip("mteb")


@pytest.fixture(scope="module")
def adapter(tiny_encoder):
    from prompteol.evaluation.mteb_adapter import PromptEOLMTEB

    return PromptEOLMTEB(tiny_encoder)


def test_protocol_conformance(adapter, tiny_encoder):
    from mteb.models.models_protocols import EncoderProtocol

    assert isinstance(adapter, EncoderProtocol)
    meta = adapter.mteb_model_meta
    assert meta.name == "prompteol/tiny-random-llama"
    assert meta.revision == tiny_encoder.fingerprint and meta.embed_dim == tiny_encoder.dim
    assert meta.similarity_fn_name.value == "cosine"


def test_encode_applies_our_template(adapter, tiny_encoder):
    from torch.utils.data import DataLoader

    texts = ["A man is playing a guitar.", "A dog runs.", "Is it raining?"]
    loader = DataLoader([{"text": t} for t in texts], batch_size=2, collate_fn=lambda b: {"text": [x["text"] for x in b]})
    from mteb.mocks import MockSTSTask

    got = adapter.encode(loader, task_metadata=MockSTSTask.metadata, hf_split="test", hf_subset="default")
    assert got.shape == (3, tiny_encoder.dim) and got.dtype == np.float32
    np.testing.assert_allclose(got, tiny_encoder.encode(texts), rtol=1e-5, atol=1e-6)


def test_runs_mteb_mock_tasks_offline(adapter):
    from mteb.mocks import MockClassificationTask, MockRetrievalTask, MockSTSTask

    results = mteb.evaluate(adapter, [MockSTSTask(), MockClassificationTask(), MockRetrievalTask()], cache=None,
                            show_progress_bar=False)  # fmt: skip
    scores = {r.task_name: r.get_score() for r in results.task_results}
    assert set(scores) == {"MockSTSTask", "MockClassificationTask", "MockRetrievalTask"}
    assert all(np.isfinite(s) for s in scores.values())
