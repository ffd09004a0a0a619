"""``TunegateWebhookNotifier``: the alert as a JSON POST to any HTTP endpoint (an Airflow connection).

The connection (type ``tunegate_webhook``; a plain ``http`` connection works the same way) follows the
HTTP provider's conventions, so existing HTTP connections can be reused:

* ``host``: ``https://alerts.example.com`` (a full base URL), or a bare host name with ``schema``
  ``http``/``https`` and an optional ``port``;
* ``extra.endpoint``: the path to POST to (the notifier's ``endpoint`` argument overrides it);
* ``extra.headers``: additional request headers (e.g. a routing key);
* ``password``: sent as ``Authorization: Bearer <password>``, or with ``login`` as HTTP basic auth;
* ``extra.timeout``: seconds (default 10).

The request goes through httpx and the retries through tenacity (both already loaded with Airflow's task
SDK, so they cost no import time): transient failures (connection errors, timeouts, HTTP 408, 429 and 5xx)
are retried with exponential backoff; other HTTP errors fail at once. See docs/alerts.md for why not the
HTTP provider's hook.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

import httpx
import tenacity
from airflow.sdk import BaseHook

from tunegate.notifications.base import TunegateBaseNotifier

DEFAULT_WEBHOOK_CONN_ID = "tunegate_webhook_default"
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})



def connection_base_url(conn: Any, conn_id: str, *, what: str, example: str, schema_hint: str = "") -> str:
    """The base URL an http connection names: its host when that is a URL, else ``{schema or http}://host[:port]``.
    A missing host, or a schema other than http/https, is a :class:`ValueError` that names the connection."""
    host = (conn.host or "").strip()
    if not host:
        raise ValueError(f"connection {conn_id!r} has no host: set it to {what}, e.g. {example}")
    if "://" in host:
        return str(host)
    scheme = (conn.schema or "http").lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"connection {conn_id!r}: schema {conn.schema!r} is not http or https{schema_hint}")
    return f"{scheme}://{host}" + (f":{conn.port}" if conn.port else "")

class WebhookDeliveryError(RuntimeError):
    """The endpoint refused the alert or could not be reached after the retries."""


class TunegateWebhookHook(BaseHook):
    """POST JSON to the endpoint an Airflow connection describes (see the module docstring)."""

    conn_name_attr = "webhook_conn_id"
    default_conn_name = DEFAULT_WEBHOOK_CONN_ID
    conn_type = "tunegate_webhook"
    hook_name = "tunegate JSON webhook"

    def __init__(self, webhook_conn_id: str = DEFAULT_WEBHOOK_CONN_ID, *, timeout: float | None = None,
                 retries: int = 2, backoff_s: float = 1.0) -> None:
        super().__init__()
        self.webhook_conn_id = webhook_conn_id
        self.timeout = timeout
        self.retries = retries
        self.backoff_s = backoff_s

    @cached_property
    def _conn(self) -> Any:
        return self.get_connection(self.webhook_conn_id)

    def _extra(self) -> dict[str, Any]:
        extra = self._conn.extra_dejson
        return dict(extra) if isinstance(extra, Mapping) else {}

    def url(self, endpoint: str | None = None) -> str:
        """The URL to POST to: the connection's base URL joined with ``endpoint`` (or ``extra.endpoint``)."""
        base = connection_base_url(
            self._conn, self.webhook_conn_id, what="the webhook's base URL", example="https://alerts.example.com",
            schema_hint=". In an http:// connection URI the path lands in 'schema'; put the path in extra.endpoint "
                        "instead")
        path = endpoint if endpoint is not None else str(self._extra().get("endpoint") or "")
        url = base.rstrip("/") + ("/" + path.lstrip("/") if path else "")
        if urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"connection {self.webhook_conn_id!r}: only http(s) URLs are supported")
        return url

    def headers(self) -> dict[str, str]:
        conn = self._conn
        headers = {"Content-Type": "application/json", "User-Agent": "tunegate-webhook"}
        headers.update({str(k): str(v) for k, v in (self._extra().get("headers") or {}).items()})
        if conn.password and conn.login:
            token = base64.b64encode(f"{conn.login}:{conn.password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        elif conn.password:
            headers["Authorization"] = f"Bearer {conn.password}"
        return headers

    def post_json(self, payload: Mapping[str, Any], *, endpoint: str | None = None) -> int:
        """POST ``payload``; returns the HTTP status. Raises :class:`WebhookDeliveryError` when it fails."""
        url = self.url(endpoint)
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        timeout = self.timeout or float(self._extra().get("timeout", 10))
        where = urlsplit(url).netloc  # never log the path: webhook URLs often carry the secret
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(_is_transient),
            stop=tenacity.stop_after_attempt(self.retries + 1),
            wait=tenacity.wait_exponential(multiplier=self.backoff_s),  # backoff_s, 2 * backoff_s, ...
            before_sleep=lambda state: self.log.warning(
                "tunegate webhook: %s from %s; retrying in %.0f s",
                _problem(state.outcome.exception() if state.outcome else None), where,
                state.next_action.sleep if state.next_action else 0),
            reraise=True,
        )
        try:
            with httpx.Client(timeout=timeout) as client:
                for attempt in retrying:
                    with attempt:
                        response = client.post(url, content=data, headers=self.headers())
                        response.raise_for_status()
        except httpx.HTTPStatusError as exc:
            raise WebhookDeliveryError(f"webhook {where} answered {_problem(exc)}") from exc
        except httpx.TransportError as exc:
            raise WebhookDeliveryError(f"webhook {where} unreachable: {exc}") from exc
        self.log.info("tunegate webhook: delivered %d bytes to %s (HTTP %d)", len(data), where,
                      response.status_code)
        return response.status_code

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": [],
            "relabeling": {"host": "Base URL", "password": "Bearer token (optional)"},
            "placeholders": {"host": "https://alerts.example.com",
                             "extra": '{"endpoint": "/hooks/tunegate", "headers": {"X-Team": "data"}}'},
        }


