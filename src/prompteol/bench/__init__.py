"""Encoding throughput benchmark: prompteol, its peers and the GEMM peaks, with an accuracy column.

Every configuration runs in its own subprocess (sequentially, same thread count, same
sentences: the first ``--n`` unique STS-B train sentences), so peak RSS is measured per
configuration; the parent prints a table and writes JSON (``--output``).

Accuracy, per configuration: each subprocess also encodes (untimed) the sentences of a fixed
STS-B subset, the first ``--sts-pairs`` pairs (default 500) of STS-B dev in file order, and
reports its Spearman x100 (:mod:`prompteol.evaluation.sts`); the parent compares the timed
sentences' vectors with those of the float32 configuration that computes the same thing
(``ref``: ``prompteol``, or ``prompteol-demo`` for the demonstration configurations): max
|vector diff| and the row-wise cosine (min, mean). A configuration within its tolerance is
``ok``; one beyond it is ``not comparable`` and gets no speed ratio; every ratio is printed
beside the accuracy of both sides. Tolerances (:data:`TOLERANCES`), by kind:

- ``exact`` (float32 paths that compute the same function): max |vector diff| < 1e-3;
- ``lowp`` (bfloat16, bf16-mixed, int8, OpenVINO bf16): cosine min >= 0.99 and
  |STS-B dev change| <= 0.5;
- ``llamacpp`` (quantised weights and activations): cosine min >= 0.98.

The modules: ``configs`` (:data:`CONFIGS`, tolerances, ratios, the arguments), ``data``, ``gemm`` (the
``gemm`` / ``gemm-bf16`` peaks), one runner per peer registered in ``base.RUNNERS`` (``prompteol_runner``:
:class:`prompteol.Encoder` with each configuration's options; ``reference``: the paper's code path;
``st``: sentence-transformers; ``onnx``: ONNX Runtime / OpenVINO on a ``torch.onnx`` export; ``llamacpp``:
llama.cpp on the GGUF file), ``worker`` (one configuration in its own process), ``harness`` (the parent)
and ``report`` (the table). A peer that does not load is recorded as ``did not load`` with its error;
the benchmark goes on. Install the peers: ``pip install -e ".[bench]"`` (docs/performance.md).
"""

from __future__ import annotations

# isort: off
from . import prompteol_runner, reference, st, onnx, llamacpp  # noqa: F401 - they register their runners
# isort: on
from .base import RUNNERS, Runner, register_runner
from .configs import ALL_CONFIGS, CONFIGS, DEFAULT_CONFIGS, RATIOS, TOLERANCES, BenchConfig, add_bench_args
from .data import StsDevSubset, cosine_rows, load_sentences, load_sts_subset
from .harness import compute, expand_configs, judge, main, run_benchmark, run_from_args, run_worker
from .report import print_report
from .worker import measure

__all__ = [
    "ALL_CONFIGS", "CONFIGS", "DEFAULT_CONFIGS", "RATIOS", "RUNNERS", "TOLERANCES", "BenchConfig", "Runner",
    "StsDevSubset", "add_bench_args", "compute", "cosine_rows", "expand_configs", "judge", "load_sentences", "load_sts_subset", "main", "measure",
    "print_report", "register_runner", "run_benchmark", "run_from_args", "run_worker",
]  # fmt: skip
