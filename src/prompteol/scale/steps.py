"""The study queue's plan: the models, the searches' settings, and every step in priority order.

The study queue's plan (``prompteol scale queue``): the models, the searches' settings, and every step
in priority order (:func:`build_plan`); :mod:`prompteol.scale.study` runs them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["STUDY_MODELS", "Step", "StudyOptions", "build_plan", "fast_dtype", "QUEUE_SCHEMA"]

QUEUE_SCHEMA = "prompteol.queue/1"
STUDY_MODELS = ("smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
#: models whose cells stay float32 (their first cells were computed so, on a CPU without native bfloat16)
FLOAT32_MODELS = ("smollm2-135m",)
#: the screen of qwen2.5-coder-1.5b's demonstration search runs on this model (same family and tokenizer)
SCREEN_ON = {"qwen2.5-coder-1.5b": "qwen2.5-coder-0.5b"}
CANDIDATES = ("src/prompteol/data/candidates/wordnet-200.jsonl",
              "src/prompteol/data/candidates/stsb-train-selflabel-smollm2-135m.jsonl")  # fmt: skip
DEMO_SEARCH = {"max_candidates": 200, "max_pairs": 40, "rescore": 8, "seed": 0}
SETTINGS_SEARCH = {"max_pairs": 300, "seed": 0, "finalists": 5}
STS_SENTENCES = 28_530  # the 7 STS tasks' unique sentences (tests/scale/test_scale_study.py checks these counts)
STSB_DEV_SENTENCES = 2_909
TRANSFER_SENTENCES = 119_152  # the 7 transfer tasks' unique sentences (SST2 69,669 of them)


@dataclass(frozen=True)
class Step:
    """One unit of the queue."""

    id: str
    stage: str
    kind: str  # precision | cell | demos | methods
    model: str
    params: dict[str, Any] = field(default_factory=dict, hash=False)
    needs: tuple[str, ...] = ()


@dataclass
class StudyOptions:
    root: Path
    models: tuple[str, ...] = STUDY_MODELS
    data_dir: str | None = None
    batch_size: int = 32
    stages: str = "abcdf"
    dry_run: bool = False
    command: str = ""
    max_steps: int | None = None

    @property
    def cells_dir(self) -> Path:
        return self.root / "docs" / "scaling" / "cells"

    @property
    def precision_dir(self) -> Path:
        return self.root / "docs" / "scaling" / "precision"

    @property
    def presets_file(self) -> Path:
        return self.root / "src" / "prompteol" / "data" / "demo_presets.json"

    @property
    def log_file(self) -> Path:
        return self.root / "docs" / "scaling" / "queue.json"

    def demos_dir(self, model: str) -> Path:
        return self.root / "docs" / "demos" / model

    def selection_dir(self, model: str) -> Path:
        return self.root / "docs" / "methods" / model / "selection"


def build_plan(models: tuple[str, ...] = STUDY_MODELS, stages: str = "abcdf") -> list[Step]:
    """Every step of the study, in priority order."""
    small = [m for m in models if m != "qwen2.5-coder-1.5b"]
    big = [m for m in models if m == "qwen2.5-coder-1.5b"]
    new = [m for m in models if m not in FLOAT32_MODELS]
    steps: list[Step] = []

    def cell(stage: str, model: str, demo: str, needs: tuple[str, ...] = (), **params: Any) -> None:
        tasks, mode, layer = params.get("tasks", "sts"), params.get("mode", "test"), params.get("layer", -1)
        suffix = "" if (tasks, mode, layer) == ("sts", "test", -1) else f"/{tasks}-{mode}/L{layer}"
        steps.append(Step(f"cell/{model}/{demo}{suffix}", stage, "cell", model, {"demo": demo, **params}, needs))

    if "a" in stages:
        for m in small:
            steps.append(Step(f"precision/{m}", "a", "precision", m))
        for m in [m for m in small if m in new]:
            cell("a", m, "none")
        for m in big:
            steps.append(Step(f"precision/{m}", "a", "precision", m))
            cell("a", m, "none")
    if "b" in stages:
        for m in new:
            screen = SCREEN_ON.get(m)
            needs = (f"demos/{screen}",) if screen and screen in models else ()
            steps.append(Step(f"demos/{m}", "b", "demos", m, {"split": "stsb-train-heldout", "preset": "searched-leakfree",
                                                               "screen_on": screen}, needs))  # fmt: skip
    if "c" in stages:
        for m in small + big:
            cell("c", m, "paper")
            cell("c", m, "default", (f"demos/{m}",) if m in new and "b" in stages else ())
    if "d" in stages:
        for m in models:
            demo_needs = (f"demos/{m}",) if m in new and "b" in stages else ()
            steps.append(Step(f"methods/{m}", "d", "methods", m, {}, demo_needs))
        for m in models:
            cell("d", m, "best-training-free", (f"methods/{m}",))
            steps.append(Step(f"cell/{m}/plain-at-best-layers", "d", "plain-layers", m, {}, (f"methods/{m}",)))
    if "f" in stages:

        def stsb_dev(m: str) -> None:
            screen = SCREEN_ON.get(m)
            needs = (f"demos-stsb-dev/{screen}",) if screen and screen in models else ()
            steps.append(Step(f"demos-stsb-dev/{m}", "f", "demos", m, {"split": "stsb-dev", "preset": "searched-stsb-dev",
                                                                       "screen_on": screen}, needs))  # fmt: skip
            cell("f", m, "stsb-dev", (f"demos-stsb-dev/{m}",))

        for m in small:
            stsb_dev(m)
        # the transfer cells (the paper's third claim; the three models whose 7 transfer tasks take well under
        # two hours here) before the largest model's hours of stsb-dev; plain PromptEOL at every size first (the
        # claim's answer), then each model's best training-free setting
        transfer = [m for m in ("smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b") if m in models]
        for m in transfer:
            cell("f", m, "none", tasks="transfer", mode="fast")
        for m in transfer:
            cell("f", m, "best-training-free", (f"methods/{m}",), tasks="transfer", mode="fast")
        for m in big:
            stsb_dev(m)
    return steps


def fast_dtype(model: str) -> str:
    """The study's dtype for a new cell of ``model`` on this machine."""
    if model in FLOAT32_MODELS:
        return "float32"
    from ..records import native_bf16

    return "bfloat16" if native_bf16() else "float32"
