"""``PublishOperator``: a gated night enters the history, then reaches the fine-tuning side as an Asset event."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowFailException

from tunegate._airflow import outlet_assets, run_date, set_outlet_extra
from tunegate.operators.base import (
    WORK_DIR,
    TunegateBaseOperator,
    batch_id_for,
    fail_on_tunegate_error,
    load_run_policy,
)


class PublishOperator(TunegateBaseOperator):
    """Publish the night the gate let through (verdict ``pass`` or ``quarantine``).

    1. Adds the accepted records to the history (:func:`tunegate.core.pipeline.publish`), named
       ``{dag_id}/{date}``: tomorrow's near-duplicate and outlier checks compare against them, and a rerun
       of the night replaces its own contribution instead of adding it twice.
    2. Emits an event on every Asset in ``outlets`` with the counts and URIs of the accepted batch
       (:func:`tunegate.operators.assets.batch_extra`), which schedules the fine-tuning DAG.

    Runs after the gate; a halted night fails the gate, so this task never runs for it (and refuses to, if
    called on one). It publishes only a committed result set (``summary.json`` present and every output
    matching its sha256): a night the gate did not finish fails the task without retry. The history
    update holds the run directory's lock.

    :param history_dir: the history (templated); ``None`` means ``{TUNEGATE_DATA_ROOT}/{dag_id}/history``,
        ``""`` means none (the event is still emitted).
    :param policy_file: the night's policy (templated): a new history is started with the embedding its
        near-duplicate check uses.
    :param run_dir: overrides ``{TUNEGATE_DATA_ROOT}/{dag_id}/{logical date}`` (templated).
    """

    template_fields: Sequence[str] = ("history_dir", "policy_file", "run_dir")

    def __init__(self, *, history_dir: str | None = None, policy_file: str | None = None,
                 run_dir: str | None = None, **kwargs: Any) -> None:
        super().__init__(run_dir=run_dir, **kwargs)
        self.history_dir = history_dir
        self.policy_file = policy_file

    def execute(self, context: Context) -> dict[str, Any]:
        from tunegate.core.checks._vectors import WORK_CACHE
        from tunegate.core.gate import load_committed
        from tunegate.core.pipeline import publish
        from tunegate.operators.assets import batch_extra

        run_dir = self.resolve_run_dir(context)
        history = self.resolve_history_dir(self.history_dir)
        with fail_on_tunegate_error():
            summary = load_committed(run_dir)  # only a committed result set: never a half-written night
            if summary.get("verdict") == "halt":
                raise AirflowFailException(f"{run_dir}: the gate halted this night; nothing is published")
            added: dict[str, Any] = {}
            if history:
                policy = load_run_policy(self.policy_file)
                added = publish(run_dir, history, batch_id=batch_id_for(self, context), policy=policy,
                                cache_dir=run_dir / WORK_DIR / WORK_CACHE)
                self.log.info("publish: history %s: +%d records (%d replaced from an earlier run of this night), "
                              "%d in all", history, added.get("added", 0), added.get("replaced", 0),
                              added.get("history_records", 0))
                summary = load_committed(run_dir)  # publish rewrote the marker with the history
        extra = batch_extra(summary, run_dir, run_date(context))
        if added:
            extra["history"] = {k: added[k] for k in ("dir", "batch_id", "added", "history_records") if k in added}
        for asset in outlet_assets(self):
            set_outlet_extra(context, asset, extra)
        self.log.info("publish: %s published to %s", extra["accepted_uri"],
                      [a.name for a in outlet_assets(self)] or "no asset")
        return extra
