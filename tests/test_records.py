"""The one provenance collector (prompteol.records) and the records that carry it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from prompteol.encoder.identity import FINGERPRINT_VERSION
from prompteol.records import PROVENANCE_SCHEMA, command_line, git_info, package_versions, provenance, read_provenance

ROOT = Path(__file__).resolve().parents[1]


def test_provenance_has_every_field():
    p = provenance(["prompteol", "eval", "--tasks", "STS12"], threads=1)
    assert p["schema"] == PROVENANCE_SCHEMA and p["fingerprint_version"] == FINGERPRINT_VERSION
    assert p["command"] == "prompteol eval --tasks STS12" and p["date"].endswith("+00:00")
    assert p["machine"]["threads"] == 1 and p["machine"]["cpus"] and "hostname" not in p["machine"]
    assert set(p["machine"]["flags"]) >= {"avx2", "avx512_bf16", "amx_bf16"}
    assert {"python", "prompteol", "torch", "transformers", "numpy"} <= set(p["versions"])
    json.dumps(p)  # JSON-serialisable


def test_git_commit_is_this_checkout():
    info = git_info()
    if not (ROOT / ".git").exists():
        assert info is None
        return
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert info is not None and info["commit"] == head and isinstance(info["dirty"], bool)


def test_env_records_settings_but_never_secrets(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PROMPTEOL_API_KEY", "s3cret")
    p = provenance("x")
    assert p["env"]["OMP_NUM_THREADS"] == "1" and "s3cret" not in json.dumps(p)


def test_versions_name_a_missing_extra_package_as_none():
    v = package_versions(["no-such-package-xyz"])
    assert v["no-such-package-xyz"] is None and "no-such-package-xyz" not in package_versions()


@pytest.mark.parametrize(
    ("argv", "want"),
    [(["/x/.venv/bin/prompteol", "--threads", "1", "eval"], "prompteol --threads 1 eval"),
     ([str(ROOT / "src" / "prompteol" / "bench" / "__main__.py"), "--n", "3"], "python -m prompteol.bench --n 3"),
     (["/elsewhere/run.py", "a b"], "python /elsewhere/run.py 'a b'")],
)  # fmt: skip
def test_command_line(argv, want):
    assert command_line(argv) == want


def test_every_committed_record_yields_a_provenance():
    """Old shapes keep loading: every record under docs/ and benchmarks/results gives a provenance dict."""
    paths = [*ROOT.glob("docs/results/*.json"), *ROOT.glob("docs/methods/*/*.json"),
             *ROOT.glob("docs/scaling/cells/*.json"), *ROOT.glob("benchmarks/results/*.json")]  # fmt: skip
    assert paths
    for path in paths:
        data = json.loads(path.read_text(encoding="utf-8"))
        runs = data["runs"] if data.get("schema") == "prompteol.eval-multi/1" else [data]
        for run in runs:
            p = read_provenance(run)
            assert set(p) >= {"schema", "date", "command", "machine", "versions"}, path


def test_read_provenance_prefers_the_block():
    block = provenance("cmd")
    assert read_provenance({"provenance": block, "date": "old"}) == block
    old = read_provenance({"date": "2026-11-27", "versions": {"prompteol": "0.1.0"}, "cell": {"command": "c"}})
    assert old["schema"] is None and old["prompteol"] == "0.1.0" and old["command"] == "c"


def test_evaluation_results_carry_provenance_and_keep_their_keys(tiny_encoder, data_dir):
    from prompteol.evaluation import evaluate

    res = evaluate(tiny_encoder, tasks="STS13", data_dir=data_dir)
    assert {"schema", "date", "versions", "encoder", "data", "provenance"} <= set(res)
    assert res["provenance"]["schema"] == PROVENANCE_SCHEMA and res["provenance"]["versions"] == res["versions"]
