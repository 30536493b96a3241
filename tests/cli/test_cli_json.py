"""Machine-readable CLI output: ``eval --json``, ``cache info --json``, ``models list --json`` print one
JSON document on stdout (logs on stderr), and ``eval plot`` draws results files into an image."""

from __future__ import annotations

import json
import sys

import numpy as np
from conftest import require

from prompteol.cli.main import main


def _result(label: str, scores: dict[str, float], model: str = "tiny-random-llama") -> dict:
    tasks = {name: {"score": s, "main_score": "spearman_all"} for name, s in scores.items()}
    return {"schema": "prompteol.eval/1", "tasks": tasks, "averages": {"sts": float(np.mean(list(scores.values())))},
            "encoder": {"model": model}, "elapsed_s": 0.1, "label": label}  # fmt: skip


def test_eval_json_prints_the_results_document(data_dir, tmp_path, monkeypatch, capsys):
    import prompteol.evaluation
    from prompteol.cli import eval_cmd

    monkeypatch.setattr(eval_cmd, "build_encoder", lambda args, **kw: object())
    monkeypatch.setattr(prompteol.evaluation, "evaluate",
                        lambda encoder, tasks, **kw: _result("x", {"STS12": 50.0, "STS13": 60.0}))  # fmt: skip
    out = tmp_path / "res.json"
    capsys.readouterr()
    args = ["eval", "--model", "tiny-random-llama", "--tasks", "STS12,STS13", "--data-dir", str(data_dir),
            "--no-progress", "--json", "-o", str(out)]  # fmt: skip
    assert main(args) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)  # stdout is exactly one JSON document: no table, no log line
    assert doc["tasks"]["STS13"]["score"] == 60.0 and doc["label"] == "tiny-random-llama"
    assert doc == json.loads(out.read_text())  # the same document as -o writes
    assert "evaluating tiny-random-llama" in captured.err and "Spearman" not in captured.out


def test_cache_info_json(tmp_path, capsys):
    from prompteol.cache import EmbeddingCache
    from prompteol.paths import embeddings_db

    cache = EmbeddingCache(embeddings_db(tmp_path))
    cache.register("f" * 32, {"model": "tiny-random-llama", "layer_index": 1, "pooling": "last"})
    cache.put_many("f" * 32, ["a", "b"], np.ones((2, 4), dtype=np.float32))
    capsys.readouterr()
    assert main(["--cache-dir", str(tmp_path), "cache", "info", "--json", "--check"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["state"] == "ok" and doc["path"] == str(embeddings_db(tmp_path)) and doc["vectors"] == 2
    assert [(e["fingerprint"], e["vectors"]) for e in doc["encoders"]] == [("f" * 32, 2)]
    assert doc["encoders"][0]["config"]["model"] == "tiny-random-llama"
    assert doc["check"]["ok"] == 2 and doc["damaged_copies"]["count"] == 0
    assert main(["--cache-dir", str(tmp_path / "empty"), "cache", "info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["encoders"] == []


def test_models_list_json_is_one_document(capsys, test_cache_dir):
    capsys.readouterr()
    assert main(["--cache-dir", str(test_cache_dir), "models", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert isinstance(rows, list) and {"alias", "state", "path", "default"} <= set(rows[0])


# ---------------------------------------------------------------------------------------------- plot
def _write(tmp_path):
    single = tmp_path / "smollm2-135m_sts.json"
    single.write_text(json.dumps(_result("smollm2-135m", {"STS12": 58.4, "STS13": 73.1, "STSBenchmark": 60.5})))
    multi = tmp_path / "multi.json"
    multi.write_text(json.dumps({"schema": "prompteol.eval-multi/1", "runs": [
        _result("smollm2-135m", {"STS12": 61.8, "STS13": 74.9}),
        _result("all-minilm-l6-v2", {"STS12": 72.4, "STS13": 80.6, "STSBenchmark": 82.0}, model="all-minilm-l6-v2"),
    ]}))  # fmt: skip
    return single, multi


def test_eval_plot_writes_a_png(tmp_path, capsys):
    require("matplotlib")
    single, multi = _write(tmp_path)
    out = tmp_path / "plots" / "sts.png"
    assert main(["eval", "plot", str(single), str(multi), "-o", str(out), "--title", "STS"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert "(3 runs)" in capsys.readouterr().err
    assert sorted(p.name for p in out.parent.iterdir()) == ["sts.png"]  # no temporary file left


def test_plot_labels_runs_apart(tmp_path):
    from prompteol.evaluation.plot import _rows, load_runs

    single, multi = _write(tmp_path)
    runs = load_runs([single, multi])
    assert [r["_label"] for r in runs] == ["smollm2-135m (sts)", "smollm2-135m (multi)", "all-minilm-l6-v2"]
    tasks, scores = _rows(runs)
    assert tasks == ["STS12", "STS13", "STSBenchmark", "Avg sts"]
    assert scores[1][2] is None  # a task a run did not have: no bar


def test_eval_plot_errors(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad.json"
    bad.write_text('{"nothing": 1}')
    assert main(["eval", "plot", str(bad), "-o", str(tmp_path / "p.png")]) == 2
    assert "bad.json is not a `prompteol eval` results file" in capsys.readouterr().err
    single, _ = _write(tmp_path)
    assert main(["eval", "plot", str(single), "-o", str(tmp_path / "p.gif")]) == 2
    assert ".png, .svg or .pdf" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    assert main(["eval", "plot", str(single), "-o", str(tmp_path / "p.png")]) == 2
    assert "pip install 'prompteol[plot]'" in capsys.readouterr().err
    assert not (tmp_path / "p.png").exists()
