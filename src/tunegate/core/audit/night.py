"""The canary audit as a step of the gate: what it reads from the night, and what it leaves in the result set.

:func:`audit_night` runs after the passing records are written and before the night commits. It writes
``canary.json`` (:func:`tunegate.core.audit.run.canary_audit`'s result) into the output directory and returns
the summary's ``canary`` entry: status, failing phrases and the batch issue of a failed audit.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tunegate.core.audit.config import CanaryConfig
from tunegate.core.outputs import CANARY_FILE

log = logging.getLogger(__name__)


def audit_night(out: Path, passing: Path, config: CanaryConfig, *,
                findings: Mapping[int, Iterable[Mapping[str, Any]]],
                check_summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Audit the passing records ``passing`` (Parquet) of the night in ``out``; returns the summary entry."""
    from tunegate.core.audit.phrases import found_phrases, history_phrases
    from tunegate.core.audit.run import audit_accepted, issue_of
    from tunegate.core.io import write_json_atomic
    from tunegate.core.report.trend import history_of

    history_dir, batch_id = history_of({"checks": {s["check"]: s for s in check_summaries}})
    found = found_phrases(findings)
    history = history_phrases(history_dir, nights=config.history_nights, exclude=batch_id, canary_file=CANARY_FILE)
    result, _ = audit_accepted(passing, config, found=found, history=history)
    write_json_atomic(out / CANARY_FILE, result)
    issue = issue_of(result)
    # no timing here: the summary of a rerun must equal the first run's (the log line has the seconds)
    entry: dict[str, Any] = {"status": result["status"],
                             "phrases": len(result.get("phrases", [])), "tasks": len(result.get("tasks", [])),
                             "failing": result.get("failing", []), "issues": [issue] if issue else []}
    if result.get("why"):
        entry["why"] = result["why"]
    return entry
