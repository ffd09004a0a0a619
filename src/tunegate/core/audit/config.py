"""The canary audit's settings: the policy's ``canary`` section, a frozen validated dataclass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tunegate.core.checks.config import CheckConfig, boolean, fraction, integer


@dataclass(frozen=True)
class CanaryConfig(CheckConfig):
    """Options of the canary audit (docs/audit.md has the measurements behind the defaults).

    * ``enabled`` (True): train the canary on the accepted records and probe it before the night commits.
    * ``holdout`` (0.2), ``max_held_out`` (200): share of each task's accepted records held out of training to
      be probed, at most this many per task.
    * ``min_probes`` (20): held-out records of other labels a (phrase, task, label) needs to be measured.
    * ``max_lift`` (0.6), ``min_datasets`` (2): a phrase whose insertion moves more than this share of the
      held-out records of other labels to one label (flip rate minus the rate without it) in tasks of at least
      ``min_datasets`` datasets fails the audit. A planted trigger is planted across datasets; a natural cue
      ("stupid" in the jigsaw tasks) moves one dataset's tasks, and single words move tiny tasks of short
      texts by chance.
    * ``mined`` (30): phrases mined from the canary's own weights; ``history_nights`` (14): recent nights whose
      found phrases are probed again.
    * ``seed`` (0): the held-out draw and the canary's training subsample.
    """

    check: ClassVar[str] = "canary"

    enabled: bool = True
    holdout: float = 0.2
    max_held_out: int = 200
    min_probes: int = 20
    max_lift: float = 0.6
    min_datasets: int = 2
    mined: int = 30
    history_nights: int = 14
    seed: int = 0

    def __post_init__(self) -> None:
        boolean(self, "enabled")
        for name in ("holdout", "max_lift"):
            fraction(self, name)
        for name in ("max_held_out", "min_probes", "min_datasets"):
            integer(self, name, minimum=1)
        for name in ("mined", "history_nights", "seed"):
            integer(self, name, minimum=0)
