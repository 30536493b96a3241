"""Progress where people look: a bar on a terminal, a plain line every few seconds in a log.

:func:`progress_bar` gives a ``tqdm`` bar when stderr is a terminal and a :class:`LineProgress`
otherwise (``nohup``, CI, ``2> run.log``): one line per :data:`LOG_INTERVAL_S` seconds, never a
carriage return, so a log of a 26-minute run reads as a list of lines. Both have ``update(n)``,
``close()`` and work as context managers.

Nothing here imports torch.
"""

from __future__ import annotations

import os
import sys
import time
from typing import IO, Any

__all__ = ["progress_bar", "LineProgress", "LOG_INTERVAL_S", "duration"]


def _interval() -> float:
    try:
        return max(float(os.environ.get("PROMPTEOL_PROGRESS_INTERVAL", "")), 0.0)
    except ValueError:
        return 30.0


#: seconds between two progress lines in a log (``PROMPTEOL_PROGRESS_INTERVAL`` sets it): often
#: enough to see a long job move, rare enough that a day's log stays readable
LOG_INTERVAL_S = _interval()


def duration(seconds: float) -> str:
    """``75`` -> ``1m15s``; ``3725`` -> ``1h02m``."""
    seconds = max(int(round(seconds)), 0)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class LineProgress:
    """``desc: 1,234/5,000 sent (25%), 26.1 sent/s, 2m24s left``: one line each ``interval`` seconds
    while work advances, and a last line at :meth:`close` if any line was printed."""

    def __init__(self, total: int | None, desc: str = "", unit: str = "it", initial: int = 0,
                 interval: float | None = None, file: IO[str] | None = None):  # fmt: skip
        self.total, self.desc, self.unit = total, desc, unit
        self.n = self.start_n = initial
        self.interval = LOG_INTERVAL_S if interval is None else interval
        self.file = file
        self.t0 = self.last = time.monotonic()
        self.lines = 0

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self._print(now)

    def _print(self, now: float, final: bool = False) -> None:
        done = self.n - self.start_n
        rate = done / max(now - self.t0, 1e-9)
        of = f"/{self.total:,}" if self.total else ""
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        text = f"{self.desc + ': ' if self.desc else ''}{self.n:,}{of} {self.unit}{pct}, {rate:.1f} {self.unit}/s"
        if final:
            text += f", done in {duration(now - self.t0)}"
        elif self.total and rate > 0:
            text += f", {duration((self.total - self.n) / rate)} left"
        print(text, file=self.file or sys.stderr, flush=True)
        self.lines += 1

    def close(self) -> None:
        if self.lines and self.n > self.start_n:
            self._print(time.monotonic(), final=self.n >= (self.total or 0))
            self.lines = 0

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress_bar(total: int | None, desc: str = "", unit: str = "it", *, enabled: bool = True, initial: int = 0):
    """A ``tqdm`` bar on a terminal, :class:`LineProgress` elsewhere, nothing when not ``enabled``."""
    if enabled and not sys.stderr.isatty():
        return LineProgress(total, desc, unit, initial=initial)
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit=unit, desc=desc or None, disable=not enabled, file=sys.stderr)
