"""The shared-prefix key/value cache: the demonstrations and the template's opening, computed once.

Every prompt of an encoder starts with the same text (``Template.prefix``), so its keys and
values are computed once per weights state and reused by every batch. :class:`SharedPrefix`
remembers the :class:`~prompteol.encoder.forward.runner.Prefix` together with the weights state it was
computed on and recomputes it when the weights changed in place (training).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable

from .runner import ModelRunner, Prefix

__all__ = ["SharedPrefix"]

log = logging.getLogger(__name__)


class SharedPrefix:
    """``get(runner)``: the prefix for the current weights, or ``None`` where it cannot be shared."""

    def __init__(self, prefix_ids: Callable[[], list[int]], weights_state: Callable[[], Hashable]):
        self._prefix_ids = prefix_ids
        self._weights_state = weights_state
        self._state: Hashable | None = None
        self._prefix: Prefix | None = None

    def get(self, runner: ModelRunner) -> Prefix | None:
        state = (self._weights_state(), runner.layer_index)
        if state != self._state:
            self._prefix = runner.compute_prefix(self._prefix_ids())
            self._state = state
            if self._prefix is None:
                log.info("no shared-prefix cache for this model and layer; prompts are computed in full")
        return self._prefix

    def forget(self) -> None:
        self._state = None
        self._prefix = None
