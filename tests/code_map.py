"""The README's code map, generated from the tree: every package and module of ``src/prompteol`` with the
first line of its docstring.

``python tests/code_map.py`` prints the map; ``--write`` puts it into README.md between its markers;
``tests/test_code_map.py`` fails when README.md's map differs from the tree (or a module has no one-line
docstring).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "prompteol"
START = "<!-- code map: generated from the tree by `python tests/code_map.py --write`; tests/test_code_map.py checks it -->"
END = "<!-- end of the code map -->"


def summary(path: Path) -> str:
    """The first line of a module's docstring ("" when it has none)."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    return doc.strip().split("\n")[0].strip() if doc else ""


def _lines(folder: Path, depth: int) -> list[str]:
    pad = "  " * depth
    out = [f"{pad}- `{folder.name}/`: {summary(folder / '__init__.py')}"]
    modules = sorted(p for p in folder.glob("*.py") if p.name != "__init__.py")
    packages = sorted(p for p in folder.iterdir() if p.is_dir() and (p / "__init__.py").is_file())
    out += [f"{pad}  - `{p.name}`: {summary(p)}" for p in modules]
    for p in packages:
        out += _lines(p, depth + 1)
    return out


def code_map() -> str:
    """The map as Markdown: a nested list, packages as ``name/``, each with its one-line docstring."""
    return "\n".join(_lines(PACKAGE, 0)) + "\n"


def readme_map(text: str) -> str | None:
    """The map in README.md's text (between the markers), or None."""
    if START not in text or END not in text:
        return None
    return text.split(START, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def write(readme: Path = ROOT / "README.md") -> None:
    text = readme.read_text(encoding="utf-8")
    if readme_map(text) is None:
        raise SystemExit(f"{readme} has no code map markers ({START} ... {END})")
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    readme.write_text(f"{head}{START}\n{code_map()}{END}{tail}", encoding="utf-8")


if __name__ == "__main__":
    if "--write" in sys.argv[1:]:
        write()
    else:
        sys.stdout.write(code_map())
