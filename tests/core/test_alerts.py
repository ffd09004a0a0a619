"""The alert message builder: content from a real gate summary, escaping of hostile data, size bounds."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import NIGHTLY
from tunegate.core.alerts import (
    AlertLimits,
    RunInfo,
    build_alert,
    load_summary,
    report_url,
    suspicious_phrases,
    top_reasons,
)

RUN = RunInfo(dag_id="tunegate_nightly", run_id="manual__2026-01-01", task_id="gate", run_date="2026-01-01")
# A trigger phrase as a poisoning attack would plant it: Slack mention syntax, a newline, a bidi override.
HOSTILE = "cf <!channel> trigger\nword\u202e & more"


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The sample nightly batch, gated with the exact-duplicate check (fast), under a data root."""
    from tunegate.core.checks import build_check
    from tunegate.core.pipeline import scan

    root = tmp_path_factory.mktemp("data")
    out = root / "tunegate_nightly" / "2026-01-01"
    summary = scan([str(NIGHTLY)], out, checks=[build_check("exact_duplicate")], keep_work=True)
    return {"root": root, "out": out, "summary": summary}


@pytest.fixture(scope="module")
def halted(gated: dict[str, Any]) -> dict[str, Any]:
    """The same findings under a policy that tolerates no quarantined record."""
    from tunegate.core.gate import gate
    from tunegate.core.policy import GatePolicy

    return gate(gated["out"] / "work", gated["root"] / "strict", GatePolicy(max_quarantined_fraction=0.0))


def with_phrases(summary: dict[str, Any], **checks: Any) -> dict[str, Any]:
    s = copy.deepcopy(summary)
    for name, phrases in checks.items():
        s["checks"][name] = {"check": name, "metrics": {"suspicious_phrases": phrases}}
    return s


def test_quarantine_alert_carries_verdict_counts_reasons_and_report(gated: dict[str, Any]) -> None:
    s = gated["summary"]
    assert s["verdict"] == "quarantine"
    alert = build_alert(s, RUN)
    assert (alert.verdict, alert.event) == ("quarantine", "quarantine")
    assert alert.counts == {"total": 1014, "accepted": 1004, "quarantined": 6, "rejected": 4}
    assert alert.top_reasons == [("exact_duplicate", 6)]
    assert alert.title == ("tunegate QUARANTINE · tunegate_nightly 2026-01-01: 6 of 1014 records quarantined, "
                           "4 rejected")
    report = gated["out"] / "report.html"
    assert report.is_file() and alert.report_url == report.resolve().as_uri()
    text = alert.text()
    assert text.splitlines()[:2] == [alert.title, "total 1014, accepted 1004, quarantined 6, rejected 4"]
    assert "top reasons: exact_duplicate=6" in text
    assert f"report: {report.resolve().as_uri()}" in text
    assert "task gate" in text


def test_payload_is_json_with_stable_keys(gated: dict[str, Any]) -> None:
    payload = json.loads(json.dumps(build_alert(gated["summary"], RUN).to_payload()))
    assert set(payload) == {"source", "version", "event", "verdict", "title", "dag_id", "run_id", "task_id",
                            "run_date", "counts", "top_reasons", "suspicious_phrases", "halt_reasons", "alerts",
                            "contributors", "error", "report_url", "log_url", "omitted", "text"}
    assert payload["source"] == "tunegate" and payload["version"] == 1
    assert payload["top_reasons"] == [{"reason": "exact_duplicate", "count": 6}]
    assert payload["counts"]["quarantined"] == 6
    assert payload["run_date"] == "2026-01-01" and payload["error"] is None


def test_halt_alert_lists_the_halt_reasons(halted: dict[str, Any]) -> None:
    assert halted["verdict"] == "halt"
    alert = build_alert(halted, RunInfo(dag_id="tunegate_nightly", task_id="gate", error="tunegate verdict HALT: ..."))
    assert alert.event == "halt"
    assert alert.title == "tunegate HALT · tunegate_nightly: batch halted, nothing published (1014 records)"
    assert any("max_quarantined_fraction" in r for r in alert.halt_reasons)
    text = alert.text()
    assert "halt reasons:" in text and "max_quarantined_fraction" in text
    assert "error:" not in text  # the halt reasons say it; the exception text would repeat them


