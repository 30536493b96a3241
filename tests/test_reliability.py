"""Reliability as a user meets it (issue 24): each case the issue found, one test (or more) each.

The cases are numbered as in the issue; docs/reliability.md lists what is checked and by which
test. Everything runs on the tiny random models at one torch thread; nothing here loads a real
model except the identity test of the real converted smollm2-135m folder, when it is pulled.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import require
from faults import _assert_one_line_error, refuse_model_loads

from prompteol.cli.main import main

MODEL = "tiny-random-llama"
TEXTS = ["A man is playing a guitar.", "Two dogs run in the park.", "", "Ünïcödé ✓"]


def _cli(capsys, *args) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


_one_line = _assert_one_line_error


@pytest.fixture
def no_model(monkeypatch):
    """Resolving or loading a model fails the test: every check must come before."""
    refuse_model_loads(monkeypatch, "a model was resolved or loaded before the options were checked",
                       "prompteol.cli.encode_cmd.build_encoder")


@pytest.fixture
def tiny(monkeypatch, tiny_encoder, test_cache_dir):
    """``prompteol encode`` on the session's tiny encoder (no reload per command)."""
    monkeypatch.setenv("PROMPTEOL_CACHE", str(test_cache_dir))
    monkeypatch.setattr("prompteol.cli.encode_cmd.build_encoder", lambda args, **kw: tiny_encoder)
    return tiny_encoder


def _encode(capsys, src, out, *more) -> tuple[int, str]:
    return _cli(capsys, "encode", "-m", MODEL, "--no-progress", "--no-cache", src, "-o", out, *more)


# ---------------------------------------------------------------------------------------------- case 1: BOM
BOM = b"\xef\xbb\xbf"


@pytest.mark.parametrize("fmt", ["txt", "jsonl", "stdin"])
def test_1_a_leading_bom_is_removed_from_files(tmp_path, capsys, tiny, monkeypatch, fmt):
    """Excel and Notepad start a file with a UTF-8 BOM: it says how the file is encoded, it is not
    part of sentence 1 (before: another vector, max diff 0.058; JSONL: refused)."""
    texts = TEXTS[:2] + TEXTS[3:]
    if fmt == "jsonl":
        body = "".join(json.dumps({"text": t}) + "\n" for t in texts).encode()
    else:
        body = ("\r\n".join(texts) + "\r\n").encode()  # (and Windows line endings)
    src = tmp_path / f"in.{'txt' if fmt == 'stdin' else fmt}"
    src.write_bytes(BOM + body)
    if fmt == "stdin":
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(BOM + body), encoding="utf-8",
                                                           errors="surrogateescape"))  # fmt: skip
        src = Path("-")
    out = tmp_path / "out.npy"
    code, err = _encode(capsys, src, out)
    assert code == 0, err
    np.testing.assert_allclose(np.load(out), tiny.encode(texts), atol=1e-6)


def test_1_the_library_keeps_a_bom_in_a_string(tiny_encoder):
    """The library encodes the strings it is given: a U+FEFF inside a string is text (documented)."""
    assert tiny_encoder.prompts.prepare(["\ufeffA man."])[0].startswith("\ufeff")


def test_1_a_bom_in_the_middle_of_a_jsonl_file_says_what_it_is(tmp_path, capsys, no_model):
    src = tmp_path / "joined.jsonl"
    src.write_bytes(b'{"text": "a"}\n' + BOM + b'{"text": "b"}\n')
    _one_line(*_encode(capsys, src, tmp_path / "o.npy"), "joined.jsonl line 2", "byte-order mark", "joined")


# ---------------------------------------------------------------------------------------------- case 2: devices
needs_cpu_only = pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="checks the messages of a CPU-only torch"
)


