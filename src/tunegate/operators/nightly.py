"""What the nightly gate DAGs share (``tunegate_nightly`` and ``tunegate_nightly_sharded``): default args and
params, so the sharded night is configured, retried and alerted exactly like the unsharded one.

Light on purpose: DAG files import it at parse time.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import Param

from tunegate._airflow import retry_default_args
from tunegate.exceptions import TunegateError


def nightly_default_args(alerts: Any = None) -> dict[str, Any]:
    """Retry what can heal by itself (a network file system or object store hiccup, a timeout, the Task Execution
    API briefly unreachable); a data verdict, bad configuration or input, or a bug fails at once. A task that fails
    for good (a halt included) calls ``alerts``; retries do not."""
    return {
        "owner": "data-platform",
        **retry_default_args(retries=3, retry_delay=timedelta(minutes=2), max_retry_delay=timedelta(minutes=30),
                             transient=(OSError, TimeoutError, "httpx.TransportError"), permanent=(TunegateError,)),
        "execution_timeout": timedelta(hours=2),
        **({"on_failure_callback": alerts} if alerts else {}),
    }


def nightly_params(sample_input: Path, **extra: Param) -> dict[str, Param]:
    """The nightly params, defaults from the environment (``TUNEGATE_INPUT_URI``, ``TUNEGATE_POLICY_FILE``,
    ``TUNEGATE_HISTORY_DIR``, ``TUNEGATE_STORAGE_CONN_ID``); ``sample_input`` when no input is configured (the
    bundled sample night, for the demo). ``extra``: a DAG's own params."""
    return {
        "input_uri": Param(os.environ.get("TUNEGATE_INPUT_URI") or str(sample_input), type="string", minLength=1,
                           description="File, directory, glob or fsspec URL of tonight's batch; may use {{ ds }}"),
        "policy_file": Param(os.environ.get("TUNEGATE_POLICY_FILE") or None, type=["null", "string"],
                             description="YAML or JSON policy (gate settings, checks:, suites:); null for defaults"),
        "checks": Param(None, type=["null", "array"], items={"type": "string"},
                        description="Run exactly these checks instead of the policy's; null for the policy's"),
        "history_dir": Param(os.environ.get("TUNEGATE_HISTORY_DIR") or None, type=["null", "string"],
                             description="History of accepted nights; null for the default under the data root, "
                                         "empty for none"),
        "storage_conn_id": Param(os.environ.get("TUNEGATE_STORAGE_CONN_ID") or None, type=["null", "string"],
                                 description="Airflow connection for object-storage inputs (s3://...)"),
        **extra,
    }
