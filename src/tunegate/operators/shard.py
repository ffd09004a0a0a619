"""The sharded night's own tasks: plan the shards, process one shard (a mapped task), merge them.

    ShardPlanOperator -> ShardOperator.partial(...).expand(shard=plan.output) -> ShardMergeOperator
        -> MergeValidateOperator -> MergeScanOperator -> GateOperator -> PublishOperator

The logic is :mod:`tunegate.core.shards`; these are its shells. Not exported from :mod:`tunegate.operators`:
import them from this module (``dags/tunegate_nightly_sharded.py`` does).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from airflow.sdk import Context

from tunegate.operators.base import (
    TunegateBaseOperator,
    batch_id_for,
    check_results_digest,
    fail_on_tunegate_error,
    load_run_policy,
    run_dir_lock,
)
from tunegate.operators.ingest import IngestOperator
from tunegate.operators.scan import ScanOperator
from tunegate.operators.validate import ValidateOperator


class _ShardInputOperator(IngestOperator):
    """What planning and processing a shard share with ingest: the inputs, how they are read and reached."""

    def read_options(self) -> Any:
        """The :class:`~tunegate.core.readers.InputOptions`: ``input_options``, else the policy's ``input:``."""
        from tunegate.core.readers import InputOptions

        with fail_on_tunegate_error():
            if self.input_options:
                return InputOptions.from_mapping(self.input_options, source=f"{self.task_id} input_options")
            policy = load_run_policy(self.policy_file)
            return policy.input_options() if policy.input else InputOptions()

    def filesystem(self) -> Any:
        return self.storage_filesystem([self.inputs] if isinstance(self.inputs, str) else list(self.inputs))


