"""Progress of long work, shown the way the reader can see it.

* On a terminal (the CLI, interactively): a ``tqdm`` bar per stage on stderr (records ingested, vectors
  embedded, kNN search, scans).
* Anywhere else (an Airflow task log, CI, a redirected CLI): one log line per stage every
  ``interval`` seconds at most, plus a closing line, so a million-record night writes a few dozen
  progress lines, not a million.

Core code reports through :func:`progress` and never knows which; the CLI picks the mode with
:func:`configure`. Library noise that is not progress (FAISS's loader trying optional AVX modules)
is kept out of INFO by :func:`quiet_libraries`.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("tunegate.progress")

#: Seconds between two progress log lines of one stage (log mode).
DEFAULT_INTERVAL = 30.0
_MODE = {"bars": False, "interval": DEFAULT_INTERVAL}


def configure(*, bars: bool | None = None, interval: float | None = None) -> None:
    """``bars=True``: draw tqdm bars on stderr (only when it is a terminal); ``False``: log lines."""
    if bars is not None:
        _MODE["bars"] = bool(bars) and sys.stderr.isatty()
    if interval is not None:
        _MODE["interval"] = float(interval)


def interval() -> float:
    """Seconds between two progress log lines of one stage (log mode)."""
    return float(_MODE["interval"])


def quiet_libraries() -> None:
    """Keep third-party chatter that is not progress out of INFO (it stays visible at DEBUG)."""
    for name in ("faiss.loader", "great_expectations", "datasets", "fsspec", "botocore", "s3fs"):
        logging.getLogger(name).setLevel(logging.WARNING)


@dataclass
class Tracker:
    """A stage's counter; call :meth:`update` with the work done since the last call."""

    stage: str
    total: int | None
    unit: str
    interval: float
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    _last: float = field(default_factory=time.monotonic)
    _bar: Any = None

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            log.info("%s: %s", self.stage, self._describe(now))

    def _describe(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        if self.total:
            left = (self.total - self.done) / rate if rate > 0 else float("inf")
            eta = f", about {left:.0f} s left" if left != float("inf") else ""
            return (f"{self.done:,}/{self.total:,} {self.unit} ({self.done / self.total:.0%}), "
                    f"{rate:,.0f} {self.unit}/s{eta}")
        return f"{self.done:,} {self.unit}, {rate:,.0f} {self.unit}/s"


@contextmanager
def progress(stage: str, total: int | None = None, unit: str = "records") -> Iterator[Tracker]:
    """Track one stage: ``with progress("embed", n, "vectors") as p: ... p.update(k)``."""
    tracker = Tracker(stage, total, unit, float(_MODE["interval"]))
    if _MODE["bars"]:
        from tqdm import tqdm

        tracker._bar = tqdm(total=total, desc=stage, unit=f" {unit}", unit_scale=True, leave=False,
                            file=sys.stderr, dynamic_ncols=True)
    try:
        yield tracker
    finally:
        if tracker._bar is not None:
            tracker._bar.close()
        elif time.monotonic() - tracker.started >= tracker.interval:  # only long stages get a closing line
            log.info("%s: done, %s", stage, tracker._describe(time.monotonic()))
