"""The alert message for a gated batch: what a person on call needs, in a bounded size.

Pure: no Airflow import. :func:`build_alert` turns a gate summary (``summary.json``, see
:mod:`tunegate.core.gate`) and what is known about the run into an :class:`AlertMessage`, which renders
as plain text, HTML (email), a Slack incoming-webhook body, or a JSON payload (generic webhook). The body is
one list of :class:`Section` (built once per message); each format is a small formatter over that list, the
HTML one a jinja2 template with autoescaping (``templates/alert.html.j2``).

What goes in: verdict, counts, the top quarantine reasons, suspicious phrases (any check's
``metrics.suspicious_phrases``), halt reasons, batch-level alerts, the report link. Every list is cut to a
few items and every item to a few hundred characters, so one bad batch can never produce a message a
chat service rejects. Phrases come from the data itself (possibly from an attacker): they are stripped of
control characters, collapsed to one line, and escaped for each target format.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, unquote, urlparse

#: Bumped when a field of :meth:`AlertMessage.to_payload` changes meaning or disappears.
PAYLOAD_VERSION = 1
COUNT_KEYS = ("total", "accepted", "quarantined", "rejected")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]")
_SPACE = re.compile(r"\s+")
#: Keys under which a check may name a phrase or its count in ``metrics.suspicious_phrases`` items.
_PHRASE_KEYS = ("phrase", "text", "ngram", "trigger", "value")
_COUNT_KEYS = ("count", "records", "support", "n")


@dataclass(frozen=True)
class AlertLimits:
    """Size bounds of a message. The defaults fit Slack (3,000 characters per section) with room to spare."""

    max_reasons: int = 5
    max_phrases: int = 5
    max_halt_reasons: int = 5
    max_alerts: int = 3
    max_item_chars: int = 200
    max_text_chars: int = 2500


@dataclass(frozen=True)
class RunInfo:
    """Where the alert comes from. All optional: the CLI has no DAG, a DAG-level callback no task."""

    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    run_date: str | None = None
    #: The exception text of a failed task (a halt's bounded message, or a crash).
    error: str | None = None
    log_url: str | None = None


@dataclass(frozen=True)
class SectionItem:
    """One line of a section: a reason code, a phrase, a halt reason, a warning or the error text."""

    text: str
    count: int | None = None


@dataclass(frozen=True)
class Section:
    """One part of the message body, the same in every format; each formatter only decides the markup.

    ``kind`` says how items show: ``error`` (one preformatted text), ``list`` (one item per line),
    ``reasons`` (code names with a record count), ``phrases`` (text from the data, count optional).
    """

    heading: str
    kind: str
    items: tuple[SectionItem, ...]
    #: Items left out by the limits.
    omitted: int = 0


@dataclass(frozen=True)
class AlertMessage:
    """One alert, already bounded and cleaned; render it with the ``to_*`` methods."""

    #: ``pass``, ``quarantine`` or ``halt``; ``None`` when no summary exists (a task failed before the gate).
    verdict: str | None
    #: ``pass``, ``quarantine``, ``halt`` or ``failure`` (a task failed without a halt verdict).
    event: str
    title: str
    counts: dict[str, int] | None
    top_reasons: list[tuple[str, int]]
    suspicious_phrases: list[tuple[str, int | None]]
    halt_reasons: list[str]
    alerts: list[str]
    report_url: str | None
    run: RunInfo = field(default_factory=RunInfo)
    #: How many items each list lost to the limits, e.g. ``{"reasons": 3}``.
    omitted: dict[str, int] = field(default_factory=dict)
    limits: AlertLimits = field(default_factory=AlertLimits)

    @cached_property
    def sections(self) -> tuple[Section, ...]:
        """The body, in order: error (a failure only), halt reasons, top reasons, suspicious phrases, warnings.

        Empty sections are left out."""
        candidates = (
            Section("Error", "error", (SectionItem(self.run.error),) if self.run.error and self.event == "failure"
                    else ()),
            Section("Halt reasons", "list", tuple(SectionItem(r) for r in self.halt_reasons),
                    self.omitted.get("halt_reasons", 0)),
            Section("Top reasons", "reasons", tuple(SectionItem(r, n) for r, n in self.top_reasons),
                    self.omitted.get("reasons", 0)),
            Section("Suspicious phrases", "phrases", tuple(SectionItem(p, n) for p, n in self.suspicious_phrases),
                    self.omitted.get("phrases", 0)),
            Section("Warnings", "list", tuple(SectionItem(a) for a in self.alerts), self.omitted.get("alerts", 0)),
        )
        return tuple(s for s in candidates if s.items)

    # -- renderings ---------------------------------------------------------------------------------

    def text(self) -> str:
        """Plain text, at most ``limits.max_text_chars``; the title, counts and report link always survive."""
        return format_text(self)

    def to_slack(self) -> dict[str, Any]:
        """A Slack incoming-webhook body: ``text`` (notification fallback) plus Block Kit ``blocks``."""
        return format_slack(self)

    def to_html(self) -> str:
        """An email body: a small HTML document (``templates/alert.html.j2``), every value escaped."""
        return format_html(self)

    def to_payload(self) -> dict[str, Any]:
        """The JSON body of the generic webhook (documented in docs/alerts.md; keys are stable)."""
        return {
            "source": "tunegate",
            "version": PAYLOAD_VERSION,
            "event": self.event,
            "verdict": self.verdict,
            "title": self.title,
            "dag_id": self.run.dag_id,
            "run_id": self.run.run_id,
            "task_id": self.run.task_id,
            "run_date": self.run.run_date,
            "counts": dict(self.counts) if self.counts is not None else None,
            "top_reasons": [{"reason": r, "count": n} for r, n in self.top_reasons],
            "suspicious_phrases": [{"phrase": p, "count": n} for p, n in self.suspicious_phrases],
            "halt_reasons": list(self.halt_reasons),
            "alerts": list(self.alerts),
            "error": self.run.error,
            "report_url": self.report_url,
            "log_url": self.run.log_url,
            "omitted": dict(self.omitted),
            "text": self.text(),
        }


# -- formatters: one per target, over the same sections ---------------------------------------------


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
        {"type": "header", "text": {"type": "plain_text", "text": _cut(message.title, 150), "emoji": False}},
    ]
    if fields:
        blocks.append(_mrkdwn("\n".join(_slack_escape(f) for f in fields)))
    blocks += [_mrkdwn(_cut(_slack_section(s), 2900)) for s in message.sections]
    if message.report_url:
        blocks.append({"type": "context", "elements": [
            {"type": "mrkdwn", "text": "Report: " + _slack_link(message.report_url, "open the report")}]})
    return {"text": _slack_escape(_cut(message.text(), 2900)), "blocks": blocks}


def _slack_section(section: Section) -> str:
    if section.kind == "error":
        return f"*{section.heading}*\n```{_slack_code(section.items[0].text)}```"
    if section.kind == "reasons":
        lines = [f"• `{_slack_code(i.text)}`: {i.count}" for i in section.items]
    elif section.kind == "phrases":
        lines = [f"• `{_slack_code(i.text)}`" + (f" ({i.count} records)" if i.count is not None else "")
                 for i in section.items]
    else:
        lines = [f"• {_slack_escape(i.text)}" for i in section.items]
    more = f"\n_… and {section.omitted} more_" if section.omitted else ""
    return f"*{section.heading}*\n" + "\n".join(lines) + more


def format_html(message: AlertMessage) -> str:
    """The email body from ``templates/alert.html.j2`` (autoescaped, no external resources)."""
    from tunegate.core.templates import render

    counts = [(k, message.counts[k]) for k in COUNT_KEYS if k in message.counts] if message.counts else []
    return render("alert.html.j2", title=message.title, counts=counts, sections=message.sections,
                  report_url=message.report_url, run_line=_run_line(message.run))


# -- building ---------------------------------------------------------------------------------------


def build_alert(summary: Mapping[str, Any] | None, run: RunInfo | None = None, *,
                report_base_url: str | None = None, data_root: str | Path | None = None,
                limits: AlertLimits | None = None) -> AlertMessage:
    """The alert for a gated batch (``summary``), or for a run that failed before the gate (``None``).

    :param report_base_url: where ``data_root`` is served over HTTP; the report link then becomes
        ``{report_base_url}/{report path relative to data_root}``. Without it the link is a ``file://`` URI.
    """
    run = run or RunInfo()
    limits = limits or AlertLimits()
    cut = limits.max_item_chars
    if run.error:
        run = RunInfo(dag_id=run.dag_id, run_id=run.run_id, task_id=run.task_id, run_date=run.run_date,
                      error=_cut(_clean_multiline(run.error), limits.max_text_chars // 2), log_url=run.log_url)
    if summary is None:
        return AlertMessage(verdict=None, event="failure", title=_title("failure", None, run), counts=None,
                            top_reasons=[], suspicious_phrases=[], halt_reasons=[], alerts=[], report_url=None,
                            run=run, limits=limits)

    verdict = str(summary.get("verdict", "unknown"))
    event = verdict if verdict == "halt" or not run.error else "failure"
    counts = {k: int(summary.get(k, 0)) for k in COUNT_KEYS}
    reasons = top_reasons(summary)
    phrases = suspicious_phrases(summary)
    halts = [_cut(_clean(str(r)), cut) for r in summary.get("halt_reasons", []) or []]
    alerts = [_cut(_clean(str(a)), cut) for a in summary.get("alerts", []) or []]
    omitted = {k: v for k, v in {
        "reasons": max(0, len(reasons) - limits.max_reasons),
        "phrases": max(0, len(phrases) - limits.max_phrases),
        "halt_reasons": max(0, len(halts) - limits.max_halt_reasons),
        "alerts": max(0, len(alerts) - limits.max_alerts),
    }.items() if v}
    return AlertMessage(
        verdict=verdict, event=event, title=_title(event, counts, run, verdict=verdict), counts=counts,
        top_reasons=[(_cut(r, cut), n) for r, n in reasons[:limits.max_reasons]],
        suspicious_phrases=[(_cut(p, cut), n) for p, n in phrases[:limits.max_phrases]],
        halt_reasons=halts[:limits.max_halt_reasons], alerts=alerts[:limits.max_alerts],
        report_url=report_url(summary, base_url=report_base_url, data_root=data_root),
        run=run, omitted=omitted, limits=limits)


def top_reasons(summary: Mapping[str, Any]) -> list[tuple[str, int]]:
    """Quarantine reasons by record count, most frequent first (ties by name)."""
    reasons = summary.get("reasons") or {}
    return sorted(((_clean(str(k)), int(v)) for k, v in reasons.items()), key=lambda kv: (-kv[1], kv[0]))


def suspicious_phrases(summary: Mapping[str, Any]) -> list[tuple[str, int | None]]:
    """Phrases that checks flagged as suspicious, across checks, most frequent first, without repeats.

    A check reports them under ``checks.<name>.metrics.suspicious_phrases`` as a list of strings, a list
    of objects (``{"phrase": ..., "count": ...}``; ``text``/``ngram``/``trigger`` and ``records``/``support``
    are accepted too), or a mapping phrase -> count.
    """
    found: dict[str, int | None] = {}
    for check in (summary.get("checks") or {}).values():
        metrics = check.get("metrics") if isinstance(check, Mapping) else None
        raw = metrics.get("suspicious_phrases") if isinstance(metrics, Mapping) else None
        for phrase, count in _phrase_items(raw):
            phrase = _clean(phrase)
            if not phrase:
                continue
            old = found.get(phrase)
            found[phrase] = count if old is None else max(old, count or 0)
    return sorted(found.items(), key=lambda kv: (-(kv[1] if kv[1] is not None else -1), kv[0]))


def _phrase_items(raw: Any) -> Iterable[tuple[str, int | None]]:
    if isinstance(raw, Mapping):
        for k, v in raw.items():
            yield str(k), _as_int(v)
    elif isinstance(raw, list | tuple):
        for item in raw:
            if isinstance(item, str):
                yield item, None
            elif isinstance(item, Mapping):
                phrase = next((item[k] for k in _PHRASE_KEYS if item.get(k)), None)
                if phrase is not None:
                    yield str(phrase), next((_as_int(item[k]) for k in _COUNT_KEYS if k in item), None)
            elif isinstance(item, list | tuple) and item:
                yield str(item[0]), _as_int(item[1]) if len(item) > 1 else None


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def report_url(summary: Mapping[str, Any], *, base_url: str | None = None,
               data_root: str | Path | None = None) -> str | None:
    """The link to the batch's HTML report.

    With ``base_url`` and a report under ``data_root``: ``base_url`` + the report's path relative to
    ``data_root`` (URL-quoted). Otherwise the report's ``file://`` URI.
    """
    out_dir = summary.get("out_dir")
    if not out_dir:
        return None
    name = str((summary.get("outputs") or {}).get("report", "report.html"))
    path = Path(out_dir) / name
    if base_url and data_root:
        try:
            rel = path.resolve().relative_to(Path(data_root).resolve())
        except ValueError:
            rel = None
        if rel is not None:
            return base_url.rstrip("/") + "/" + quote(PurePosixPath(*rel.parts).as_posix())
    return path.resolve().as_uri() if path.is_absolute() else path.as_posix()


def load_summary(location: str | Path) -> dict[str, Any]:
    """Read a ``summary.json`` given as a path or a ``file://`` URI."""
    text = str(location)
    if text.startswith("file:"):
        text = unquote(urlparse(text).path)
    data = json.loads(Path(text).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "verdict" not in data:
        raise ValueError(f"{location}: not a tunegate summary (no 'verdict' key)")
    return data


# -- formatting helpers -----------------------------------------------------------------------------


def _title(event: str, counts: Mapping[str, int] | None, run: RunInfo, *, verdict: str | None = None) -> str:
    where = " ".join(x for x in (run.dag_id, run.run_date) if x)
    prefix = f"tunegate {event.upper()}" + (f" · {where}" if where else "")
    if event == "failure" or counts is None:
        what = f"task {run.task_id} failed" if run.task_id else "run failed"
        if verdict:
            what += f" after a {verdict} verdict"
        return f"{prefix}: {what}"
    if event == "halt":
        return f"{prefix}: batch halted, nothing published ({counts['total']} records)"
    if event == "quarantine":
        return (f"{prefix}: {counts['quarantined']} of {counts['total']} records quarantined, "
                f"{counts['rejected']} rejected")
    return f"{prefix}: {counts['accepted']} of {counts['total']} records accepted"


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
        return _cut("\n".join(head), room) + ("\n" + "\n".join(tail) if tail else "")
    kept: list[str] = []
    budget = limit - len(fixed) - 1
    for i, line in enumerate(body):
        need = len(line) + 1
        rest = len(body) - i - 1
        if need + (len(marker) + 1 if rest else 0) > budget:
            room = budget - len(marker) - 2
            if room > 40:
                kept.append(_cut(line, room))
            kept.append(marker)
            break
        kept.append(line)
        budget -= need
    return "\n".join(head + kept + tail)


def _clean(text: str) -> str:
    """One line: control and bidi characters removed, whitespace runs collapsed."""
    return _SPACE.sub(" ", _CONTROL.sub("", text)).strip()


def _clean_multiline(text: str) -> str:
    lines = [_SPACE.sub(" ", _CONTROL.sub("", line)).rstrip() for line in text.splitlines()]
    return "\n".join(line for line in lines if line.strip())


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:max(0, limit - 1)].rstrip() + "…"


def _slack_escape(text: str) -> str:
    # Slack's three control characters; escaping "<" also defuses <!channel> and <@user> in the data.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack_code(text: str) -> str:
    return _slack_escape(text.replace("`", "'"))


def _slack_link(url: str, label: str) -> str:
    if url.startswith(("http://", "https://")):
        return f"<{url.replace('>', '%3E').replace('|', '%7C')}|{label}>"
    return f"`{_slack_code(url)}`"  # Slack does not link file:// URIs; show the path to copy


def _mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}
