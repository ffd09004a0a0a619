"""``IngestOperator``: read the night's input into the run's work directory."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowFailException

from tunegate.operators.base import TunegateBaseOperator, fail_on_tunegate_error, load_run_policy, run_dir_lock

_LOCAL_PROTOCOLS = ("file", "local")


class IngestOperator(TunegateBaseOperator):
    """Read ``inputs`` (paths, directories, globs, object-storage prefixes, ``save_to_disk`` folders or fsspec
    URLs) into ``WORK/canonical.parquet``.

    Records that cannot be parsed go to ``WORK/rejected.jsonl``; nothing is lost. The work directory is
    emptied first, so a rerun of the night starts clean (stale findings of an earlier try cannot leak in).

    :param inputs: one input or a list of inputs (templated), e.g. ``s3://bucket/batches/{{ ds }}/``.
    :param fmt: ``auto`` or one of the old format names of :mod:`tunegate.core.readers` (templated).
    :param input_options: container, layout, column map and splits as a mapping, the same keys as the
        policy file's ``input:`` section (templated), e.g. ``{"container": "parquet", "columns":
        {"prompt": "instruction", "completion": "output"}}``. Validated when the task runs.
    :param storage_conn_id: Airflow connection for the object store the remote inputs live on (templated).
        The filesystem comes from ``ObjectStoragePath(..., conn_id=storage_conn_id)``, so credentials stay
        in the connection; ``None`` reaches remote URLs with fsspec's own defaults.
    :param policy_file: the night's policy (templated): its ``input:`` section applies unless
        ``input_options`` is given.
    :param batch_size: records held in memory at a time.
    :param run_dir: overrides ``{TUNEGATE_DATA_ROOT}/{dag_id}/{logical date}`` (templated).
    """

    template_fields: Sequence[str] = ("inputs", "fmt", "input_options", "storage_conn_id", "policy_file", "run_dir")

    def __init__(self, *, inputs: str | Sequence[str], fmt: str = "auto",
                 input_options: Mapping[str, Any] | None = None, storage_conn_id: str | None = None,
                 policy_file: str | None = None, batch_size: int = 10_000, run_dir: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(run_dir=run_dir, **kwargs)
        self.inputs = inputs
        self.fmt = fmt
        self.input_options = input_options
        self.storage_conn_id = storage_conn_id
        self.policy_file = policy_file
        self.batch_size = batch_size

    def execute(self, context: Context) -> dict[str, Any]:
        from tunegate.core.ingest import ingest
        from tunegate.core.readers import InputOptions

        work = self.resolve_work_dir(context)
        inputs = [self.inputs] if isinstance(self.inputs, str) else list(self.inputs)
        options: InputOptions | None = None
        with fail_on_tunegate_error():
            if self.input_options:
                options = InputOptions.from_mapping(self.input_options, source=f"{self.task_id} input_options")
            else:
                policy = load_run_policy(self.policy_file)
                options = policy.input_options() if policy.input else None
        filesystem = self.storage_filesystem(inputs)
        with fail_on_tunegate_error():
            from tunegate.core.pipeline import check_out_dir

            check_out_dir(inputs, work.parent)  # the night's outputs must not land inside its own input
        with run_dir_lock(work.parent), fail_on_tunegate_error():  # one writer of the night at a time
            if work.exists():
                shutil.rmtree(work)
            result = ingest(inputs, work, fmt=self.fmt, options=options, filesystem=filesystem,
                            batch_size=self.batch_size)
        self.log.info("ingest: %d files -> %d records, %d rejected, into %s", len(result.inputs), result.records,
                      result.rejected, work)
        return {"work_dir": str(work), "files": len(result.inputs), "records": result.records,
                "rejected": result.rejected, "total": result.total}

    def storage_filesystem(self, inputs: Sequence[str]) -> Any:
        """The fsspec filesystem that ``storage_conn_id`` configures for the remote inputs, or ``None``.

        One connection serves one object store, so the remote inputs must share one protocol.
        """
        if not self.storage_conn_id:
            return None
        remote = [i for i in inputs if "://" in i and i.split("://", 1)[0] not in _LOCAL_PROTOCOLS]
        protocols = sorted({i.split("://", 1)[0] for i in remote})
        if not protocols:
            self.log.info("storage_conn_id %r is set but every input is local", self.storage_conn_id)
            return None
        if len(protocols) > 1:
            raise AirflowFailException(
                f"storage_conn_id {self.storage_conn_id!r} serves one object store, but the inputs use "
                f"{protocols}; split them over several ingest tasks")
        from airflow.sdk import ObjectStoragePath

        try:
            return ObjectStoragePath(remote[0], conn_id=self.storage_conn_id).fs
        except ValueError as exc:  # no filesystem registered for the protocol (its provider is missing)
            raise AirflowFailException(f"cannot reach {protocols[0]}:// through connection "
                                       f"{self.storage_conn_id!r}: {exc}") from exc
