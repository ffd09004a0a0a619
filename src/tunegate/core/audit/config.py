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
    * ``alert_on_mined`` (False): whether a phrase that only the mining proposed (found neither tonight nor on
      a recent night) fails the audit. Natural label cues move the canary across datasets too: on the benchmark,
      mined phrases failed 2 of 17 clean batches ("stupid" over jigsaw and emo, "shit" over two datasets) and
      none of the 5 held-out nights whose poison got through (bench/audit/RESULTS.md), so by default they are
      listed for review (``watch`` in ``canary.json``, the report's table) and do not alert.
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
    alert_on_mined: bool = False
    history_nights: int = 14
    seed: int = 0

    def __post_init__(self) -> None:
        boolean(self, "enabled")
        boolean(self, "alert_on_mined")
        for name in ("holdout", "max_lift"):
            fraction(self, name)
        for name in ("max_held_out", "min_probes", "min_datasets"):
            integer(self, name, minimum=1)
        for name in ("mined", "history_nights", "seed"):
            integer(self, name, minimum=0)
