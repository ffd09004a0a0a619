"""report.html: a real batch with record text as an attacker would plant it; the page escapes it and is
self-contained (nothing loaded from the network)."""

from __future__ import annotations

import json
import re
from pathlib import Path

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
