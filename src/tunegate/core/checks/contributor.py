"""The contributor policy: blocklist, a volume cap for contributors seen for the first time, and campaign
attribution. Runs after the poison scans and reads their findings from the work directory; the gate applies its
reasons like any other.

``contributor_blocked``
    Every record of a contributor on ``blocklist``.
``contributor_new_volume``
    A contributor the ledger has never seen (no record in any published night but tonight's) may bring
    ``new_contributor_max_records`` records; the ones after that, in input order, are held. Contributors on
    ``allowlist`` are not new (pre-approved); they, like everyone, still go through every check. The cap needs a
    ledger with at least one night: on the first night every contributor is new, and the check says it did not cap.
``contributor_campaign``
    For each campaign of the night (the records ``poison_trigger`` and ``poison_content`` flagged for one phrase,
    or the night's anomalous refusals) and each named contributor with ``k`` of its ``n`` records, out of ``K``
    of the night's ``N``: the exact chance of ``k`` or more under random assignment, ``P(X >= k)`` for
    ``X ~ Hypergeometric(N, K, n)``. Below ``campaign_alpha`` divided by the number of (campaign, contributor)
    pairs tested (Bonferroni), with ``k >= campaign_min_records``, the campaign is attributed to them: their other
    records of the night are held too, and a ``contributor_campaign`` warning names them.

Records without a contributor count under ``(unknown)``: never blocked (unless the blocklist names
``(unknown)``), never capped, never attributed. With no contributor named at all the check costs one column read
and says so (``insufficient_data``).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from tunegate.core.checks.base import FINDINGS_DIR, BatchIssue, CanonicalBatch, Check, CheckResult, Finding
from tunegate.core.checks.config import CheckConfig, integer, number, optional_path, strings
from tunegate.core.reasons import (
    CHECK_SKIPPED,
    CONTRIBUTOR_BLOCKED,
    CONTRIBUTOR_CAMPAIGN,
    CONTRIBUTOR_NEW_VOLUME,
    INSUFFICIENT_DATA,
    REFUSAL_ANOMALY,
)
from tunegate.exceptions import ConfigError

log = logging.getLogger(__name__)

#: The checks whose findings make campaigns, and the poison reasons among them.
POISON_CHECKS: tuple[str, ...] = ("poison_trigger", "poison_content")
#: Attributions named in an issue message (all are in the metrics).
_NAMED = 5


@dataclass(frozen=True)
class ContributorPolicyConfig(CheckConfig):
    """``blocklist``/``allowlist``: contributor names; ``new_contributor_max_records``: records a contributor seen
    for the first time may bring (``null``: no cap); ``campaign_alpha``, ``campaign_min_records``: the attribution
    test. ``history_dir``/``batch_id``: set per run (the ledger lives in the history)."""

    check: ClassVar[str] = "contributor_policy"

    blocklist: tuple[str, ...] = ()
    allowlist: tuple[str, ...] = ()
    new_contributor_max_records: int | None = 1000
    campaign_alpha: float = 0.001
    campaign_min_records: int = 5
    history_dir: str | None = None
    batch_id: str | None = None

    def __post_init__(self) -> None:
        strings(self, "blocklist")
        strings(self, "allowlist")
        both = sorted(set(self.blocklist) & set(self.allowlist))
        if both:
            raise ConfigError(f"contributor_policy: {both} on both the blocklist and the allowlist; pick one")
        if self.new_contributor_max_records is not None:
            integer(self, "new_contributor_max_records", minimum=0)
        number(self, "campaign_alpha", low=0.0, high=0.5, low_open=True)
        integer(self, "campaign_min_records", minimum=2)
        optional_path(self, "history_dir")


class ContributorPolicyCheck(Check):
    """Blocklist, new-contributor volume cap and campaign attribution (see the module docstring)."""

    name = "contributor_policy"
    config_class: ClassVar[type[CheckConfig]] = ContributorPolicyConfig
    config: ContributorPolicyConfig
    after: ClassVar[tuple[str, ...]] = POISON_CHECKS  # campaign attribution reads their findings

    def run(self, batch: CanonicalBatch) -> CheckResult:
        from tunegate.core.ledger.store import UNKNOWN, name_of

        cfg = self.config
        started = time.monotonic()
        names = ([name_of(c) for c in batch.read_columns(["contributor"]).column(0).to_pylist()]
                 if "contributor" in batch.columns else [UNKNOWN] * batch.num_rows)
        rows_of: dict[str, list[int]] = {}
        for row, name in enumerate(names):
            rows_of.setdefault(name, []).append(row)
        named = sorted(set(rows_of) - {UNKNOWN})
        blocked = sorted(set(cfg.blocklist) & set(rows_of))
        metrics: dict[str, Any] = {"records": batch.num_rows, "contributors": len(named),
                                   "unknown_records": len(rows_of.get(UNKNOWN, [])),
                                   "history_dir": cfg.history_dir, "batch_id": cfg.batch_id}
        if not named and not blocked:
            reason = (f"no record names a contributor: nothing to block, cap or attribute (every record counts under "
                      f"{UNKNOWN!r} in the ledger)")
            log.info("contributor_policy: %s", reason)
            return CheckResult(self.name, [], [BatchIssue(CHECK_SKIPPED, "info", reason)],
                               {**metrics, "status": INSUFFICIENT_DATA, "status_reason": reason})
        findings: list[Finding] = []
        issues: list[BatchIssue] = []
        for name in blocked:
            findings += [Finding(r, CONTRIBUTOR_BLOCKED, 1.0, {"contributor": name}) for r in rows_of[name]]
        if blocked:
            issues.append(BatchIssue(CONTRIBUTOR_BLOCKED, "info", "blocklisted contributor(s) set aside: " + ", ".join(
                f"{n!r} ({len(rows_of[n])} records)" for n in blocked)))
        capped, cap_note = self._cap(rows_of, [n for n in named if n not in blocked])
        for name, rows in capped.items():
            limit = cfg.new_contributor_max_records
            findings += [Finding(r, CONTRIBUTOR_NEW_VOLUME, round(len(rows_of[name]) / max(limit or 1, 1), 3),
                                 {"contributor": name, "records": len(rows_of[name]), "cap": limit})
                         for r in rows]
        if capped:
            sent = ", ".join(f"{n!r} sent {len(rows_of[n])} ({len(rows)} held)" for n, rows in capped.items())
            issues.append(BatchIssue(CONTRIBUTOR_NEW_VOLUME, "warning", "new contributor(s) over the first-night cap "
                                     f"of {cfg.new_contributor_max_records} records: {sent}"))
        attributions = attribute(campaigns(batch.work_dir), rows_of, named, total=batch.num_rows,
                                 alpha=cfg.campaign_alpha, min_records=cfg.campaign_min_records)
        campaign_rows: dict[str, set[int]] = {}
        for a in attributions:
            campaign_rows.setdefault(a["contributor"], set()).update(a.pop("_rows"))
        for name, in_campaign in campaign_rows.items():
            detail = {"contributor": name,
                      "campaigns": [a["campaign"] for a in attributions if a["contributor"] == name]}
            findings += [Finding(r, CONTRIBUTOR_CAMPAIGN, 1.0, detail) for r in rows_of[name] if r not in in_campaign]
        if attributions:
            issues.append(BatchIssue(CONTRIBUTOR_CAMPAIGN, "warning", "; ".join(
                f"campaign {a['campaign']!r} ({a['check']}): {a['from_contributor']} of its {a['campaign_records']} "
                f"records from contributor {a['contributor']!r}, who sent {a['contributor_records']} "
                f"(expected {a['expected']:.1f}, hypergeometric p={a['p_value']:.2g}); their other records are held"
                for a in attributions[:_NAMED])))
        metrics.update({
            "status": "ok",
            "status_reason": f"{len(named)} named contributor(s); " + cap_note,
            "blocked": {n: len(rows_of[n]) for n in blocked},
            "new_contributor_max_records": cfg.new_contributor_max_records,
            "new_over_cap": {n: len(rows) for n, rows in capped.items()},
            "campaigns": attributions,
            "seconds": round(time.monotonic() - started, 3),
        })
        log.info("contributor_policy: %d contributor(s), %d blocked, %d new over the cap, %d campaign attribution(s), "
                 "%d records flagged in %.2fs", len(named), len(blocked), len(capped), len(attributions),
                 len({f.row for f in findings}), metrics["seconds"])
        return CheckResult(self.name, findings, issues, metrics)

    def _cap(self, rows_of: dict[str, list[int]], named: list[str]) -> tuple[dict[str, list[int]], str]:
        """New contributors' rows beyond the cap, and a note saying whether and how the cap applied."""
        from tunegate.core.ledger.store import load_ledger

        cfg = self.config
        limit = cfg.new_contributor_max_records
        if limit is None:
            return {}, "no new-contributor cap (policy: null)"
        if cfg.history_dir is None:
            return {}, "no history given: the new-contributor cap needs the ledger, not applied"
        ledger = load_ledger(cfg.history_dir, exclude=cfg.batch_id)
        if not ledger.nights:
            return {}, ("the ledger has no night yet (every contributor is new): the new-contributor cap starts with "
                        "the next night")
        capped: dict[str, list[int]] = {}
        new = 0
        for name in named:
            entry = ledger.get("contributor", name)
            if name in cfg.allowlist or (entry is not None and entry.counts.submitted > 0):
                continue
            new += 1
            if len(rows_of[name]) > limit:
                capped[name] = rows_of[name][limit:]
        return capped, (f"{new} new contributor(s) against a ledger of {len(ledger.nights)} night(s), "
                        f"cap {limit} records")


