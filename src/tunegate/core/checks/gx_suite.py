"""Great Expectations suites as a check, with row-level results.

A suite is a GX 1.x JSON file (``expectations/<name>.json``), given by name or path: a *recipe*, so
nothing of GX is built until the check runs. The canonical batch is validated in chunks (bounded
memory); the results are merged per expectation:

* every row an expectation finds unexpected becomes a finding with the expectation's reason code: its
  ``meta.reason`` in the suite (``gx_mojibake``), or ``gx_<expectation_type>`` for one without
  (:func:`tunegate.core.reasons.expectation_reason`); the detail holds the expectation type, column and
  severity (the record's row number is GX's unexpected-index column);
* an expectation that fails overall (after ``mostly``, over the whole batch) becomes a batch issue
  (``gx_critical_failure`` or ``gx_expectation_failed``, whose message starts with the expectation's code)
  with its GX ``severity``: ``critical`` halts the batch through the gate policy, ``warning`` is reported.

The suite's page (``data_docs``) is tunegate's own, not GX's Data Docs: GX's renderer wrote record text into
the page unescaped (a ``<script>`` in a record ran in the reviewer's browser) and loaded about nine scripts and
stylesheets from CDNs. The page is rendered from the merged results with the autoescaping jinja2 template
``templates/gx_suite.html.j2``, loads nothing from the network, and shows at most :data:`MAX_SAMPLES` rows
per expectation, each value clipped to :data:`CLIP_CHARS` characters (a 50 MB record costs the page 2 KB).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from tunegate.core.checks.base import BatchIssue, CanonicalBatch, Check, CheckResult, Finding
from tunegate.core.checks.config import CheckConfig, boolean, integer, optional_path
from tunegate.core.checks.gx_load import expectation_severity, load_suite, quiet_gx, resolve_suite
from tunegate.core.checks.record_size import clip_fields
from tunegate.core.reasons import GX_CRITICAL_FAILURE, GX_EXPECTATION_FAILED, expectation_reason, legacy_gx_reason
from tunegate.core.schema import ROW

log = logging.getLogger(__name__)

@dataclass
class _Merged:
    """One expectation's results merged over all chunks."""

    etype: str
    reason: str  # the finding's code: the suite's meta.reason, or gx_<etype>
    column: str | None
    severity: str
    mostly: float
    why: str | None = None  # the suite's meta.why, shown on the page
    kwargs: dict[str, Any] = field(default_factory=dict)
    map_metric: bool = False
    chunk_failed: bool = False
    element_count: int = 0
    missing_count: int = 0
    unexpected_count: int = 0
    errors: list[str] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)  # the first unexpected rows, values clipped

    @property
    def success(self) -> bool:
        if self.errors:
            return False
        if not self.map_metric:
            return not self.chunk_failed
        nonnull = self.element_count - self.missing_count
        return nonnull == 0 or self.unexpected_count / nonnull <= 1.0 - self.mostly + 1e-12

    def describe(self) -> str:
        """``<code>: <type>(<column>): what failed``; the code is left out when it is the type's fallback."""
        what = f"{self.etype}({self.column})" if self.column else self.etype
        if self.reason != legacy_gx_reason(self.etype):
            what = f"{self.reason}: {what}"
        if self.errors:
            return f"{what}: {self.errors[0]}"
        if self.map_metric:
            return (f"{what}: {self.unexpected_count} of {self.element_count} rows unexpected"
                    f" (mostly={self.mostly:g})")
        return f"{what}: failed"


