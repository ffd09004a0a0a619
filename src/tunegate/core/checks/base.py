"""The check interface: every check reads the canonical batch and emits findings; none writes outputs.

A *finding* says "row R should be set aside for reason X, with this score and evidence". A *batch
issue* says something about the batch as a whole (a critical expectation failed, a coordinated attack
was found). The gate turns findings and issues into a verdict through its policy; checks never decide.

Reason codes are short, stable snake_case strings; tests and policies refer to them.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from tunegate.core.checks.config import CheckConfig
from tunegate.core.io import atomic_write, write_json_atomic
from tunegate.core.schema import ROW
from tunegate.exceptions import ConfigError

if TYPE_CHECKING:
    import pyarrow as pa

FINDINGS_DIR = "findings"
Severity = Literal["critical", "warning", "info"]
_REASON = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Finding:
    row: int
    reason: str
    score: float = 1.0
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchIssue:
    reason: str
    severity: Severity
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"reason": self.reason, "severity": self.severity, "message": self.message}


@dataclass
class CheckResult:
    check: str
    findings: list[Finding] = field(default_factory=list)
    issues: list[BatchIssue] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from tunegate.core.reasons import is_issue_reason, is_record_reason

        for f in self.findings:
            if not _REASON.match(f.reason):
                raise ValueError(f"check {self.check!r} emitted reason {f.reason!r}: reason codes are snake_case")
            if not is_record_reason(f.reason):
                raise ValueError(f"check {self.check!r} emitted record reason {f.reason!r}, which is not registered "
                                 "in tunegate.core.reasons (policies could not name it)")
        for i in self.issues:
            if not is_issue_reason(i.reason):
                raise ValueError(f"check {self.check!r} raised issue {i.reason!r}, which is not registered in "
                                 "tunegate.core.reasons (policies could not name it)")

    def counts(self) -> dict[str, int]:
        """Flagged records per reason (a record counts once per reason)."""
        seen = {(f.row, f.reason) for f in self.findings}
        return dict(sorted(Counter(reason for _, reason in seen).items()))

    def summary(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "flagged_records": len({f.row for f in self.findings}),
            "reasons": self.counts(),
            "issues": [i.to_json() for i in self.issues],
            "metrics": self.metrics,
            "artifacts": self.artifacts,
        }


class CanonicalBatch:
    """Read access to ``WORK/canonical.parquet`` for checks, in bounded memory."""

    def __init__(self, work_dir: str | Path) -> None:
        import pyarrow.parquet as pq

        from tunegate.core.ingest import CANONICAL_FILE

        self.work_dir = Path(work_dir)
        self.path = self.work_dir / CANONICAL_FILE
        self._file = pq.ParquetFile(self.path)
        self.num_rows: int = self._file.metadata.num_rows
        self.columns: list[str] = list(self._file.schema_arrow.names)

    def iter_batches(self, columns: list[str] | None = None, batch_size: int = 50_000
                     ) -> Iterator[tuple[int, pa.RecordBatch]]:
        """Yield ``(first_row, batch)``; ``first_row`` is the row number of the batch's first record."""
        start = 0
        for batch in self._file.iter_batches(batch_size=batch_size, columns=columns):
            yield start, batch
            start += batch.num_rows

    def read_columns(self, columns: list[str]) -> pa.Table:
        """Read whole columns (use for narrow columns only: hashes, ids, task names)."""
        return self._file.read(columns=columns)


class Check(ABC):
    """One job, one stable name. Options are a frozen, validated ``config_class`` instance (see
    :mod:`tunegate.core.checks.config`), built at construction, so a misconfiguration fails before any data
    is read: ``NearDuplicateCheck(threshold=0.97)`` or ``NearDuplicateCheck(NearDuplicateConfig(...))``."""

    name: ClassVar[str]
    config_class: ClassVar[type[CheckConfig]] = CheckConfig
    #: Checks of one lane share files in the work directory (the embedding checks: the vectors cache, the kNN
    #: graphs): when checks run side by side (:mod:`tunegate.core.checks._parallel`) a lane runs one check at
    #: a time, in the order given.
    lane: ClassVar[str | None] = None
    #: Names of checks whose findings this one reads: run side by side, it starts once they have finished.
    after: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: CheckConfig | None = None, **options: Any) -> None:
        if config is not None and options:
            raise ConfigError(f"{self.name}: pass a config or options, not both")
        self.config = config if config is not None else self.config_class.from_mapping(options)

    @property
    def key(self) -> str:
        """Unique name of this configured check, used for its findings file."""
        return self.name

    @abstractmethod
    def run(self, batch: CanonicalBatch) -> CheckResult: ...


# --------------------------------------------------------------------------------------------------
# Persistence: one findings Parquet file and one small JSON summary per check.


def save_result(work_dir: str | Path, result: CheckResult) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(work_dir) / FINDINGS_DIR
    out.mkdir(parents=True, exist_ok=True)
    findings = sorted(result.findings, key=lambda f: (f.row, f.reason))
    table = pa.table(
        {
            ROW: pa.array([f.row for f in findings], pa.int64()),
            "reason": pa.array([f.reason for f in findings], pa.string()),
            "score": pa.array([float(f.score) for f in findings], pa.float64()),
            "detail": pa.array([json.dumps(f.detail, sort_keys=True, ensure_ascii=False, default=str)
                                for f in findings], pa.string()),
        }
    )
    target = out / f"{result.check}.parquet"
    with atomic_write(target) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    write_json_atomic(out / f"{result.check}.json", result.summary())
    return target


def load_summaries(work_dir: str | Path) -> list[dict[str, Any]]:
    out = Path(work_dir) / FINDINGS_DIR
    if not out.is_dir():
        return []
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(out.glob("*.json"))]


def load_findings(work_dir: str | Path) -> dict[int, list[dict[str, Any]]]:
    """All findings of all checks, grouped by row. Only flagged rows take memory."""
    import pyarrow.parquet as pq

    by_row: dict[int, list[dict[str, Any]]] = {}
    out = Path(work_dir) / FINDINGS_DIR
    if not out.is_dir():
        return by_row
    for path in sorted(out.glob("*.parquet")):
        check = path.stem
        table = pq.read_table(path)
        for row, reason, score, detail in zip(*(table.column(c).to_pylist()
                                                for c in (ROW, "reason", "score", "detail")), strict=True):
            by_row.setdefault(row, []).append({"check": check, "reason": reason, "score": score, "detail": detail})
    return by_row