class ShardPlanOperator(_ShardInputOperator):
    """Cut the night's input into shards (:func:`tunegate.core.shards.plan_shards`); returns the shard numbers,
    which the mapped :class:`ShardOperator` expands over.

    Takes every parameter of :class:`IngestOperator`, plus:

    :param shards: how many shards (templated; an integer), ``None`` for one per
        :data:`~tunegate.core.shards.DEFAULT_SHARD_BYTES` of input. Never more shards than input units (files,
        and pieces of the JSON Lines files larger than a shard's share).
    :param shard_bytes: input bytes per shard when ``shards`` is ``None``.
    """

    template_fields: Sequence[str] = (*IngestOperator.template_fields, "shards")
    ui_color = "#c9dcc4"

    def __init__(self, *, shards: int | str | None = None, shard_bytes: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.shards = shards
        self.shard_bytes = shard_bytes

    def execute(self, context: Context) -> Any:  # the shard numbers: a list, what .expand maps over
        from tunegate.core.pipeline import check_out_dir
        from tunegate.core.shards import DEFAULT_SHARD_BYTES, plan_shards

        work = self.resolve_work_dir(context)
        inputs = [self.inputs] if isinstance(self.inputs, str) else list(self.inputs)
        options = self.read_options()
        filesystem = self.filesystem()
        shards = None if self.shards in (None, "", "None") else int(self.shards)
        with fail_on_tunegate_error():
            check_out_dir(inputs, work.parent)  # the night's outputs must not land inside its own input
        with run_dir_lock(work.parent), fail_on_tunegate_error():
            plan = plan_shards(inputs, work, shards=shards, shard_bytes=self.shard_bytes or DEFAULT_SHARD_BYTES,
                               options=options, filesystem=filesystem)
        self.log.info("plan: %d unit(s), %.1f MB -> %d shard(s) into %s", len(plan.units), sum(plan.sizes) / 1e6,
                      plan.count, work)
        return list(range(plan.count))


class ShardOperator(_ShardInputOperator):
    """Process one shard of the plan (:func:`tunegate.core.shards.run_shard`): read its files and pieces, run
    the per-record checks, embed its records. Mapped over the plan's shard numbers; writes only under
    ``WORK/shards/<shard>/`` (renamed into place when complete), so a retry redoes this shard alone.

    Takes every parameter of :class:`IngestOperator` (``inputs`` only says which connection reaches them), plus:

    :param shard: the shard's number (the mapped argument).
    :param policy_file: the night's policy (templated): its ``input:`` section and which checks run.
    :param checks: run exactly these checks instead of the policy's (templated), as the scan does.
    """

    template_fields: Sequence[str] = (*IngestOperator.template_fields, "checks")
    ui_color = "#c9dcc4"

    def __init__(self, *, shard: int, checks: Sequence[str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.shard = shard
        self.checks = checks

    def execute(self, context: Context) -> dict[str, Any]:
        from tunegate.core.shards import run_shard

        work = self.resolve_work_dir(context)
        options = self.read_options()
        filesystem = self.filesystem()
        with fail_on_tunegate_error():
            policy = load_run_policy(self.policy_file, checks=self.checks)
            info = run_shard(work, int(self.shard), policy=policy, options=options, filesystem=filesystem,
                             batch_size=self.batch_size)
        return {"work_dir": str(work), **{k: info[k] for k in ("shard", "records", "rejected", "seconds")}}


class ShardMergeOperator(TunegateBaseOperator):
    """Merge the night's shards into its work directory (:func:`tunegate.core.shards.merge_shards`): the
    canonical table, rejected records, ingest record, per-record findings and vectors, as one ingest of every
    file would have left them. Idempotent; holds the run directory's lock.

    :param policy_file: the night's policy (templated): which embeddings the shards computed.
    :param checks: the checks the shards ran instead of the policy's (templated).
    :param run_dir: overrides ``{TUNEGATE_DATA_ROOT}/{dag_id}/{logical date}`` (templated).
    """

    template_fields: Sequence[str] = ("policy_file", "checks", "run_dir")
    ui_color = "#c9dcc4"

    def __init__(self, *, policy_file: str | None = None, checks: Sequence[str] | None = None,
                 run_dir: str | None = None, **kwargs: Any) -> None:
        super().__init__(run_dir=run_dir, **kwargs)
        self.policy_file = policy_file
        self.checks = checks

    def execute(self, context: Context) -> dict[str, Any]:
        from tunegate.core.shards import merge_shards

        work = self.resolve_work_dir(context)
        with run_dir_lock(work.parent), fail_on_tunegate_error():
            result = merge_shards(work, policy=load_run_policy(self.policy_file, checks=self.checks))
        self.log.info("merge: %d shard(s) -> %d records, %d rejected into %s", result.shards, result.records,
                      result.rejected, work)
        return {"work_dir": str(work), **result.to_json()}


class MergeValidateOperator(ValidateOperator):
    """:class:`ValidateOperator` over the merged night: the suites' per-record expectations were validated in the
    shards; this adds them up and runs the whole-batch expectations (id uniqueness across shards, label sets
    derived from the whole night) over the merged table (:func:`tunegate.core.shards.validate_merged`)."""

    def execute(self, context: Context) -> dict[str, Any]:
        from tunegate.core.shards import validate_merged

        work = self.resolve_work_dir(context)
        with run_dir_lock(work.parent), fail_on_tunegate_error():
            policy = load_run_policy(self.policy_file, suites=self.suites)
            results = validate_merged(work, policy=policy, chunk_size=self.chunk_size, data_docs=self.data_docs)
        for r in results:
            self.log.info("validate: %s flagged %d records %s, %d batch issues", r.check,
                          len({f.row for f in r.findings}), r.counts(), len(r.issues))
        return check_results_digest(work, results)


class MergeScanOperator(ScanOperator):
    """:class:`ScanOperator` over the merged night, without the checks the shards ran
    (:func:`tunegate.core.shards.merge_checks`): duplicates, FAISS near-duplicates and outliers over one index
    of every shard's vectors plus the history, and both poison scans, over the whole batch."""

    def execute(self, context: Context) -> dict[str, Any]:
        from tunegate.core.checks import run_checks
        from tunegate.core.shards import merge_checks

        work = self.resolve_work_dir(context)
        history = self.resolve_history_dir(self.history_dir)
        results, seconds = [], {}
        with run_dir_lock(work.parent), fail_on_tunegate_error():
            policy = load_run_policy(self.policy_file, checks=self.checks, check_options=self.check_options)
            checks = merge_checks(policy, history_dir=history, batch_id=batch_id_for(self, context))
            for check in checks:  # one at a time: each check's cost is what docs/scale.md projects from
                started = time.monotonic()
                results += run_checks(str(work), [check])
                seconds[check.key] = round(time.monotonic() - started, 2)
        self.log.info("scan: whole-batch checks %s; history %s", [c.key for c in checks], history or "none")
        for r in results:
            self.log.info("scan: %s flagged %d records %s in %.1fs", r.check, len({f.row for f in r.findings}),
                          r.counts(), seconds[r.check])
        return {**check_results_digest(work, results), "seconds": seconds}
