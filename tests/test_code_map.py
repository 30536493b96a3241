"""README.md's code map is the tree's: every package and module with the first line of its docstring
(tests/code_map.py generates it; ``python tests/code_map.py --write`` updates README.md)."""

from __future__ import annotations

import ast

from code_map import PACKAGE, ROOT, code_map, readme_map


def test_every_module_has_a_one_line_docstring():
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        lines = (doc or "").strip().split("\n")
        if not doc or (len(lines) > 1 and lines[1].strip()) or len(lines[0]) > 120:
            bad.append(str(path.relative_to(PACKAGE)))
    assert not bad, "a module docstring starts with one summary line of at most 120 characters: " + ", ".join(bad)


def test_the_readme_code_map_matches_the_tree():
    found = readme_map((ROOT / "README.md").read_text(encoding="utf-8"))
    assert found is not None, "README.md has no code map (its markers are missing)"
    assert found == code_map(), "README.md's code map is stale: run `python tests/code_map.py --write`"