@needs_cpu_only
@pytest.mark.parametrize("device", ["cuda", "cuda:5", "gpu", "mps"])
@pytest.mark.parametrize("command", ["encode", "eval", "serve"])
def test_2_an_unavailable_device_is_one_line_before_any_model(tmp_path, capsys, no_model, command, device):
    src = tmp_path / "in.txt"
    src.write_text("a\n")
    args = {"encode": ["encode", src, "-o", tmp_path / "o.npy"], "eval": ["eval", "--tasks", "STS12"],
            "serve": ["serve"]}[command]  # fmt: skip
    line = _one_line(*_cli(capsys, *args, "--device", device), "--device")
    want = {"cuda": "CPU-only build", "cuda:5": "CPU-only build", "gpu": "is not a device",
            "mps": "not available"}[device]  # fmt: skip
    assert want in line
    if "CPU-only" in line:
        assert "pytorch.org" in line and "--device cpu" in line  # the install hint


def test_2_device_checks_count_gpus(monkeypatch):
    import torch

    from prompteol.cli.checks import check_device
    from prompteol.errors import ConfigError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_device("cuda:1")
    with pytest.raises(ConfigError, match=r"--device cuda:5: this machine has 2 GPUs \(cuda:0 .. cuda:1\)"):
        check_device("cuda:5")


# ---------------------------------------------------------------------------------------------- case 3: modes
@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield 0o640
    os.umask(old)


@pytest.mark.parametrize("out_name,chunk", [("o.npy", None), ("o.jsonl", None), ("o.parquet", None),
                                            ("o.npy", "2"), ("o.jsonl", "2")])  # fmt: skip
def test_3_encode_outputs_get_the_umask_mode(tmp_path, capsys, tiny, umask_027, out_name, chunk):
    src = tmp_path / "in.txt"
    src.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / out_name
    code, err = _encode(capsys, src, out, *(["--chunk-size", chunk] if chunk else []))
    assert code == 0, err
    assert out.stat().st_mode & 0o777 == umask_027


def test_3_eval_results_and_plots_get_the_umask_mode(tmp_path, capsys, monkeypatch, umask_027):
    import prompteol.evaluation as evaluation

    fake = {"tasks": {"STS12": {"score": 50.0, "main_score": "spearman_all", "spearman": {"all": 50.0}}},
            "averages": {}, "encoder": {"model": MODEL}, "elapsed_s": 0.1}  # fmt: skip
    monkeypatch.setattr(evaluation, "evaluate", lambda *a, **k: dict(fake))
    monkeypatch.setattr(evaluation, "verify_data", lambda *a, **k: {})
    monkeypatch.setattr(evaluation, "resolve_data_dir", lambda *a, **k: tmp_path)
    monkeypatch.setattr("prompteol.cli.eval_cmd._load", lambda *a, **k: object())
    out = tmp_path / "results.json"
    code, err = _cli(capsys, "eval", "--tasks", "STS12", "-o", out, "--no-progress")
    assert code == 0, err
    assert out.stat().st_mode & 0o777 == umask_027
    require("matplotlib")
    png = tmp_path / "plot.png"
    code, err = _cli(capsys, "eval", "plot", out, "-o", png)
    assert code == 0, err
    assert png.stat().st_mode & 0o777 == umask_027


def test_3_adapters_and_atomic_writes_get_the_umask_mode(tmp_path, umask_027, tiny_encoder):
    from prompteol.fileio import write_atomic, write_json_atomic

    assert write_json_atomic(tmp_path / "r.json", {"a": 1}).stat().st_mode & 0o777 == umask_027
    np_out = write_atomic(tmp_path / "v.npy", lambda tmp: np.save(tmp, np.zeros(3)))
    assert np_out.stat().st_mode & 0o777 == umask_027
    peft = require("peft")
    from prompteol.train.checkpoint import save_adapter

    model = peft.get_peft_model(tiny_encoder.model, peft.LoraConfig(r=2, target_modules=["q_proj"]))
    try:
        save_adapter(model, tmp_path / "adapter", {"base_model": MODEL})
    finally:
        model.unload()
    for f in (tmp_path / "adapter").iterdir():
        assert f.stat().st_mode & 0o777 == umask_027, f.name  # save_pretrained alone leaves the weights 0600