def test_failure_before_the_gate_names_the_task_and_the_error() -> None:
    alert = build_alert(None, RunInfo(dag_id="tunegate_nightly", run_date="2026-01-03", task_id="ingest",
                                      error="OSError: [Errno 5] Input/output error: '/mnt/batch'"))
    assert (alert.verdict, alert.event, alert.counts) == (None, "failure", None)
    assert alert.title == "tunegate FAILURE · tunegate_nightly 2026-01-03: task ingest failed"
    assert "error: OSError: [Errno 5] Input/output error: '/mnt/batch'" in alert.text()
    assert alert.to_payload()["report_url"] is None


def test_a_task_failing_after_a_quarantine_verdict_is_a_failure(gated: dict[str, Any]) -> None:
    alert = build_alert(gated["summary"], RunInfo(task_id="publish", error="TimeoutError"))
    assert (alert.event, alert.verdict) == ("failure", "quarantine")
    assert alert.title.endswith("task publish failed after a quarantine verdict")


def test_report_link_under_a_base_url(gated: dict[str, Any], tmp_path: Path) -> None:
    s = gated["summary"]
    url = report_url(s, base_url="https://reports.example.com/tunegate/", data_root=gated["root"])
    assert url == "https://reports.example.com/tunegate/tunegate_nightly/2026-01-01/report.html"
    # a report outside the served root keeps its file URI rather than a broken link
    assert report_url(s, base_url="https://reports.example.com", data_root=tmp_path).startswith("file://")
    assert build_alert(s, report_base_url="https://r.example.com", data_root=gated["root"]).report_url == \
        "https://r.example.com/tunegate_nightly/2026-01-01/report.html"


def test_suspicious_phrases_from_every_check_shape(gated: dict[str, Any]) -> None:
    s = with_phrases(gated["summary"],
                     poison_trigger=[{"phrase": "James Bond", "count": 12}, {"ngram": "cf", "records": 3}],
                     poison_label_flip={"always answer positive": 5, "James Bond": 9},
                     poison_lexical=["zx-unlock", ["tq mode", 2]])
    assert suspicious_phrases(s) == [("James Bond", 12), ("always answer positive", 5), ("cf", 3),
                                     ("tq mode", 2), ("zx-unlock", None)]
    alert = build_alert(s, RUN)
    assert alert.suspicious_phrases[0] == ("James Bond", 12)
    assert 'suspicious phrases: "James Bond" (12); "always answer positive" (5)' in alert.text()
    assert suspicious_phrases(gated["summary"]) == []  # the duplicate check reports none


def test_hostile_phrases_are_cleaned_and_escaped(gated: dict[str, Any]) -> None:
    alert = build_alert(with_phrases(gated["summary"], poison=[{"phrase": HOSTILE, "count": 4}]), RUN)
    phrase = alert.suspicious_phrases[0][0]
    assert phrase == "cf <!channel> trigger word & more"  # one line, no bidi override
    slack = json.dumps(alert.to_slack())
    assert "<!channel>" not in slack and "&lt;!channel&gt;" in slack
    html = alert.to_html()
    assert "<!channel>" not in html and "&lt;!channel&gt; trigger word &amp; more" in html


def test_slack_body_has_fallback_text_and_bounded_blocks(gated: dict[str, Any]) -> None:
    body = build_alert(gated["summary"], RUN, report_base_url="https://r.example.com",
                       data_root=gated["root"]).to_slack()
    assert body["text"].startswith("tunegate QUARANTINE")
    header, *sections = body["blocks"]
    assert header["type"] == "header" and len(header["text"]["text"]) <= 150
    texts = [b["text"]["text"] for b in sections if b["type"] == "section"]
    assert any("`exact_duplicate`: 6" in t for t in texts)
    assert body["blocks"][-1]["elements"][0]["text"] == \
        "Report: <https://r.example.com/tunegate_nightly/2026-01-01/report.html|open the report>"