#: Expectations whose answer depends on the whole batch (uniqueness, counts): validated in one pass over
#: only the columns they name, never chunk by chunk (a duplicate id in another chunk would be missed).
GLOBAL_EXPECTATIONS = frozenset({
    "expect_column_values_to_be_unique",
    "expect_column_pair_values_a_to_identify_b",
    "expect_compound_columns_to_be_unique",
    "expect_multicolumn_values_to_be_unique",
    "expect_select_column_values_to_be_unique_within_record",
    "expect_column_unique_value_count_to_be_between",
    "expect_column_proportion_of_unique_values_to_be_between",
    "expect_column_distinct_values_to_be_in_set",
    "expect_column_distinct_values_to_contain_set",
    "expect_column_distinct_values_to_equal_set",
    "expect_table_row_count_to_be_between",
    "expect_table_row_count_to_equal",
    "expect_column_mean_to_be_between",
    "expect_column_median_to_be_between",
    "expect_column_quantile_values_to_be_between",
    "expect_column_most_common_value_to_be_in_set",
})
LABEL_SET_EXPECTATION = "expect_column_pair_values_to_be_in_task_label_set"
DATA_DOCS_SUFFIX = ".html"
#: Unexpected rows shown per expectation on the suite's page, and the characters shown of each value: what
#: one record costs the page is bounded whatever its size (the quarantine holds the record whole).
MAX_SAMPLES = 20
CLIP_CHARS = 2000


def clip(value: Any, limit: int = CLIP_CHARS) -> str:
    """``value`` as text of at most ``limit`` characters plus a marker saying how much was cut."""
    text = "null" if value is None else str(value)
    return text if len(text) <= limit else f"{text[:limit]} … (+{len(text) - limit:,} characters)"


def _id_lookup(ids: Any, start: int) -> Callable[[int], Any]:
    """Row number -> record id, over one chunk's id column (``None`` when the batch has none)."""
    def id_of(row: int) -> Any:
        return None if ids is None else ids[row - start].as_py()
    return id_of


def _columns_of(expectation: Any) -> set[str]:
    kwargs = expectation.configuration.kwargs
    cols = {kwargs[k] for k in ("column", "column_A", "column_B") if isinstance(kwargs.get(k), str)}
    for key in ("column_list", "column_set"):
        if isinstance(kwargs.get(key), (list, tuple, set)):
            cols.update(str(c) for c in kwargs[key])
    return cols


def row_local(expectation: dict[str, Any]) -> bool:
    """Whether an expectation (a suite JSON entry) judges each record by itself, so that shards of the batch can be
    validated apart: not a whole-batch expectation, and not a label set derived from the batch."""
    if expectation["type"] in GLOBAL_EXPECTATIONS:
        return False
    derived = (expectation.get("meta") or {}).get("derive_label_sets") is not None
    return not (expectation["type"] == LABEL_SET_EXPECTATION and derived)


@dataclass
class GxPartial:
    """A suite's results over some of the batch's rows: per expectation (by its index in the suite) the merged
    counts, and the findings. Shards validate the per-record expectations into one each
    (:meth:`GxSuiteCheck.validate_rows`); :meth:`GxSuiteCheck.complete` adds them up over the night."""

    merged: dict[int, _Merged] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    validated: bool = False
    #: The rows whose sample ids were taken before the merge (a shard's derived ids are renumbered then).
    sample_rows: set[int] = field(default_factory=set)

    def add(self, other: GxPartial, offset: int) -> None:
        """Add a later shard's results, its rows shifted by ``offset`` (the records before it)."""
        for i, m in other.merged.items():
            mine = self.merged.setdefault(i, dataclasses.replace(m, element_count=0, missing_count=0,
                                                                 unexpected_count=0, errors=[], samples=[]))
            mine.map_metric |= m.map_metric
            mine.chunk_failed |= m.chunk_failed
            mine.element_count += m.element_count
            mine.missing_count += m.missing_count
            mine.unexpected_count += m.unexpected_count
            mine.errors += [e for e in m.errors if e not in mine.errors]
            for sample in m.samples[:max(0, MAX_SAMPLES - len(mine.samples))]:
                mine.samples.append({**sample, "row": sample["row"] + offset})
                self.sample_rows.add(sample["row"] + offset)
        self.findings += [dataclasses.replace(f, row=f.row + offset) for f in other.findings]
        self.validated |= other.validated

    def rename_samples(self, batch: CanonicalBatch) -> None:
        """The sample rows' ids as the merged batch has them."""
        if not self.sample_rows:
            return
        ids = batch.read_columns(["id"]).column(0)
        for m in self.merged.values():
            for sample in m.samples:
                if sample["row"] in self.sample_rows:
                    sample["id"] = clip(ids[sample["row"]].as_py(), 200)

    def to_json(self) -> dict[str, Any]:
        # kwargs as JSON text: their key order is the suite's, which the page shows (a JSON file may sort keys)
        return {"merged": {str(i): {**dataclasses.asdict(m), "kwargs": json.dumps(m.kwargs, default=str)}
                           for i, m in self.merged.items()},
                "findings": [[f.row, f.reason, f.score, f.detail] for f in self.findings], "validated": self.validated}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GxPartial:
        return cls(merged={int(i): _Merged(**{**m, "kwargs": json.loads(m["kwargs"])})
                           for i, m in data["merged"].items()},
                   findings=[Finding(int(r), str(reason), float(score), dict(detail))
                             for r, reason, score, detail in data["findings"]],
                   validated=bool(data["validated"]))