# ---------------------------------------------------------------------------------------------- cases 4, 6: ranges
@pytest.mark.parametrize("args,flag", [
    (["-b", "0"], "--batch-size"), (["-b", "-3"], "--batch-size"), (["--max-batch-tokens", "0"], "--max-batch-tokens"),
    (["--chunk-size", "0"], "--chunk-size"), (["--threads", "-1"], "--threads"), (["--threads", "0"], "--threads"),
])  # fmt: skip
def test_4_6_counts_below_one_are_refused_before_any_model(tmp_path, capsys, no_model, args, flag):
    """Before: -b 0 passed when every vector was cached, else failed after the model loaded blaming the
    input; --threads -1 was a traceback and --threads 0 was accepted."""
    src = tmp_path / "in.txt"
    src.write_text("a\n")
    _one_line(*_encode(capsys, src, tmp_path / "o.npy", *args), flag, "should be a whole number >= 1")


def test_4_shared_ranges_cover_commands_whose_flags_are_plain_ints(capsys, no_model):
    """`scale`'s --batch-size is declared as a plain int in its own module: the one validation step
    still refuses 0, from the shared declaration (options.SHARED_RANGES)."""
    _one_line(*_cli(capsys, "scale", "--models", MODEL, "-b", "0", "--dry-run"), "--batch-size", ">= 1")


# ---------------------------------------------------------------------------------------------- case 7: progress
def test_7_progress_in_a_log_is_lines_not_carriage_returns(capsys):
    from prompteol.progress import LineProgress

    with LineProgress(100, "encode", "sent", interval=0) as bar:
        for _ in range(4):
            bar.update(25)
    err = capsys.readouterr().err
    assert "\r" not in err and "encode: 25/100 sent (25%)" in err and "done in" in err.splitlines()[-1]


def test_7_cached_encoding_reports_progress_in_a_log(tiny_encoder, capsys, monkeypatch):
    import prompteol.progress as progress

    monkeypatch.setattr(progress, "LOG_INTERVAL_S", 0.0)
    tiny_encoder.encode([f"progress line {i}" for i in range(40)], batch_size=8, show_progress=True,
                        use_embedding_cache=False)  # fmt: skip
    err = capsys.readouterr().err  # (stderr is not a terminal under pytest)
    assert "\r" not in err and "encode: 8/40 sent" in err and "40/40 sent" in err


def test_7_eval_reports_each_task_and_what_an_interrupt_keeps(tmp_path, capsys, monkeypatch):
    import prompteol.evaluation as evaluation

    def evaluate(encoder, tasks, on_task=None, **kwargs):
        on_task("STS12", {"score": 58.36, "main_score": "spearman_all", "elapsed_s": {"total": 412.0}})
        raise KeyboardInterrupt

    class Enc:
        embedding_cache = type("C", (), {"path": tmp_path / "embeddings.sqlite"})()

    monkeypatch.setattr(evaluation, "evaluate", evaluate)
    monkeypatch.setattr(evaluation, "verify_data", lambda *a, **k: {})
    monkeypatch.setattr(evaluation, "resolve_data_dir", lambda *a, **k: tmp_path)
    monkeypatch.setattr("prompteol.cli.eval_cmd._load", lambda *a, **k: Enc())
    code, err = _cli(capsys, "eval", "--tasks", "STS12,STS13")
    assert code == 130
    assert "STS12 spearman_all = 58.36 (412 s; 1 of 2 tasks done)" in err.replace("\n", " ")
    assert "kept in the embedding cache" in err and "run the same command again to continue" in err
    assert str(tmp_path / "embeddings.sqlite") in err.replace("\n", "")


