"""``TunegateSlackNotifier``: the alert as a Slack message through an incoming webhook.

Uses the Slack provider's ``SlackWebhookHook`` and its connection type ``slackwebhook``: the webhook
token (or the whole ``https://hooks.slack.com/services/...`` URL) goes in the connection's password, never
in DAG code.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from tunegate.notifications.base import TunegateBaseNotifier

if TYPE_CHECKING:
    from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

DEFAULT_SLACK_CONN_ID = "tunegate_slack_default"


class TunegateSlackNotifier(TunegateBaseNotifier):
    """Post the alert (:meth:`tunegate.core.alerts.AlertMessage.to_slack`) to a Slack incoming webhook.

    :param slack_webhook_conn_id: a ``slackwebhook`` connection (templated).
    :param timeout: seconds to wait for Slack; default the connection's ``timeout`` extra.
    :param proxy: proxy URL for the request; default the connection's ``proxy`` extra.

    Other parameters: :class:`~tunegate.notifications.base.TunegateBaseNotifier`.
    """

    template_fields: Sequence[str] = (*TunegateBaseNotifier.template_fields, "slack_webhook_conn_id")

    def __init__(self, *, slack_webhook_conn_id: str = DEFAULT_SLACK_CONN_ID, timeout: int | None = None,
                 proxy: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.slack_webhook_conn_id = slack_webhook_conn_id
        self.timeout = timeout
        self.proxy = proxy

    @cached_property
    def hook(self) -> SlackWebhookHook:
        from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

        return SlackWebhookHook(slack_webhook_conn_id=self.slack_webhook_conn_id, timeout=self.timeout,
                                proxy=self.proxy)

    def notify(self, context: Any) -> None:
        body = self.build_message(context).to_slack()
        self.hook.send_dict(body)
        self.log.info("tunegate: Slack alert sent through connection %s", self.slack_webhook_conn_id)
