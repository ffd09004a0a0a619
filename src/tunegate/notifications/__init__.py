"""Alert notifiers (Airflow ``BaseNotifier``): Slack incoming webhook, email (SMTP), generic JSON webhook.

Each builds its message with :func:`tunegate.core.alerts.build_alert` from the gated batch's summary and
sends it through an Airflow connection; secrets never appear in DAG code. Use them as task or DAG
callbacks (``on_failure_callback=[...]``) and as the gate's ``on_quarantine`` callables::

    alerts = [TunegateSlackNotifier(), TunegateWebhookNotifier()]
    GateOperator(task_id="gate", on_quarantine=alerts, on_failure_callback=alerts, ...)

:func:`notifiers_from_env` builds the list from environment variables, so one DAG file serves
deployments with different alert channels. Importing this package does not import the Slack or SMTP
provider (they load when a message is sent).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from tunegate.notifications.base import REPORT_BASE_URL_ENV, TunegateBaseNotifier
from tunegate.notifications.email import TunegateEmailNotifier
from tunegate.notifications.slack import TunegateSlackNotifier
from tunegate.notifications.webhook import TunegateWebhookHook, TunegateWebhookNotifier, WebhookDeliveryError

#: Environment variables read by :func:`notifiers_from_env`.
WEBHOOK_CONN_ENV = "TUNEGATE_ALERT_WEBHOOK_CONN_ID"
SLACK_CONN_ENV = "TUNEGATE_ALERT_SLACK_CONN_ID"
EMAIL_TO_ENV = "TUNEGATE_ALERT_EMAIL_TO"
SMTP_CONN_ENV = "TUNEGATE_ALERT_SMTP_CONN_ID"

__all__ = [
    "EMAIL_TO_ENV",
    "REPORT_BASE_URL_ENV",
    "SLACK_CONN_ENV",
    "SMTP_CONN_ENV",
    "WEBHOOK_CONN_ENV",
    "TunegateBaseNotifier",
    "TunegateEmailNotifier",
    "TunegateSlackNotifier",
    "TunegateWebhookHook",
    "TunegateWebhookNotifier",
    "WebhookDeliveryError",
    "notifiers_from_env",
]


def notifiers_from_env(environ: Mapping[str, str] | None = None) -> list[TunegateBaseNotifier]:
    """The notifiers the environment asks for; empty when it asks for none.

    * ``TUNEGATE_ALERT_WEBHOOK_CONN_ID``: a :class:`TunegateWebhookNotifier` on that connection;
    * ``TUNEGATE_ALERT_SLACK_CONN_ID``: a :class:`TunegateSlackNotifier` on that ``slackwebhook`` connection;
    * ``TUNEGATE_ALERT_EMAIL_TO``: a :class:`TunegateEmailNotifier` to those addresses (comma separated),
      through ``TUNEGATE_ALERT_SMTP_CONN_ID`` (default ``smtp_default``).

    Only connection ids and addresses come from the environment; the secrets stay in the connections.
    Set the variables for the dag-processor and the workers alike (both parse the DAG file).
    """
    env = os.environ if environ is None else environ
    notifiers: list[TunegateBaseNotifier] = []
    if conn_id := env.get(WEBHOOK_CONN_ENV, "").strip():
        notifiers.append(TunegateWebhookNotifier(webhook_conn_id=conn_id))
    if conn_id := env.get(SLACK_CONN_ENV, "").strip():
        notifiers.append(TunegateSlackNotifier(slack_webhook_conn_id=conn_id))
    if to := env.get(EMAIL_TO_ENV, "").strip():
        smtp_conn_id = env.get(SMTP_CONN_ENV, "").strip() or "smtp_default"
        notifiers.append(TunegateEmailNotifier(to=to, smtp_conn_id=smtp_conn_id))
    return notifiers
