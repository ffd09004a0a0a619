"""The formatters: one per target, over the same :attr:`~tunegate.core.alerts.message.AlertMessage.sections`.

Plain text (bounded by ``limits.max_text_chars``, dropping body lines from the end first), a Slack
incoming-webhook body (Block Kit) and the email HTML (the jinja2 template
``tunegate/core/templates/alert.html.j2``, autoescaped).

Slack: text from the data (reasons, phrases, halt reasons, warnings, run ids, errors) never reaches Slack as
markup. mrkdwn has no escape for ``*``, ``_``, ``~`` or backticks, so data items go inside code spans (where
Slack applies no formatting; a backtick in the data becomes ``'``), the counts/run line is a ``plain_text``
object (escaped too), every mrkdwn object is ``verbatim`` (no auto-linking of URLs, channels or ``@channel``/``@here``
mentions), the fallback ``text`` is sent with ``mrkdwn: false``, and ``&``, ``<``, ``>`` are escaped in every
mrkdwn text (so ``<!channel>`` or ``<http://x|label>`` in the data stay text).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tunegate.core.alerts.summary import COUNT_KEYS
from tunegate.core.alerts.text import cut

if TYPE_CHECKING:
    from tunegate.core.alerts.message import AlertMessage, RunInfo, Section


def format_text(message: AlertMessage) -> str:
    """Plain text (the webhook's ``text``, Slack's fallback), bounded by ``limits.max_text_chars``."""
    head = [message.title]
    if message.counts is not None:
        head.append(_counts_line(message.counts))
    tail = []
    if message.report_url:
        tail.append(f"report: {message.report_url}")
    run = _run_line(message.run)
    if run:
        tail.append(run)
    body = [line for section in message.sections for line in _text_section(section)]
    return _fit(head, body, tail, message.limits.max_text_chars)


def _text_section(section: Section) -> list[str]:
    label = section.heading.lower()
    more = f" (+{section.omitted} more)" if section.omitted else ""
    if section.kind == "error":
        return [f"{label}: {section.items[0].text}"]
    if section.kind == "reasons":
        return [f"{label}: " + ", ".join(f"{i.text}={i.count}" for i in section.items) + more]
    if section.kind == "phrases":
        return [f"{label}: " + "; ".join(f'"{i.text}"' + (f" ({i.count})" if i.count is not None else "")
                                         for i in section.items) + more]
    return [f"{label}:", *(f"  - {i.text}" for i in section.items),
            *([f"  ... and {section.omitted} more"] if section.omitted else [])]


def format_slack(message: AlertMessage) -> dict[str, Any]:
    """Block Kit: a header (the title), counts and run, one mrkdwn block per section, the report link."""
    fields = []
    if message.counts is not None:
        fields.append(_counts_line(message.counts))
    run = _run_line(message.run)
    if run:
        fields.append(run)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": cut(message.title, 150), "emoji": False}},
    ]
    if fields:  # the run id is anyone's string (a manual trigger): plain text, never markup
        blocks.append({"type": "section", "text": {"type": "plain_text",
                                                   "text": _slack_escape(cut("\n".join(fields), 2900)),
                                                   "emoji": False}})
    blocks += [_mrkdwn(_slack_section(s)) for s in message.sections]
    if message.report_url:
        blocks.append({"type": "context", "elements": [
            {"type": "mrkdwn", "text": "Report: " + _slack_link(message.report_url, "open the report"),
             "verbatim": True}]})
    return {"text": _slack_escape(cut(message.text(), 2900)), "mrkdwn": False, "blocks": blocks}


def _slack_section(section: Section, limit: int = 2900) -> str:
    """The section's mrkdwn within ``limit`` characters (Slack's cap is 3,000): cut data before it is quoted
    and drop whole lines, so no code span is left open (an open one would let the rest format)."""
    if section.kind == "error":
        return f"*{section.heading}*\n```{_slack_code(cut(section.items[0].text, limit - 100))}```"
    if section.kind == "reasons":
        lines = [f"• `{_slack_code(i.text)}`: {i.count}" for i in section.items]
    elif section.kind == "phrases":
        lines = [f"• `{_slack_code(i.text)}`" + (f" ({i.count} records)" if i.count is not None else "")
                 for i in section.items]
    else:  # halt reasons and warnings quote check messages, which quote the data
        lines = [f"• `{_slack_code(i.text)}`" for i in section.items]
    omitted = section.omitted
    while lines and len("\n".join(lines)) > limit - 100:
        lines.pop()
        omitted += 1
    more = f"\n_… and {omitted} more_" if omitted else ""
    return f"*{section.heading}*\n" + "\n".join(lines) + more


def format_html(message: AlertMessage) -> str:
    """The email body from ``templates/alert.html.j2`` (autoescaped, no external resources)."""
    from tunegate.core.templates import render

    counts = [(k, message.counts[k]) for k in COUNT_KEYS if k in message.counts] if message.counts else []
    return render("alert.html.j2", title=message.title, counts=counts, sections=message.sections,
                  report_url=message.report_url, run_line=_run_line(message.run))


def _counts_line(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {counts[k]}" for k in COUNT_KEYS if k in counts)


def _run_line(run: RunInfo) -> str:
    parts = [f"{k} {v}" for k, v in (("dag", run.dag_id), ("run", run.run_id), ("task", run.task_id)) if v]
    if run.log_url:
        parts.append(f"log {run.log_url}")
    return " | ".join(parts)


def _fit(head: list[str], body: list[str], tail: list[str], limit: int) -> str:
    """Join head + body + tail within ``limit`` characters, dropping body lines from the end first."""
    marker = "... (truncated; see the report)"
    fixed = "\n".join(head + tail)
    if len(fixed) + 1 > limit:  # even the essentials are too long: cut them, the link stays whole
        room = max(0, limit - len("\n".join(tail)) - 1)
        return cut("\n".join(head), room) + ("\n" + "\n".join(tail) if tail else "")
    kept: list[str] = []
    budget = limit - len(fixed) - 1
    for i, line in enumerate(body):
        need = len(line) + 1
        rest = len(body) - i - 1
        if need + (len(marker) + 1 if rest else 0) > budget:
            room = budget - len(marker) - 2
            if room > 40:
                kept.append(cut(line, room))
            kept.append(marker)
            break
        kept.append(line)
        budget -= need
    return "\n".join(head + kept + tail)


def _slack_escape(text: str) -> str:
    # Slack's three control characters; escaping "<" also defuses <!channel> and <@user> in the data.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack_code(text: str) -> str:
    """``text`` for a code span or block: no backtick can close it, so no ``*_~`` inside it formats."""
    return _slack_escape(text.replace("`", "'")) or " "


def _slack_link(url: str, label: str) -> str:
    if url.startswith(("http://", "https://")):
        return f"<{url.replace('>', '%3E').replace('|', '%7C')}|{label}>"
    return f"`{_slack_code(url)}`"  # Slack does not link file:// URIs; show the path to copy


def _mrkdwn(text: str) -> dict[str, Any]:
    # verbatim: Slack does not auto-link URLs, #channels or @channel/@here/@everyone written in the data
    return {"type": "section", "text": {"type": "mrkdwn", "text": text, "verbatim": True}}
