"""``prompteol scale``: the sweep (cells, resume, failures, dry run), the memory rule, report and import.

Tiny random models on STS13 only; the embedding cache of the shared test cache makes reruns fast.
"""

from __future__ import annotations

import csv
import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from prompteol.cli.main import main

MODELS = ("tiny-random-llama", "tiny-random-opt")
TASK = "STS16"  # the smallest STS task (1,867 sentences)
SLUG = "sts16-test"


@pytest.fixture(autouse=True)
def _env(monkeypatch, test_cache_dir):
    """Each test's PROMPTEOL_CACHE (main() sets it from --cache-dir) is restored; the hub is never tried."""
    monkeypatch.setenv("PROMPTEOL_CACHE", str(test_cache_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _cpu_without_bf16(monkeypatch)


def _cpu_without_bf16(mp) -> None:
    """``--dtype auto`` picks float32 whatever the test machine's CPU (its rule is tested in test_fused.py)."""
    import prompteol.encoder.precision as precision

    mp.setattr(precision, "native_bf16", lambda: False)


def _sweep_argv(cache, data_dir, out, models=MODELS, demos="none,paper", *extra):
    return ["--threads", "1", "--cache-dir", str(cache), "scale", "--models", ",".join(models), "--demos", demos,
            "--tasks", TASK, "--data-dir", str(data_dir), "-o", str(out), "--no-progress", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, data_dir, test_cache_dir):
    """One 2 models x 2 demonstration settings sweep, shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("sweep") / "cells"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PROMPTEOL_CACHE", str(test_cache_dir))
        mp.setenv("HF_HUB_OFFLINE", "1")
        _cpu_without_bf16(mp)
        code = main(_sweep_argv(test_cache_dir, data_dir, out))
    return out, code


def _cells(folder: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def _no_model_load(monkeypatch):
    from prompteol.encoder import Encoder

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(Encoder, "from_config", refuse)


# ------------------------------------------------------------------------------------ the sweep
def test_sweep_writes_one_full_record_per_cell(sweep):
    out, code = sweep
    assert code == 0
    cells = _cells(out)
    assert sorted(cells) == sorted(f"{m}__{d}__L-1__{SLUG}.json" for m in MODELS for d in ("none", "paper"))
    assert not list(out.glob(".*")), "no temporary file left behind"
    for name, rec in cells.items():
        # the full eval record ...
        assert rec["schema"] == "prompteol.eval/1" and rec["mode"] == "test"
        assert isinstance(rec["tasks"][TASK]["score"], float) and rec["tasks"][TASK]["n"] == 1186
        assert {"encoder", "protocol", "data", "versions", "elapsed_s"} <= set(rec)
        # ... plus the cell block
        c = rec["cell"]
        assert c["status"] == "ok" and c["error"] is None and c["id"] + ".json" == name
        assert c["model"] == rec["encoder"]["model"] and c["layer"] == -1 and c["tasks"] == TASK
        assert c["dtype"] == "float32" == rec["encoder"]["dtype"] and c["dtype_requested"] == "auto"
        assert c["memory"]["dtype"] == "float32" and c["memory"]["estimates"]["float32"]["total"] > 0
        assert c["num_parameters"] == rec["encoder"]["num_parameters"] and c["num_parameters_source"] == "counted after load"
        assert c["wall_s"] > 0 and c["command"].startswith("prompteol ") and "scale" in c["command"]
        assert c["host"]["hostname"] and c["host"]["torch_threads"] == 1 and c["host"]["cpus"] >= 1
        assert c["demonstrations"] == rec["encoder"]["demonstrations"]
        if c["demo"] == "paper":  # tiny models: the closest OPT size is 125M
            assert c["demo_preset"] == "paper-opt-125m"
            assert c["demonstrations"] == [{"sentence": "A man is smoking.", "word": "Smoking"}]
        else:
            assert c["demonstrations"] == [] and c["demo_preset"] is None
    llama = cells[f"tiny-random-llama__none__L-1__{SLUG}.json"]["tasks"][TASK]["score"]
    assert llama != cells[f"tiny-random-llama__paper__L-1__{SLUG}.json"]["tasks"][TASK]["score"]


def test_rerun_skips_finished_cells_without_loading_a_model(sweep, data_dir, test_cache_dir, tmp_path, monkeypatch,
                                                            capsys):  # fmt: skip
    out = tmp_path / "cells"
    shutil.copytree(sweep[0], out)
    before = {p.name: p.read_bytes() for p in out.glob("*.json")}
    capsys.readouterr()
    _no_model_load(monkeypatch)
    assert main(_sweep_argv(test_cache_dir, data_dir, out)) == 0
    text = capsys.readouterr().out
    assert text.count("done (skipped) │") == 4 and "4 already done (skipped), 0 failed" in text
    assert {p.name: p.read_bytes() for p in out.glob("*.json")} == before


def test_failed_cells_are_recorded_the_others_complete(data_dir, test_cache_dir, tmp_path, monkeypatch, capsys):
    """An unknown model, an unknown preset and an exception while evaluating: each cell failed, the sweep goes on."""
    import prompteol.evaluation as evaluation

    real = evaluation.evaluate

    def flaky(encoder, *args, **kwargs):
        if encoder.config.demonstrations:
            raise RuntimeError("boom while evaluating")
        return real(encoder, *args, **kwargs)

    monkeypatch.setattr(evaluation, "evaluate", flaky)
    out = tmp_path / "cells"
    argv = _sweep_argv(test_cache_dir, data_dir, out, ("tiny-random-llama", "./no/such/model"), "none,paper,nosuchpreset")
    assert main(argv) == 1
    text = capsys.readouterr().out
    cells = _cells(out)
    assert len(cells) == 6
    status = {name.split("__L")[0]: rec["cell"]["status"] for name, rec in cells.items()}
    assert status == {"tiny-random-llama__none": "ok", "tiny-random-llama__paper": "failed",
                      "tiny-random-llama__nosuchpreset": "failed", "model__none": "failed", "model__paper": "failed",
                      "model__nosuchpreset": "failed"}  # fmt: skip
    err = {name.split("__L")[0]: rec["cell"]["error"] for name, rec in cells.items()}
    assert "boom while evaluating" in err["tiny-random-llama__paper"]
    assert "unknown demonstration preset 'nosuchpreset'" in err["tiny-random-llama__nosuchpreset"]
    assert "no such file or folder" in err["model__none"]
    assert "traceback" in cells[f"tiny-random-llama__paper__L-1__{SLUG}.json"]["cell"]
    assert "1 ok" in text and "5 failed" in text and "retried on the next run" in text

    # the next run keeps the finished cell and runs the failed ones again
    monkeypatch.setattr(evaluation, "evaluate", real)
    ok_before = (out / f"tiny-random-llama__none__L-1__{SLUG}.json").read_bytes()
    assert main(argv) == 1
    text = capsys.readouterr().out
    assert "to run again (failed before)" in text and "1 already done (skipped)" in text
    assert (out / f"tiny-random-llama__none__L-1__{SLUG}.json").read_bytes() == ok_before
    assert _cells(out)[f"tiny-random-llama__paper__L-1__{SLUG}.json"]["cell"]["status"] == "ok"


def test_dry_run_prints_cells_dtype_and_estimate_and_writes_nothing(data_dir, test_cache_dir, tmp_path, capsys):
    out = tmp_path / "cells"
    argv = _sweep_argv(test_cache_dir, data_dir, out, ("tiny-random-llama",), "none,A man, a plan.|Panama", "--dry-run")
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert not out.exists()
    assert f"tiny-random-llama__none__L-1__{SLUG}" in text and "tiny-random-llama__demo-panama-" in text
    assert "float32" in text and "sentences/s on the probe" in text and "1,867" in text
    assert " s " in text or " s│" in text  # an estimate in seconds
    assert "2 to run" in text


def test_cli_needs_models_and_output(capsys):
    assert main(["scale", "-o", "x"]) == 2
    assert "--models" in capsys.readouterr().err
    assert main(["scale", "-m", "tiny-random-llama"]) == 2
    assert "--output" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ cells and names
def test_cell_names_and_demo_settings():
    from prompteol.errors import ConfigError
    from prompteol.scale.grid import Cell, build_cells, parse_demo_settings, parse_layers, resolve_demo

    assert parse_demo_settings(["none,paper", "A man, a plan.|Panama,stsb-dev"]) == [
        "none", "paper", "A man, a plan.|Panama", "stsb-dev"]  # fmt: skip
    with pytest.raises(ConfigError, match="neither a setting"):
        parse_demo_settings("none,two words")
    assert parse_layers("-1, 6,6") == [-1, 6]
    from prompteol.cli.main import build_parser

    args = build_parser().parse_args(["scale", "--layers", "-1,1", "2", "--layers=-2", "-m", "a", "-m", "b,c"])
    assert parse_layers(args.layers) == [-1, 1, 2, -2] and args.models == ["a", "b,c"]
    assert Cell("facebook/opt-1.3b", "paper", -1, "sts", "test").id == "facebook--opt-1.3b__paper__L-1__sts-test"
    assert Cell("/models/My Model.gguf", "none", 3, "STS12,MR", "fast").id == "my-model-gguf__none__L3__sts12+mr-fast"
    explicit = Cell("smollm2-135m", "A man is smoking.|Smoking", -1, "all", "test").id
    assert explicit.startswith("smollm2-135m__demo-smoking-") and "|" not in explicit
    default, tagged = (build_cells(["m"], ["none"], [], "sts", "test", opts)[0].id
                       for opts in ({"pooling": "last"}, {"pooling": "mean"}))  # fmt: skip
    assert default == "m__none__L-1__sts-test" and tagged.startswith("m__none__L-1__sts-test__o")
    # the transfer classifier and seeds name a cell apart, but only when it runs transfer tasks, and only off default
    from pathlib import Path

    from prompteol.scale.run import SweepOptions

    def cell_id(tasks, **kw):
        opts = SweepOptions(models=["m"], demos=["none"], output=Path("."), tasks=tasks, mode="fast", **kw)
        return build_cells(["m"], ["none"], [], tasks, "fast", opts.tag_options())[0].id

    assert cell_id("transfer") == cell_id("transfer", classifier="lbfgs", seeds=1) == "m__none__L-1__transfer-fast"
    ids = {cell_id("transfer", classifier="senteval"), cell_id("transfer", classifier="newton"),
           cell_id("transfer", seeds=5), cell_id("MR,STS12", classifier="senteval")}  # fmt: skip
    assert len(ids) == 4 and all("__o" in i for i in ids)
    assert cell_id("sts", classifier="senteval", seeds=3) == "m__none__L-1__sts-fast"  # STS has no classifier
    assert resolve_demo("paper", "smollm2-135m") == ("paper-opt-125m", [resolve_demo("paper-opt-125m", "x")[1][0]])
    assert resolve_demo("default", "smollm2-135m")[0] == "searched-leakfree"
    assert resolve_demo("paper", "anything", num_parameters=2_600_000_000)[0] == "paper-opt-2.7b"
    with pytest.raises(ConfigError, match="searched-stsb-dev"):
        resolve_demo("stsb-dev", "tiny-random-llama")
    with pytest.raises(ConfigError, match="would share the file"):
        build_cells(["/a/m", "/b/m"], ["none"], [], "sts", "test")


# ------------------------------------------------------------------------------------ memory rule
GIB = 2**30


def _free(n):
    return lambda device, quantization=None: {"cpu": (n, "test")}


def test_memory_rule_float32_bfloat16_or_refuse(monkeypatch):
    from prompteol.scale import memory
    from prompteol.scale.memory import ModelSize, choose_dtype

    size = ModelSize(1_000_000_000, 2048, "test")  # float32 ~3.7 GiB + activations + overhead; bfloat16 ~1.9 GiB
    kw = {"batch_size": 32, "prompt_tokens": 64}
    assert choose_dtype(size, "auto", available=_free(8 * GIB), **kw).dtype == "float32"
    d = choose_dtype(size, "auto", available=_free(3 * GIB), **kw)
    assert d.dtype == "bfloat16" and "float32 would need" in d.reason
    refused = choose_dtype(size, "auto", available=_free(1 * GIB), **kw)
    assert refused.refused and "needs" in refused.reason and "1.0 GiB free" in refused.reason
    assert choose_dtype(size, "bfloat16", available=_free(8 * GIB), **kw).dtype == "bfloat16"  # explicit: as given
    assert choose_dtype(size, "float32", available=_free(3 * GIB), **kw).refused  # ... unless it cannot fit
    unknown = choose_dtype(ModelSize(None, None, "unknown: no config"), "auto", available=_free(1), **kw)
    assert unknown.dtype == "float32" and not unknown.checked
    # the estimate's terms: weights + batch x tokens x hidden x factor x bytes + overhead
    est = memory.estimate_need(size, "float32", 32, 64)
    assert est.weights == 4_000_000_000 and est.activations == 32 * 64 * 2048 * memory.ACTIVATION_FACTOR * 4
    assert est.total == est.weights + est.activations + memory.OVERHEAD_BYTES
    assert memory.estimate_need(size, "float32", 32, 64, max_batch_tokens=128).activations < est.activations
    # choose_dtype reads the free memory through available_memory when not given
    monkeypatch.setattr(memory, "available_memory", _free(3 * GIB))
    assert choose_dtype(size, "auto", **kw).dtype == "bfloat16"
    # on a CPU with native bfloat16, auto starts from bfloat16 (the fast precision) even when float32 fits
    import prompteol.encoder.precision as precision

    monkeypatch.setattr(precision, "native_bf16", lambda: True)
    assert choose_dtype(size, "auto", available=_free(8 * GIB), **kw).dtype == "bfloat16"


def test_memory_sources(tmp_path, monkeypatch):
    """MemAvailable from /proc/meminfo; parameters from safetensors headers whatever the stored dtype."""
    from prompteol.encoder import limits
    from prompteol.models import model_size
    from prompteol.scale import memory

    info = tmp_path / "meminfo"
    info.write_text("MemTotal:       24683584 kB\nMemAvailable:   2048 kB\n")
    assert limits._meminfo_available(str(info)) == 2048 * 1024
    assert limits._meminfo_available(str(tmp_path / "none")) is None
    for stored, code in (("bfloat16", "BF16"), ("float32", "F32")):
        folder = tmp_path / stored
        folder.mkdir()
        width = memory.BYTES_PER_PARAMETER[stored]
        header = {"a.weight": {"dtype": code, "shape": [10, 20], "data_offsets": [0, 200 * width]},
                  "lm_head.weight": {"dtype": code, "shape": [5, 20], "data_offsets": [200 * width, 300 * width]},
                  "__metadata__": {"format": "pt"}}  # fmt: skip
        blob = json.dumps(header).encode()
        (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob + b"\0" * (300 * width))
        (folder / "config.json").write_text(json.dumps({"hidden_size": 20}))
        size = model_size.folder_size(folder)
        assert (size.num_parameters, size.stored_dtype, size.hidden_size) == (200, stored, 20)  # no LM head
    assert memory.model_size("smollm2-135m").num_parameters == 134_500_000  # the registry, nothing pulled
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "llama")
    writer.add_embedding_length(32)
    writer.add_tensor("token_embd.weight", np.zeros((10, 32), np.float32))
    writer.add_tensor("blk.0.attn_q.weight", np.zeros((32, 32), np.float16))
    writer.add_tensor("output.weight", np.zeros((10, 32), np.float32))  # the LM head: not loaded
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    size = memory.model_size(str(tmp_path / "m.gguf"))
    assert (size.num_parameters, size.hidden_size, size.source) == (320 + 1024, 32, "gguf")
    opt = model_size.config_size({"model_type": "opt", "hidden_size": 768, "ffn_dim": 3072, "num_hidden_layers": 12,
                              "num_attention_heads": 12, "vocab_size": 50272, "max_position_embeddings": 2048})  # fmt: skip
    assert abs(opt.num_parameters - 125_239_296) / 125_239_296 < 0.01  # OPT-125M's base model
    monkeypatch.setattr(limits, "_meminfo_available", lambda path="/proc/meminfo": None)
    assert memory.cpu_available()[1] in ("psutil", "cgroup limit - usage") or memory.cpu_available()[0] is None


def test_sweep_refuses_a_cell_that_cannot_fit(data_dir, test_cache_dir, tmp_path, monkeypatch, capsys):
    from prompteol.scale import memory

    monkeypatch.setattr(memory, "available_memory", _free(100 * 2**20))
    _no_model_load(monkeypatch)
    out = tmp_path / "cells"
    assert main(_sweep_argv(test_cache_dir, data_dir, out, ("tiny-random-llama",), "none")) == 1
    (rec,) = _cells(out).values()
    assert rec["cell"]["status"] == "failed" and "refused by the memory rule" in rec["cell"]["error"]
    assert "100.0 MiB free" in rec["cell"]["error"] and rec["cell"]["memory"]["dtype"] is None


# ------------------------------------------------------------------------------------ report
def _synthetic(folder: Path) -> None:
    """Cells with every STS and transfer task (as a full sweep would write), and one failed cell."""
    from prompteol.evaluation.tasks import TASK_GROUPS
    from prompteol.scale.grid import CELL_SCHEMA, Cell, write_json_atomic

    for i, (model, params) in enumerate((("smollm2-135m", 134_500_000), ("qwen2.5-coder-1.5b", 1_780_000_000))):
        for j, demo in enumerate(("none", "paper")):
            cell = Cell(model, demo, -1, "all", "fast")
            tasks = {t: {"score": 50.0 + i * 10 + j + k / 7} for k, t in enumerate(TASK_GROUPS["all"])}
            tasks["MRPC"]["f1"] = 80.5
            averages = {g: sum(tasks[t]["score"] for t in TASK_GROUPS[g]) / 7 for g in ("sts", "transfer")}
            block = {"schema": CELL_SCHEMA, "id": cell.id, "status": "ok", "model": model, "demo": demo,
                     "demonstrations": [] if demo == "none" else [{"sentence": "A man is smoking.", "word": "Smoking"}],
                     "demo_preset": None if demo == "none" else "paper-opt-125m", "layer": -1, "tasks": "all",
                     "mode": "fast", "dtype": "float32", "num_parameters": params, "wall_s": 123.4}  # fmt: skip
            write_json_atomic(cell.path(folder), {"mode": "fast", "tasks": tasks, "averages": averages, "cell": block})
    bad = Cell("gemma3-270m", "default", -1, "all", "fast")
    write_json_atomic(bad.path(folder), {"cell": {"schema": CELL_SCHEMA, "id": bad.id, "status": "failed",
                      "error": "refused by the memory rule: not enough memory", "model": "gemma3-270m",
                      "demo": "default", "layer": -1, "num_parameters": 268_000_000}})  # fmt: skip


def test_report_from_the_cell_files_alone(sweep, tmp_path, monkeypatch, capsys):
    from prompteol.scale.report import PLOT_FILES

    folder = tmp_path / "cells"
    shutil.copytree(sweep[0], folder)
    _synthetic(folder)
    _no_model_load(monkeypatch)
    nowhere = tmp_path / "no-cache"
    monkeypatch.setenv("PROMPTEOL_CACHE", str(nowhere))
    assert main(["scale", "report", str(folder)]) == 0
    assert not nowhere.exists()  # neither a model nor the embedding cache was touched
    assert "9 cells (1 failed)" in capsys.readouterr().out
    files = _cells(folder)
    with open(folder / "results.csv", newline="") as f:
        rows = {r["file"]: r for r in csv.DictReader(f)}
    assert set(rows) == set(files)
    for name, rec in files.items():
        row = rows[name]
        assert row["status"] == rec["cell"]["status"] and row["model"] == rec["cell"]["model"]
        for task, res in rec.get("tasks", {}).items():
            assert float(row[task]) == res["score"]  # the numbers are the cell files', to the last digit
        for group, value in rec.get("averages", {}).items():
            assert float(row[f"{group}_avg"]) == value
    md = (folder / "results.md").read_text()
    assert "**failed**" in md and "refused by the memory rule: not enough memory" in md
    assert "| qwen2.5-coder-1.5b | 1.78B | paper (paper-opt-125m: -> Smoking) |" in md
    sts_avg = files["qwen2.5-coder-1.5b__paper__L-1__all-fast.json"]["averages"]["sts"]
    assert f"{sts_avg:.2f}" in md and "transfer avg" in md and "OPT-1.3B" in md
    for name in PLOT_FILES:
        data = (folder / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
        width, height = struct.unpack(">II", data[16:24])
        assert 700 <= width <= 2000 and 400 <= height <= 1200
    from prompteol.scale import plots

    for name in ("plot_sts_avg", "plot_transfer_avg", "plot_sts_tasks"):  # drawn above; here only where files go
        monkeypatch.setattr(plots, name, lambda rows, path: path.write_bytes(b"png"))
    other = tmp_path / "report"
    assert main(["scale", "report", str(folder), "-o", str(other)]) == 0
    assert sorted(p.name for p in other.iterdir()) == sorted(["results.csv", "results.md", *PLOT_FILES])


def test_report_needs_matplotlib(tmp_path, monkeypatch):
    from prompteol.errors import MissingExtraError
    from prompteol.scale.report import build_report

    _synthetic(tmp_path)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    with pytest.raises(MissingExtraError, match=r"prompteol\[plot\]"):
        build_report(tmp_path)
    assert not (tmp_path / "results.csv").exists()


# ------------------------------------------------------------------------------------ import
def test_import_results_file(sweep, tmp_path, capsys):
    from prompteol.scale.grid import cell_state

    rec = json.loads((sweep[0] / f"tiny-random-llama__none__L-1__{SLUG}.json").read_text())
    del rec["cell"]
    rec["label"] = "tiny-random-llama"  # as `prompteol eval -o` writes it
    src = tmp_path / "eval-results.json"
    src.write_text(json.dumps(rec))
    out = tmp_path / "cells"
    assert main(["scale", "import", str(src), "--demo", "none", "-o", str(out)]) == 0
    path = out / f"tiny-random-llama__none__L-1__{SLUG}.json"  # the name a sweep gives this cell
    cell = json.loads(path.read_text())
    assert cell_state(path) == "done" and cell["cell"]["imported_from"] == "eval-results.json"
    assert cell["cell"]["status"] == "ok" and cell["tasks"] == rec["tasks"] and cell["cell"]["dtype"] == "float32"
    assert main(["scale", "import", str(src), "--demo", "none", "-o", str(out)]) == 2  # finished: --force needed
    assert "--force" in capsys.readouterr().err
    assert main(["scale", "import", str(src), "--demo", "paper", "-o", str(tmp_path / "x")]) == 2
    assert "computed with []" in capsys.readouterr().err
    # a record whose transfer tasks used another classifier is a cell of its own name (never an lbfgs cell's)
    other = {**rec, "tasks": {**rec["tasks"], "MR": {"score": 80.0, "classifier": "senteval"}},
             "protocol": {"transfer": {"classifier": "senteval", "seeds": [1111]}}}  # fmt: skip
    src.write_text(json.dumps(other))
    assert main(["scale", "import", str(src), "--demo", "none", "-o", str(tmp_path / "s")]) == 0
    (imported,) = (tmp_path / "s").glob("*.json")
    assert imported.name.startswith("tiny-random-llama__none__L-1__sts16+mr-test__o")
    src.write_text(json.dumps(rec))
    del rec["versions"], rec["encoder"]["dtype"]
    src.write_text(json.dumps(rec))
    assert main(["scale", "import", str(src), "--demo", "none", "-o", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert "lacks encoder.dtype, versions" in err and not (tmp_path / "y").exists()


def test_help_imports_neither_torch_nor_matplotlib():
    probe = ("import sys; from prompteol.cli.main import build_parser; build_parser().format_help(); "
             "import prompteol.scale; print('torch' in sys.modules, 'matplotlib' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# ------------------------------------------------------------------------------------ per-task resume
def test_a_stopped_cell_resumes_from_its_partial_record(data_dir, test_cache_dir, tmp_path, monkeypatch, capsys):
    """A stop after the first task keeps it in <cell>.partial.json; the rerun evaluates only the other task."""
    import prompteol.evaluation as evaluation

    real = evaluation.evaluate
    seen: list[tuple[list[str], list[str]]] = []

    def stopping(encoder, tasks, *args, on_task=None, done=None, **kwargs):
        def stop_after_first(name, res):
            on_task(name, res)
            raise KeyboardInterrupt  # as a Ctrl-C (or a kill) right after the first task was recorded

        seen.append(([t.name for t in tasks], sorted(done or {})))
        return real(encoder, tasks, *args, on_task=stop_after_first, done=done, **kwargs)

    monkeypatch.setattr(evaluation, "evaluate", stopping)
    out = tmp_path / "cells"
    argv = ["--threads", "1", "--cache-dir", str(test_cache_dir), "scale", "--models", "tiny-random-llama",
            "--demos", "none", "--tasks", "STS16,STS13", "--data-dir", str(data_dir), "-o", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 130  # "interrupted"
    cell = out / "tiny-random-llama__none__L-1__sts16+sts13-test.json"
    partial = out / "tiny-random-llama__none__L-1__sts16+sts13-test.partial.json"
    assert not cell.exists() and partial.exists()
    rec = json.loads(partial.read_text())
    assert rec["partial"]["schema"] == "prompteol.scale-partial/1" and list(rec["tasks"]) == ["STS16"]
    ident = rec["partial"]["identity"]
    assert ident["fingerprint"] and ident["dtype"] == "float32" and ident["demonstrations"] == [] and ident["layer"] == -1
    first = rec["tasks"]["STS16"]
    assert first["sentences"] == 1867 and first["run"]["host"]["torch_threads"] == 1

    monkeypatch.setattr(evaluation, "evaluate", lambda *a, **k: (seen.append(([], sorted(k["done"]))), real(*a, **k))[1])
    assert main(argv) == 0
    assert seen[-1] == ([], ["STS16"])  # the rerun was handed the finished task
    assert "resuming from" in capsys.readouterr().out
    assert cell.exists() and not partial.exists()
    done = json.loads(cell.read_text())
    assert done["tasks"]["STS16"]["score"] == first["score"] and "run" not in done["tasks"]["STS16"]
    assert set(done["tasks"]) == {"STS16", "STS13"} and list(done["cell"]["resumed_tasks"]) == ["STS16"]
    assert done["cell"]["wall_s"] >= first["elapsed_s"]["total"]


def test_a_partial_record_of_another_encoder_is_not_reused(data_dir, test_cache_dir, tmp_path, capsys):
    out = tmp_path / "cells"
    partial = out / f"tiny-random-llama__none__L-1__{SLUG}.partial.json"
    out.mkdir()
    fake = {"partial": {"schema": "prompteol.scale-partial/1", "identity": {"cell": "x", "fingerprint": "other"}},
            "tasks": {TASK: {"score": 99.0, "sentences": 1, "elapsed_s": {"total": 1.0}}}}  # fmt: skip
    partial.write_text(json.dumps(fake))
    assert main(_sweep_argv(test_cache_dir, data_dir, out, ("tiny-random-llama",), "none")) == 0
    assert "was computed with another" in capsys.readouterr().out
    rec = json.loads((out / f"tiny-random-llama__none__L-1__{SLUG}.json").read_text())
    assert rec["tasks"][TASK]["score"] != 99.0 and "resumed_tasks" not in rec["cell"]


def test_two_sweeps_on_one_output_refuse(data_dir, test_cache_dir, tmp_path, capsys):
    from prompteol.fileio import FileLock

    out = tmp_path / "cells"
    with FileLock(out / ".scale.lock", "held"):
        assert main(_sweep_argv(test_cache_dir, data_dir, out, ("tiny-random-llama",), "none")) == 2
    assert "another `prompteol scale` is writing into" in capsys.readouterr().err


def test_plot_series_one_line_per_setting_whatever_layer_each_model_reads():
    """A preset that picks its layer per model is one line; plain PromptEOL at several layers of one model is a line
    at the layer most models share and markers for the others; a colour per setting."""
    from prompteol.scale.plots import _colors, _series

    def row(model, params, demo, layer, value):
        return {"status": "ok", "model": model, "num_parameters": params, "demo": demo, "layer": layer,
                "demonstrations": "", "sts_avg": value}  # fmt: skip

    rows = [row("a", 1e8, "none", -1, 60.0), row("b", 1e9, "none", -1, 70.0), row("a", 1e8, "none", -6, 62.0),
            row("a", 1e8, "best-training-free", -6, 74.0), row("b", 1e9, "best-training-free", -1, 76.0),
            row("b", 1e9, "paper", -1, 75.0), {**row("c", 2e9, "paper", -1, 1.0), "status": "failed"}]  # fmt: skip
    series = _series(rows, "sts_avg")
    assert list(series) == ["none, layer -1", "none, other layers", "best-training-free, its own layer per model",
                            "paper, layer -1"]  # fmt: skip
    assert series["none, layer -1"].joined and [p[1] for p in series["none, layer -1"].points] == [60.0, 70.0]
    assert not series["none, other layers"].joined and series["none, other layers"].points == [(1e8, 62.0, "a", -6)]
    btf = series["best-training-free, its own layer per model"]
    assert btf.joined and [(p[1], p[3]) for p in btf.points] == [(74.0, -6), (76.0, -1)]
    colors = _colors(series.values())
    assert list(colors) == ["none", "best-training-free", "paper"] and len(set(map(str, colors.values()))) == 3
    single = _series([row("a", 1e8, "none", -1, 60.0), row("b", 1e9, "none", -1, 70.0)], "sts_avg")
    assert list(single) == ["none"]  # one layer in the whole report: no layer in the label


def test_report_puts_transfer_cells_in_their_own_table(tmp_path):
    """A transfer-only cell (the study's stage f) is a row of the transfer table, not a row of blanks in the STS
    table; a cell of every task is in both; a failed transfer cell is marked in the transfer table."""
    from prompteol.evaluation.tasks import TASK_GROUPS
    from prompteol.scale.grid import CELL_SCHEMA, Cell, write_json_atomic
    from prompteol.scale.report import cell_rows, load_cells, to_markdown

    folder = tmp_path / "cells"
    _synthetic(folder)
    cell = Cell("smollm2-135m", "none", -1, "transfer", "fast")
    tasks = {t: {"score": 80.0 + k, "classifier": "lbfgs"} for k, t in enumerate(TASK_GROUPS["transfer"])}
    tasks["MRPC"].update(f1=81.25, fits=21, not_converged=21)  # every MRPC fit stopped at the iteration cap
    tasks["TREC"].update(fits=21, not_converged=0)
    block = {"schema": CELL_SCHEMA, "id": cell.id, "status": "ok", "model": "smollm2-135m", "demo": "none",
             "demonstrations": [], "demo_preset": None, "layer": -1, "tasks": "transfer", "mode": "fast",
             "dtype": "float32", "num_parameters": 134_500_000, "wall_s": 4000.0}  # fmt: skip
    write_json_atomic(cell.path(folder), {"mode": "fast", "tasks": tasks, "averages": {"transfer": 83.0}, "cell": block})
    bad = Cell("qwen2.5-coder-0.5b", "none", -1, "transfer", "fast")
    write_json_atomic(bad.path(folder), {"cell": {"schema": CELL_SCHEMA, "id": bad.id, "status": "failed",
                      "error": "killed", "model": "qwen2.5-coder-0.5b", "demo": "none", "layer": -1, "tasks": "transfer",
                      "num_parameters": 630_000_000}})  # fmt: skip
    rows = cell_rows(load_cells(folder))
    assert {r["id"]: r["classifier"] for r in rows}[cell.id] == "lbfgs"  # the plot's note says which classifier
    md = to_markdown(rows, "cells")
    assert f"From the cell files of `cells` ({len(rows)} cells)" in md  # every cell counted, both tables
    sts_part, _, rest = md.partition("Transfer tasks (")
    transfer_part = rest.split("Published for reference")[0]
    line = "| smollm2-135m | 134M | none | -1 | 80.00 | 81.00 | 82.00 | 83.00 | 84.00 | 85.00 | 86.00 / 81.25 | 83.00 | fast |"
    assert line in transfer_part and "66.7 min" in transfer_part
    assert "| fits at the L-BFGS iteration cap: MRPC 21/21 |" in transfer_part  # TREC's 0 of 21 is not a note
    assert {r["id"]: r["not_converged"] for r in rows}[cell.id] == "MRPC 21/21"
    assert "| qwen2.5-coder-0.5b | 630M | none | -1 | **failed** |" in transfer_part and "failed: killed" in transfer_part
    assert "qwen2.5-coder-0.5b" not in sts_part and sts_part.count("| smollm2-135m |") == 2  # the two "all" cells only
    assert transfer_part.count("| smollm2-135m |") == 3 and transfer_part.count("| qwen2.5-coder-1.5b |") == 2