def _is_transient(exc: BaseException) -> bool:
    """Worth another try: the endpoint was unreachable or timed out, or answered 408, 429 or 5xx."""
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code in _RETRY_STATUS
    return isinstance(exc, httpx.TransportError)


def _problem(exc: BaseException | None) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code} {exc.response.reason_phrase}"
    return str(exc)


class TunegateWebhookNotifier(TunegateBaseNotifier):
    """Send the alert as JSON (:meth:`tunegate.core.alerts.AlertMessage.to_payload`) to an HTTP endpoint.

    :param webhook_conn_id: the connection describing the endpoint (templated).
    :param endpoint: path under the connection's base URL; default ``extra.endpoint`` (templated).
    :param timeout: seconds per attempt; default ``extra.timeout`` or 10.
    :param retries: further attempts after a transient failure.

    Other parameters: :class:`~tunegate.notifications.base.TunegateBaseNotifier`.
    """

    template_fields: Sequence[str] = (*TunegateBaseNotifier.template_fields, "webhook_conn_id", "endpoint")

    def __init__(self, *, webhook_conn_id: str = DEFAULT_WEBHOOK_CONN_ID, endpoint: str | None = None,
                 timeout: float | None = None, retries: int = 2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.webhook_conn_id = webhook_conn_id
        self.endpoint = endpoint
        self.timeout = timeout
        self.retries = retries

    @cached_property
    def hook(self) -> TunegateWebhookHook:
        return TunegateWebhookHook(self.webhook_conn_id, timeout=self.timeout, retries=self.retries)

    def notify(self, context: Any) -> None:
        message = self.build_message(context)
        self.hook.post_json(message.to_payload(), endpoint=self.endpoint or None)
