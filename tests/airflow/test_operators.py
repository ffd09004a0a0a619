"""Operator unit tests on real data slices: template fields, files written, small results, errors."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.conftest import slice_records, write_jsonl

pytestmark = pytest.mark.airflow

NIGHT = datetime(2026, 1, 3, tzinfo=UTC)


def _context(**extra: Any) -> dict[str, Any]:
    events: defaultdict[Any, SimpleNamespace] = defaultdict(lambda: SimpleNamespace(extra={}))
    return {"logical_date": NIGHT, "dag_run": SimpleNamespace(run_after=NIGHT), "outlet_events": events, **extra}


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 real Super-NaturalInstructions records, the first 15 repeated: 315 records, 15 exact duplicates."""
    records = slice_records()[:300]
    return write_jsonl(tmp_path_factory.mktemp("batch") / "batch.jsonl", records + records[:15])


@pytest.fixture(scope="module")
def ingested(batch: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    from tunegate.operators import IngestOperator

    run_dir = tmp_path_factory.mktemp("run")
    result = IngestOperator(task_id="ingest", inputs=str(batch), run_dir=str(run_dir)).execute(_context())
    return SimpleNamespace(run_dir=run_dir, result=result)


def test_template_fields_cover_paths_and_batch_keys() -> None:
    from tunegate.operators import GateOperator, IngestOperator, PublishOperator, ScanOperator, ValidateOperator

    assert set(IngestOperator.template_fields) == {"inputs", "fmt", "input_options", "storage_conn_id",
                                                   "policy_file", "run_dir"}
    assert set(ValidateOperator.template_fields) == {"policy_file", "suites", "run_dir"}
    assert set(ScanOperator.template_fields) == {"policy_file", "checks", "check_options", "history_dir", "run_dir"}
    assert set(GateOperator.template_fields) == {"policy_file", "policy_overrides", "run_dir"}
    assert set(PublishOperator.template_fields) == {"history_dir", "policy_file", "run_dir"}


def test_template_fields_render_from_params_and_logical_date() -> None:
    from airflow.sdk import DAG

    from tunegate.operators import GateOperator, IngestOperator

    with DAG("render_probe", schedule=None):
        ingest = IngestOperator(task_id="ingest", inputs="{{ params.input_uri }}", run_dir="/data/{{ ds }}")
        gate = GateOperator(task_id="gate", policy_file="{{ params.policy_file or '' }}",
                            policy_overrides={"max_quarantined_fraction": "{{ params.limit }}"})
    context = {"params": {"input_uri": "s3://bucket/night.jsonl", "policy_file": None, "limit": "0.1"},
               "ds": "2026-01-03"}
    ingest.render_template_fields(context)  # type: ignore[arg-type]
    gate.render_template_fields(context)  # type: ignore[arg-type]
    assert (ingest.inputs, ingest.run_dir) == ("s3://bucket/night.jsonl", "/data/2026-01-03")
    assert gate.policy_file == ""
    assert gate.policy_overrides == {"max_quarantined_fraction": "0.1"}


def test_init_only_assigns(tmp_path: Path) -> None:
    # Constructing with inputs that do not exist yet must not touch them: DAG files parse everywhere.
    from tunegate.operators import GateOperator, IngestOperator, ScanOperator, ValidateOperator

    IngestOperator(task_id="i", inputs=str(tmp_path / "missing.jsonl"))
    ValidateOperator(task_id="v", suites=["no_such_suite"])
    ScanOperator(task_id="s", checks=["no_such_check"])
    GateOperator(task_id="g", policy_file=str(tmp_path / "missing.yaml"))
    assert list(tmp_path.iterdir()) == []  # nothing read, nothing written


def test_ingest_writes_the_work_dir_and_returns_counts(ingested: SimpleNamespace) -> None:
    work = ingested.run_dir / "work"
    for name in ("canonical.parquet", "rejected.jsonl", "ingest.json"):
        assert (work / name).is_file(), name
    assert pq.read_metadata(work / "canonical.parquet").num_rows == 315
    assert ingested.result == {"work_dir": str(work), "files": 1, "records": 315, "rejected": 0, "total": 315}


def test_scan_writes_findings_and_returns_a_digest(ingested: SimpleNamespace) -> None:
    from tunegate.operators import ScanOperator

    result = ScanOperator(task_id="scan", checks=["exact_duplicate"], run_dir=str(ingested.run_dir)).execute(_context())
    assert (ingested.run_dir / "work" / "findings" / "exact_duplicate.parquet").is_file()
    assert result["checks"]["exact_duplicate"] == {"flagged_records": 15, "reasons": {"exact_duplicate": 15},
                                                   "issues": []}
    assert len(json.dumps(result)) < 1024


def test_validate_runs_a_suite_by_name(ingested: SimpleNamespace) -> None:
    from tunegate.operators import ValidateOperator

    result = ValidateOperator(task_id="validate", suites=["instruction_record"], data_docs=False,
                              run_dir=str(ingested.run_dir)).execute(_context())
    assert (ingested.run_dir / "work" / "findings" / "gx_instruction_record.json").is_file()
    digest = result["checks"]["gx_instruction_record"]
    assert digest["issues"] == []  # clean real records: no failed expectation over the batch
    assert len(json.dumps(result)) < 4096


def test_gate_publishes_extra_on_quarantine_and_calls_on_quarantine(ingested: SimpleNamespace) -> None:
    from tunegate.operators import GateOperator, accepted_batch_asset

    asset = accepted_batch_asset("unit")
    seen: list[dict[str, Any]] = []
    gate = GateOperator(task_id="gate", run_dir=str(ingested.run_dir), outlets=[asset],
                        on_quarantine=lambda ctx: seen.append(ctx["tunegate_summary"]))
    context = _context()
    result = gate.execute(context)
    run_dir = ingested.run_dir
    for name in ("accepted.parquet", "quarantine.parquet", "rejected.jsonl", "summary.json", "report.html"):
        assert (run_dir / name).is_file(), name
    assert result["verdict"] == "quarantine"
    assert result["counts"]["quarantined"] >= 15
    assert result["counts"]["accepted"] + result["counts"]["quarantined"] == 315
    assert result["accepted_uri"] == (run_dir / "accepted.parquet").resolve().as_uri()
    assert context["outlet_events"][asset].extra == result
    assert [s["verdict"] for s in seen] == ["quarantine"]
    assert len(json.dumps(result)) < 2048


def test_gate_halt_raises_fail_exception_with_the_halt_message_and_publishes_nothing(
        ingested: SimpleNamespace) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from tunegate.core.gate import halt_message
    from tunegate.operators import GateOperator, accepted_batch_asset

    asset = accepted_batch_asset("unit")
    gate = GateOperator(task_id="gate", run_dir=str(ingested.run_dir), outlets=[asset],
                        policy_overrides={"max_quarantined_fraction": 0.0})
    context = _context()
    with pytest.raises(AirflowFailException) as info:
        gate.execute(context)
    summary = json.loads((ingested.run_dir / "summary.json").read_text(encoding="utf-8"))
    assert summary["verdict"] == "halt"
    assert str(info.value) == halt_message(summary)
    assert asset not in context["outlet_events"]


def test_bad_configuration_fails_without_retry(ingested: SimpleNamespace, tmp_path: Path) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from tunegate.operators import GateOperator, IngestOperator, ScanOperator

    with pytest.raises(AirflowFailException, match=r"^InputError: .*missing\.jsonl: no such file$"):
        IngestOperator(task_id="i", inputs=str(tmp_path / "missing.jsonl"), run_dir=str(tmp_path)).execute(_context())
    with pytest.raises(AirflowFailException, match=r"\['no_such_check'\]; known: record_size, exact_duplicate"):
        ScanOperator(task_id="s", checks=["no_such_check"], run_dir=str(ingested.run_dir)).execute(_context())
    with pytest.raises(AirflowFailException, match="unknown policy settings"):
        GateOperator(task_id="g", policy_overrides={"max_typo": 1}, run_dir=str(ingested.run_dir)).execute(_context())


def test_run_dir_derives_from_data_root_dag_id_and_logical_date(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    from airflow.sdk import DAG
    from airflow.sdk.exceptions import AirflowFailException

    from tunegate.operators import IngestOperator

    with DAG("nightly_probe", schedule=None):
        op = IngestOperator(task_id="ingest", inputs="x")
    monkeypatch.setenv("TUNEGATE_DATA_ROOT", str(tmp_path))
    assert op.resolve_run_dir(_context()) == tmp_path / "nightly_probe" / "2026-01-03"  # type: ignore[arg-type]
    no_logical_date = _context(logical_date=None)
    assert op.resolve_run_dir(no_logical_date) == tmp_path / "nightly_probe" / "2026-01-03"  # type: ignore[arg-type]
    monkeypatch.delenv("TUNEGATE_DATA_ROOT")
    with pytest.raises(AirflowFailException, match="TUNEGATE_DATA_ROOT is not set"):
        op.resolve_run_dir(_context())  # type: ignore[arg-type]


def test_rerun_of_a_night_gives_identical_outputs_and_leaves_other_nights_alone(batch: Path, tmp_path: Path) -> None:
    from tunegate.operators import GateOperator, IngestOperator, ScanOperator

    def night(run_dir: Path) -> dict[str, bytes]:
        for op in (IngestOperator(task_id="i", inputs=str(batch), run_dir=str(run_dir)),
                   ScanOperator(task_id="s", checks=["exact_duplicate"], run_dir=str(run_dir)),
                   GateOperator(task_id="g", run_dir=str(run_dir))):
            op.execute(_context())
        return {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}

    other = tmp_path / "2026-01-02"
    other.mkdir()
    (other / "accepted.parquet").write_bytes(b"yesterday")
    first = night(tmp_path / "2026-01-03")
    second = night(tmp_path / "2026-01-03")
    assert first == second
    assert (other / "accepted.parquet").read_bytes() == b"yesterday"


def test_consumer_rejects_an_event_without_the_batch() -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from tunegate.operators import latest_batch

    with pytest.raises(AirflowFailException, match="no triggering asset event"):
        latest_batch([])
    with pytest.raises(AirflowFailException, match="lacks"):
        latest_batch([SimpleNamespace(extra={"verdict": "pass"})])
    newest = {"verdict": "pass", "counts": {}, "accepted_uri": "file:///b", "report_uri": "file:///r", "run_dir": "/b"}
    assert latest_batch([SimpleNamespace(extra={**newest, "accepted_uri": "file:///a"}),
                         SimpleNamespace(extra=newest)]) == newest
