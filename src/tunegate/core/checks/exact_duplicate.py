"""Exact duplicates by content hash: the first occurrence stays, later copies are flagged."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

from tunegate.core.checks.base import CanonicalBatch, Check, CheckResult, Finding
from tunegate.core.checks.config import CheckConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExactDuplicateConfig(CheckConfig):
    """No options: a content hash has no threshold (an option given is an error naming the check)."""

    check: ClassVar[str] = "exact_duplicate"


class ExactDuplicateCheck(Check):
    """Flag every record whose ``content_sha256`` was already seen earlier in the batch.

    Reason ``exact_duplicate``; the detail names the kept record (``duplicate_of``). Memory: one
    dict entry per distinct hash (about 150 bytes), so 1M records cost ~150 MB.
    """

    name = "exact_duplicate"
    config_class: ClassVar[type[CheckConfig]] = ExactDuplicateConfig

    def run(self, batch: CanonicalBatch) -> CheckResult:
        first_seen: dict[str, str] = {}
        findings: list[Finding] = []
        for start, rb in batch.iter_batches(columns=["id", "content_sha256"]):
            ids = rb.column(0).to_pylist()
            hashes = rb.column(1).to_pylist()
            for offset, (rid, digest) in enumerate(zip(ids, hashes, strict=True)):
                kept = first_seen.get(digest)
                if kept is None:
                    first_seen[digest] = rid
                else:
                    findings.append(Finding(start + offset, "exact_duplicate", 1.0, {"duplicate_of": kept}))
        log.info("exact_duplicate: %d of %d records repeat an earlier record (%d distinct)",
                 len(findings), batch.num_rows, len(first_seen))
        return CheckResult(self.name, findings, metrics={"records": batch.num_rows, "distinct": len(first_seen),
                                                         "duplicates": len(findings)})
