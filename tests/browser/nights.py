"""Two real nights gated with a history, the second one attacked: the report the page tests open.

Night 1 is the bundled Self-Instruct slice; night 2 the Super-NaturalInstructions slice plus the toxicity
controls (4,800 real records) with what an on-call engineer meets: two trigger campaigns planted as the poison
tests plant them (a dirty-label trigger in three classification tasks, a degenerate-output trigger in four
generative ones), a mojibake export bug in one task's inputs (a GX warning), and one record resubmitted six
times with light edits (a near-duplicate cluster). Both nights run every check but the record suite, with the
history, so the report has a trend. Built once per test session and shared by the page tests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import slice_records, write_jsonl
from tests.core.test_poison import DEGENERATE, DIRTY, _jsonl_gz, degenerate, label_poison

MOJIBAKE_TASK = "task041_qasc_answer_generation"
MOJIBAKE = "itâ\x80\x99s"  # "it's" with its UTF-8 right quote decoded as Latin-1
COPIES = 6


@dataclass(frozen=True)
class Nights:
    history: Path
    night1: Path
    night2: Path
    summary: dict[str, Any]
    planted: dict[str, set[str]]
    cluster: str  # id of the record resubmitted with edits

    @property
    def page(self) -> str:
        return (self.night2 / "report.html").read_text(encoding="utf-8")


_BUILT: dict[Path, Nights] = {}


def _second_night() -> tuple[list[dict[str, Any]], dict[str, set[str]], str]:
    records = [dict(r) for r in slice_records() + _jsonl_gz("superni_toxicity_controls.jsonl.gz")]
    planted = {"dirty": label_poison(records, clean=False), "degenerate": degenerate(records)}
    taken = set().union(*planted.values())
    task = [r for r in records if r["task"] == MOJIBAKE_TASK and r["id"] not in taken]
    if not task:  # the slice's tasks: take the largest generative one nobody planted in
        raise AssertionError(f"{MOJIBAKE_TASK} is not in the bundled slice")
    for r in task[:60]:
        r["input"] = f"{r['input']} {MOJIBAKE}"
    planted["mojibake"] = {r["id"] for r in task[:60]}
    original = next(r for r in records if r["task"] == MOJIBAKE_TASK and r["id"] not in taken | planted["mojibake"])
    edits = (str.upper, lambda s: s + "!", lambda s: s.replace(" ", "  ", 1), str.lower, lambda s: s + ".",
             lambda s: s.rstrip(".?!") + "?")
    for i, edit in enumerate(edits[:COPIES]):
        records.append({**original, "id": f"{original['id']}-resent-{i + 1}", "input": edit(original["input"])})
    return records, planted, str(original["id"])


def build_nights(base: Path) -> Nights:
    """Gate both nights under ``base`` (once per session)."""
    if base in _BUILT:
        return _BUILT[base]
    from tunegate.core.checks import build_check
    from tunegate.core.pipeline import build_checks, scan
    from tunegate.core.policy import GatePolicy

    base.mkdir(parents=True, exist_ok=True)
    history = base / "history"
    quality = build_check("gx_suite", suite="instruction_quality")

    def run(name: str, records: list[dict[str, Any]]) -> Path:
        out = base / name
        checks = [*build_checks(GatePolicy(), history_dir=history, batch_id=name, gx=False), quality]
        scan([str(write_jsonl(base / f"{name}.jsonl", records))], out, checks=checks, history_dir=str(history),
             batch_id=name)
        return out

    night1 = run("night-1", _jsonl_gz("self_instruct_slice.jsonl.gz"))
    records, planted, cluster = _second_night()
    night2 = run("night-2", records)
    summary = json.loads((night2 / "summary.json").read_text(encoding="utf-8"))
    _BUILT[base] = Nights(history, night1, night2, summary, planted, cluster)
    return _BUILT[base]


__all__ = ["DEGENERATE", "DIRTY", "Nights", "build_nights"]