def test_7_gguf_conversion_bars_are_off_in_a_log(capsys):
    """transformers' conversion bars would fill a log with carriage returns: off unless on a terminal."""
    gguf_utils = pytest.importorskip("transformers.modeling_gguf_pytorch_utils")
    from transformers.utils import logging as hf_logging

    from prompteol.models.gguf import _conversion_bars

    with _conversion_bars(progress=True):  # (stderr is not a terminal here)
        for _ in gguf_utils.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors..."):
            pass
        assert not hf_logging.is_progress_bar_enabled()
    assert "\r" not in capsys.readouterr().err
    assert hf_logging.is_progress_bar_enabled()  # restored


# ---------------------------------------------------------------------------------------------- case 8: dependencies
@pytest.mark.parametrize("args,words", [
    (["--contrastive-alpha", "0.3"], ["--contrastive-alpha has no effect without --contrastive-layer"]),
    (["--contrastive-mode", "norm"], ["--contrastive-mode", "--contrastive-layer"]),
    (["--combine", "concat"], ["--combine has no effect without --prompt", "add --prompt TEMPLATE"]),
    (["--embed-filter-band", "top"], ["--embed-filter-band", "--embed-filter"]),
])  # fmt: skip
def test_8_an_option_without_the_one_it_needs_is_refused(tmp_path, capsys, no_model, args, words):
    src = tmp_path / "in.txt"
    src.write_text("a\n")
    _one_line(*_encode(capsys, src, tmp_path / "o.npy", *args), *words)


def test_8_the_needed_option_from_a_flag_a_preset_or_a_grid_is_enough(tmp_path, capsys, tiny):
    src = tmp_path / "in.txt"
    src.write_text("a\n")
    assert _encode(capsys, src, tmp_path / "o.npy", "--contrastive-layer", "1", "--contrastive-alpha", "0.3")[0] == 0
    assert _encode(capsys, src, tmp_path / "o.npy", "--preset", "metaeol", "--combine", "concat")[0] == 0


def test_8_serve_checks_its_environment_too(capsys, no_model, monkeypatch):
    require("fastapi")
    monkeypatch.setenv("PROMPTEOL_CONTRASTIVE_ALPHA", "0.3")
    _one_line(*_cli(capsys, "serve"), "--contrastive-alpha has no effect without --contrastive-layer")


# ---------------------------------------------------------------------------------------------- cases 9-11
def test_9_global_options_are_accepted_after_the_command(tmp_path, capsys, tiny, monkeypatch):
    """Before: `encode -m X --threads 1 in.txt` took the 1 as the input."""
    import torch

    set_to = []
    monkeypatch.setattr(torch, "set_num_threads", set_to.append)
    src = tmp_path / "in.txt"
    src.write_text("a\nb\n")
    out = tmp_path / "o.npy"
    code, err = _cli(capsys, "encode", "-m", MODEL, "--threads", "1", src, "-o", out, "-q", "--no-cache")
    assert code == 0, err
    assert set_to == [1] and np.load(out).shape[0] == 2


def test_9_no_command_exits_2(capsys):
    code, err = _cli(capsys)
    assert code == 2 and "error: prompteol: give a command" in err and "encode" in err


@pytest.mark.parametrize("where", ["flag", "env"])
def test_10_a_bad_cache_folder_is_named(tmp_path, capsys, no_model, monkeypatch, where):
    blocker = tmp_path / "x"
    blocker.write_text("a file, not a folder")
    src = tmp_path / "in.txt"
    src.write_text("a\n")
    if where == "flag":
        code, err = _cli(capsys, "--cache-dir", blocker, "encode", src, "-o", tmp_path / "o.npy")
        _one_line(code, err, f"--cache-dir '{blocker}'", "not a folder", "cache folder")
    else:
        monkeypatch.setenv("PROMPTEOL_CACHE", str(blocker / "sub"))
        code, err = _cli(capsys, "encode", src, "-o", tmp_path / "o.npy")
        _one_line(code, err, "PROMPTEOL_CACHE=", "cannot create that folder", "is a file")