@dataclass(frozen=True)
class GxSuiteConfig(CheckConfig):
    """``suite``: a bundled suite name or a suite JSON file; ``chunk_size``: rows validated at a time (the
    per-record expectations; whole-batch ones see every row); ``data_docs``: render the GX Data Docs page."""

    check: ClassVar[str] = "gx_suite"

    suite: str | Path = "instruction_record"
    chunk_size: int = 100_000
    data_docs: bool = True

    def __post_init__(self) -> None:
        optional_path(self, "suite")
        integer(self, "chunk_size", minimum=1)
        boolean(self, "data_docs")


class GxSuiteCheck(Check):
    """Validate the batch against one GX suite; see the module docstring for the semantics."""

    name = "gx_suite"
    config_class: ClassVar[type[CheckConfig]] = GxSuiteConfig
    config: GxSuiteConfig

    def __init__(self, config: CheckConfig | None = None, **options: Any) -> None:
        super().__init__(config, **options)
        # the suite is read and built here, not at run: a bad suite file fails before any data is read
        self.suite_path = resolve_suite(self.config.suite)
        self.suite = load_suite(self.suite_path)

    @property
    def key(self) -> str:
        return f"gx_{self.suite.name}"

    def run(self, batch: CanonicalBatch) -> CheckResult:
        return self.complete(batch)

    def validate_rows(self, batch: CanonicalBatch) -> GxPartial:
        """The per-record expectations (:func:`row_local`) over ``batch`` alone: a shard's share of the suite, to be
        completed over the whole night by :meth:`complete`."""
        spec = self.suite.to_json_dict()
        expectations = [dict(e) for e in spec["expectations"]]
        partial = GxPartial()
        local = [(i, e) for i, e in enumerate(expectations) if row_local(e)]
        self._validate(batch, spec, [(local, self.config.chunk_size)], partial)
        return partial

    def complete(self, batch: CanonicalBatch, partials: Sequence[tuple[int, GxPartial]] | None = None
                 ) -> CheckResult:
        """Validate the whole ``batch``. With ``partials`` (``(first row, partial)`` of each shard, in order), the
        per-record expectations are taken from them and only the rest (whole-batch expectations, label sets
        derived from the batch) run here; the result is the same as without."""
        spec = self.suite.to_json_dict()
        expectations = [dict(e) for e in spec["expectations"]]
        label_sets_info = self._derive_label_sets(batch, expectations)
        state = GxPartial()
        if partials is not None:
            for offset, part in partials:
                state.add(part, offset)
            state.rename_samples(batch)
        local = [(i, e) for i, e in enumerate(expectations)
                 if e["type"] not in GLOBAL_EXPECTATIONS and (partials is None or not row_local(e))]
        global_ = [(i, e) for i, e in enumerate(expectations) if e["type"] in GLOBAL_EXPECTATIONS]
        self._validate(batch, spec, [(local, self.config.chunk_size), (global_, max(batch.num_rows, 1))], state)
        findings = state.findings
        # the order of a whole run: per-record expectations in suite order, then the whole-batch ones
        merged = [state.merged[i] for i in sorted(state.merged, key=lambda i: (
            expectations[i]["type"] in GLOBAL_EXPECTATIONS, i))]

        issues: list[BatchIssue] = []
        statistics = {"evaluated_expectations": len(merged), "successful_expectations": 0}
        failed: list[dict[str, Any]] = []
        for m in merged:
            if m.success:
                statistics["successful_expectations"] += 1
                continue
            failed.append({"reason": m.reason, "expectation": m.etype, "column": m.column, "severity": m.severity,
                           "unexpected_count": m.unexpected_count, "element_count": m.element_count,
                           "message": m.describe()})
            critical = m.severity == "critical"
            issues.append(BatchIssue(GX_CRITICAL_FAILURE if critical else GX_EXPECTATION_FAILED,
                                     "critical" if critical else "warning", f"suite {self.suite.name}: {m.describe()}"))
        statistics["unsuccessful_expectations"] = len(failed)
        artifacts: dict[str, str] = {}
        flagged_rows = len({f.row for f in findings})
        if self.config.data_docs and state.validated:
            artifacts["data_docs"] = self._render(batch, merged, statistics, flagged_rows,
                                                  str((spec.get("meta") or {}).get("description") or ""))
        log.info("%s: %d/%d expectations passed, %d rows flagged", self.key, statistics["successful_expectations"],
                 len(merged), flagged_rows)
        metrics: dict[str, Any] = {"suite": self.suite.name, "suite_path": str(self.suite_path), "success": not failed,
                                   "statistics": statistics, "failed_expectations": failed[:10]}
        if label_sets_info:
            metrics["label_sets"] = label_sets_info
        return CheckResult(self.key, findings, issues, metrics=metrics, artifacts=artifacts)

    def _validate(self, batch: CanonicalBatch, spec: dict[str, Any],
                  passes: list[tuple[list[tuple[int, dict[str, Any]]], int]], state: GxPartial) -> None:
        """Run each pass (expectations with their suite index, rows per chunk) over ``batch``, into ``state``."""
        quiet_gx()
        import great_expectations as gx
        import pandas as pd
        import pyarrow as pa
        from great_expectations.data_context.types.base import ProgressBarsConfig

        ctx = gx.get_context(mode="ephemeral")
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        asset = ctx.data_sources.add_pandas("tunegate").add_dataframe_asset("batch")
        batch_def = asset.add_batch_definition_whole_dataframe("all")
        result_format = {"result_format": "COMPLETE", "unexpected_index_column_names": [ROW],
                         "return_unexpected_index_query": False}
        for n, (exps, chunk_rows) in enumerate(passes):
            if not exps:
                continue
            pass_name = self.suite.name if n == 0 else f"{self.suite.name}__whole_batch"
            suite = ctx.suites.add(gx.ExpectationSuite(name=pass_name, meta=spec.get("meta") or {},
                                                       expectations=[e | {"id": None} for _, e in exps]))
            definition = ctx.validation_definitions.add(
                gx.ValidationDefinition(name=f"{self.key}__{pass_name}", data=batch_def, suite=suite))
            index: dict[str, int] = {}
            for (i, _), e in zip(exps, suite.expectations, strict=True):
                cfg = e.configuration.kwargs
                meta = e.meta or {}
                etype = e.expectation_type
                index[str(e.id)] = i
                state.merged[i] = _Merged(etype=etype, reason=expectation_reason(meta, etype),
                                          column=cfg.get("column") or cfg.get("column_B"),
                                          severity=expectation_severity(e), mostly=float(cfg.get("mostly", 1.0)),
                                          why=meta.get("why"), kwargs=dict(cfg))
            wanted = set().union(*(_columns_of(e) for e in suite.expectations))
            columns = [c for c in batch.columns if c in wanted]
            # the id rides along (outside the validated frame) so the page can name the unexpected records
            read = columns + (["id"] if "id" in batch.columns and "id" not in columns else [])
            for start, rb in batch.iter_batches(columns=read or ["id"], batch_size=chunk_rows):
                table = clip_fields(pa.Table.from_batches([rb]))
                df = table.select(columns).to_pandas(types_mapper=pd.ArrowDtype)
                df.insert(0, ROW, range(start, start + rb.num_rows))
                ids = table.column("id") if "id" in table.column_names else None
                res = definition.run(batch_parameters={"dataframe": df}, result_format=result_format)
                for r in res.results:
                    self._merge(state.merged[index[str(r.expectation_config.id)]], r,  # type: ignore[union-attr]
                                state.findings, _id_lookup(ids, start))
                state.validated = True

    def _derive_label_sets(self, batch: CanonicalBatch, expectations: list[dict[str, Any]]) -> dict[str, Any]:
        """Fill ``label_sets`` of label-set expectations that ask for it (``meta.derive_label_sets``)."""
        from tunegate.core.gx_expectations import derive_label_sets

        info: dict[str, Any] = {}
        for e in expectations:
            params = (e.get("meta") or {}).get("derive_label_sets")
            if e["type"] != LABEL_SET_EXPECTATION or params is None:
                continue
            kwargs = dict(e["kwargs"])
            a, b = kwargs.get("column_A", "task"), kwargs.get("column_B", "output")
            if a not in batch.columns or b not in batch.columns:
                continue  # GX reports the missing column as a failure of this expectation
            table = clip_fields(batch.read_columns([a, b]))
            derived = derive_label_sets(zip(table.column(0).to_pylist(), table.column(1).to_pylist(), strict=True),
                                        **(params if isinstance(params, dict) else {}))
            kwargs["label_sets"] = derived | dict(kwargs.get("label_sets") or {})  # declared sets win
            e["kwargs"] = kwargs
            info = {"tasks": len(kwargs["label_sets"]), "derived": sorted(derived)[:50]}
        return info

    def _render(self, batch: CanonicalBatch, merged: list[_Merged], statistics: dict[str, int], flagged_rows: int,
                description: str) -> str:
        """The suite's page (``templates/gx_suite.html.j2``), written under WORK/findings; its relative path."""
        from tunegate.core.checks.base import FINDINGS_DIR
        from tunegate.core.io import write_text_atomic
        from tunegate.core.templates import render

        expectations = []
        for m in merged:
            columns = sorted({c for s in m.samples for c in s["values"]}, key=lambda c: (c != m.column, c))
            expectations.append({
                # the page shows the code where it showed meta.label (the field meta.reason replaced)
                "etype": m.etype, "column": m.column, "label": m.reason, "why": m.why, "severity": m.severity,
                "success": m.success, "map_metric": m.map_metric, "message": clip(m.describe()),
                "unexpected_count": m.unexpected_count, "element_count": m.element_count,
                "kwargs": clip(json.dumps(m.kwargs, ensure_ascii=False, default=str, indent=1)),
                "sample_columns": columns,
                "samples": [{"row": s["row"], "id": s["id"], "values": [s["values"].get(c, "") for c in columns]}
                            for s in m.samples]})
        html = render("gx_suite.html.j2", suite=self.suite.name, success=all(m.success for m in merged),
                      statistics=statistics, flagged_rows=flagged_rows, description=description,
                      expectations=expectations, clip_chars=CLIP_CHARS)
        rel = f"{FINDINGS_DIR}/{self.key}{DATA_DOCS_SUFFIX}"
        write_text_atomic(batch.work_dir / rel, html)
        return rel

    @staticmethod
    def _merge(m: _Merged, r: Any, findings: list[Finding], id_of: Callable[[int], Any]) -> None:
        info = r.exception_info or {}
        if not info.get("raised_exception") and any(isinstance(v, dict) and v.get("raised_exception")
                                                     for v in info.values()):
            info = next(v for v in info.values() if isinstance(v, dict) and v.get("raised_exception"))
        if info.get("raised_exception"):
            msg = str(info.get("exception_message") or "raised an exception").splitlines()[0]
            if m.column and m.column not in msg:
                msg = f"column {m.column!r}: {msg}"
            msg = clip(msg, 500)
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
            detail = {"expectation": m.etype, "column": m.column, "severity": m.severity}
            for idx in result.get("unexpected_index_list") or []:
                row = int(idx[ROW])
                findings.append(Finding(row, m.reason, 1.0, detail))
                if len(m.samples) < MAX_SAMPLES:  # clipped now: a huge record never sits in memory twice
                    m.samples.append({"row": row, "id": clip(id_of(row), 200),
                                      "values": {str(k): clip(v) for k, v in idx.items() if k != ROW}})
        elif not r.success and m.etype == "expect_column_to_exist":
            m.errors.append(f"column {m.column!r} is missing from the batch")
