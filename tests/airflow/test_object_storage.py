"""Inputs on object storage: an S3-compatible server (moto) on loopback, reached through an Airflow connection.

The test uploads real slices under a per-night prefix, defines the connection the way a deployment does
(``AIRFLOW_CONN_<ID>`` JSON: endpoint and keys in the connection, nothing in AWS_* variables), renders the
templated prefix and runs ``IngestOperator``. Skips when moto or the amazon provider is not installed.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.conftest import FORMATS, NIGHTLY

pytestmark = [pytest.mark.airflow, pytest.mark.slow]  # starts an S3 server: left out of `make test-fast`

CONN_ID = "tunegate_test_s3"
BUCKET = "tunegate-inputs"
NIGHT = datetime(2026, 1, 1, tzinfo=UTC)
KEY_ID, SECRET = "tunegate-test-key", "tunegate-test-secret"  # moto accepts any; proves they come from the conn


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1, started for this module and stopped after it."""
    pytest.importorskip("moto", reason="moto[server] is not installed (a dev dependency)")
    pytest.importorskip("s3fs")
    pytest.importorskip("airflow.providers.amazon", reason="apache-airflow-providers-amazon is not installed")
    exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which("moto_server")
    if exe is None:
        pytest.skip("moto_server is not on PATH")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not start on {url}", pytrace=False)
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def bucket(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The night's inputs under ``batches/2026-01-01/``: the sample batch (JSONL), a Parquet slice and a
    ``save_to_disk`` folder; the next night's prefix holds a file that must not be read."""
    import boto3
    import datasets

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id=KEY_ID,
                      aws_secret_access_key=SECRET)
    s3.create_bucket(Bucket=BUCKET)
    night = "batches/2026-01-01"
    s3.upload_file(str(NIGHTLY), BUCKET, f"{night}/batch.jsonl")
    s3.upload_file(str(FORMATS / "alpaca.parquet"), BUCKET, f"{night}/alpaca.parquet")
    s3.put_object(Bucket=BUCKET, Key=f"{night}/README.txt", Body=b"not data: skipped by the expansion")
    reference = json.loads((FORMATS / "alpaca.json").read_text(encoding="utf-8"))
    local = tmp_path_factory.mktemp("hf") / "hub_slice"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(reference[:12]),
                          "test": datasets.Dataset.from_list(reference[12:])}).save_to_disk(str(local))
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        s3.upload_file(str(path), BUCKET, f"{night}/hub_slice/{path.relative_to(local).as_posix()}")
    s3.upload_file(str(FORMATS / "dolly.jsonl"), BUCKET, "batches/2026-01-02/dolly.jsonl")
    jsonl_lines = sum(1 for line in NIGHTLY.read_bytes().splitlines() if line.strip())  # planted bad bytes
    return SimpleNamespace(endpoint=s3_endpoint, night=night, jsonl_lines=jsonl_lines, hf_records=len(reference),
                           parquet_records=20)


@pytest.fixture
def connection(bucket: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> str:
    """The Airflow connection, as a deployment defines it; no AWS_* credentials in the environment."""
    for var in [v for v in os.environ if v.startswith("AWS_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps({
        "conn_type": "aws", "login": KEY_ID, "password": SECRET,
        "extra": {"endpoint_url": bucket.endpoint, "region_name": "us-east-1"},
    }))
    return CONN_ID


def _context() -> dict[str, Any]:
    return {"logical_date": NIGHT, "dag_run": SimpleNamespace(run_after=NIGHT), "ds": "2026-01-01"}


def test_ingest_reads_the_nights_prefix_through_the_connection(connection: str, bucket: SimpleNamespace,
                                                               tmp_path: Path) -> None:
    from airflow.sdk import DAG

    from tunegate.core.ingest import IngestResult
    from tunegate.operators import IngestOperator

    with DAG("object_storage_probe", schedule=None):
        op = IngestOperator(task_id="ingest", inputs=f"s3://{BUCKET}/batches/{{{{ ds }}}}/",
                            storage_conn_id="{{ params.conn }}", run_dir=str(tmp_path / "run"))
    op.render_template_fields({**_context(), "params": {"conn": connection}})  # type: ignore[arg-type]
    assert (op.inputs, op.storage_conn_id) == (f"s3://{BUCKET}/batches/2026-01-01/", connection)

    result = op.execute(_context())  # type: ignore[arg-type]

    # every line of every file under the night's prefix is accounted for: records + rejected
    expected = bucket.jsonl_lines + bucket.parquet_records + bucket.hf_records
    assert result["files"] == 3
    assert result["total"] == result["records"] + result["rejected"] == expected
    ingest = IngestResult.load(result["work_dir"])
    assert [i.path for i in ingest.inputs] == [f"s3://{BUCKET}/{bucket.night}/{name}"
                                               for name in ("alpaca.parquet", "batch.jsonl", "hub_slice")]
    assert [i.records + i.rejected for i in ingest.inputs] == [20, bucket.jsonl_lines, 20]
    assert [i.rejected for i in ingest.inputs] == [0, result["rejected"], 0]
    assert all(len(i.sha256) == 64 for i in ingest.inputs)
    rejected = (Path(result["work_dir"]) / "rejected.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(rejected) == result["rejected"]
    assert all(json.loads(r)["source_file"] == f"s3://{BUCKET}/{bucket.night}/batch.jsonl" for r in rejected)

    import pyarrow.parquet as pq

    table = pq.read_table(Path(result["work_dir"]) / "canonical.parquet", columns=["source", "source_file"])
    assert table.num_rows == result["records"]
    hub = [s for s, f in zip(table["source"].to_pylist(), table["source_file"].to_pylist(), strict=True)
           if "/hub_slice/" in f]
    assert hub == ["train"] * 12 + ["test"] * 8


def test_input_options_apply_to_object_storage(connection: str, bucket: SimpleNamespace, tmp_path: Path) -> None:
    from tunegate.operators import IngestOperator

    op = IngestOperator(task_id="ingest", inputs=f"s3://{BUCKET}/{bucket.night}/hub_slice",
                        input_options={"splits": ["test"]}, storage_conn_id=connection, run_dir=str(tmp_path))
    result = op.execute(_context())  # type: ignore[arg-type]
    assert (result["records"], result["rejected"]) == (8, 0)


def test_without_the_connection_the_keys_are_missing(bucket: SimpleNamespace, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The credentials live only in the connection: the same URL without it cannot be read."""
    from tunegate.core.ingest import ingest

    for var in [v for v in os.environ if v.startswith("AWS_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata probe off EC2
    from botocore.exceptions import NoCredentialsError

    with pytest.raises(NoCredentialsError):
        ingest([f"s3://{BUCKET}/{bucket.night}/batch.jsonl"], tmp_path / "work",
               storage_options={"client_kwargs": {"endpoint_url": bucket.endpoint}})


def test_storage_options_reach_the_bucket_without_airflow(bucket: SimpleNamespace, tmp_path: Path) -> None:
    """The core path the CLI uses: fsspec storage options (here the moto endpoint and keys)."""
    from tunegate.core.ingest import ingest

    result = ingest([f"s3://{BUCKET}/{bucket.night}/alpaca.parquet"], tmp_path / "work",
                    storage_options={"key": KEY_ID, "secret": SECRET,
                                     "client_kwargs": {"endpoint_url": bucket.endpoint, "region_name": "us-east-1"}})
    assert (result.records, result.rejected) == (20, 0)
