"""Task definitions: groups, name resolution, and the file table against the data MANIFEST."""

from __future__ import annotations

import pytest

from prompteol.errors import ConfigError
from prompteol.evaluation import MANIFEST, TASK_GROUPS, TASKS, get_task, resolve_tasks


def test_groups_hold_the_seven_and_seven():
    assert TASK_GROUPS["sts"] == ("STS12", "STS13", "STS14", "STS15", "STS16", "STSBenchmark", "SICKRelatedness")
    assert TASK_GROUPS["transfer"] == ("MR", "CR", "SUBJ", "MPQA", "SST2", "TREC", "MRPC")
    assert TASK_GROUPS["all"] == TASK_GROUPS["sts"] + TASK_GROUPS["transfer"]
    assert "STSBenchmark-dev" in TASKS and all("STSBenchmark-dev" not in g for g in TASK_GROUPS.values())


def test_sts_subsets_and_sizes_are_sentevals():
    assert [p.name for p in TASKS["STS12"].parts] == [
        "MSRpar", "MSRvid", "SMTeuroparl", "surprise.OnWN", "surprise.SMTnews"]  # fmt: skip
    assert [p.name for p in TASKS["STS13"].parts] == ["FNWN", "headlines", "OnWN"]
    assert [p.name for p in TASKS["STS14"].parts] == [
        "deft-forum", "deft-news", "headlines", "images", "OnWN", "tweet-news"]  # fmt: skip
    assert [p.name for p in TASKS["STS15"].parts] == [
        "answers-forums", "answers-students", "belief", "headlines", "images"]  # fmt: skip
    assert [p.name for p in TASKS["STS16"].parts] == [
        "answer-answer", "headlines", "plagiarism", "postediting", "question-question"]  # fmt: skip
    sizes = {n: TASKS[n].size for n in ("STS12", "STS13", "STS14", "STS15", "STS16")}
    assert sizes == {"STS12": 3108, "STS13": 1500, "STS14": 3750, "STS15": 3000, "STS16": 1186}
    # the scored pairs of a subset are the rows of its gold file
    for name in sizes:
        gold = [MANIFEST[p.files[1]].rows for p in TASKS[name].parts]
        assert sum(gold) == sizes[name]
    assert TASKS["STS12"].main_score == "spearman_all" and TASKS["STS12"].aggregation == "all"


def test_resolve_tasks_accepts_groups_lists_and_case():
    assert [t.name for t in resolve_tasks("sts")] == list(TASK_GROUPS["sts"])
    assert [t.name for t in resolve_tasks("mr, stsbenchmark-dev,MR")] == ["MR", "STSBenchmark-dev"]
    assert [t.name for t in resolve_tasks(["STS12", "transfer"])][:2] == ["STS12", "MR"]
    assert get_task("sick" + "relatedness").name == "SICKRelatedness"


def test_unknown_task_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="valid tasks are .*STS12.*groups"):
        resolve_tasks("STS17")
    with pytest.raises(ConfigError):
        resolve_tasks("")


def test_file_table_matches_the_data_manifest(data_dir):
    """Every path/rows/sha256 in the code equals the MANIFEST shipped with the data."""
    manifest = data_dir / "MANIFEST.txt"
    if not manifest.is_file():
        pytest.skip("no MANIFEST.txt next to the data")
    listed = {}
    for line in manifest.read_text(encoding="utf-8").splitlines():
        fields = [f.strip() for f in line.split("|")]
        if line.startswith("#") or len(fields) < 7 or fields[1] == "-":
            continue
        original = fields[6]
        if "downstream/" in original:
            listed[original[original.index("downstream/") :]] = (int(fields[1]), fields[3])
    for path, f in MANIFEST.items():
        assert listed[path] == (f.rows, f.sha256), path
    used = {f.path for t in TASKS.values() for f in t.files}
    assert used <= set(MANIFEST)


def test_cli_baseline_names_match_the_registry():
    from prompteol.cli.eval_cmd import _BASELINE_NAMES
    from prompteol.evaluation import BASELINES

    assert tuple(BASELINES) == _BASELINE_NAMES
