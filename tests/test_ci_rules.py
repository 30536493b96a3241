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


def _dev_distributions() -> set[str]:
    """The distributions the ``dev`` extra installs (its own and those of the extras it names)."""
    import re
    import tomllib

    extras = tomllib.loads((HERE.parent / "pyproject.toml").read_text())["project"]["optional-dependencies"]

    def names(extra: str) -> set[str]:
        out: set[str] = set()
        for req in extras[extra]:
            m = re.fullmatch(r"prompteol\[([\w,]+)\]", req.replace(" ", ""))
            if m:
                for sub in m.group(1).split(","):
                    out |= names(sub)
            else:
                out.add(re.split(r"[\[<>=!~; ]", req, maxsplit=1)[0].lower().replace("_", "-"))
        return out

    return names("dev")


def test_no_test_skips_a_dependency_of_the_dev_extra_with_importorskip():
    """Every optional dependency of the dev extra goes through conftest.require (a failure under CI=true)."""
    import ast
    from importlib.metadata import packages_distributions

    dev = _dev_distributions()
    owners = packages_distributions()
    found = []
    for path in sorted(HERE.rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "importorskip"
                    and node.args and isinstance(node.args[0], ast.Constant)):  # fmt: skip
                top = str(node.args[0].value).split(".")[0]
                dists = {d.lower().replace("_", "-") for d in owners.get(top, [top.replace("_", "-")])}
                if dists & dev:
                    found.append(f"{path.relative_to(HERE)}:{node.lineno}: importorskip({node.args[0].value!r})")
    assert not found, "use conftest.require for the dev extra's packages:\n" + "\n".join(found)
