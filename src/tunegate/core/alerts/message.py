"""The alert message: its size bounds, what is known about the run, its sections, and :func:`build_alert`.

An :class:`AlertMessage` is bounded and cleaned when built; its body is one list of :class:`Section`
(built once per message) that every formatter (:mod:`tunegate.core.alerts.formats`) renders.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from tunegate.core.alerts.formats import format_html, format_slack, format_text
from tunegate.core.alerts.summary import COUNT_KEYS, contributor_lines, report_url, suspicious_phrases, top_reasons
from tunegate.core.alerts.text import clean, clean_multiline, cut

#: Bumped when a field of :meth:`AlertMessage.to_payload` changes meaning or disappears.
PAYLOAD_VERSION = 1


@dataclass(frozen=True)
class AlertLimits:
    """Size bounds of a message. The defaults fit Slack (3,000 characters per section) with room to spare."""

    max_reasons: int = 5
    max_phrases: int = 5
    max_halt_reasons: int = 5
    max_alerts: int = 3
    max_contributors: int = 5
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
    #: The contributor ledger's news: campaigns attributed, new contributors flooding, trust movers.
    contributors: list[str] = field(default_factory=list)

    @cached_property
    def sections(self) -> tuple[Section, ...]:
        """The body, in order: error (a failure only), halt reasons, top reasons, suspicious phrases, contributors
        (the ledger's news), warnings.

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
            Section("Contributors", "list", tuple(SectionItem(c) for c in self.contributors),
                    self.omitted.get("contributors", 0)),
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
            "contributors": list(self.contributors),
            "error": self.run.error,
            "report_url": self.report_url,
            "log_url": self.run.log_url,
            "omitted": dict(self.omitted),
            "text": self.text(),
        }


def build_alert(summary: Mapping[str, Any] | None, run: RunInfo | None = None, *,
                report_base_url: str | None = None, data_root: str | Path | None = None,
                limits: AlertLimits | None = None) -> AlertMessage:
    """The alert for a gated batch (``summary``), or for a run that failed before the gate (``None``).

    :param report_base_url: where ``data_root`` is served over HTTP; the report link then becomes
        ``{report_base_url}/{report path relative to data_root}``. Without it the link is a ``file://`` URI.
    """
    run = run or RunInfo()
    limits = limits or AlertLimits()
    item_chars = limits.max_item_chars
    if run.error:
        run = RunInfo(dag_id=run.dag_id, run_id=run.run_id, task_id=run.task_id, run_date=run.run_date,
                      error=cut(clean_multiline(run.error), limits.max_text_chars // 2), log_url=run.log_url)
    if summary is None:
        return AlertMessage(verdict=None, event="failure", title=_title("failure", None, run), counts=None,
                            top_reasons=[], suspicious_phrases=[], halt_reasons=[], alerts=[], report_url=None,
                            run=run, limits=limits)

    verdict = str(summary.get("verdict", "unknown"))
    event = verdict if verdict == "halt" or not run.error else "failure"
    counts = {k: int(summary.get(k, 0)) for k in COUNT_KEYS}
    reasons = top_reasons(summary)
    phrases = suspicious_phrases(summary)
    halts = [cut(clean(str(r)), item_chars) for r in summary.get("halt_reasons", []) or []]
    alerts = [cut(clean(str(a)), item_chars) for a in summary.get("alerts", []) or []]
    contributors = [cut(line, item_chars) for line in contributor_lines(summary)]
    omitted = {k: v for k, v in {
        "reasons": max(0, len(reasons) - limits.max_reasons),
        "phrases": max(0, len(phrases) - limits.max_phrases),
        "halt_reasons": max(0, len(halts) - limits.max_halt_reasons),
        "alerts": max(0, len(alerts) - limits.max_alerts),
        "contributors": max(0, len(contributors) - limits.max_contributors),
    }.items() if v}
    return AlertMessage(
        verdict=verdict, event=event, title=_title(event, counts, run, verdict=verdict), counts=counts,
        top_reasons=[(cut(r, item_chars), n) for r, n in reasons[:limits.max_reasons]],
        suspicious_phrases=[(cut(p, item_chars), n) for p, n in phrases[:limits.max_phrases]],
        halt_reasons=halts[:limits.max_halt_reasons], alerts=alerts[:limits.max_alerts],
        report_url=report_url(summary, base_url=report_base_url, data_root=data_root),
        run=run, omitted=omitted, limits=limits, contributors=contributors[:limits.max_contributors])


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
