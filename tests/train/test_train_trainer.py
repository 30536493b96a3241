"""The training loop end to end on the tiny model: resume, best checkpoint, adapters that load, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from prompteol.errors import ConfigError
from prompteol.train.config import TrainConfig
from prompteol.train.data import Triplet, TripletDataError, write_triplets
from prompteol.train.trainer import train

PROBE = ["A man is playing a guitar.", "A dog runs in the park.", "Stocks fell sharply."]


@pytest.fixture(scope="module")
def triplets_csv(tmp_path_factory) -> Path:
    subjects = ["A man", "A woman", "Two kids", "The dog", "A chef", "An old man", "The team", "A girl"]
    acts = [("is cooking dinner", "prepares food", "is asleep"), ("rides a bike", "is cycling", "walks home"),
            ("plays the piano", "makes music", "sits quietly")]  # fmt: skip
    rows = [Triplet(f"{s} {a}.", f"{s} {p}.", f"{s} {n}.") for s in subjects for a, p, n in acts]  # 24 rows
    path = tmp_path_factory.mktemp("data") / "triplets.csv"
    write_triplets(path, rows)
    return path


def _cfg(data, out, **kw) -> TrainConfig:
    base = dict(model="tiny-random-llama", data=str(data), output_dir=str(out), batch_size=4, micro_batch_size=2,
                lora_r=4, lora_alpha=8, lora_dropout=0.1, max_steps=4, warmup_steps=1, eval_every=0, save_every=2,
                cutoff_len=16)  # fmt: skip
    base.update(kw)
    return TrainConfig.build(**base)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def _assert_same_weights(a: Path, b: Path, atol=1e-6) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys() and wa
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=atol, msg=k)


def test_resume_continues_exactly(tmp_path, triplets_csv, test_cache_dir):
    """4 steps in one go == 2 steps, stop, resume for 2 more (dropout on, GradCache on)."""
    full = train(_cfg(triplets_csv, tmp_path / "full"), cache_dir=test_cache_dir, progress=False)
    assert full.steps == 4 and (tmp_path / "full" / "final").is_dir()

    cfg = _cfg(triplets_csv, tmp_path / "split", keep_checkpoints=5)
    half = train(cfg, stop_after=2, cache_dir=test_cache_dir, progress=False)
    assert half.steps == 2 and not (tmp_path / "split" / "final").exists()
    assert (tmp_path / "split" / "checkpoint-2" / "trainer_state.pt").is_file()
    rest = train(cfg, resume=True, cache_dir=test_cache_dir, progress=False)
    assert rest.steps == 4
    _assert_same_weights(tmp_path / "full" / "final", tmp_path / "split" / "final")
    assert rest.last_loss == pytest.approx(full.last_loss, rel=1e-5)
    # the adapter changed: the test is not comparing two untouched initialisations
    init = _weights(tmp_path / "split" / "checkpoint-2")
    assert any(not torch.equal(init[k], v) for k, v in _weights(tmp_path / "full" / "final").items())


def test_time_limit_stops_with_a_checkpoint(tmp_path, triplets_csv, test_cache_dir):
    cfg = _cfg(triplets_csv, tmp_path / "run", save_every=0)
    first = train(cfg, time_limit=0, cache_dir=test_cache_dir, progress=False)
    assert first.steps == 1 and (tmp_path / "run" / "checkpoint-1").is_dir()
    assert train(cfg, resume=True, cache_dir=test_cache_dir, progress=False).steps == 4


def test_resume_refuses_changed_options_and_fresh_runs_refuse_old_folders(tmp_path, triplets_csv, test_cache_dir):
    cfg = _cfg(triplets_csv, tmp_path / "run", max_steps=2, save_every=1)
    train(cfg, stop_after=1, cache_dir=test_cache_dir, progress=False)
    with pytest.raises(ConfigError, match=r"already holds a training run; pass --resume"):
        train(cfg, cache_dir=test_cache_dir, progress=False)
    with pytest.raises(ConfigError, match=r"options differ .*lr: 0.0005 -> 0.001"):
        train(_cfg(triplets_csv, tmp_path / "run", max_steps=2, save_every=1, lr=1e-3), resume=True,
              cache_dir=test_cache_dir, progress=False)  # fmt: skip
    with pytest.raises(ConfigError, match="holds no checkpoint"):
        train(_cfg(triplets_csv, tmp_path / "empty"), resume=True, cache_dir=test_cache_dir, progress=False)


def test_best_checkpoint_is_kept_with_its_score(tmp_path, triplets_csv, test_cache_dir):
    scores = iter([10.0, 30.0, 20.0, 25.0, 5.0])  # before, then steps 1..4
    out = tmp_path / "run"
    cfg = _cfg(triplets_csv, out, eval_every=1, save_every=1, keep_checkpoints=10)
    result = train(cfg, cache_dir=test_cache_dir, progress=False, scorer=lambda enc: next(scores))
    assert (result.before, result.after, result.best, result.best_step) == (10.0, 5.0, 30.0, 1)
    info = json.loads((out / "best" / "prompteol_train.json").read_text())
    assert info["eval"] == {"task": "STSBenchmark-dev", "score": 30.0, "step": 1}
    assert info["base_model"] == "tiny-random-llama" and info["step"] == 1
    _assert_same_weights(out / "best", out / "checkpoint-1", atol=0)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best"] == 30.0 and [h["step"] for h in summary["history"]] == [0, 1, 2, 3, 4]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "loss" in m] == [1, 2, 3, 4]
    assert all(m["examples_per_s"] > 0 and "lr" in m for m in metrics if "loss" in m)
    assert "step 4/4" in (out / "train.log").read_text()


def test_checkpoints_are_pruned(tmp_path, triplets_csv, test_cache_dir):
    out = tmp_path / "run"
    train(_cfg(triplets_csv, out, save_every=1, keep_checkpoints=2), cache_dir=test_cache_dir, progress=False)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-4"]
    assert not list(out.glob("*.tmp"))


def test_saved_adapter_loads_to_the_trained_vectors(tmp_path, triplets_csv, test_cache_dir):
    """Encoder.from_pretrained(adapter_dir) (base model read from prompteol_train.json) == the model in memory."""
    from prompteol import Encoder

    seen = []

    def scorer(encoder):  # called with the trained encoder, in eval mode, after the last step
        seen.append(encoder.encode(PROBE, use_embedding_cache=False))
        return float(len(seen))

    out = tmp_path / "run"
    train(_cfg(triplets_csv, out, eval_every=4), cache_dir=test_cache_dir, progress=False, scorer=scorer)
    trained = seen[-1]
    base = Encoder.from_pretrained("tiny-random-llama", cache_dir=test_cache_dir).encode(PROBE, use_embedding_cache=False)
    assert np.abs(trained - base).max() > 1e-3  # training changed the vectors
    for encoder in (
        Encoder.from_pretrained(str(out / "final"), cache_dir=test_cache_dir),  # the folder alone
        Encoder.from_pretrained("tiny-random-llama", adapter=str(out / "final"), cache_dir=test_cache_dir),
        Encoder.from_pretrained(str(out / "best"), cache_dir=test_cache_dir),  # best = step 4 here
    ):
        assert encoder.adapter_identity and encoder.adapter_identity["weights"].startswith("adapter-sha256:")
        np.testing.assert_allclose(encoder.encode(PROBE, use_embedding_cache=False), trained, atol=1e-5)


def test_cli_encode_and_eval_with_adapter(tmp_path, triplets_csv, test_cache_dir, data_dir, monkeypatch):
    from prompteol import Encoder
    from prompteol.cli.main import main

    monkeypatch.setenv("PROMPTEOL_CACHE", str(test_cache_dir))
    out = tmp_path / "run"
    train(_cfg(triplets_csv, out, max_steps=1, save_every=0), cache_dir=test_cache_dir, progress=False)
    src = tmp_path / "in.txt"
    src.write_text("\n".join(PROBE) + "\n")
    want = Encoder.from_pretrained(str(out / "final"), cache_dir=test_cache_dir).encode(PROBE, use_embedding_cache=False)
    for args in (["--model", "tiny-random-llama", "--adapter", str(out / "final")], ["--model", str(out / "final")]):
        vec_file = tmp_path / "v.npy"
        assert main(["encode", str(src), "-o", str(vec_file), "--no-cache", "--no-progress", *args]) == 0
        np.testing.assert_allclose(np.load(vec_file), want, atol=1e-5)
    results = tmp_path / "eval.json"
    # float32, as the scorer below (eval's default is the machine's fast precision and backend)
    args = ["eval", "--model", "tiny-random-llama", "--adapter", str(out / "final"), "--tasks", "STSBenchmark-dev",
            "--data-dir", str(data_dir), "--no-cache", "--no-progress", "-o", str(results), "--dtype", "float32"]  # fmt: skip
    assert main(args) == 0
    res = json.loads(results.read_text())
    assert res["encoder"]["adapter_identity"]["weights"].startswith("adapter-sha256:")
    trained = Encoder.from_pretrained(str(out / "final"), cache_dir=test_cache_dir)
    from prompteol.train.sts_dev import make_scorer

    assert res["tasks"]["STSBenchmark-dev"]["score"] == pytest.approx(make_scorer(str(data_dir))(trained), abs=1e-6)


def test_cli_train_end_to_end(tmp_path, triplets_csv, test_cache_dir, data_dir, monkeypatch, capsys):
    from prompteol.cli.main import main

    monkeypatch.setenv("PROMPTEOL_CACHE", str(test_cache_dir))
    out = tmp_path / "run"
    args = ["train", "--model", "tiny-random-llama", "--data", str(triplets_csv), "--output", str(out),
            "--batch-size", "4", "--micro-batch-size", "2", "--lora-r", "4", "--max-steps", "2", "--warmup-steps", "1",
            "--eval-every", "2", "--eval-data", str(data_dir), "--save-every", "1", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    shown = capsys.readouterr().out
    assert "before" in shown and "best (step 2)" in shown
    assert (out / "final" / "adapter_config.json").is_file() and (out / "best" / "prompteol_train.json").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "STSBenchmark-dev" and -100 <= summary["before"] <= 100 and summary["best_step"] == 2
    assert json.loads((out / "prompteol_train.json").read_text())["train"]["micro_batch_size"] == 2
    again = ["train", "--model", "tiny-random-llama", "--data", str(triplets_csv), "--output", str(out), "--batch-size", "4",
             "--eval-every", "0"]  # fmt: skip
    assert main(again) == 2
    assert "already holds a training run" in capsys.readouterr().err
    assert main(["train", "--data", str(triplets_csv)]) == 2
    assert "needs --model" in capsys.readouterr().err


def test_stsb_dev_scorer_is_the_harness(tiny_encoder, data_dir, tmp_path, monkeypatch):
    from prompteol.errors import DataError
    from prompteol.evaluation import evaluate
    from prompteol.train.sts_dev import make_scorer

    harness = evaluate(tiny_encoder, tasks=["STSBenchmark-dev"], data_dir=data_dir)["tasks"]["STSBenchmark-dev"]
    assert harness["n"] == 1500
    assert make_scorer(str(data_dir))(tiny_encoder) == pytest.approx(harness["score"], abs=1e-9)
    monkeypatch.delenv("PROMPTEOL_DATA", raising=False)
    with pytest.raises(DataError, match="--eval-data DIR .* or --eval-every 0"):
        make_scorer(None)
    with pytest.raises(DataError):
        make_scorer(str(tmp_path))  # not a SentEval root


def test_bad_data_fails_before_any_model_is_loaded(tmp_path, monkeypatch):
    import prompteol.train.lora as lora

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the data was checked")

    monkeypatch.setattr(lora, "build_training_encoder", no_model)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"sent0": "a", "sent1": "b", "hard_neg": "c"}\n{"sent0": "a", "hard_neg": "c"}\n')
    with pytest.raises(TripletDataError, match="line 2: sent1 is missing"):
        train(_cfg(bad, tmp_path / "out"))
    with pytest.raises(Exception, match="fewer than one global batch of 4"):
        train(_cfg(bad, tmp_path / "out", skip_bad_rows=True))
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the error is for machines without CUDA")
def test_load_in_4bit_without_cuda_is_a_clear_error(tmp_path, triplets_csv, capsys):
    with pytest.raises(ConfigError, match=r"--load-in-4bit \(QLoRA\).*CUDA GPU.*Drop --load-in-4bit"):
        train(_cfg(triplets_csv, tmp_path / "out", load_in_4bit=True))
    from prompteol.cli.main import main

    args = ["train", "--model", "tiny-random-llama", "--data", str(triplets_csv), "--load-in-4bit", "--output",
            str(tmp_path / "out")]  # fmt: skip
    assert main(args) == 2
    assert "need a CUDA GPU" in capsys.readouterr().err


def test_config_validation():
    with pytest.raises(ConfigError, match="batch_size should be a positive int, got 0"):
        TrainConfig.build(model="m", data="d.csv", batch_size=0)
    with pytest.raises(ConfigError, match="lora_dropout should be in"):
        TrainConfig.build(model="m", data="d.csv", lora_dropout=1.5)
    with pytest.raises(ConfigError, match="not divisible by the 3 processes"):
        TrainConfig.build(model="m", data="d.csv", batch_size=256).world_batch(3)
    cfg = TrainConfig.build(model="m", data="d.csv", load_in_4bit=True)
    assert cfg.dtype == "float16"  # the NF4 compute dtype
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown training config keys"):
        TrainConfig.from_dict({"model": "m", "data": "d", "lr_typo": 1})
