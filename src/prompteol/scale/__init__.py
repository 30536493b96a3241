"""The paper's scaling study as one resumable command: ``prompteol scale`` (docs/scaling.md).

- :mod:`.grid`: the cells (model x demonstration setting x layer) and their file names;
- :mod:`.memory`: the memory and dtype rule (float32 if it fits, else bfloat16, else refuse);
- :mod:`.run`: the sweep (throughput probe, plan, one evaluation and one file per cell, resume);
- :mod:`.report`: CSV, Markdown and plots from the cell files alone;
- :mod:`.importer`: a ``prompteol eval`` results file as a cell file.

Importing this package imports neither torch nor matplotlib.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "Cell": ".grid",
    "CELL_SCHEMA": ".grid",
    "SPECIAL_DEMOS": ".grid",
    "build_cells": ".grid",
    "parse_demo_settings": ".grid",
    "parse_layers": ".grid",
    "resolve_demo": ".grid",
    "read_cell_file": ".grid",
    "ModelSize": "..models.model_size",
    "DtypeDecision": ".memory",
    "model_size": "..models.model_size",
    "estimate_need": ".memory",
    "available_memory": ".memory",
    "choose_dtype": ".memory",
    "SweepOptions": ".run",
    "SweepResult": ".run",
    "run_sweep": ".run",
    "build_report": ".report",
    "PUBLISHED_OPT": ".report",
    "import_results": ".importer",
}

__all__ = [
    "CELL_SCHEMA",
    "Cell",
    "DtypeDecision",
    "ModelSize",
    "PUBLISHED_OPT",
    "SPECIAL_DEMOS",
    "SweepOptions",
    "SweepResult",
    "available_memory",
    "build_cells",
    "build_report",
    "choose_dtype",
    "estimate_need",
    "import_results",
    "model_size",
    "parse_demo_settings",
    "parse_layers",
    "read_cell_file",
    "resolve_demo",
    "run_sweep",
]

if TYPE_CHECKING:  # pragma: no cover
    from ..models.model_size import ModelSize, model_size
    from .grid import (
        CELL_SCHEMA,
        SPECIAL_DEMOS,
        Cell,
        build_cells,
        parse_demo_settings,
        parse_layers,
        read_cell_file,
        resolve_demo,
    )
    from .importer import import_results
    from .memory import DtypeDecision, available_memory, choose_dtype, estimate_need
    from .report import PUBLISHED_OPT, build_report
    from .run import SweepOptions, SweepResult, run_sweep


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
