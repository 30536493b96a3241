"""The MTEB adapter, run through mteb's own offline mock tasks."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require

mteb = require("mteb")


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


class _RuleEncoder:
    """Vectors built from the mock tasks' texts so that every mock task has a known score: e1 when exactly one
    of "another" and "positive" is in the text, else e2 (``flip`` swaps them for the documents' side)."""

    def __init__(self, flip: bool = False):
        self.flip = flip

    def encode(self, texts):
        out = np.zeros((len(texts), 2), dtype=np.float32)
        for i, t in enumerate(texts):
            side = ("another" in t) != ("positive" in t)
            if self.flip and ("dette" in t or "denne" in t):  # the STS pairs' second sentences, swapped
                side = not side
            out[i, 0 if side else 1] = 1.0
        return out


def test_mteb_mock_tasks_give_their_known_scores():
    """MockSTSTask: the score-1 pair has cosine 1 and the score-0 pair cosine 0, so Spearman is 1 (-1 with the
    second sentences swapped); MockClassificationTask: the labels are linearly separable, accuracy 1;
    MockRetrievalTask: each query equals its relevant document, nDCG@10 1. A mis-wired adapter (vectors out
    of order, queries and documents mixed up) changes these."""
    from mteb.mocks import MockClassificationTask, MockRetrievalTask, MockSTSTask

    from prompteol.evaluation.mteb_adapter import PromptEOLMTEB

    tasks = [MockSTSTask(), MockClassificationTask(), MockRetrievalTask()]
    results = mteb.evaluate(PromptEOLMTEB(_RuleEncoder(), name="test/rules"), tasks, cache=None, show_progress_bar=False)
    scores = {r.task_name: r.get_score() for r in results.task_results}
    assert scores == {"MockSTSTask": pytest.approx(1.0), "MockClassificationTask": pytest.approx(1.0),
                      "MockRetrievalTask": pytest.approx(1.0)}  # fmt: skip
    flipped = mteb.evaluate(PromptEOLMTEB(_RuleEncoder(flip=True), name="test/rules-flipped"), [MockSTSTask()],
                            cache=None, show_progress_bar=False)  # fmt: skip
    assert flipped.task_results[0].get_score() == pytest.approx(-1.0)


def test_mteb_mock_sts_equals_our_own_spearman(adapter, tiny_encoder):
    """The real encoder through MTEB's STS evaluator: MTEB's Spearman equals the one computed here from
    ``tiny_encoder``'s own cosines of the mock pairs."""
    from mteb.mocks import MockSTSTask
    from scipy.stats import spearmanr

    task = MockSTSTask()
    task.load_data()
    data = task.dataset["test"]
    a = tiny_encoder.encode(list(data["sentence1"])).astype(np.float64)
    b = tiny_encoder.encode(list(data["sentence2"])).astype(np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    want = spearmanr(cos, data["score"]).correlation
    results = mteb.evaluate(adapter, [MockSTSTask()], cache=None, show_progress_bar=False)
    assert results.task_results[0].scores["test"][0]["cosine_spearman"] == pytest.approx(want, abs=1e-9)


# ---------------------------------------------------------------------------------------- prompts
def _spy_encodes(monkeypatch, base):
    """Record (template name, texts) of every encode by an encoder derived from ``base`` (not ``base`` itself)."""
    import functools

    from prompteol import Encoder

    calls: list[tuple[str, list[str]]] = []
    original = Encoder.encode

    @functools.wraps(original)
    def spy(self, texts, *args, **kwargs):
        if self is not base:
            calls.append((self.config.template.name, list(texts)))
        return original(self, texts, *args, **kwargs)

    monkeypatch.setattr(Encoder, "encode", spy)
    return calls


def test_query_and_document_get_their_templates(tiny_encoder, monkeypatch):
    from mteb.mocks import MockRetrievalTask

    from prompteol.evaluation.mteb_adapter import PromptEOLMTEB

    base = tiny_encoder.derive()  # a fresh encoder: its own derived encoders
    adapter = PromptEOLMTEB(base, prompts={"query": "promptbert", "document": "raw"})
    assert adapter.mteb_model_meta.revision not in (None, base.fingerprint)  # the prompts are part of it
    calls = _spy_encodes(monkeypatch, base)
    results = mteb.evaluate(adapter, [MockRetrievalTask()], cache=None, show_progress_bar=False)
    assert np.isfinite(results.task_results[0].get_score())
    by_template: dict[str, set[str]] = {}
    for name, texts in calls:
        by_template.setdefault(name, set()).update(texts)
    queries = {"This is a test sentence", "This is another test sentence"}
    assert by_template["promptbert"] == queries
    assert by_template["raw"] and not by_template["raw"] & queries
    assert all("positive sentence" in t for t in by_template["raw"])  # the documents (title + text)
    assert set(by_template) == {"promptbert", "raw"}, "no text was encoded with the base template"
    # what MTEB got is the derived encoder's vectors
    from torch.utils.data import DataLoader

    loader = DataLoader([{"text": t} for t in sorted(queries)], batch_size=2,
                        collate_fn=lambda b: {"text": [x["text"] for x in b]})  # fmt: skip
    from mteb.types import PromptType

    got = adapter.encode(loader, task_metadata=MockRetrievalTask.metadata, prompt_type=PromptType.query)
    np.testing.assert_allclose(got, tiny_encoder.derive(template="promptbert").encode(sorted(queries)), atol=1e-6)


def test_task_specific_prompts_win(tiny_encoder, monkeypatch):
    from mteb.mocks import MockRetrievalTask, MockSTSTask

    from prompteol.evaluation.mteb_adapter import PromptEOLMTEB

    base = tiny_encoder.derive()
    prompts = {"MockRetrievalTask-query": "cot", "query": "promptbert", "STS": "ke"}
    adapter = PromptEOLMTEB(base, prompts=prompts)
    meta = MockRetrievalTask.metadata
    from mteb.types import PromptType

    assert adapter.template_for(meta, PromptType.query).name == "cot"
    assert adapter.template_for(meta, PromptType.document) is None  # no key: the encoder's own template
    assert adapter.template_for(MockSTSTask.metadata, None).name == "ke"  # by task type
    calls = _spy_encodes(monkeypatch, base)
    mteb.evaluate(adapter, [MockSTSTask()], cache=None, show_progress_bar=False)
    assert {name for name, _ in calls} == {"ke"}
    with pytest.raises(ValueError, match="unknown template"):
        PromptEOLMTEB(base, prompts={"query": "no-such-template"})

    class NoPrompt:
        def encode(self, texts):
            return np.zeros((len(texts), 4))

    with pytest.raises(ValueError, match="prompt="):
        PromptEOLMTEB(NoPrompt(), prompts={"query": "raw"})
    assert PromptEOLMTEB(NoPrompt()).encode([{"text": ["a"]}]).shape == (1, 4)


# ---------------------------------------------------------------------------------------- MTEB's evaluator = ours
def test_mteb_sts_evaluator_equals_our_harness_on_stsb(data_dir, test_cache_dir, tmp_path):
    """STS-B test from our SentEval files, scored by MTEB's own evaluator and by `evaluate`: the same Spearman."""
    from prompteol import Encoder
    from prompteol.cache import EmbeddingCache
    from prompteol.evaluation import evaluate
    from prompteol.evaluation.mteb_adapter import PromptEOLMTEB, local_sts_task

    # the embedding cache gives both runs bitwise the same vectors (MTEB encodes sentence1 and sentence2 in two
    # calls, our harness every unique sentence in one: other batches, float rounding of 5e-7 otherwise)
    enc = Encoder.from_pretrained("tiny-random-llama", cache_dir=test_cache_dir,
                                  embedding_cache=EmbeddingCache(tmp_path / "embeddings.sqlite"))  # fmt: skip
    ours = evaluate(enc, tasks=["STSBenchmark"], data_dir=data_dir)["tasks"]["STSBenchmark"]
    task = local_sts_task("STSBenchmark", data_dir)
    assert task.metadata.name == "STSBenchmark-senteval-local"
    # float64: MTEB computes its cosines in the dtype it gets, ours are float64 (see PromptEOLMTEB)
    res = mteb.evaluate(PromptEOLMTEB(enc, output_dtype="float64"), [task], cache=None, show_progress_bar=False)
    scores = res.task_results[0].scores["test"][0]
    theirs = 100 * scores["cosine_spearman"]
    print(f"\nSTS-B test, tiny-random-llama: ours {ours['score']!r}, mteb cosine_spearman x100 {theirs!r}")
    assert ours["n"] == 1379
    assert abs(theirs - ours["score"]) < 1e-6
    assert abs(100 * scores["cosine_pearson"] - ours["pearson"]) < 1e-6
    # float32 vectors (the default): MTEB's float32 cosines reorder this random model's crowded similarities
    res32 = mteb.evaluate(PromptEOLMTEB(enc), [local_sts_task("STSBenchmark", data_dir)], cache=None,
                          show_progress_bar=False)  # fmt: skip
    assert abs(100 * res32.task_results[0].scores["test"][0]["cosine_spearman"] - ours["score"]) < 1e-2


# ---------------------------------------------------------------------------------------- prompteol mteb
@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    return tmp_path


def test_mteb_command_offline_fails_before_loading_a_model(empty_hf_cache, tmp_path, monkeypatch, capsys):
    from prompteol import Encoder
    from prompteol.cli.main import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the hub is not reachable, whatever the network

    def no_load(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(Encoder, "from_config", no_load)
    rc = main(["mteb", "--model", "tiny-random-llama", "--tasks", "STSBenchmark,SciFact", "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2
    for needle in ("not reachable", "STSBenchmark (dataset mteb/stsbenchmark-sts)", "SciFact (dataset mteb/scifact)"):
        assert needle in err, err
    assert not (tmp_path / "o").exists()
    assert main(["mteb", "--tasks", "NoSuchTask", "--output", str(tmp_path / "o")]) == 2
    assert "unknown MTEB task" in capsys.readouterr().err
    assert main(["mteb", "--tasks", "STSBenchmark", "--prompt-query", "nope", "--output", str(tmp_path / "o")]) == 2
    assert "unknown template" in capsys.readouterr().err


def test_cached_datasets_count_as_available(empty_hf_cache):
    from prompteol.evaluation.mteb_adapter import missing_datasets

    tasks = list(mteb.get_tasks(tasks=["STSBenchmark", "SciFact"]))
    assert set(missing_datasets(tasks, hub_reachable=False)) == {"STSBenchmark", "SciFact"}
    snapshot = empty_hf_cache / "hub" / "datasets--mteb--stsbenchmark-sts" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    assert missing_datasets(tasks, hub_reachable=False) == {"SciFact": "mteb/scifact"}
    (empty_hf_cache / "datasets" / "mteb___scifact" / "default").mkdir(parents=True)
    assert missing_datasets(tasks, hub_reachable=False) == {}
    assert missing_datasets(tasks, hub_reachable=True) == {}


def test_mteb_command_runs_mteb_and_saves_results(tmp_path, test_cache_dir, monkeypatch, capsys):
    """The command's wiring, online simulated with mteb's mock tasks (their data is built in memory)."""
    from mteb.mocks import MockRetrievalTask, MockSTSTask

    import prompteol.models.loading
    from prompteol.cli.main import main

    monkeypatch.setenv("PROMPTEOL_CACHE", str(test_cache_dir))
    monkeypatch.setattr(prompteol.models.loading, "_hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(mteb, "get_tasks", lambda tasks: [MockSTSTask(), MockRetrievalTask()])
    out = tmp_path / "results"
    rc = main(["mteb", "--model", "tiny-random-llama", "--tasks", "MockSTSTask,MockRetrievalTask", "--output", str(out),
               "--prompt-query", "promptbert", "--prompt-document", "raw", "--no-cache", "--no-progress"])  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "MockSTSTask" in captured.out and "MockRetrievalTask" in captured.out
    saved = sorted(p.name for p in out.rglob("*.json"))
    assert {"MockSTSTask.json", "MockRetrievalTask.json"} <= set(saved), saved
