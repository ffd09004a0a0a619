"""The arithmetic of the ledger and of campaign attribution: a Beta posterior of a flag rate, and an exact
hypergeometric tail.

Both are exact (no normal approximation): a contributor seen for 12 records gets the wide interval it deserves,
and a campaign of 6 records is tested as 6 draws, not as a proportion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: The prior of every flag rate: Jeffreys' Beta(1/2, 1/2), the reference prior of a binomial rate. It adds one
#: record's worth of belief, split evenly, so a contributor with no records has trust 0.5 with an interval spanning
#: nearly all of [0, 1], and a few records move it quickly.
PRIOR_FLAGGED = 0.5
PRIOR_CLEAN = 0.5
#: Mass of the equal-tailed credible interval reported.
CREDIBLE_MASS = 0.95


@dataclass(frozen=True)
class Trust:
    """The posterior of a contributor's (or source's) flag rate after ``flagged`` of ``records`` were flagged.

    ``score`` is the posterior mean of 1 - flag rate (the probability that their next record is not flagged);
    ``low``/``high`` the equal-tailed :data:`CREDIBLE_MASS` interval of it."""

    records: int
    flagged: int
    score: float
    low: float
    high: float

    def to_json(self) -> dict[str, float | int]:
        return {"records": self.records, "flagged": self.flagged, "score": round(self.score, 4),
                "low": round(self.low, 4), "high": round(self.high, 4)}


def trust(flagged: int, records: int) -> Trust:
    """Beta-Binomial posterior: flag rate ~ Beta(PRIOR_FLAGGED + flagged, PRIOR_CLEAN + records - flagged)."""
    from scipy.special import betaincinv

    if not 0 <= flagged <= records:
        raise ValueError(f"flagged ({flagged}) must lie between 0 and records ({records})")
    a, b = PRIOR_FLAGGED + flagged, PRIOR_CLEAN + records - flagged
    tail = (1.0 - CREDIBLE_MASS) / 2
    rate_low, rate_high = float(betaincinv(a, b, tail)), float(betaincinv(a, b, 1.0 - tail))
    return Trust(records, flagged, 1.0 - a / (a + b), 1.0 - rate_high, 1.0 - rate_low)


def _log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def hypergeometric_tail(k: int, population: int, successes: int, draws: int) -> float:
    """``P(X >= k)`` for ``X ~ Hypergeometric(population, successes, draws)``: the chance that ``draws`` records
    picked at random from ``population`` hold at least ``k`` of the ``successes`` (a contributor's records).
    Summed exactly in log space."""
    if not 0 <= successes <= population or not 0 <= draws <= population:
        raise ValueError(f"hypergeometric: need 0 <= successes ({successes}), draws ({draws}) <= population "
                         f"({population})")
    low, high = max(0, draws - (population - successes)), min(successes, draws)
    if k <= low:
        return 1.0
    if k > high:
        return 0.0
    total = _log_choose(population, draws)
    logs = [_log_choose(successes, i) + _log_choose(population - successes, draws - i) - total
            for i in range(k, high + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs))
