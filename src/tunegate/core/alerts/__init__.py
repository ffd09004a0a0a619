"""The alert message for a gated batch: what a person on call needs, in a bounded size.

Pure: no Airflow import. :func:`build_alert` turns a gate summary (``summary.json``, see
:mod:`tunegate.core.gate`) and what is known about the run into an :class:`AlertMessage`, which renders
as plain text, HTML (email), a Slack incoming-webhook body, or a JSON payload (generic webhook). The body is
one list of :class:`Section` (built once per message); each format is a small formatter over that list, the
HTML one a jinja2 template with autoescaping (``tunegate/core/templates/alert.html.j2``).

What goes in: verdict, counts, the top quarantine reasons, suspicious phrases (any check's
``metrics.suspicious_phrases``), halt reasons, batch-level alerts, the report link. Every list is cut to a
few items and every item to a few hundred characters, so one bad batch can never produce a message a
chat service rejects. Phrases come from the data itself (possibly from an attacker): they are stripped of
control characters, collapsed to one line, and escaped for each target format.

Modules, by job:

:mod:`.message`
    :class:`AlertLimits`, :class:`RunInfo`, :class:`Section`, :class:`AlertMessage` (and its JSON payload)
    and :func:`build_alert`.
:mod:`.summary`
    Reading the summary: :func:`top_reasons`, :func:`suspicious_phrases`, :func:`report_url`,
    :func:`load_summary`.
:mod:`.formats`
    The formatters over the sections: :func:`format_text`, :func:`format_slack`, :func:`format_html`.
:mod:`.text`
    Text hygiene shared by all: control characters out, one line, cut to a size.
"""

from __future__ import annotations

from tunegate.core.alerts.formats import format_html, format_slack, format_text
from tunegate.core.alerts.message import (
    PAYLOAD_VERSION,
    AlertLimits,
    AlertMessage,
    RunInfo,
    Section,
    SectionItem,
    build_alert,
)
from tunegate.core.alerts.summary import COUNT_KEYS, load_summary, report_url, suspicious_phrases, top_reasons

__all__ = [
    "COUNT_KEYS",
    "PAYLOAD_VERSION",
    "AlertLimits",
    "AlertMessage",
    "RunInfo",
    "Section",
    "SectionItem",
    "build_alert",
    "format_html",
    "format_slack",
    "format_text",
    "load_summary",
    "report_url",
    "suspicious_phrases",
    "top_reasons",
]
