"""The test command's own rules: under CI=true nothing the dev extra provides may be skipped away."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _run(tmp_path: Path, ci: bool) -> subprocess.CompletedProcess:
    (tmp_path / "test_needs_it.py").write_text(
        'from conftest import require\n\nmod = require("no_such_module_of_the_dev_extra")\n\n\n'
        "def test_it():\n    assert mod\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip


def test_a_missing_dev_dependency_skips_the_module_locally(tmp_path):
    run = _run(tmp_path, ci=False)
    assert run.returncode in (0, 5) and "1 skipped" in run.stdout, run.stdout + run.stderr  # 5: no test ran
    assert "pip install -e '.[dev]'" in run.stdout


def test_a_missing_dev_dependency_fails_the_run_under_ci(tmp_path):
    run = _run(tmp_path, ci=True)
    assert run.returncode not in (0, 5), run.stdout  # an error, not "nothing ran"
    assert "CI=true requires it" in run.stdout + run.stderr
