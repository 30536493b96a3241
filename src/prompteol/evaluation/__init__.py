"""SentEval-compatible evaluation of any sentence embedder (STS and transfer tasks), baselines, MTEB.

>>> from prompteol import Encoder
>>> from prompteol.evaluation import evaluate
>>> results = evaluate(Encoder.from_pretrained("smollm2-135m"), tasks="sts")   # doctest: +SKIP
>>> results["averages"]["sts"]                                                   # doctest: +SKIP

The protocol (method.md section 3) and every deviation from SentEval are in docs/evaluation.md.
Importing this package imports neither torch, scikit-learn nor scipy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

# public name -> module that defines it (imported lazily)
_EXPORTS = {
    "evaluate": ".runner",
    "SentenceEncoder": ".runner",
    "RESULTS_SCHEMA": ".runner",
    "package_versions": ".runner",
    "Task": ".tasks",
    "Part": ".tasks",
    "DataFile": ".tasks",
    "TASKS": ".tasks",
    "TASK_GROUPS": ".tasks",
    "STS_SPLITS": ".tasks",
    "MANIFEST": ".tasks",
    "MODES": ".tasks",
    "get_task": ".tasks",
    "resolve_tasks": ".tasks",
    "ENV_DATA": ".data",
    "StsPairs": ".data",
    "Examples": ".data",
    "FileStatus": ".data",
    "resolve_data_dir": ".data",
    "check_data": ".data",
    "verify_data": ".data",
    "load_sts_pairs": ".data",
    "load_task_data": ".data",
    "senteval_text": ".data",
    "score_sts": ".sts",
    "cosine_pairs": ".sts",
    "BASELINES": ".baselines",
    "load_baseline": ".baselines",
    "SentenceTransformerEncoder": ".baselines",
    "PromptEOLMTEB": ".mteb_adapter",
    "download_senteval": ".download",
    "SENTEVAL_URL": ".download",
}

__all__ = [
    "BASELINES",
    "DataFile",
    "ENV_DATA",
    "Examples",
    "FileStatus",
    "MANIFEST",
    "MODES",
    "Part",
    "PromptEOLMTEB",
    "RESULTS_SCHEMA",
    "SENTEVAL_URL",
    "STS_SPLITS",
    "SentenceEncoder",
    "SentenceTransformerEncoder",
    "StsPairs",
    "TASKS",
    "TASK_GROUPS",
    "Task",
    "check_data",
    "cosine_pairs",
    "download_senteval",
    "evaluate",
    "get_task",
    "load_baseline",
    "load_sts_pairs",
    "load_task_data",
    "package_versions",
    "resolve_data_dir",
    "resolve_tasks",
    "score_sts",
    "senteval_text",
    "verify_data",
]

if TYPE_CHECKING:  # pragma: no cover
    from .baselines import BASELINES, SentenceTransformerEncoder, load_baseline
    from .data import (
        ENV_DATA,
        Examples,
        FileStatus,
        StsPairs,
        check_data,
        load_sts_pairs,
        load_task_data,
        resolve_data_dir,
        senteval_text,
        verify_data,
    )
    from .download import SENTEVAL_URL, download_senteval
    from .mteb_adapter import PromptEOLMTEB
    from .runner import RESULTS_SCHEMA, SentenceEncoder, evaluate, package_versions
    from .sts import cosine_pairs, score_sts
    from .tasks import MANIFEST, MODES, STS_SPLITS, TASK_GROUPS, TASKS, DataFile, Part, Task, get_task, resolve_tasks


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
