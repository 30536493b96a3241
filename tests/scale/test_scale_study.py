"""The study queue (``prompteol scale queue``): the plan's order, status from the files alone, failures
recorded without stopping the queue, one queue per root. No model is loaded here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from prompteol.cli.main import main
from prompteol.errors import InputError
from prompteol.scale import study
from prompteol.scale.steps import STS_SENTENCES
from prompteol.scale.study import STUDY_MODELS, StudyOptions, build_plan, run_queue

REPO = Path(__file__).resolve().parents[2]


def _root(tmp_path: Path) -> Path:
    """A checkout-like root with the committed smollm2-135m cells and presets."""
    root = tmp_path / "root"
    (root / "src" / "prompteol" / "data").mkdir(parents=True)
    # only smollm2-135m's presets: the shipped file gains the other models' as the real study goes on
    presets = json.loads((REPO / "src/prompteol/data/demo_presets.json").read_text(encoding="utf-8"))
    kept = {k: v for k, v in presets.items() if k == "smollm2-135m" or not isinstance(v, dict) or k.startswith("_")}
    (root / "src/prompteol/data/demo_presets.json").write_text(json.dumps(kept, indent=2), encoding="utf-8")
    (root / "docs/scaling/cells").mkdir(parents=True)
    for cell in (REPO / "docs/scaling/cells").glob("smollm2-135m__*__L-1__sts-test.json"):  # its 3 first cells
        shutil.copy(cell, root / "docs/scaling/cells" / cell.name)
    return root


def test_plan_gives_every_model_a_result_before_spending_more_on_one():
    steps = build_plan()
    ids = [s.id for s in steps]
    stages = [s.stage for s in steps]
    assert stages == sorted(stages), "stages in order a, b, c, d, f"
    assert len(ids) == len(set(ids))
    for m in STUDY_MODELS[1:]:
        assert f"cell/{m}/none" in ids and f"precision/{m}" in ids and f"demos/{m}" in ids
        assert ids.index(f"cell/{m}/default") > ids.index(f"demos/{m}")
    by_id = {s.id: s for s in steps}
    assert by_id["demos/qwen2.5-coder-1.5b"].needs == ("demos/qwen2.5-coder-0.5b",)
    assert by_id["demos/qwen2.5-coder-1.5b"].params["screen_on"] == "qwen2.5-coder-0.5b"
    assert by_id["cell/gemma3-270m/default"].needs == ("demos/gemma3-270m",)
    # the `none` cells of all three new models come before any demonstration search
    assert max(ids.index(f"cell/{m}/none") for m in STUDY_MODELS[1:]) < min(ids.index(f"demos/{m}") for m in STUDY_MODELS[1:])
    # stage f: plain PromptEOL's transfer at three sizes (the paper's transfer claim) before any best setting's
    transfer = [i for i in ids if "/transfer-" in i]
    assert [i.split("/")[2] for i in transfer] == ["none"] * 3 + ["best-training-free"] * 3
    assert {i.split("/")[1] for i in transfer} == {"smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b"}
    assert max(ids.index(i) for i in transfer) < ids.index("demos-stsb-dev/qwen2.5-coder-1.5b")


def test_status_from_the_files_alone(tmp_path, capsys):
    root = _root(tmp_path)
    assert run_queue(StudyOptions(root=root, dry_run=True)) == 0
    out = capsys.readouterr().out
    assert "cell/smollm2-135m/paper" in out and "cell/smollm2-135m/default" in out
    lines = {line.split()[1]: line for line in out.splitlines() if line.startswith("  [")}
    assert "done" in lines["cell/smollm2-135m/paper"] and "done" in lines["cell/smollm2-135m/default"]
    assert "waits for demos/gemma3-270m" in lines["cell/gemma3-270m/default"]
    assert "to run" in lines["cell/gemma3-270m/none"]
    assert "remaining:" in out
    assert not (root / "docs/scaling/queue.json").exists(), "a dry run writes nothing"


def test_search_estimates_are_scaled_by_the_finished_searches_wall_time(tmp_path, capsys):
    """A search's sentence count is a rough model: the remaining searches take the measured wall/estimate ratio
    of the finished ones (the model's own where measured, else all models pooled); cells are not scaled."""
    root = _root(tmp_path)
    for cell in (REPO / "docs/scaling/cells").glob("gemma3-270m__none__L-1__sts-test*.json"):  # a measured rate
        shutil.copy(cell, root / "docs/scaling/cells" / cell.name)
    opts = StudyOptions(root=root, dry_run=True)
    s = study._Study(opts, lambda line: None)
    rates = s.rates()
    by_id = {step.id: step for step in s.steps}
    gemma, qwen = by_id["methods/gemma3-270m"], by_id["methods/qwen2.5-coder-0.5b"]
    plain = {k: s.estimate(by_id[k], rates) for k in ("methods/gemma3-270m", "methods/qwen2.5-coder-0.5b",
                                                      "demos-stsb-dev/gemma3-270m", "cell/gemma3-270m/none")}  # fmt: skip
    assert all(v for v in plain.values()), plain
    log = {"schema": "prompteol.queue/1", "steps": {
        "methods/qwen2.5-coder-1.5b": {"status": "ok", "wall_s": 3 * s.estimate(by_id["methods/qwen2.5-coder-1.5b"], rates)},
        "methods/gemma3-270m": {"status": "ok", "wall_s": 2 * plain["methods/gemma3-270m"]},
        "demos/qwen2.5-coder-0.5b": {"status": "failed", "wall_s": 99.0}}}  # fmt: skip
    opts.log_file.write_text(json.dumps(log))
    s = study._Study(opts, lambda line: None)
    factors = s.search_factors(rates)
    assert factors[("methods", "qwen2.5-coder-1.5b")] == pytest.approx(3.0) and factors[("methods", "gemma3-270m")] == pytest.approx(2.0)
    assert ("demos", None) not in factors, "a failed step measures nothing"
    pooled = factors[("methods", None)]
    assert 2.0 < pooled < 3.0
    assert s.estimate(gemma, rates, factors) == pytest.approx(2 * plain["methods/gemma3-270m"])
    assert s.estimate(qwen, rates, factors) == pytest.approx(pooled * plain["methods/qwen2.5-coder-0.5b"])
    assert s.estimate(by_id["cell/gemma3-270m/none"], rates, factors) == pytest.approx(plain["cell/gemma3-270m/none"])
    assert s.estimate(by_id["demos-stsb-dev/gemma3-270m"], rates, factors) == pytest.approx(plain["demos-stsb-dev/gemma3-270m"])
    s.print_status()
    run_queue(opts)
    assert f"methods x{pooled:.2f}" in capsys.readouterr().out


def _amx_study_with_a_rate(tmp_path, monkeypatch):
    """A study on a 2-thread AMX machine whose root has gemma3-270m's measured STS rate."""
    import torch

    from prompteol import records

    root = _root(tmp_path)
    for cell in (REPO / "docs/scaling/cells").glob("gemma3-270m__none__L-1__sts-test*.json"):  # a measured rate
        shutil.copy(cell, root / "docs/scaling/cells" / cell.name)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(records, "cpu_flags", lambda: {"avx512_bf16": True, "amx_bf16": True})
    opts = StudyOptions(root=root, dry_run=True)
    s = study._Study(opts, lambda line: None)
    return opts, s, s.rates()


def test_search_factors_prefer_searches_timed_on_this_kind_of_machine(tmp_path, monkeypatch):
    """A search timed on a slower machine (a model's only one, logged before the queue recorded its host) does not
    scale the estimate made with this machine's rates: the pooled factor of this machine's kind is used instead;
    and a finished step's log entry records the host."""
    opts, s, rates = _amx_study_with_a_rate(tmp_path, monkeypatch)
    by_id = {step.id: step for step in s.steps}
    old, new = by_id["demos/gemma3-270m"], by_id["demos/qwen2.5-coder-0.5b"]
    log = {"schema": "prompteol.queue/1", "steps": {
        old.id: {"status": "ok", "wall_s": 4 * s.estimate(old, rates, whole=True)},  # no host: another sitting
        new.id: {"status": "ok", "wall_s": 1.5 * s.estimate(new, rates, whole=True), "host": s.host()}}}  # fmt: skip
    assert s.host() == {"torch_threads": 2, "cpu_kind": "amx"}
    opts.log_file.write_text(json.dumps(log))
    factors = study._Study(opts, lambda line: None).search_factors(rates)
    assert factors[("demos", None)] == pytest.approx(1.5) and factors[("demos", new.model)] == pytest.approx(1.5)
    assert ("demos", old.model) not in factors, "its own factor was timed on another kind of machine"
    log["steps"][new.id].pop("host")  # no entry of this kind: all of them, as before
    opts.log_file.write_text(json.dumps(log))
    factors = study._Study(opts, lambda line: None).search_factors(rates)
    assert factors[("demos", old.model)] == pytest.approx(4.0) and 1.5 < factors[("demos", None)] < 4.0


def test_a_resumed_search_is_timed_by_the_part_its_run_computed(tmp_path, monkeypatch):
    """A search resumed across runs logs only its last run's wall time: that run is compared with the sentences it
    encoded (the log's ``resumed_sentences``), and a run that only finished a search (here 95% done before it) does
    not time the search at all: it made a factor of 0.02 in the study's log."""
    opts, s, rates = _amx_study_with_a_rate(tmp_path, monkeypatch)
    step = {st.id: st for st in s.steps}["demos/gemma3-270m"]
    total, whole = s.sentences(step), s.estimate(step, rates, whole=True)
    entry = {"status": "ok", "host": s.host(), "resumed_sentences": total // 4, "wall_s": 2.0 * whole * (total - total // 4) / total}
    opts.log_file.write_text(json.dumps({"schema": "prompteol.queue/1", "steps": {step.id: entry}}))
    factors = study._Study(opts, lambda line: None).search_factors(rates)
    assert factors[("demos", step.model)] == pytest.approx(2.0) and factors[("demos", None)] == pytest.approx(2.0)
    entry.update(resumed_sentences=int(total * 0.95), wall_s=0.02 * whole)
    opts.log_file.write_text(json.dumps({"schema": "prompteol.queue/1", "steps": {step.id: entry}}))
    assert study._Study(opts, lambda line: None).search_factors(rates) == {}


def test_a_started_run_logs_what_it_resumes(tmp_path, monkeypatch):
    """The queue logs, when a step starts, the sentences already done (0 for a fresh step)."""
    root = _root(tmp_path)
    s = study._Study(StudyOptions(root=root, dry_run=True), lambda line: None)
    monkeypatch.setattr(s, "finished_sentences", lambda st: 123)
    seen: dict[str, dict] = {}
    monkeypatch.setattr(s, "run_step", lambda st: seen.setdefault(st.id, dict(s.log["steps"][st.id])))
    monkeypatch.setattr(s, "is_done", lambda st: st.id in seen)
    s.opts.max_steps = 1
    s.run()
    (entry,) = seen.values()
    assert entry["status"] == "running" and entry["resumed_sentences"] == 123


def test_a_started_cell_is_estimated_by_its_remaining_tasks(tmp_path):
    """A cell resumed after a stop costs only the tasks its partial record has not finished."""
    from prompteol.scale.run import partial_path

    root = _root(tmp_path)
    for cell in (REPO / "docs/scaling/cells").glob("gemma3-270m__none__L-1__sts-test*.json"):  # a measured rate
        shutil.copy(cell, root / "docs/scaling/cells" / cell.name)
    s = study._Study(StudyOptions(root=root, dry_run=True), lambda line: None)
    rates = s.rates()
    step = {st.id: st for st in s.steps}["cell/qwen2.5-coder-0.5b/none"]
    whole = s.estimate(step, rates)
    assert whole and s.finished_sentences(step) == 0
    target = partial_path(s.cell_files(step)[0][0])
    target.write_text(json.dumps({"partial": {"identity": {"cell": target.name.split(".partial")[0], "dtype": "bfloat16"}},
                                  "tasks": {"STS12": {"score": 50.0, "sentences": 4946},
                                            "STS13": {"score": 60.0, "sentences": 2638}}}))  # fmt: skip
    s = study._Study(StudyOptions(root=root, dry_run=True), lambda line: None)
    assert s.finished_sentences(step) == 4946 + 2638
    assert s.estimate(step, rates) == pytest.approx(whole * (1 - (4946 + 2638) / STS_SENTENCES))


def test_a_started_demonstration_search_is_estimated_by_its_unscored_candidates(tmp_path):
    """The search's JSONL has one line per scored candidate (screen, then rescore): a resumed search costs the rest;
    the searches' correction factor still compares a finished search's wall time with its whole estimate."""
    from prompteol.scale.steps import DEMO_SEARCH, STSB_DEV_SENTENCES

    root = _root(tmp_path)
    s = study._Study(StudyOptions(root=root, dry_run=True), lambda line: None)
    step = {st.id: st for st in s.steps}["demos-stsb-dev/smollm2-135m"]
    assert s.finished_sentences(step) == 0
    folder = root / "docs/demos/smollm2-135m"
    folder.mkdir(parents=True)
    rows = [{"search": {"encoder": {"demonstrations": []}}}, {"key": "[]", "demonstrations": [], "score": 40.0}]
    rows += [{"key": f"k{i}", "demonstrations": [{"sentence": f"s{i}", "word": "W"}], "score": 50.0} for i in range(30)]
    (folder / "stsb-dev.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + '\n{"key": "cut')
    rescore = [{"key": "[]", "demonstrations": [], "score": 40.0}, {"key": "k0", "demonstrations": [{"sentence": "s0", "word": "W"}]}]
    (folder / f"stsb-dev.rescore{DEMO_SEARCH['rescore']}.jsonl").write_text("\n".join(json.dumps(r) for r in rescore))
    assert s.finished_sentences(step) == 30 * 2 * DEMO_SEARCH["max_pairs"] + STSB_DEV_SENTENCES
    rates = {("smollm2-135m", "float32"): 10.0}
    assert s.estimate(step, rates, whole=True) == pytest.approx(s.sentences(step) / 10.0)
    assert s.estimate(step, rates) == pytest.approx((s.sentences(step) - s.finished_sentences(step)) / 10.0)


def test_rates_are_medians_of_this_machines_kind_of_records(tmp_path, monkeypatch):
    """A task's time may hold a pause of the queue or cached vectors: the rate is the median of the tasks'
    rates, from the records of this thread count and CPU kind where there are such."""
    import torch

    from prompteol import records

    root = _root(tmp_path)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(records, "cpu_flags", lambda: {"avx512_bf16": True, "amx_bf16": True})
    amx, amd = {"avx512_bf16": True, "amx_bf16": True}, {"avx512_bf16": True, "amx_bf16": False}

    def cell(name, flags, times):
        tasks = {f"T{i}": {"sentences": 1000, "elapsed_s": {"encode": t}} for i, t in enumerate(times)}
        rec = {"cell": {"status": "ok", "model": "gemma3-270m", "dtype": "bfloat16",
                        "host": {"torch_threads": 2, "flags": flags}}, "tasks": tasks}  # fmt: skip
        (root / "docs/scaling/cells" / f"{name}.json").write_text(json.dumps(rec))

    cell("amd", amd, [1.5, 1.5, 1.5])  # another CPU kind: 667 sentences/s, not used while AMX records exist
    s = study._Study(StudyOptions(root=root, dry_run=True), lambda line: None)
    assert s.rates()[("gemma3-270m", "bfloat16")] == pytest.approx(1000 / 1.5)
    cell("amx", amx, [10.0, 20.0, 3600.0])  # 100, 50 and (an hour's pause) 0.28 sentences/s
    s = study._Study(StudyOptions(root=root, dry_run=True), lambda line: None)
    assert s.rates()[("gemma3-270m", "bfloat16")] == pytest.approx(50.0)


def test_cells_are_scaled_by_their_measured_cost(tmp_path, monkeypatch):
    """A transfer cell costs more per sentence than the STS rate says (longer sentences, classifier fits), and a
    demonstration setting may cost more than plain PromptEOL (Contrastive Prompting adds a forward): both measured
    from the finished cells and applied to the remaining ones; the STS rate itself ignores transfer tasks."""

    import torch

    from prompteol import records
    from prompteol.scale.steps import TRANSFER_SENTENCES

    root = _root(tmp_path)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(records, "cpu_flags", lambda: {"avx512_bf16": True, "amx_bf16": True})
    host = {"torch_threads": 2, "flags": {"avx512_bf16": True, "amx_bf16": True}}

    def cell(name, demo, tasks):
        rec = {"cell": {"status": "ok", "model": "gemma3-270m", "dtype": "bfloat16", "demo": demo, "host": host},
               "tasks": tasks}  # fmt: skip
        (root / "docs/scaling/cells" / f"{name}.json").write_text(json.dumps(rec))

    sts = {f"STS1{i}": {"sentences": 1000, "elapsed_s": {"encode": 10.0, "total": 10.0}} for i in range(3)}  # 100/s
    cell("none", "none", sts)
    cell("btf", "best-training-free", {k: {"sentences": 1000, "elapsed_s": {"encode": 15.0}} for k in sts})  # 1.5x
    transfer = {"MR": {"sentences": 1000, "elapsed_s": {"encode": 20.0, "total": 25.0}},  # 2.5x, fits included
                "SUBJ": {"sentences": 1000, "elapsed_s": {"encode": 0.5, "total": 4.0}}}  # cached: not a measure
    cell("none-transfer", "none", transfer)
    s = study._Study(StudyOptions(root=root, dry_run=True), lambda line: None)
    rates = s.rates()
    base = 1000 / 12  # the STS tasks' median (3 at 100/s, 3 at 66.7/s): the transfer tasks are not among them
    assert rates[("gemma3-270m", "bfloat16")] == pytest.approx(base)
    ratios = s.cost_ratios(rates)
    assert ratios[("transfer",)] == pytest.approx(2.5)  # against `none`'s own STS rate
    assert ratios[("demo", "gemma3-270m", "best-training-free")] == pytest.approx(base / (1000 / 15))
    assert ratios[("demo", "gemma3-270m", "none")] == pytest.approx(base / 100)
    by_id = {st.id: st for st in build_plan(stages="f")}
    step = by_id["cell/gemma3-270m/best-training-free/transfer-fast/L-1"]
    plain = s.estimate(step, rates)
    assert plain == pytest.approx(TRANSFER_SENTENCES / base)
    # best-training-free's STS time per sentence (0.015 s), times the transfer tasks' measured 2.5
    assert s.estimate(step, rates, ratios=ratios) == pytest.approx(TRANSFER_SENTENCES * 0.015 * 2.5)


def test_the_estimates_sentence_counts_are_the_datas(data_dir):
    """The queue's estimates count each cell's unique sentences: checked against the data as the harness reads it."""
    from prompteol.evaluation.data import load_task_data
    from prompteol.evaluation.runner import _unique_sentences
    from prompteol.scale.steps import STSB_DEV_SENTENCES, TRANSFER_SENTENCES

    def count(tasks):
        return sum(len(_unique_sentences(load_task_data(t, data_dir))) for t in tasks)

    assert count(["STS12", "STS13", "STS14", "STS15", "STS16", "STSBenchmark", "SICKRelatedness"]) == STS_SENTENCES
    assert count(["MR", "CR", "SUBJ", "MPQA", "SST2", "TREC", "MRPC"]) == TRANSFER_SENTENCES
    assert count(["STSBenchmark-dev"]) == STSB_DEV_SENTENCES


def test_plain_at_best_layers_is_done_when_both_layers_are_the_last(tmp_path):
    """qwen2.5-coder-1.5b's case: the chosen setting and plain PromptEOL's best layer are both -1, whose plain
    cell is the `none` cell: nothing to run (it used to fail as 'ended without its output' and run again)."""
    root = _root(tmp_path)
    sel_dir = root / "docs/methods/qwen2.5-coder-1.5b/selection"
    sel_dir.mkdir(parents=True)
    sel = {"best": {"options": {"layer": -1, "template": "cot"}}, "best_plain_layer": -1}
    (sel_dir / "selection.json").write_text(json.dumps(sel))
    s = study._Study(StudyOptions(root=root, dry_run=True), lambda line: None)
    by_id = {st.id: st for st in s.steps}
    step = by_id["cell/qwen2.5-coder-1.5b/plain-at-best-layers"]
    assert s.cell_files(step) == [] and s.is_done(step)
    assert s.sentences(step) == 0
    # another model before its selection: not done, estimated as two layers
    other = by_id["cell/qwen2.5-coder-0.5b/plain-at-best-layers"]
    assert not s.is_done(other) and s.sentences(other) == 2 * STS_SENTENCES
    # one layer other than -1: one cell to run
    sel["best_plain_layer"] = -2
    (sel_dir / "selection.json").write_text(json.dumps(sel))
    s = study._Study(StudyOptions(root=root, dry_run=True), lambda line: None)
    assert len(s.cell_files(step)) == 1 and not s.is_done(step) and s.sentences(step) == STS_SENTENCES


def test_a_failed_step_is_recorded_and_the_queue_goes_on(tmp_path, monkeypatch, capsys):
    root = _root(tmp_path)
    finished: set[str] = set()
    order: list[str] = []

    def run_step(self, step):
        order.append(step.id)
        if step.id == "precision/smollm2-135m":
            raise RuntimeError("out of memory (simulated)")
        finished.add(step.id)

    real_done = study._Study.is_done
    monkeypatch.setattr(study._Study, "run_step", run_step)
    monkeypatch.setattr(study._Study, "is_done", lambda self, s: s.id in finished or real_done(self, s))
    code = run_queue(StudyOptions(root=root, models=("smollm2-135m", "gemma3-270m"), stages="ab", max_steps=3))
    assert code == 1
    assert order == ["precision/smollm2-135m", "precision/gemma3-270m", "cell/gemma3-270m/none"]
    log = json.loads((root / "docs/scaling/queue.json").read_text())
    entry = log["steps"]["precision/smollm2-135m"]
    assert entry["status"] == "failed" and "out of memory (simulated)" in entry["error"]
    assert log["steps"]["precision/gemma3-270m"]["status"] == "ok" and "wall_s" in log["steps"]["precision/gemma3-270m"]
    assert set(log["steps"]["precision/gemma3-270m"]["host"]) == {"torch_threads", "cpu_kind"}  # for search_factors
    assert not (root / "docs/scaling/.queue.lock").exists()
    # the next run tries the failed step again (once), then the rest
    order.clear()
    run_queue(StudyOptions(root=root, models=("smollm2-135m", "gemma3-270m"), stages="ab", max_steps=2))
    assert order == ["precision/smollm2-135m", "demos/gemma3-270m"]
    assert "failed before" in capsys.readouterr().out


def test_two_queues_on_one_root_refuse(tmp_path):
    from prompteol.fileio import FileLock

    root = _root(tmp_path)
    with FileLock(root / "docs/scaling/.queue.lock", "held"):
        with pytest.raises(InputError, match="another study queue is running"):
            run_queue(StudyOptions(root=root))


def test_cli_checks_root_models_and_stages(tmp_path, capsys):
    assert main(["scale", "queue", "--root", str(tmp_path), "--dry-run"]) == 2
    assert "is not a prompteol checkout" in capsys.readouterr().err
    root = _root(tmp_path)
    assert main(["scale", "queue", "--root", str(root), "--models", "opt-125m", "--dry-run"]) == 2
    assert "covers the packaged models" in capsys.readouterr().err
    assert main(["scale", "queue", "--root", str(root), "--stages", "xyz", "--dry-run"]) == 2


def test_methods_report_attributes_gains_at_equal_layer(tmp_path):
    """The report reads the selection record and the cells, and reports each gain twice."""
    from prompteol.scale.methods_report import methods_rows, write_methods_report

    root = tmp_path
    sel_dir = root / "docs/methods/m/selection"
    sel_dir.mkdir(parents=True)
    best = {"options": {"template": "ke", "layer": -2}, "score": 60.0, "sample_score": 58.0}
    (sel_dir / "selection.json").write_text(json.dumps({
        "split_description": "split", "n_pairs": 300, "n_pairs_full": 691, "best": best, "plain_full": 50.0,
        "best_plain_layer": -3, "bests": {"layer-template": {"template": "ke", "layer": -2}},
    }))  # fmt: skip
    rows = [{"options": {"template": "prompteol", "layer": -1}, "score": 40.0},
            {"options": {"template": "prompteol", "layer": -2}, "score": 57.5},
            {"options": {"template": "prompteol", "layer": -3}, "score": 57.9},
            {"options": {"template": "ke", "layer": -2}, "score": 58.0}]  # fmt: skip
    (sel_dir / "layer-template.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cells = root / "docs/scaling/cells"
    cells.mkdir(parents=True)
    for demo, layer, avg in (("none", -1, 60.0), ("none", -2, 66.0), ("none", -3, 65.0), ("best-training-free", -2, 66.5)):
        (cells / f"{demo}{layer}.json").write_text(json.dumps({
            "averages": {"sts": avg}, "tasks": {"STS12": {"score": avg}},
            "cell": {"status": "ok", "model": "m", "demo": demo, "layer": layer, "tasks": "sts", "mode": "test",
                     "dtype": "bfloat16"}}))  # fmt: skip
    (row,) = methods_rows(root)
    assert row["families"][0]["plain_same_layer"] == 57.5 and row["families"][0]["score"] == 58.0
    assert row["sts"] == {"best": 66.5, "plain_last": 60.0, "plain_same_layer": 66.0, "plain_best_layer": 65.0}
    text = write_methods_report(root).read_text()
    assert "| layer-template | `{\"template\": \"ke\", \"layer\": -2}` | 58.00 | 57.50 | +0.50 |" in text
    assert "| best-training-free (layer -2) | 66.50 | +0.50 | +1.50 |" in text
    assert "plain PromptEOL, layer -3 (its best layer on the selection split) | 65.00" in text
    # the family scores come from the family's rows: the report cites that file, so docs_numbers checks them
    assert "the scored settings `docs/methods/m/selection/layer-template.jsonl`" in text


def test_methods_report_adds_the_transfer_table_when_transfer_cells_exist(tmp_path):
    """best-training-free's transfer cell against plain PromptEOL's (none, layer -1), with the differences."""
    from prompteol.evaluation.tasks import TASK_GROUPS
    from prompteol.scale.methods_report import methods_rows, write_methods_report

    root = tmp_path
    sel_dir = root / "docs/methods/m/selection"
    sel_dir.mkdir(parents=True)
    (sel_dir / "selection.json").write_text(json.dumps({
        "split_description": "split", "n_pairs": 300, "n_pairs_full": 691, "best_plain_layer": -1, "bests": {},
        "best": {"options": {"template": "ke", "layer": -6}, "score": 60.0}, "plain_full": 50.0}))  # fmt: skip
    cells = root / "docs/scaling/cells"
    cells.mkdir(parents=True)

    def transfer_cell(name, demo, layer, base):
        tasks = {t: {"score": base + i, "classifier": "lbfgs"} for i, t in enumerate(TASK_GROUPS["transfer"])}
        tasks["MRPC"].update(f1=80.0, fits=21, not_converged=21 if demo == "none" else 0)
        avg = sum(t["score"] for t in tasks.values()) / len(tasks)
        (cells / name).write_text(json.dumps({"averages": {"transfer": avg}, "tasks": tasks, "cell": {
            "status": "ok", "model": "m", "demo": demo, "layer": layer, "tasks": "transfer", "mode": "fast",
            "dtype": "float32"}}))  # fmt: skip

    transfer_cell("plain.json", "none", -1, 80.0)
    (row,) = methods_rows(root)
    assert row["transfer"]["best"] is None and row["transfer"]["plain_last"]["avg"] == pytest.approx(83.0)
    text = write_methods_report(root).read_text()
    assert "| best-training-free (layer -6) | not yet |" in text
    assert "| plain PromptEOL, no demonstration, layer -1 | 80.00 | 81.00 |" in text and "86.00 / 80.00 | 83.00 |" in text
    assert "fast mode, lbfgs classifier, float32), from `docs/scaling/cells/plain.json`" in text
    assert "| difference |" not in text
    assert "iteration cap (their scores are the capped iterate's; docs/evaluation.md): plain: MRPC 21/21." in text
    transfer_cell("best.json", "best-training-free", -6, 81.5)
    text = write_methods_report(root).read_text()
    assert "| difference | +1.50 | +1.50 |" in text and "| +1.50 |" in text
    # a model without transfer cells gets no transfer table
    for f in ("plain.json", "best.json"):
        (cells / f).unlink()
    assert "7 transfer tasks" not in write_methods_report(root).read_text()


def test_generated_tables_go_between_their_markers(tmp_path):
    from prompteol.errors import ConfigError
    from prompteol.scale.report import update_doc_block

    doc = tmp_path / "doc.md"
    doc.write_text("intro\n<!-- t:start -->\nold\n<!-- t:end -->\noutro\n")
    update_doc_block(doc, "t", "| new |")
    assert doc.read_text() == "intro\n<!-- t:start -->\n| new |\n<!-- t:end -->\noutro\n"
    with pytest.raises(ConfigError, match="no '<!-- u:start -->'"):
        update_doc_block(doc, "u", "x")


def test_precision_table_from_the_committed_precision_cells():
    from prompteol.scale.report import precision_markdown

    text = precision_markdown(REPO / "docs/scaling/precision")
    assert "| smollm2-135m | 67.04 | 66.82 | -0.23 |" in text
