"""Airflow operators: thin shells over :mod:`tunegate.core`, one stage each.

    IngestOperator -> ValidateOperator -> ScanOperator -> GateOperator -> PublishOperator
                                                                          (history + the accepted-batch Asset)
    ReviewOperator: a reviewer's decision on a night's quarantine (a release: the released-batch Asset)
    PostTuneAuditOperator: probe a fine-tuned candidate model (a pass: the vetted-model Asset)

Each operator's ``execute`` calls one core function over the run directory and returns a small dict
(URIs and counts); data moves between tasks only as files. Importing this package imports Airflow's
task SDK but nothing heavy (pyarrow, pandas, Great Expectations load inside ``execute``).
"""

from __future__ import annotations

from tunegate._airflow import DATA_ROOT_ENV
from tunegate.operators.assets import (
    accepted_batch_asset,
    batch_extra,
    candidate_model_asset,
    latest_batch,
    parquet_row_count,
    released_batch_alias,
    released_batch_asset,
    released_batches,
    released_extra,
    vetted_model_asset,
)
from tunegate.operators.audit import PostTuneAuditOperator
from tunegate.operators.base import TunegateBaseOperator
from tunegate.operators.gate import GateOperator
from tunegate.operators.ingest import IngestOperator
from tunegate.operators.publish import PublishOperator
from tunegate.operators.review import ReviewOperator
from tunegate.operators.scan import ScanOperator
from tunegate.operators.validate import ValidateOperator

__all__ = [
    "DATA_ROOT_ENV",
    "GateOperator",
    "IngestOperator",
    "PostTuneAuditOperator",
    "PublishOperator",
    "ReviewOperator",
    "ScanOperator",
    "TunegateBaseOperator",
    "ValidateOperator",
    "accepted_batch_asset",
    "batch_extra",
    "candidate_model_asset",
    "latest_batch",
    "parquet_row_count",
    "released_batch_alias",
    "released_batch_asset",
    "released_batches",
    "released_extra",
    "vetted_model_asset",
]
