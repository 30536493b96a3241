"""Every number README.md and docs/*.md present as a measurement equals a value of the record it cites
(the convention: tests/docs_numbers.py, docs/development.md "Numbers in the docs")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from docs_numbers import ROOT, SHARED_COPIES, check_document, documents

#: documents whose numbers are being rewritten by their owners (issue 23): their unchecked numbers are listed
#: by ``python tests/docs_numbers.py docs/<name>.md``. Strict: a document that passes must leave this list.
PENDING: dict[str, str] = {}


def _params():
    for path in documents():
        name = str(path.relative_to(ROOT))
        marks = [pytest.mark.xfail(strict=True, reason=PENDING[name])] if name in PENDING else []
        yield pytest.param(path, id=name, marks=marks)


@pytest.mark.parametrize("doc", list(_params()))
def test_documented_numbers_match_their_records(doc):
    problems = check_document(doc)
    assert not problems, "numbers without a matching record:\n" + "\n".join(map(str, problems))


# ---------------------------------------------------------------------------------------------- the convention
def _check(tmp_path: Path, text: str) -> list[str]:
    doc = tmp_path / "doc.md"
    doc.write_text(text, encoding="utf-8")
    return [f"{p.number}: {p.reason}" for p in check_document(doc)]


@pytest.fixture
def record(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"tasks": {"A": {"score": 64.0318, "elapsed_s": 1546.27, "sentences": 4946},
                                          "B": {"score": 67.1424, "elapsed_s": 1368.3, "sentences": 2638}},
                                "rate": 26.72, "demo_rate": 25.47, "bytes": 468_713_472}))  # fmt: skip
    return path


def test_a_cited_record_vouches_for_its_numbers(tmp_path, record):
    ok = "Run (`run.json`): 64.03 and 67.14 (+3.11), 26 min, 1368 s, 7.6k sentences, 26.7 sentences/s, 447 MiB.\n"
    assert _check(tmp_path, ok) == []
    edits = {"64.03": "64.04", "67.14": "67.13", "+3.11": "+3.12", "26 min": "28 min", "1368 s": "1369 s",
             "7.6k": "7.7k", "26.7 sentences/s": "26.8 sentences/s", "447 MiB": "448 MiB"}  # fmt: skip
    for old, new in edits.items():
        problems = _check(tmp_path, ok.replace(old, new))
        assert problems and problems[0].startswith(new.split()[0]), (old, new, problems)


def test_a_unit_on_the_next_line_still_counts(tmp_path, record):
    """A paragraph wrapped between a number and its unit: "22.8\nmin" is 1368.3 s, not a bare 22.8."""
    ok = "Run (`run.json`): task B took 22.8\nmin of encoding.\n"
    assert _check(tmp_path, ok) == []
    assert len(_check(tmp_path, ok.replace("22.8", "22.9"))) == 1


def test_derived_numbers_are_checked_against_the_values_they_come_from(tmp_path, record):
    table = ("Record `run.json`.\n\n| | rate | change | ratio |\n|---|---|---|---|\n| plain | 26.7 | | |\n"
             "| demo | 25.5 | -5% | 0.95x |\n")  # fmt: skip
    assert _check(tmp_path, table) == []
    assert len(_check(tmp_path, table.replace("-5%", "-7%"))) == 1
    assert len(_check(tmp_path, table.replace("0.95x", "0.90x"))) == 1


def test_a_difference_may_come_from_any_value_its_operands_match(tmp_path):
    """Two record values both shown as 71.94 (another task's score, the average): the difference is right if one
    pair of the values the shown numbers match gives it, not only the smallest of each."""
    (tmp_path / "cells.json").write_text(json.dumps({"x": {"STS13": 71.9399}, "avg": 71.9403, "none": 63.4652}))
    ok = "Cells (`cells.json`): 71.94 against 63.47 (+8.48).\n"
    assert _check(tmp_path, ok) == []
    assert _check(tmp_path, ok.replace("+8.48", "+8.49"))


def test_a_number_without_a_record_fails_unless_marked(tmp_path):
    assert _check(tmp_path, "It loads in 1-4 s.\n") == [
        "1-4: no record cited in its section, and not marked published or example"] * 2  # fmt: skip
    assert _check(tmp_path, "<!-- example -->\nIt loads in 1-4 s.\n") == []
    assert _check(tmp_path, "It loads in 1-4 s. <!-- example -->\n") == []


def test_published_numbers_are_checked_against_the_copy_of_their_source(tmp_path):
    text = "<!-- published: method.md section 5 -->\nThe paper reports 67.00 avg for OPT-125m.\n"
    assert _check(tmp_path, text) == []
    assert _check(tmp_path, text.replace("67.00", "67.01")) == [
        "67.01: not in its records nor in tests/data/shared/method.md"]  # fmt: skip
    assert _check(tmp_path, "<!-- published: Zhang et al. 2024 -->\nThey report 77.14.\n") == []  # no copy: named only
    assert _check(tmp_path, "<!-- published: -->\nThey report 77.14.\n")[0].startswith("published:")


def test_record_markers_name_existing_files_and_code_is_not_a_measurement(tmp_path, record):
    assert _check(tmp_path, "<!-- record: src/prompteol/cache/store.py -->\nWriters wait up to 60 s.\n") == []
    assert _check(tmp_path, "<!-- record: no/such/file.py -->\nWriters wait up to 60 s.\n")[0].startswith("no/such")
    assert _check(tmp_path, "See `docs/results/no_such_record.json`.\n") == [
        "docs/results/no_such_record.json: cites a record that does not exist"]  # fmt: skip
    ignored = ("```bash\nprompteol --threads 1 eval --n 3.5\n```\n\n`--lr 5e-4 --x 0.05`; torch 2.13, transformers 5.24,"
               " opt-1.3b, STS12-16, Q4_1, 2026-12-01, a 1e-4 tolerance, 2^20.\n")  # fmt: skip
    assert _check(tmp_path, ignored) == []


def test_a_section_inherits_the_records_of_the_sections_it_is_in(tmp_path, record):
    text = "## Results\n\nRecord: `run.json`.\n\n### Details\n\n64.03 avg.\n\n## Elsewhere\n\n64.03 avg.\n"
    assert _check(tmp_path, text) == ["64.03: no record cited in its section, and not marked published or example"]


def test_changing_a_readme_number_by_hand_fails():
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    row = "| smollm2-135m, PromptEOL, no demo | 58.36 |"
    assert row in text
    before = check_document(readme, text)
    after = check_document(readme, text.replace(row, row.replace("58.36", "58.46")))
    new = [str(p) for p in after if str(p) not in {str(b) for b in before}]
    assert len(new) == 1 and "58.46" in new[0], new


#: the documents whose every number is checked today (the others are in PENDING)
CHECKED = ["README.md", "docs/cache.md", "docs/demonstrations.md", "docs/evaluation.md", "docs/training.md"]


def test_most_hand_edits_of_a_number_fail():
    """Each measurement that passes, its last digit changed by hand (one at a time): at least 4 in 5 must fail,
    and 9 in 10 of those written with two decimals or more (scores). The rest equal, after the change, another
    value of the same records (a whole number of seconds, a fold accuracy, a neighbouring step's score)."""
    import re

    from docs_numbers import hand_edits

    made: list[str] = []
    missed: list[str] = []
    for name in CHECKED:
        m, miss = hand_edits(ROOT / name)
        made, missed = made + m, missed + miss

    def precise(edit: str) -> bool:
        return bool(re.search(r"\.\d\d", edit.split(": ", 1)[1]))

    share = 1 - len(missed) / len(made)
    share2 = 1 - sum(map(precise, missed)) / sum(map(precise, made))
    print(f"\n{len(made)} hand edits, {len(made) - len(missed)} caught ({100 * share:.0f}%); with two decimals or "
          f"more: {100 * share2:.0f}% caught; not caught:\n" + "\n".join(missed))  # fmt: skip
    assert len(made) > 200 and share >= 0.8 and share2 >= 0.9


def test_shared_copies_are_current():
    """tests/data/shared holds copies of ../shared/docs: when the originals are present, they must be equal."""
    originals = ROOT.parent / "shared" / "docs"
    for copy in sorted(SHARED_COPIES.glob("*.md")):
        if copy.name == "README.md" or not (originals / copy.name).is_file():
            continue
        assert copy.read_text(encoding="utf-8") == (originals / copy.name).read_text(encoding="utf-8"), (
            f"{copy} differs from {originals / copy.name}: copy it again"
        )