def test_11_a_demonstration_without_a_pipe_shows_the_form(tmp_path, capsys, no_model):
    src = tmp_path / "in.txt"
    src.write_text("a\n")
    _one_line(*_encode(capsys, src, tmp_path / "o.npy", "--demo", "no pipe"), "--demo", "'sentence|word'",
              "'no pipe'")  # fmt: skip


# ---------------------------------------------------------------------------------------------- the output lock
def test_a_second_writer_is_refused_before_any_model(tmp_path, capsys, no_model):
    """docs/ecosystem.md says "at once": the lock is taken before the input is read or a model loads."""
    from prompteol.corpus.resume import output_lock

    src = tmp_path / "in.txt"
    src.write_text("a\n")
    out = tmp_path / "o.npy"
    with output_lock(out):
        _one_line(*_encode(capsys, src, out), "another `prompteol encode` is writing o.npy")


# ---------------------------------------------------------------------------------------------- case 14: identity
def _copy_of(folder: Path, dst: Path) -> Path:
    shutil.copytree(folder, dst)
    return dst


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("edit", ["tokenizer_config", "config", "chat_template", "new file"])
def test_14_a_copied_converted_folder_follows_its_files(tmp_path, test_cache_dir, edit):
    """Before: a folder carrying prompteol's marker was fingerprinted by the marker alone, so an edited
    tokenizer or config kept the unedited model's fingerprint (and its cached vectors)."""
    from prompteol.encoder.identity import folder_identity
    from prompteol.models.loading import resolve_model

    folder = Path(resolve_model(MODEL, cache_dir=test_cache_dir).path)  # the tiny model, with its marker
    ref, copy = _copy_of(folder, tmp_path / "ref"), _copy_of(folder, tmp_path / "edited")
    before = folder_identity(copy, cache_dir=tmp_path)
    assert before == folder_identity(ref, cache_dir=tmp_path)  # same files, same identity
    if edit == "tokenizer_config":
        _edit_json(copy / "tokenizer_config.json", model_max_length=77)
    elif edit == "config":
        _edit_json(copy / "config.json", rms_norm_eps=1e-3)
    elif edit == "chat_template":
        (copy / "chat_template.jinja").write_text("{{ messages }}")
    else:
        (copy / "special_tokens_map.json").write_text(json.dumps({"pad_token": "<pad>"}))
    after = folder_identity(copy, cache_dir=tmp_path)
    assert after != before and after["weights"] == before["weights"]  # the marker vouches for the weights only


def test_14_the_real_converted_smollm2_folder_copied_and_edited(tmp_path):
    """The issue's check: copy the converted smollm2-135m folder, edit tokenizer_config.json, then
    config.json: the fingerprint changes each time (the 538 MB weights are linked, not copied)."""
    from conftest import USER_CACHE

    from prompteol.encoder.identity import MARKER, fingerprint, folder_identity
    from prompteol.models.pull import packaged_path

    real = packaged_path("smollm2-135m", USER_CACHE)
    if not (real / MARKER).is_file():
        pytest.skip("smollm2-135m is not pulled")
    copy = tmp_path / "smollm2-copy"
    copy.mkdir()
    for f in real.iterdir():
        if f.suffix == ".safetensors":
            (copy / f.name).symlink_to(f)
        else:
            shutil.copy(f, copy / f.name)
    from prompteol.encoder.config import EncoderConfig

    cfg = EncoderConfig(model=str(copy))
    prints = [fingerprint(cfg, folder_identity(copy, cache_dir=tmp_path), 30)]
    _edit_json(copy / "tokenizer_config.json", added_by_a_user=True)
    prints.append(fingerprint(cfg, folder_identity(copy, cache_dir=tmp_path), 30))
    _edit_json(copy / "config.json", rms_norm_eps=1e-3)
    prints.append(fingerprint(cfg, folder_identity(copy, cache_dir=tmp_path), 30))
    assert len(set(prints)) == 3, prints