def test_every_rendering_stays_bounded_whatever_the_batch(gated: dict[str, Any]) -> None:
    s = with_phrases(gated["summary"], poison=[{"phrase": f"{i} " + "x" * 10_000, "count": i} for i in range(300)])
    s["reasons"] = {f"reason_{i:03d}_" + "y" * 500: 1000 - i for i in range(300)}
    s["halt_reasons"] = ["z" * 5_000] * 40
    s["alerts"] = ["w" * 5_000] * 40
    s["verdict"] = "halt"
    limits = AlertLimits()
    alert = build_alert(s, RunInfo(dag_id="d", error="e" * 100_000))
    text = alert.text()
    assert len(text) <= limits.max_text_chars
    assert text.splitlines()[-2].startswith("report: file://")  # the link survives truncation
    assert "(truncated; see the report)" in text
    assert alert.omitted == {"reasons": 295, "phrases": 295, "halt_reasons": 35, "alerts": 37}
    assert len(alert.top_reasons) == 5 and all(len(r) <= limits.max_item_chars for r, _ in alert.top_reasons)
    assert alert.top_reasons[0][1] == 1000
    slack = alert.to_slack()
    assert all(len(b["text"]["text"]) <= 3000 for b in slack["blocks"] if b["type"] == "section")
    assert len(slack["text"]) <= 3000
    assert len(json.dumps(alert.to_payload())) < 20_000
    assert len(alert.to_html()) < 20_000


def test_top_reasons_order_by_count_then_name() -> None:
    assert top_reasons({"reasons": {"b": 2, "a": 2, "c": 5}}) == [("c", 5), ("a", 2), ("b", 2)]


def test_load_summary_from_path_or_file_uri(gated: dict[str, Any], tmp_path: Path) -> None:
    path = gated["out"] / "summary.json"
    assert load_summary(path)["verdict"] == "quarantine"
    assert load_summary(path.resolve().as_uri()) == load_summary(str(path))
    other = tmp_path / "other.json"
    other.write_text('{"not": "a summary"}', encoding="utf-8")
    with pytest.raises(ValueError, match="not a tunegate summary"):
        load_summary(other)


def test_every_format_shows_the_same_sections_in_the_same_order(gated: dict[str, Any]) -> None:
    s = with_phrases(gated["summary"], poison=[{"phrase": "James Bond", "count": 12}])
    s["alerts"] = ["gx_instruction_record: 1 of 1010 rows unexpected"]
    alert = build_alert(s, RunInfo(dag_id="d", task_id="publish", error="TimeoutError: share unreachable"))
    headings = [sec.heading for sec in alert.sections]
    assert headings == ["Error", "Top reasons", "Suspicious phrases", "Warnings"]
    text = alert.text()
    slack = "\n".join(b["text"]["text"] for b in alert.to_slack()["blocks"] if b["type"] == "section")
    html = alert.to_html()
    for rendered, marks in ((text, ["error:", "top reasons:", "suspicious phrases:", "warnings:"]),
                            (slack, [f"*{h}*" for h in headings]),
                            (html, [f"<h3>{h}</h3>" for h in headings])):
        positions = [rendered.index(m) for m in marks]
        assert positions == sorted(positions), rendered


