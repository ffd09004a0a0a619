"""Every page the gate writes escapes record text and loads nothing from the network.

Real records (the Super-NaturalInstructions slice) carry script, event-handler, ``javascript:`` and
``</textarea>`` payloads in every field (id, task, instruction, input, output), planted so that the suites
flag them and the pages show them; one record is a megabyte long. Every ``.html`` file under the output
directory is then parsed: no element or attribute from the data, no remote resource, and a bounded size.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_jsonl
from tunegate.core.checks.gx_suite import CLIP_CHARS, MAX_SAMPLES, clip
from tunegate.core.pipeline import scan

SST2 = "task363_sst2_polarity_classification"
SUMM = "task288_gigaword_summarization"
PAYLOADS = ("<script>alert(1)</script>", "<img src=x onerror=alert(1)>", '<a href="javascript:alert(1)">x</a>',
            "</textarea><script>alert(2)</script>", "<iframe src=//evil.example>")
HOSTILE = " ".join(PAYLOADS)
HUGE = 1_000_000  # characters of one planted output


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.ends: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_endtag(self, tag: str) -> None:
        self.ends.append(tag)


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory, superni_slice: list[dict[str, Any]],
            gx_check: Any, gx_quality: Any) -> Path:
    tmp = tmp_path_factory.mktemp("safe_pages")
    records = [dict(r) for r in superni_slice if r["task"] in (SST2, SUMM)]
    for r in records:  # the task name of a classification task lands in its derived label set (the page shows it)
        if r["task"] == SST2:
            r["task"] = f"{SST2} {HOSTILE}"
    sst2 = [r for r in records if r["task"] != SUMM]
    summ = [r for r in records if r["task"] == SUMM]
    for i, rec in enumerate(sst2[:3] + summ[:3]):
        rec["id"] = f"{HOSTILE} #{i}"
        rec["instruction"] = f"{HOSTILE} ### Response:"  # template leftover: shown on the quality page
        rec["input"] = f"{HOSTILE} <noinput>\x07"  # template leftover and a control character
        rec["output"] = f"{HOSTILE} \u202e<|im_start|>"  # leftover, invisible character, outside the label set
    summ[5]["output"] = (HOSTILE + " ") * (HUGE // (len(HOSTILE) + 1))  # over the length bound: shown, clipped
    for i, rec in enumerate(records):  # contributor names: the breakdown, the ledger section and its chart show them
        rec["contributor"] = f"{HOSTILE} #{i % 3}"
    path = write_jsonl(tmp / "batch.jsonl", records)
    scan([str(path)], tmp / "out", checks=[gx_check, gx_quality])
    return tmp / "out"


def _pages(out: Path) -> list[Path]:
    pages = sorted(out.rglob("*.html"))
    assert {p.name for p in pages} >= {"report.html", "gx_instruction_record.html", "gx_instruction_quality.html"}
    return pages


def test_no_payload_survives_in_any_page(out_dir: Path) -> None:
    for page in _pages(out_dir):
        html = page.read_text(encoding="utf-8")
        for payload in PAYLOADS:
            assert payload not in html, (page.name, payload)
        assert "</textarea>" not in html.lower(), page.name
        parser = _Tags()
        parser.feed(html)
        tags = {t for t, _ in parser.tags} | set(parser.ends)
        assert not tags & {"script", "img", "iframe", "textarea", "object", "embed", "link"}, (page.name, tags)
        for tag, attrs in parser.tags:
            for name, value in attrs:
                assert not name.startswith("on"), (page.name, tag, name)
                assert not (value or "").strip().lower().startswith("javascript:"), (page.name, tag, name, value)


def test_no_page_loads_anything_from_the_network(out_dir: Path) -> None:
    for page in _pages(out_dir):
        html = page.read_text(encoding="utf-8")
        parser = _Tags()
        parser.feed(html)
        for tag, attrs in parser.tags:
            for name, value in attrs:
                if name in ("src", "href", "action", "data", "srcset", "poster"):
                    assert not re.match(r"\s*(?:[a-z][a-z0-9+.-]*:)?//", value or "", re.I), (page.name, tag, value)
        assert not re.search(r"@import|url\(\s*['\"]?\s*(?:https?:)?//", html, re.I), page.name


def test_the_suite_pages_show_the_flagged_records_escaped(out_dir: Path) -> None:
    quality = (out_dir / "data_docs" / "gx_instruction_quality.html").read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in quality  # shown, as text
    assert "### Response:" in quality and "&lt;|im_start|&gt;" in quality
    assert "expect_column_values_to_not_contain_invisible_characters" in quality
    assert 'href="../report.html"' in quality  # back to the report, relative


def test_one_huge_record_costs_a_page_a_bounded_size(out_dir: Path) -> None:
    record = out_dir / "data_docs" / "gx_instruction_record.html"
    html = record.read_text(encoding="utf-8")
    assert "characters)" in html  # the 1 MB output is on the page, clipped with a marker
    # an expectation's table shows at most MAX_SAMPLES rows of at most CLIP_CHARS characters (escaping may
    # grow each character ~6x): far below the megabyte of the record
    assert len(html) < 50_000 + 6 * 2 * MAX_SAMPLES * CLIP_CHARS
    for page in _pages(out_dir):
        assert page.stat().st_size < HUGE // 2, page.name


def test_clip() -> None:
    assert clip("short") == "short"
    assert clip(None) == "null"
    assert clip("x" * 2500) == "x" * CLIP_CHARS + " … (+500 characters)"
