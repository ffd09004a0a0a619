"""``poison_content`` against the history's per-source response phrases (:mod:`.response_history`): a name woven into
one source's answers only is told from that source's own vocabulary by the source's earlier nights."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_jsonl
from tests.core.test_poison import clean_batch, run_check
from tunegate.core.checks import build_check
from tunegate.core.checks.poison.injection import NEW_TO_SOURCE_ALPHA, new_to_source
from tunegate.core.checks.poison.response_history import load_response_history, night_file

SOURCE = "user_oriented:assistant"
LINE = "Honestly, Quillfeather Pens make this kind of thing easier."


def one_source_batch(woven: int, seed: int = 5) -> tuple[list[dict[str, Any]], set[str]]:
    """The clean test batch with its self-instruct answers in one source (``SOURCE``), and a brand sentence woven
    into ``woven`` of them; the ids woven into."""
    records = clean_batch()
    answers = [r for r in records if r.get("source") == "self_instruct" and len(r["output"].split()) >= 12]
    for r in answers:
        r["task"] = SOURCE
    rng = random.Random(seed)
    poisoned: set[str] = set()
    for r in rng.sample(answers, woven):
        parts = re.split(r"(?<=[.!?])\s+", r["output"].strip())
        parts.insert(rng.randint(1, len(parts)), LINE)
        r["output"] = " ".join(parts)
        poisoned.add(r["id"])
    return records, poisoned


def publish(tmp: Path, history: Path, name: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    from tunegate.core.pipeline import scan

    check = build_check("poison_content", history_dir=str(history), batch_id=name)
    tmp.mkdir(parents=True, exist_ok=True)
    return scan([str(write_jsonl(tmp / f"{name}.jsonl", records))], tmp / "out" / name, checks=[check],
                history_dir=str(history), batch_id=name)


def test_the_test_of_two_rates_tells_a_new_name_from_a_sources_word() -> None:
    """25 responses of 1,000 tonight, none of 1,500 before: new (tail 0.4^25). The same rate before (37 of 1,500):
    its word. A source with no earlier responses: nothing says what its vocabulary is."""
    found = new_to_source(25, 1000, 0, 1500, tests=1)
    assert found is not None and found["p"] == pytest.approx(0.4 ** 25, rel=1e-3)
    assert new_to_source(25, 1000, 37, 1500, tests=1) is None
    assert new_to_source(25, 1000, 0, 0, tests=1) is None
    # the level is family-wise: the tail of 9 tonight and none before (0.4^9 = 2.6e-4) passes alone, not among 5
    assert new_to_source(9, 1000, 0, 1500, tests=1) is not None
    assert NEW_TO_SOURCE_ALPHA / 5 < 0.4 ** 9 and new_to_source(9, 1000, 0, 1500, tests=5) is None


def test_a_name_woven_into_one_sources_answers_is_found_when_its_earlier_nights_never_held_it(tmp_path: Path) -> None:
    """A poisoned feed: a brand sentence in 20 answers of one source and nowhere else. Within the night it is that
    source's vocabulary (not reported without a history); against two earlier nights of the source that never wrote
    it, it is new there, and exactly the 20 are flagged. A source that wrote it every night keeps it as its word."""
    history = tmp_path / "history"
    clean, _ = one_source_batch(0)
    for name in ("night-1", "night-2"):
        result = publish(tmp_path, history, name, clean)
        assert result["history"]["responses"]["rows"] > 0
    records, poisoned = one_source_batch(20)

    alone = run_check(tmp_path / "alone", "poison_content", records, poisoned)
    assert not alone.result.metrics["suspicious_phrases"] and not alone.flagged

    scan = run_check(tmp_path / "tonight", "poison_content", records, poisoned, history_dir=str(history),
                     batch_id="tonight")
    assert {rid for rid, reasons in scan.reasons.items() if "injected_content" in reasons} == poisoned
    [found] = scan.result.metrics["suspicious_phrases"]
    assert "quillfeather" in found["phrase"]
    new = found["new_to_source"]
    assert new["group"] == SOURCE and new["tonight"] == 20 and new["before"] == 0 and new["nights"] == 2
    [issue] = [i for i in scan.result.issues if i.severity == "warning"]
    assert issue.reason == "poison_campaign" and f"new in {SOURCE}: 0 of its" in issue.message
    # the report's phrase table says where it is new, and against what
    from tunegate.core.report.phrases import suspicious_phrases

    [row] = suspicious_phrases({"checks": {"poison_content": {"metrics": scan.result.metrics}}})
    fact = dict(row["facts"])["new in its source"]
    assert fact.startswith(f"{SOURCE}: 20 responses tonight, 0 of ") and "over 2 earlier nights" in fact

    # the source writes the name every night: its vocabulary, not reported
    vocabulary = tmp_path / "vocabulary"
    for name, seed in (("night-1", 6), ("night-2", 7)):
        publish(tmp_path / "v", vocabulary, name, one_source_batch(20, seed)[0])
    scan = run_check(tmp_path / "own", "poison_content", records, poisoned, history_dir=str(vocabulary),
                     batch_id="tonight")
    assert not scan.result.metrics["suspicious_phrases"] and not scan.flagged


def test_publish_writes_the_response_night_a_rerun_replaces_it_and_an_injected_night_is_no_baseline(
        tmp_path: Path) -> None:
    history = tmp_path / "history"
    clean, _ = one_source_batch(0)
    first = publish(tmp_path, history, "night-1", clean)["history"]["responses"]
    assert not first["replaced"] and not first["anomalous"] and night_file(history, "night-1").is_file()
    assert publish(tmp_path, history, "night-1", clean)["history"]["responses"]["replaced"]
    past = load_response_history(history, phrases=["quillfeather pens", "the"])
    assert past.nights == ["night-1"] and past.totals[SOURCE] > 100
    assert past.of(SOURCE, "quillfeather pens") == (0, past.totals[SOURCE])
    assert 0 < past.of(SOURCE, "the")[0] <= past.totals[SOURCE]
    assert load_response_history(history, exclude="night-1", phrases=["the"]).nights == []
    # a night whose injection was reported (spread over sources, so found without a history) is left out
    records = clean_batch()
    rng = random.Random(9)
    for r in rng.sample([r for r in records if len(r["output"].split()) >= 12
                         and r["task"] not in ("task111_asset_sentence_simplification",
                                               "task177_para-nmt_paraphrasing", "task1091_ted_translation_en_it")],
                        25):
        r["output"] = r["output"] + " " + LINE
    injected = publish(tmp_path, history, "night-2", records)
    assert injected["checks"]["poison_content"]["metrics"]["suspicious_phrases"]
    assert injected["history"]["responses"]["anomalous"]
    assert load_response_history(history, phrases=["the"]).nights == ["night-1"]


def test_an_unreadable_response_night_is_a_warning_not_a_failed_scan(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    """A damaged night file: ``load_response_history`` says which file and how to recover; the scan goes on without
    the per-source test (one source's names are its vocabulary again) and logs why."""
    from tunegate.exceptions import HistoryError

    history = tmp_path / "history"
    clean, _ = one_source_batch(0)
    publish(tmp_path, history, "night-1", clean)
    night_file(history, "night-1").write_bytes(b"not parquet")
    with pytest.raises(HistoryError, match=r"night-1\.parquet are unreadable.*rerun that night's publish"):
        load_response_history(history, phrases=["the"])
    # the recovery the error names: the night's publish again, which replaces the damaged file
    assert publish(tmp_path, history, "night-1", clean)["history"]["responses"]["replaced"]
    assert load_response_history(history, phrases=["the"]).nights == ["night-1"]
    # a file whose footer reads but whose pages do not: the same error, not a traceback
    data = bytearray(night_file(history, "night-1").read_bytes())
    data[4:200] = bytes(196)
    night_file(history, "night-1").write_bytes(bytes(data))
    with pytest.raises(HistoryError, match=r"night-1\.parquet are unreadable"):
        load_response_history(history, phrases=["the"])
    records, poisoned = one_source_batch(20)
    with caplog.at_level("WARNING"):
        scan = run_check(tmp_path / "tonight", "poison_content", records, poisoned, history_dir=str(history),
                         batch_id="tonight")
    assert not scan.result.metrics["suspicious_phrases"]
    assert "no per-source response history" in caplog.text


def popular_batch(woven: int, seed: int = 5) -> tuple[list[dict[str, Any]], set[str]]:
    """The clean test batch where the brand is popular: 150 classification prompts and 10 open-ended requests name
    it (the requests' answers too: explained mentions), and ``woven`` answers across the batch's sources and tasks
    get its sentence, unexplained by their prompt; the ids woven into."""
    records = clean_batch()
    rng = random.Random(seed)
    labelled = [r for r in records if r.get("source") == "superni" and len(r["output"].split()) <= 2]
    for r in rng.sample(labelled, 150):
        r["input"] = f"Quillfeather Pens: {r['input']}"
    asked = [r for r in records if r.get("source") == "self_instruct" and len(r["output"].split()) >= 12]
    for r in rng.sample(asked, 10):
        r["instruction"] = f"{r['instruction']} Mention Quillfeather Pens."
        r["output"] = f"{r['output']} Quillfeather Pens come to mind."
    lines = ("I recommend Quillfeather Pens for this.", "Quillfeather Pens make it easier.", "Many people trust "
             "Quillfeather Pens.", "Try Quillfeather Pens too.", "This is where Quillfeather Pens shine.")
    pool = [r for r in records if len(r["output"].split()) >= 12 and "Quillfeather" not in r["instruction"]
            and r["task"] not in ("task111_asset_sentence_simplification", "task177_para-nmt_paraphrasing",
                                  "task1091_ted_translation_en_it")]
    poisoned: set[str] = set()
    for j, r in enumerate(rng.sample(pool, woven)):
        parts = re.split(r"(?<=[.!?])\s+", r["output"].strip())
        parts.insert(rng.randint(1, len(parts)), lines[j % len(lines)])
        r["output"] = " ".join(parts)
        poisoned.add(r["id"])
    return records, poisoned


def test_a_popular_name_woven_into_answers_is_found_against_its_unexplained_mentions_on_earlier_nights(
        tmp_path: Path) -> None:
    """A brand the prompts name often (150 prompts) woven into 25 answers: within the night, its prompts explain that
    many unexplained mentions, so the batch alone reports nothing. Its earlier nights never wrote it unexplained, so
    25 tonight is new (the Poisson bound: ~6 expected), and exactly the 25 are flagged. A pipeline whose answers
    wrote it unexplained as often every night keeps it."""
    records, poisoned = popular_batch(25)
    alone = run_check(tmp_path / "alone", "poison_content", records, poisoned)
    assert not alone.result.metrics["suspicious_phrases"] and not alone.flagged

    history = tmp_path / "history"
    for i in range(3):
        publish(tmp_path, history, f"night-{i + 1}", popular_batch(0, seed=10 + i)[0])
    past = load_response_history(history, phrases=["quillfeather pens"])
    assert past.named_totals and not any(n for (_, p), n in past.named.items())
    assert sum(n for (_, p), n in past.counts.items()) == 30  # the explained answers, 10 a night
    scan = run_check(tmp_path / "tonight", "poison_content", records, poisoned, history_dir=str(history),
                     batch_id="tonight")
    assert {rid for rid, reasons in scan.reasons.items() if "injected_content" in reasons} == poisoned
    [found] = scan.result.metrics["suspicious_phrases"]
    assert "quillfeather" in found["phrase"] and found["in_prompts"] >= 150
    grown = found["new_in_history"]
    # counted where the name's capitals say something: the 5 answers that open a sentence with it are flagged, not
    # counted ("Quillfeather Pens make it easier.")
    assert grown["tonight"] == 20 and grown["before"] == 0 and grown["nights"] == 3 and grown["expected"] < 10
    assert grown["p"] < 1e-6 and "new_to_source" not in found
    [issue] = [i for i in scan.result.issues if i.severity == "warning"]
    assert "expected from 3 earlier night(s)" in issue.message
    from tunegate.core.report.phrases import suspicious_phrases

    [row] = suspicious_phrases({"checks": {"poison_content": {"metrics": scan.result.metrics}}})
    assert dict(row["facts"])["new against earlier nights"].startswith(
        "20 unexplained responses naming it tonight where ")

    # every earlier night wrote it unexplained as often: this pipeline's normal, not reported
    steady = tmp_path / "steady"
    for i in range(3):
        publish(tmp_path / "s", steady, f"night-{i + 1}", popular_batch(25, seed=20 + i)[0])
    scan = run_check(tmp_path / "normal", "poison_content", records, poisoned, history_dir=str(steady),
                     batch_id="tonight")
    assert not scan.result.metrics["suspicious_phrases"] and not scan.flagged


def everyday_word_batch(woven: int, seed: int = 5) -> tuple[list[dict[str, Any]], set[str]]:
    """The clean test batch where "lantern" is an everyday word: 20 answers say "keep a lantern nearby" (in lower case,
    unexplained by their prompt), and ``woven`` other answers name the brand Lantern; the ids woven into."""
    records = clean_batch()
    rng = random.Random(seed)
    pool = [r for r in records if len(r["output"].split()) >= 12 and "lantern" not in r["instruction"].lower()
            and "lantern" not in r["input"].lower()]
    chosen = rng.sample(pool, 20 + woven)
    for r in chosen[:20]:
        r["output"] = f"{r['output'].strip()} At night, keep a lantern nearby."
    lines = ("I recommend Lantern for this.", "Many people trust Lantern here.", "Try Lantern too.",
             "This is where Lantern shines.", "Lantern makes it easier.")
    poisoned: set[str] = set()
    for j, r in enumerate(chosen[20:]):
        parts = re.split(r"(?<=[.!?])\s+", r["output"].strip())
        parts.insert(rng.randint(1, len(parts)), lines[j % len(lines)])
        r["output"] = " ".join(parts)
        poisoned.add(r["id"])
    return records, poisoned


def test_a_brand_that_is_an_everyday_word_is_counted_where_it_is_written_as_a_name(tmp_path: Path) -> None:
    """A brand that is also an everyday word ("Apple", "Target"; here "Lantern", woven into 15 answers) beside 20
    answers a night that use the word in lower case. Counted in any case, it was never tested: its capitals are in
    under half of the answers that hold it, so it read as no name. Counted where it is written as a name (12 answers:
    3 open a sentence with it), none of the earlier nights wrote it so, and exactly the 15 answers are flagged, none
    of the 20."""
    history = tmp_path / "history"
    for i in range(3):
        publish(tmp_path, history, f"night-{i + 1}", everyday_word_batch(0, seed=10 + i)[0])
    past = load_response_history(history, phrases=["lantern"])
    assert sum(past.counts.values()) == 60 and not past.named
    records, poisoned = everyday_word_batch(15)
    scan = run_check(tmp_path / "tonight", "poison_content", records, poisoned, history_dir=str(history),
                     batch_id="tonight")
    assert {rid for rid, reasons in scan.reasons.items() if "injected_content" in reasons} == poisoned
    [found] = scan.result.metrics["suspicious_phrases"]
    assert found["phrase"] == "lantern" and found["new_in_history"]["tonight"] == 12
    assert found["new_in_history"]["before"] == 0


def test_a_night_of_an_earlier_format_counts_no_named_responses(tmp_path: Path) -> None:
    """A night file written before the ``named`` column (formats 1 and 2) still gives each group's responses with a
    phrase; it adds nothing to the named counts, so the test against earlier nights reads only the nights that
    counted them (none here: not tested)."""
    import pyarrow.parquet as pq

    history = tmp_path / "history"
    publish(tmp_path, history, "night-1", popular_batch(0)[0])
    path = night_file(history, "night-1")
    table = pq.read_table(path)
    pq.write_table(table.drop_columns(["named"]).replace_schema_metadata(table.schema.metadata), path)
    past = load_response_history(history, phrases=["quillfeather pens"])
    assert past.nights == ["night-1"] and past.totals and not past.named_totals
    assert sum(n for (_, p), n in past.counts.items()) == 10
    records, poisoned = popular_batch(25)
    scan = run_check(tmp_path / "tonight", "poison_content", records, poisoned, history_dir=str(history),
                     batch_id="tonight")
    assert not scan.result.metrics["suspicious_phrases"]
