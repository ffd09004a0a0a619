"""``TunegateEmailNotifier``: the alert as an HTML email, sent with the SMTP provider's ``SmtpHook``.

Server, port, credentials, TLS and the default sender live in an ``smtp`` connection (default
``smtp_default``): ``host``, ``port``, ``login``, ``password``, and extras ``from_email``, ``disable_tls``,
``disable_ssl``, ``timeout``, ``retry_limit``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tunegate.notifications.base import TunegateBaseNotifier

DEFAULT_SMTP_CONN_ID = "smtp_default"
_MAX_SUBJECT = 200


class TunegateEmailNotifier(TunegateBaseNotifier):
    """Email the alert (:meth:`tunegate.core.alerts.AlertMessage.to_html`); the subject is its title.

    :param to: recipient(s): a list or a comma/semicolon separated string (templated).
    :param cc: copy recipient(s) (templated).
    :param from_email: sender; default the connection's ``from_email`` extra (templated).
    :param smtp_conn_id: an ``smtp`` connection (templated).

    Other parameters: :class:`~tunegate.notifications.base.TunegateBaseNotifier`.
    """

    template_fields: Sequence[str] = (*TunegateBaseNotifier.template_fields, "to", "cc", "from_email",
                                      "smtp_conn_id")

    def __init__(self, *, to: str | Sequence[str], cc: str | Sequence[str] | None = None,
                 from_email: str | None = None, smtp_conn_id: str = DEFAULT_SMTP_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not to:
            raise ValueError("TunegateEmailNotifier needs at least one recipient in `to`")
        self.to = to
        self.cc = cc
        self.from_email = from_email
        self.smtp_conn_id = smtp_conn_id

    def notify(self, context: Any) -> None:
        from airflow.providers.smtp.hooks.smtp import SmtpHook

        message = self.build_message(context)
        subject = message.title if len(message.title) <= _MAX_SUBJECT else message.title[:_MAX_SUBJECT - 1] + "…"
        with SmtpHook(smtp_conn_id=self.smtp_conn_id) as hook:
            hook.send_email_smtp(to=self.to, cc=self.cc, subject=subject, html_content=message.to_html(),
                                 from_email=self.from_email,
                                 custom_headers={"X-Tunegate-Event": message.event})
        self.log.info("tunegate: email alert sent through connection %s", self.smtp_conn_id)
