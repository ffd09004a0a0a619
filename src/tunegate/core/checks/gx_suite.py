"""Great Expectations suites as a check, with row-level results.

A suite is a GX 1.x JSON file (``expectations/<name>.json``), given by name or path: a *recipe*, so
nothing of GX is built until the check runs. The canonical batch is validated in chunks (bounded
memory); the results are merged per expectation:

* every row an expectation finds unexpected becomes a finding ``gx_<expectation_type>`` with the
  column in its detail (the record's row number is GX's unexpected-index column);
* an expectation that fails overall (after ``mostly``, over the whole batch) becomes a batch issue
  with its GX ``severity``: ``critical`` halts the batch through the gate policy, ``warning`` is
  reported.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunegate.core.checks.base import BatchIssue, CanonicalBatch, Check, CheckResult, Finding
from tunegate.core.schema import ROW
from tunegate.exceptions import ConfigError

log = logging.getLogger(__name__)

_PACKAGE_SUITES = Path(__file__).resolve().parents[2] / "expectations"  # installed wheel
_SOURCE_SUITES = Path(__file__).resolve().parents[4] / "expectations"  # source checkout


def resolve_suite(suite: str | Path) -> Path:
    """A suite name (``instruction_record``) or a path to a suite JSON file."""
    candidate = Path(suite)
    if candidate.suffix == ".json" or candidate.exists():
        if not candidate.is_file():
            raise ConfigError(f"suite file {candidate} does not exist")
        return candidate
    for folder in (_PACKAGE_SUITES, _SOURCE_SUITES):
        path = folder / f"{suite}.json"
        if path.is_file():
            return path
    known = sorted({p.stem for d in (_PACKAGE_SUITES, _SOURCE_SUITES) if d.is_dir() for p in d.glob("*.json")})
    raise ConfigError(f"unknown expectation suite {suite!r}; known suites: {', '.join(known) or 'none'}")


def quiet_gx() -> None:
    """GX logs every registration at INFO under Airflow's structlog setup; keep only warnings."""
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    for name in ("great_expectations._docs_decorators", "great_expectations.data_context.types.base"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _severity(expectation: Any) -> str:
    value = getattr(expectation, "severity", "critical")
    return str(getattr(value, "value", value)).lower()


def load_suite(path: Path) -> Any:
    """Parse and build the suite; a clear :class:`ConfigError` names the file and the bad expectation."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read suite file {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"suite file {path} is not valid JSON: {exc.msg} at line {exc.lineno}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("expectations"), list):
        raise ConfigError(f"suite file {path} must be an object with an 'expectations' list")
    data.setdefault("name", path.stem)
    quiet_gx()
    import great_expectations as gx
    from great_expectations.expectations.registry import get_expectation_impl

    for i, exp in enumerate(data["expectations"]):
        etype = exp.get("type") if isinstance(exp, dict) else None
        try:
            get_expectation_impl(str(etype))
        except Exception as exc:  # GX raises its own ExpectationNotFoundError
            raise ConfigError(f"suite file {path}: expectation #{i + 1} has unknown type {etype!r}") from exc
    try:
        return gx.ExpectationSuite(**data)
    except Exception as exc:
        raise ConfigError(f"suite file {path} is not a valid GX suite: {exc}") from exc


@dataclass
class _Merged:
    """One expectation's results merged over all chunks."""

    etype: str
    column: str | None
    severity: str
    mostly: float
    map_metric: bool = False
    chunk_failed: bool = False
    element_count: int = 0
    missing_count: int = 0
    unexpected_count: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def success(self) -> bool:
        if self.errors:
            return False
        if not self.map_metric:
            return not self.chunk_failed
        nonnull = self.element_count - self.missing_count
        return nonnull == 0 or self.unexpected_count / nonnull <= 1.0 - self.mostly + 1e-12

    def describe(self) -> str:
        where = f"({self.column})" if self.column else ""
        if self.errors:
            return f"{self.etype}{where}: {self.errors[0]}"
        if self.map_metric:
            return (f"{self.etype}{where}: {self.unexpected_count} of {self.element_count} rows unexpected"
                    f" (mostly={self.mostly:g})")
        return f"{self.etype}{where}: failed"


class GxSuiteCheck(Check):
    name = "gx_suite"

    def __init__(self, suite: str | Path = "instruction_record", *, chunk_size: int = 100_000) -> None:
        if chunk_size < 1:
            raise ConfigError("chunk_size must be a positive number of rows")
        self.suite_path = resolve_suite(suite)
        self.suite = load_suite(self.suite_path)
        self.chunk_size = chunk_size

    @property
    def key(self) -> str:
        return f"gx_{self.suite.name}"

    def _columns(self, available: list[str]) -> list[str]:
        wanted: set[str] = set()
        for exp in self.suite.expectations:
            cfg = exp.configuration.kwargs
            if isinstance(cfg.get("column"), str):
                wanted.add(cfg["column"])
            for key in ("column_list", "column_set"):
                if isinstance(cfg.get(key), (list, tuple, set)):
                    wanted.update(str(c) for c in cfg[key])
        return [c for c in available if c in wanted and c != ROW]

    def run(self, batch: CanonicalBatch) -> CheckResult:
        quiet_gx()
        import great_expectations as gx
        import pandas as pd
        import pyarrow as pa
        from great_expectations.data_context.types.base import ProgressBarsConfig

        ctx = gx.get_context(mode="ephemeral")
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        asset = ctx.data_sources.add_pandas("tunegate").add_dataframe_asset("batch")
        suite = ctx.suites.add(gx.ExpectationSuite(**self.suite.to_json_dict() | {"id": None}))
        definition = ctx.validation_definitions.add(
            gx.ValidationDefinition(name=self.key, data=asset.add_batch_definition_whole_dataframe("all"),
                                    suite=suite))
        result_format = {"result_format": "COMPLETE", "unexpected_index_column_names": [ROW],
                         "return_unexpected_index_query": False}

        # GX does not return results in suite order: match them by expectation id.
        merged = {
            e.id: _Merged(etype=e.expectation_type, column=e.configuration.kwargs.get("column"),
                          severity=_severity(e), mostly=float(e.configuration.kwargs.get("mostly", 1.0)))
            for e in suite.expectations
        }
        findings: list[Finding] = []
        columns = self._columns(batch.columns)
        for start, rb in batch.iter_batches(columns=columns, batch_size=self.chunk_size):
            table = pa.Table.from_batches([rb]) if columns else pa.table({})
            df = table.to_pandas(types_mapper=pd.ArrowDtype)
            df.insert(0, ROW, range(start, start + rb.num_rows))
            res = definition.run(batch_parameters={"dataframe": df}, result_format=result_format)
            for r in res.results:
                self._merge(merged[r.expectation_config.id], r, findings)  # type: ignore[union-attr]
        if batch.num_rows == 0:
            log.info("%s: empty batch, nothing to validate", self.key)

        issues = []
        statistics = {"evaluated_expectations": len(merged), "successful_expectations": 0}
        failed: list[dict[str, Any]] = []
        for m in merged.values():
            if m.success:
                statistics["successful_expectations"] += 1
                continue
            failed.append({"expectation": m.etype, "column": m.column, "severity": m.severity,
                           "unexpected_count": m.unexpected_count, "element_count": m.element_count,
                           "message": m.describe()})
            code = "gx_critical_failure" if m.severity == "critical" else "gx_expectation_failed"
            severity = "critical" if m.severity == "critical" else "warning"
            issues.append(BatchIssue(code, severity, f"suite {self.suite.name}: {m.describe()}"))  # type: ignore[arg-type]
        statistics["unsuccessful_expectations"] = len(failed)
        log.info("%s: %d/%d expectations passed, %d rows flagged", self.key, statistics["successful_expectations"],
                 len(merged), len({f.row for f in findings}))
        return CheckResult(self.key, findings, issues,
                           metrics={"suite": self.suite.name, "suite_path": str(self.suite_path),
                                    "success": not failed, "statistics": statistics,
                                    "failed_expectations": failed[:10]})

    @staticmethod
    def _merge(m: _Merged, r: Any, findings: list[Finding]) -> None:
        info = r.exception_info or {}
        if info.get("raised_exception"):
            msg = str(info.get("exception_message") or "raised an exception").splitlines()[0]
            if m.column and m.column not in msg:
                msg = f"column {m.column!r}: {msg}"
            if msg not in m.errors:
                m.errors.append(msg)
            return
        result = r.result or {}
        if not r.success:
            m.chunk_failed = True
        if "unexpected_count" in result and "element_count" in result:
            m.map_metric = True
            m.element_count += int(result.get("element_count") or 0)
            m.missing_count += int(result.get("missing_count") or 0)
            m.unexpected_count += int(result.get("unexpected_count") or 0)
            reason = f"gx_{m.etype}"
            detail = {"column": m.column, "severity": m.severity}
            for idx in result.get("unexpected_index_list") or []:
                findings.append(Finding(int(idx[ROW]), reason, 1.0, detail))
        elif not r.success and m.etype == "expect_column_to_exist":
            m.errors.append(f"column {m.column!r} is missing from the batch")