def test_14_a_recorded_marker_keeps_the_packaged_fingerprint_until_a_file_changes(tmp_path):
    """A conversion records its files in the marker: an unchanged folder's identity is the marker's
    alone (the fingerprint of a pulled model does not change), an edit adds the files."""
    from prompteol.encoder.identity import MARKER, folder_identity, folder_record

    folder = tmp_path / "models" / "conv"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"\0" * 64)
    (folder / "config.json").write_text('{"a": 1}')
    (folder / "tokenizer.json").write_text("{}")
    marker = {"gguf_sha256": "ab" * 32, "conversion": {"transformers": "5"}}
    (folder / MARKER).write_text(json.dumps({**marker, **folder_record(folder)}))
    base = {"weights": "gguf-sha256:" + "ab" * 32, "conversion": {"transformers": "5"}}
    assert folder_identity(folder, cache_dir=tmp_path) == base
    (folder / "tokenizer.json").write_text('{"added": true}')
    assert folder_identity(folder, cache_dir=tmp_path)["files"]["tokenizer.json"]
    (folder / "tokenizer.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"\0" * 65)  # other weights: they are hashed too
    assert "model.safetensors" in folder_identity(folder, cache_dir=tmp_path)["files"]


def test_14_an_old_marker_in_prompteols_cache_is_completed_once(tmp_path):
    """A marker written before files were recorded: in prompteol's own cache it is completed on first
    read (same identity as before, so embedding caches stay valid), then edits are seen."""
    from prompteol.encoder.identity import MARKER, folder_identity

    folder = tmp_path / "models" / "old"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"\0" * 8)
    (folder / "tokenizer_config.json").write_text("{}")
    (folder / MARKER).write_text(json.dumps({"gguf_sha256": "cd" * 32}))
    first = folder_identity(folder, cache_dir=tmp_path)
    assert set(first) == {"weights", "conversion"}
    assert "files" in json.loads((folder / MARKER).read_text())
    _edit_json(folder / "tokenizer_config.json", model_max_length=7)
    assert folder_identity(folder, cache_dir=tmp_path) != first


# ---------------------------------------------------------------------------------------------- Ray
def test_a_successful_ray_run_prints_no_core_worker_error_and_reads_files_as_encode_does(tmp_path, tiny_encoder,
                                                                                         test_cache_dir):  # fmt: skip
    """Ray logged `E ... core_worker.cc: ... max_restarts > 0` on every successful run: on one machine
    the actors are not restarted (a rerun resumes instead), so the line is gone. And the Ray engine
    reads a JSONL file as the local engine does (its leading BOM removed, control characters kept)."""
    require("ray")
    pq = require("pyarrow.parquet")
    texts = ["a\x00b", "tab\there", "\u202eRTL", "cr\r", "", "e\u0301"]
    src = tmp_path / "in.jsonl"
    src.write_bytes(BOM + "".join(json.dumps({"text": t}) + "\r\n" for t in texts).encode())
    exe = shutil.which("prompteol") or str(Path(sys.executable).with_name("prompteol"))
    env = {**os.environ, "PROMPTEOL_CACHE": str(test_cache_dir)}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([exe, "--threads", "1", "encode", "--engine", "ray", "-m", MODEL, str(src),
                           "-o", str(tmp_path / "out"), "--no-progress"], capture_output=True, text=True,
                          timeout=300, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "core_worker" not in proc.stderr and " E " not in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "DeprecationWarning" not in proc.stderr
    table = pq.read_table(tmp_path / "out" / "part-00000.parquet")
    assert table.column("text").to_pylist() == texts
    col = table.column("embedding").combine_chunks()
    got = col.values.to_numpy(zero_copy_only=False).reshape(len(col), -1)
    np.testing.assert_allclose(got, tiny_encoder.encode(texts, use_embedding_cache=False), atol=1e-5)