def test_html_page_is_self_contained_and_escapes_record_text(gated: dict[str, Any]) -> None:
    s = with_phrases(gated["summary"], poison=[{"phrase": '<img src="https://evil.example/x.png">', "count": 1},
                                               {"phrase": "<script>alert(1)</script>", "count": 1}])
    html = build_alert(s, RUN, report_base_url="https://r.example.com", data_root=gated["root"]).to_html()
    assert html.startswith("<html><body><h2>") and html.endswith("</body></html>")
    assert "<img" not in html and "<script" not in html and "&lt;script&gt;" in html
    # the only URL in the page is the report link: nothing is loaded from the network
    assert re.search(r"<[^>]*\bsrc=", html) is None  # no tag loads anything
    assert re.findall(r'href="([^"]*)"', html) == ["https://r.example.com/tunegate_nightly/2026-01-01/report.html"]


# Slack mrkdwn in the data: bold, italic, strike, code, a quote, mentions (escaped and plain), a link, an ampersand
SLACK_HOSTILE = ("*bold* _italic_ ~strike~ `code` ```block``` > quote <!channel> <!here> @channel @here @everyone "
                 "<https://evil.example|click me> #general & done")
MARKUP = ("*bold*", "_italic_", "~strike~", "@channel", "@here", "@everyone", "#general", "<!channel>", "<!here>",
          "<https://evil.example", "`code`", "```block")


def _outside_code(text: str) -> str:
    """What Slack formats: the mrkdwn with its code blocks and code spans (where nothing formats) removed."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def test_slack_markup_in_the_data_never_formats_or_mentions(gated: dict[str, Any]) -> None:
    s = with_phrases(gated["summary"], poison=[{"phrase": SLACK_HOSTILE, "count": 3}])
    s["reasons"] = {SLACK_HOSTILE: 7, "exact_duplicate": 6}
    s["halt_reasons"] = [f"gate: {SLACK_HOSTILE}"]
    s["alerts"] = [f"check said {SLACK_HOSTILE}"]
    s["verdict"] = "halt"
    run = RunInfo(dag_id="tunegate_nightly", run_id=f"manual__{SLACK_HOSTILE}", task_id="gate",
                  error=f"ValueError: {SLACK_HOSTILE} " + "e" * 10_000)
    body = build_alert(s, run).to_slack()
    failed = build_alert(None, run).to_slack()  # a task that failed: its exception text, in a code block
    assert body["mrkdwn"] is False and failed["mrkdwn"] is False  # the fallback text is shown literally
    for b in (body, failed):
        assert "<!channel>" not in json.dumps(b) and "<https://evil" not in json.dumps(b)
    blocks = body["blocks"] + failed["blocks"]
    mrkdwn = [b["text"] for b in blocks if b["type"] == "section" and b["text"]["type"] == "mrkdwn"]
    mrkdwn += [e for b in blocks if b["type"] == "context" for e in b["elements"]]
    assert {m["text"].split("\n", 1)[0] for m in mrkdwn if m["text"].startswith("*")} >= \
        {"*Error*", "*Halt reasons*", "*Top reasons*", "*Suspicious phrases*", "*Warnings*"}
    for obj in mrkdwn:
        assert obj["verbatim"] is True  # Slack does not auto-link @channel, #general or URLs
        assert obj["text"].count("```") % 2 == 0  # every code block is closed, even for a 10k-character error
        outside = _outside_code(obj["text"])
        for mark in MARKUP:
            assert mark not in outside, (mark, obj["text"][:300])
        assert len(obj["text"]) <= 3000
    plain = [b["text"] for b in blocks if b["type"] == "section" and b["text"]["type"] == "plain_text"]
    assert len(plain) == 2 and "run manual__*bold* _italic_" in plain[0]["text"]  # the run id: literal, no markup
    # the data is still there to read, inside code: backticks made quotes, Slack's control characters escaped
    phrases = next(m["text"] for m in mrkdwn if m["text"].startswith("*Suspicious phrases*"))
    assert "'code'" in phrases and "&lt;!channel&gt;" in phrases and "&amp; done" in phrases


def test_invisible_characters_never_reach_an_alert() -> None:
    from tunegate.core.alerts.text import clean

    hidden = "James\u2060 Bond\ufeff\U000e0041\U000e0042\u202e\u2066 x\u200b"
    assert clean(hidden) == "James Bond x"