def campaigns(work_dir: str | Path) -> dict[tuple[str, str], set[int]]:
    """``(check, campaign) -> rows``: the poison scans' findings of this run grouped by phrase (the anomalous
    refusals are one campaign, ``refusals``)."""
    import pyarrow.parquet as pq

    out: dict[tuple[str, str], set[int]] = {}
    for check in POISON_CHECKS:
        path = Path(work_dir) / FINDINGS_DIR / f"{check}.parquet"
        if not path.is_file():
            continue
        data = pq.read_table(path, columns=["row", "reason", "detail"]).to_pydict()
        for row, reason, detail in zip(data["row"], data["reason"], data["detail"], strict=True):
            phrase = (json.loads(detail) if detail else {}).get("phrase")
            key = str(phrase) if phrase else ("refusals" if reason == REFUSAL_ANOMALY else reason)
            out.setdefault((check, key), set()).add(int(row))
    return out


def attribute(found: dict[tuple[str, str], set[int]], rows_of: dict[str, list[int]], named: list[str], *,
              total: int, alpha: float, min_records: int) -> list[dict[str, Any]]:
    """The (campaign, contributor) pairs beyond chance: exact hypergeometric tail, Bonferroni over the pairs
    tested (those where the contributor has at least one campaign record). Strongest first."""
    from tunegate.core.ledger.stats import hypergeometric_tail

    owner = {r: name for name in named for r in rows_of[name]}
    tests = []
    for (check, campaign), rows in sorted(found.items()):
        per: dict[str, set[int]] = {}
        for r in rows:
            if r in owner:
                per.setdefault(owner[r], set()).add(r)
        tests += [(check, campaign, len(rows), name, mine) for name, mine in sorted(per.items())]
    out = []
    for check, campaign, n, name, mine in tests:
        k, big_k = len(mine), len(rows_of[name])
        if k < min_records:
            continue
        p = hypergeometric_tail(k, total, big_k, n)
        if p < alpha / len(tests):
            out.append({"check": check, "campaign": campaign, "contributor": name, "campaign_records": n,
                        "from_contributor": k, "contributor_records": big_k, "expected": round(n * big_k / total, 2),
                        "p_value": float(f"{p:.3g}"), "tests": len(tests), "_rows": mine})
    return sorted(out, key=lambda a: (a["p_value"], a["contributor"], a["campaign"]))
