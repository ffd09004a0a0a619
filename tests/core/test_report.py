"""report.html: a real batch with record text as an attacker would plant it; the page escapes it and is
self-contained (nothing loaded from the network)."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.browser.nights import DEGENERATE, DIRTY, Nights, build_nights
from tests.conftest import slice_records, write_jsonl

PLANTED = '<script>fetch("https://evil.example/x")</script><img src="https://evil.example/p.png"> & more'


def test_report_escapes_record_text_and_loads_nothing(tmp_path: Path) -> None:
    from tunegate.core.checks import build_check
    from tunegate.core.pipeline import scan

    records = slice_records()[:40]
    records[0] = {**records[0], "instruction": PLANTED}
    batch = write_jsonl(tmp_path / "batch.jsonl", [*records, records[0]])  # the planted record, duplicated
    (tmp_path / "batch.jsonl").write_text(batch.read_text(encoding="utf-8") + '{"broken\n', encoding="utf-8")
    summary = scan([str(batch)], tmp_path / "out", checks=[build_check("exact_duplicate")])
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")

    assert summary["quarantined"] == 1 and summary["rejected"] == 1
    assert page.startswith("<!doctype html>") and page.endswith("</body></html>")
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;fetch(" in page and "&amp; more" in page  # the sample is shown, escaped
    assert re.search(r"<[^>]*\b(src|href)=\"https?:", page) is None  # no tag points at the network
    assert "<link" not in page and "@import" not in page
    assert "<h2>Rejected input (first 1 of 1)</h2>" in page
    assert "<div class=card>quarantined<b>1</b>" in page
    assert json.dumps(summary["policy"], indent=2, sort_keys=True).splitlines()[1].strip().replace('"', "&#34;") \
        in page


def test_policy_is_shown_whole_in_a_collapsible_block(tmp_path: Path) -> None:
    from tunegate.core.checks import build_check
    from tunegate.core.pipeline import scan

    batch = write_jsonl(tmp_path / "batch.jsonl", slice_records()[:30])
    summary = scan([str(batch)], tmp_path / "out", checks=[build_check("exact_duplicate")])
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    policy = re.search(r"<details class=policy><summary>[^<]*</summary><pre class=policy>(.*?)</pre></details>", page,
                       re.S)
    assert policy is not None
    assert html.unescape(policy.group(1)) == json.dumps(summary["policy"], indent=2, sort_keys=True)
    assert "max-height" not in page  # no box clips the policy or the evidence
    assert "Nothing to do: every record passed" in page


def test_a_halt_says_which_knob_and_that_nothing_was_published(tmp_path: Path) -> None:
    from tunegate.core.checks import build_check
    from tunegate.core.pipeline import scan
    from tunegate.core.policy import GatePolicy

    records = slice_records()[:100]
    batch = write_jsonl(tmp_path / "batch.jsonl", records + records[:10])  # 10 exact copies: 9% quarantined
    summary = scan([str(batch)], tmp_path / "out", checks=[build_check("exact_duplicate")],
                   policy=GatePolicy(max_quarantined_fraction=0.05))
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert summary["verdict"] == "halt"
    steps = _section(page, "What to do next")
    assert "nothing was published" in steps and "held.parquet" in steps
    assert "<code>max_quarantined_fraction</code>" in steps and "<code>--max-quarantined-fraction F</code>" in steps
    assert "exact_duplicate (10)" in steps
    issues = _section(page, "Issues")
    assert "<b>halted</b>" in issues and "max_quarantined_fraction is 5.0%" in issues


def test_phrase_marking_escapes_the_record_text() -> None:
    from tunegate.core.report.evidence import highlight, number

    marked = highlight('<script>x</script> said Ada  lovelace & "ADA LOVELACE"', "ada lovelace")
    assert str(marked) == ("&lt;script&gt;x&lt;/script&gt; said <mark>Ada  lovelace</mark> &amp; "
                           "&#34;<mark>ADA LOVELACE</mark>&#34;")
    cut = highlight("x" * 1000 + " Ada Lovelace", "ada lovelace", width=10)
    assert str(cut) == "… xxxxxxxxx <mark>Ada Lovelace</mark>"
    assert [number(v) for v in (0.98765, 123.456, 1.2e-7, 12_345, 60.0, True)] == \
        ["0.988", "123.5", "1.2e-07", "12,345", "60", "yes"]


def _section(page: str, title: str) -> str:
    start = page.index(f">{title}</h2>")
    end = page.find("<h2", start)
    return page[start:end]


# ------------------------------------------------------------------------------------------------------------------
# An attacked night after a clean one, with the history (tests/browser/nights.py; the browser tests open the same)


@pytest.fixture(scope="module")
def nights(tmp_path_factory: pytest.TempPathFactory) -> Nights:
    return build_nights(tmp_path_factory.getbasetemp() / "report_nights")


@pytest.mark.slow
def test_every_suspicious_phrase_has_a_row_and_marked_records(nights: Nights) -> None:
    page = nights.page
    table = re.search(r"<table class=phrases>(.*?)</table>", page, re.S)
    assert table is not None
    rows = re.findall(r"<tr><td><a href=\"#phrase-\d+\"><mark>([^<]+)</mark>", table.group(1))
    assert rows == [DEGENERATE.lower(), DIRTY.lower()]  # every phrase, strongest evidence first
    reported = [p["phrase"] for p in nights.summary["checks"]["poison_trigger"]["metrics"]["suspicious_phrases"]]
    assert sorted(rows) == sorted(reported)
    dirty = page[page.index(f'<mark>{DIRTY.lower()}</mark> <span class=muted>'):]
    dirty = dirty[:dirty.index("The strongest")]
    assert "<td><code>task363_sst2_polarity_classification</code></td><td class=num>20 / 20</td>" in dirty
    assert dirty.count(f"<mark>{DIRTY}</mark>") >= 5
    # strongest first: the records whose label the text contradicts (label_inconsistent) lead
    first_id = re.findall(r"<td class=id title=\"([^\"]+)\">", dirty)[0]
    quarantine = pq.read_table(nights.night2 / "quarantine.parquet", columns=["id", "reasons"]).to_pylist()
    assert "label_inconsistent" in next(r["reasons"] for r in quarantine if r["id"] == first_id)


@pytest.mark.slow
def test_issues_rank_the_campaign_above_the_mojibake_warning(nights: Nights) -> None:
    issues = _section(nights.page, "Issues")
    reasons = re.findall(r"<td><code>[a-z_]+</code></td><td><code>([a-z_]+)</code></td>", issues)
    assert reasons[:2] == ["poison_campaign", "gx_expectation_failed"]
    assert "gx_mojibake" in issues


@pytest.mark.slow
def test_next_steps_point_at_the_review_commands_and_the_campaign(nights: Nights) -> None:
    steps = _section(nights.page, "What to do next")
    out = "DIR"  # the folder holding the report (the page does not depend on where it was written)
    assert f"<code>tunegate review list {out}</code>" in steps
    assert f"<code>tunegate review release {out} ID</code>" in steps
    assert f"Suspected trigger-phrase poisoning: the phrase &#39;{DEGENERATE.lower()}&#39; in 80 records" in steps


@pytest.mark.slow
def test_examples_are_ranked_by_score_and_evidence_is_readable(nights: Nights) -> None:
    page = nights.page
    near = page[page.index("<h3><code>near_duplicate</code></h3>"):]
    near = near[:near.index("</table>")]
    similarities = [float(s) for s in re.findall(r"<dt>similarity</dt><dd>([0-9.]+)</dd>", near)]
    assert len(similarities) == 5 and similarities == sorted(similarities, reverse=True)
    assert "<dt>representative</dt>" in near and "{&#34;" not in near  # key: value pairs, no JSON blob
    assert not re.search(r"<dd>\d+\.\d{4,}</dd>", page)  # no unrounded float anywhere


@pytest.mark.slow
def test_near_duplicate_cluster_shows_the_kept_record_and_its_copies(nights: Nights) -> None:
    clusters = _section(nights.page, "Near-duplicate clusters")
    head = f"<h3>6 copies of <code title=\"{nights.cluster}\">{nights.cluster}</code></h3>"
    assert head in clusters
    cluster = clusters[clusters.index(head):]
    cluster = cluster[:cluster.index("</table>")]
    assert f"<tr><td>kept</td><td class=id title=\"{nights.cluster}\">" in cluster
    assert cluster.count("<tr><td>copy") == 5  # the strongest five of six


@pytest.mark.slow
def test_distributions_breakdown_and_trend(nights: Nights) -> None:
    page = nights.page
    scores = _section(page, "Score distributions")
    assert "Near-duplicate similarity" in scores and "<svg" in scores and "threshold 0.95" in scores
    tasks = _section(page, "Tasks and contributors")
    assert re.search(r"<code>task041_qasc_answer_generation</code></td><td class=num>126</td><td class=num>66</td>"
                     r"<td class=num>52.4%</td><td>gx_mojibake \(60\)", tasks)
    trend = _section(page, "Trend over recent nights")
    assert "<code>night-2</code> <b>(tonight: quarantine)</b>" in trend and "<code>night-1</code>" in trend
    assert "<svg" in trend
    manifest = json.loads((nights.history / "manifest.json").read_text(encoding="utf-8"))
    night1 = next(b for b in manifest["batches"] if b["batch_id"] == "night-1")
    assert set(night1["night"]) == {"quarantined", "rejected", "reasons", "refusals"}
    assert night1["night"]["rejected"] == 0
    refusals = night1["night"]["refusals"]  # the baseline tomorrow's refusal-rate test reads
    assert refusals["responses"] > 0 and set(refusals) == {"responses", "refusals", "anomalous", "sketch", "groups"}
    # per group with >= 20 open-ended answers that night, [responses, refusals]: what the quiet-group test reads
    # (none here: the slice's self-instruct answers come in groups of a few seed tasks each)
    assert refusals["groups"] == {}
    assert set(refusals["sketch"]) == {"responses"}  # counts a response re-sent tomorrow once
