"""The contributor ledger: per contributor and per source, across nights, what was submitted, accepted and
quarantined (by reason), what review confirmed as poison, first and last seen, and a trust score with honest
uncertainty (:mod:`.stats`: the Beta posterior of the flag rate, its mean and 95% credible interval).

Kept beside the history (``HISTORY_DIR/ledger/``), one file per published night (:mod:`.store`): publish writes
it from the committed outputs (:func:`tunegate.core.pipeline.publish`), a rerun replaces it. The gate compares
tonight with it (:mod:`.tonight`) for the summary, the report and the alert; the ``contributor_policy`` check reads
it to know who is new. docs/provenance.md, "Contributor ledger and source diversity", has the whole design.
"""

from __future__ import annotations

from tunegate.core.ledger.stats import Trust, hypergeometric_tail, trust
from tunegate.core.ledger.store import (
    KINDS,
    LEDGER_DIR,
    POLICY_REASONS,
    UNKNOWN,
    Counts,
    Entry,
    Ledger,
    load_ledger,
    name_of,
    night_counts,
    night_path,
    record_night,
)
from tunegate.core.ledger.tonight import contributor_summary

__all__ = ["KINDS", "LEDGER_DIR", "POLICY_REASONS", "UNKNOWN", "Counts", "Entry", "Ledger", "Trust",
           "contributor_summary", "hypergeometric_tail", "load_ledger", "name_of", "night_counts", "night_path",
           "record_night", "trust"]
