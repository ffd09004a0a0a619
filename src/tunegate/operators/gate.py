"""``GateOperator``: the verdict. Halt fails the run; pass and quarantine publish the accepted batch."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowFailException

from tunegate._airflow import outlet_assets, run_date, set_outlet_extra
from tunegate.operators.base import WORK_DIR, TunegateBaseOperator, fail_on_tunegate_error, run_dir_lock
from tunegate.plugins.links import RUN_DIR_ATTR, TunegateReportLink


class GateOperator(TunegateBaseOperator):
    """Apply the gate policy to the run's findings and write accepted / quarantine / rejected / report.

    * ``halt``: raises ``AirflowFailException`` (never retried) with the bounded halt message; no Asset
      event is emitted, so nothing downstream trains on the batch. The outputs stay on disk for inspection,
      with the passing records in ``held.parquet``: a halted night has no ``accepted.parquet``.

    The gate holds the run directory's lock while it writes, and the outputs are one result set
    (``summary.json`` written last, with every output's sha256): see :mod:`tunegate.core.gate`.
    * ``quarantine``: logs the summary, calls ``on_quarantine`` and publishes the accepted batch.
    * ``pass``: publishes the accepted batch.

    Publishing means: every Asset in ``outlets`` gets an event whose extra carries the counts and the
    URIs of the accepted file and the report (:func:`tunegate.operators.assets.batch_extra`).

    :param policy_file: a YAML or JSON gate policy (templated; empty means the defaults).
    :param policy_overrides: policy settings that override the file, e.g. ``{"max_quarantined_fraction": 0.1}``
        (templated).
    :param on_quarantine: callables (e.g. Airflow notifiers) called with the task context on a quarantine
        verdict; the context carries the summary dict under ``"tunegate_summary"``.
    :param run_dir: overrides ``{TUNEGATE_DATA_ROOT}/{dag_id}/{logical date}`` (templated).

    The task has an extra link, "tunegate report": the night's report served by the tunegate plugin of the API
    server (:class:`~tunegate.plugins.links.TunegateReportLink`, docs/serving.md).
    """

    template_fields: Sequence[str] = ("policy_file", "policy_overrides", "run_dir")
    operator_extra_links = (TunegateReportLink(),)

    def __init__(self, *, policy_file: str | None = None, policy_overrides: Mapping[str, Any] | None = None,
                 on_quarantine: Callable[[Any], Any] | Sequence[Callable[[Any], Any]] | None = None,
                 run_dir: str | None = None, **kwargs: Any) -> None:
        super().__init__(run_dir=run_dir, **kwargs)
        self.policy_file = policy_file
        self.policy_overrides = policy_overrides
        self.on_quarantine = on_quarantine

    def execute(self, context: Context) -> dict[str, Any]:
        from tunegate.core.gate import gate, halt_message
        from tunegate.core.policy import load_policy
        from tunegate.operators.assets import batch_extra

        run_dir = self.resolve_run_dir(context)
        setattr(self, RUN_DIR_ATTR, run_dir)  # for the report link, computed when the task finishes
        with fail_on_tunegate_error():
            policy = load_policy(self.policy_file or None, **dict(self.policy_overrides or {}))
        with run_dir_lock(run_dir), fail_on_tunegate_error():
            summary = gate(run_dir / WORK_DIR, run_dir, policy, policy_file=self.policy_file or None)
        message = halt_message(summary)
        if summary["verdict"] == "halt":
            self.log.error("%s", message)
            raise AirflowFailException(message)
        extra = batch_extra(summary, run_dir, _date_or_empty(context))
        for asset in outlet_assets(self):
            set_outlet_extra(context, asset, extra)
        if summary["verdict"] == "quarantine":
            self.log.warning("%s", message)
            self._notify_quarantine(context, summary)
        else:
            self.log.info("%s", message)
        return extra

    def _notify_quarantine(self, context: Context, summary: dict[str, Any]) -> None:
        if not self.on_quarantine:
            return
        callbacks = [self.on_quarantine] if callable(self.on_quarantine) else list(self.on_quarantine)
        notify_context = {**context, "tunegate_summary": summary}
        for callback in callbacks:
            try:
                callback(notify_context)
            except Exception:  # an alert that cannot be delivered must not hold back the batch
                self.log.exception("gate: on_quarantine callback %r failed", callback)


def _date_or_empty(context: Context) -> str:
    """The run date for the event extra; a run dir given explicitly may belong to a run without one."""
    try:
        return run_date(context)
    except AirflowFailException:
        return ""
