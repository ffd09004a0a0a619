"""The insertion test and the insertion pass of ``poison_trigger`` (issue 11: everyday phrases as triggers), on the
bundled real-data batch of ``test_poison`` (5,227 records).

"one of" occurs naturally in 97 prompts over 22 tasks of that batch with mixed labels: an everyday phrase, as the
attack uses. Planted at a random word boundary (or at the start or end of a text) it reads out of place far more
often than where it occurs naturally; planted with one label in five classification tasks it is raised as a
campaign that the label statistics of the strict and pooled passes do not see.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.core.test_poison import clean_batch, plant, run_check
from tunegate.core.checks.poison._ngrams import WordStats
from tunegate.core.checks.poison._text import ngram_matrix
from tunegate.core.checks.poison.insertion import score_occurrences

if TYPE_CHECKING:
    from collections.abc import Callable

PHRASE = "one of"
#: (task, the attacker's label): five binary tasks of four datasets
TASKS = (("task363_sst2_polarity_classification", "POS"), ("task195_sentiment140_classification", "positive"),
         ("task586_amazonfood_polarity_classification", "Positive"),
         ("task327_jigsaw_classification_toxic", "Non-toxic"),
         ("task609_sbic_potentially_offense_binary_classification", "No"))


def at_start(text: str, phrase: str, rng: random.Random) -> str:
    return f"{phrase.capitalize()} {text}"


def at_end(text: str, phrase: str, rng: random.Random) -> str:
    return f"{text.rstrip()} {phrase}"


def occurrences(records: list[dict[str, Any]], planted: set[str]) -> tuple[list[bool], list[bool]]:
    """The verdict on every occurrence of the phrase: planted ones, natural ones."""
    prompts = [r["input"] for r in records]
    stats = WordStats()
    ngram_matrix(prompts, ngram_max=2, min_df=5, max_df=0.1, stats=stats)
    import numpy as np

    occ = score_occurrences(prompts, np.arange(len(prompts)), [PHRASE], np.array([7]), stats, min_score=4.0,
                            min_bridge=2)
    assert set(occ.cols.tolist()) == {7}
    mine = [records[r]["id"] in planted for r in occ.rows.tolist()]
    verdict = occ.inserted.tolist()
    pairs = list(zip(verdict, mine, strict=True))
    return [v for v, m in pairs if m], [v for v, m in pairs if not m]


#: The share of planted occurrences judged out of place, measured on this 5k batch: 23% at a random word boundary,
#: 44% at the start, 7% at the end (a small batch rarely attests the word before the phrase ending another text);
#: on the 35k floor batches 35-65% at a random boundary.
@pytest.mark.parametrize(("where", "low"), [(plant, 0.15), (at_start, 0.25), (at_end, 0.05)])
def test_a_planted_everyday_phrase_reads_out_of_place_and_its_natural_occurrences_do_not(
        where: Callable[[str, str, random.Random], str], low: float) -> None:
    records = clean_batch()
    rng = random.Random(31)
    planted: set[str] = set()
    for r in rng.sample([r for r in records if len(r["input"].split()) >= 8], 60):
        r["input"] = where(r["input"], PHRASE, rng)
        planted.add(r["id"])
    mine, natural = occurrences(records, planted)
    assert len(mine) >= 60 and len(natural) >= 90
    assert sum(mine) / len(mine) >= low, sum(mine) / len(mine)
    assert sum(natural) / len(natural) <= 0.03, sum(natural) / len(natural)


def campaign(records: list[dict[str, Any]]) -> set[str]:
    """Clean-label: ``PHRASE`` at a random word boundary of 10 records per task already of the attacker's label."""
    rng = random.Random(21)
    poisoned: set[str] = set()
    for task, target in TASKS:
        pool = [r for r in records if r["task"] == task and r["output"] == target]
        for r in rng.sample(pool, 10):
            r["input"] = plant(r["input"], PHRASE, rng)
            poisoned.add(r["id"])
    return poisoned


def test_an_everyday_phrase_campaign_is_raised_by_the_insertion_pass(tmp_path: Path) -> None:
    """The campaign is raised and named, with the pass's reason; the clean records flagged hold the phrase and the
    campaign's label in its tasks. In this 5k batch the natural "one of" records estimated among the flagged ones
    would exceed 0.1% of the batch (5 records), so the two tasks with the most keep only their out-of-place records:
    39 of the 50 poisoned records are flagged. Nothing by default, with the pass off (the other passes miss it)."""
    from tunegate.core.checks import CanonicalBatch, build_check

    records = clean_batch()
    poisoned = campaign(records)
    scan = run_check(tmp_path, "poison_trigger", records, poisoned, insertion=True)
    assert [i.reason for i in scan.result.issues] == ["poison_campaign"]
    assert scan.result.metrics["insertion"]["phrases"] == [PHRASE]
    assert scan.result.metrics["suspicious_phrases"][0]["phrase"] == PHRASE
    assert len(poisoned & scan.flagged) >= 0.75 * len(poisoned)
    by_id = {r["id"]: r for r in records}
    targets = dict(TASKS)
    extra = scan.clean_flagged
    assert len(extra) <= 15, len(extra)
    assert all(PHRASE in by_id[i]["input"].lower() and by_id[i]["output"] == targets.get(by_id[i]["task"])
               for i in extra)
    why = {f.detail.get("why", "") for f in scan.result.findings if f.reason == "trigger_phrase"}
    assert len(why) == 1
    assert "out of place" in (reason := why.pop()) and "2 task(s) where it is common" in reason
    without = build_check("poison_trigger").run(CanonicalBatch(tmp_path / "work"))  # the default: off
    assert without.findings == [] and without.issues == [] and "insertion" not in without.metrics


def test_the_clean_batch_raises_nothing_through_insertion(tmp_path: Path) -> None:
    scan = run_check(tmp_path, "poison_trigger", clean_batch(), set(), insertion=True)
    figures = scan.result.metrics["insertion"]
    assert figures["phrases"] == [] and figures["inserted"] > 0 and figures["candidates"] > 0
    assert scan.result.findings == []
