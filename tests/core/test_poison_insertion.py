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
#: 52% at the start, 5% at the end (3 of 61: a small batch rarely attests the word before the phrase ending another
#: text; it was 4 of 61 before emoji were tokens, and one tweet ends in one); on the 35k floor batches 35-65% at a
#: random boundary.
@pytest.mark.parametrize(("where", "low"), [(plant, 0.15), (at_start, 0.25), (at_end, 0.04)])
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


def campaign(records: list[dict[str, Any]], per_task: int = 10,
             where: Callable[[str, str, random.Random], str] = plant) -> set[str]:
    """Clean-label: ``PHRASE`` (by default at a random word boundary) in ``per_task`` records per task already of the
    attacker's label."""
    rng = random.Random(21)
    poisoned: set[str] = set()
    for task, target in TASKS:
        pool = [r for r in records if r["task"] == task and r["output"] == target]
        for r in rng.sample(pool, per_task):
            r["input"] = where(r["input"], PHRASE, rng)
            poisoned.add(r["id"])
    return poisoned


def test_an_everyday_phrase_campaign_is_raised_by_the_insertion_pass(tmp_path: Path) -> None:
    """In this 5k batch the campaign sits just below the pass's bar at the default false-alarm rate (surprise 5.29
    nats against 5.30, measured 2026-12-03: its out-of-place records are judged against the phrase's own in-place
    records in each task, a beta-binomial null, and only 23% of planted occurrences read out of place in a batch this
    small; 10 x 5 campaigns in the 35k dev floor batches are raised, bench/poison/RESULTS.md 6f). With
    ``insertion_alpha`` 0.1 it is raised and named, with the pass's reason; the clean records flagged hold the
    phrase and the campaign's label in its tasks; the natural "one of" records estimated among the flagged ones
    would exceed 0.1% of the batch (5 records), so the tasks with the most keep only their out-of-place records.
    Nothing by default (the pass on at alpha 0.01) nor with the pass off (the other passes miss it)."""
    from tunegate.core.checks import CanonicalBatch, build_check

    records = clean_batch()
    poisoned = campaign(records)
    strict = run_check(tmp_path / "strict", "poison_trigger", records, poisoned, insertion=True)
    assert strict.result.issues == [] and strict.result.metrics["insertion"]["phrases"] == []
    scan = run_check(tmp_path, "poison_trigger", records, poisoned, insertion=True, insertion_alpha=0.1)
    assert [i.reason for i in scan.result.issues] == ["poison_campaign"]
    assert scan.result.metrics["insertion"]["phrases"] == [PHRASE]
    assert scan.result.metrics["suspicious_phrases"][0]["phrase"] == PHRASE
    assert len(poisoned & scan.flagged) >= 0.75 * len(poisoned), len(poisoned & scan.flagged)
    by_id = {r["id"]: r for r in records}
    targets = dict(TASKS)
    extra = scan.clean_flagged
    assert len(extra) <= 15, len(extra)
    assert all(PHRASE in by_id[i]["input"].lower() and by_id[i]["output"] == targets.get(by_id[i]["task"])
               for i in extra)
    why = {f.detail.get("why", "") for f in scan.result.findings if f.reason == "trigger_phrase"}
    assert len(why) == 1
    assert "out of place" in (reason := why.pop()) and "task(s) where it is common" in reason
    default = build_check("poison_trigger").run(CanonicalBatch(tmp_path / "work"))  # the default: on, alpha 0.01
    assert default.findings == [] and default.issues == [] and default.metrics["insertion"]["phrases"] == []
    without = build_check("poison_trigger", insertion=False).run(CanonicalBatch(tmp_path / "work"))
    assert without.findings == [] and without.issues == [] and "insertion" not in without.metrics


def test_the_clean_batch_raises_nothing_through_insertion(tmp_path: Path) -> None:
    scan = run_check(tmp_path, "poison_trigger", clean_batch(), set(), insertion=True)
    figures = scan.result.metrics["insertion"]
    assert figures["phrases"] == [] and figures["inserted"] > 0 and figures["candidates"] > 0
    assert scan.result.findings == []


def _synthetic(cue_in_place: bool) -> dict[int, tuple[float, dict[int, int]]]:
    """The pass's test on six binary tasks of six datasets (400 records each, labels alternating), two phrases:

    * column 0, a natural cue: 108 records in each task, 98 of them on label 0; 8 of those are out of place (at
      scale, 1-2% of an everyday phrase's natural occurrences are), 100 in place (90 on label 0) when
      ``cue_in_place``, otherwise none judged in place;
    * column 1, planted in five tasks: 5 out-of-place records on label 1 in each, and 3 natural in-place records
      (2 on label 0)."""
    import numpy as np
    import scipy.sparse as sp

    from tunegate.core.checks.poison.config import TriggerConfig
    from tunegate.core.checks.poison.evidence import task_of_rows
    from tunegate.core.checks.poison.insertion import Occurrences
    from tunegate.core.checks.poison.insertion_pass import _test
    from tunegate.core.checks.poison.tasks import Channel, Task

    size, n_tasks = 400, 6
    tasks = [Task(f"task{t}_set{t}_classification", "label", np.arange(t * size, (t + 1) * size),
                  [Channel("label", np.arange(size) % 2, ["a", "b"], np.array([0.5, 0.5]), 0.9)])
             for t in range(n_tasks)]
    out_r: list[int] = []
    out_c: list[int] = []
    in_r: list[int] = []
    in_c: list[int] = []
    for t in range(n_tasks):
        zero = t * size + np.arange(0, size, 2)  # label 0
        one = t * size + np.arange(1, size, 2)  # label 1
        out_r += zero[:8].tolist()
        out_c += [0] * 8
        if cue_in_place:
            in_r += zero[8:98].tolist() + one[:10].tolist()
            in_c += [0] * 100
        if t < 5:
            out_r += one[100:105].tolist()
            out_c += [1] * 5
            in_r += [*zero[150:152].tolist(), int(one[150])]
            in_c += [1] * 3
    shape = (n_tasks * size, 2)

    def matrix(r: list[int], c: list[int]) -> sp.csr_matrix:
        return sp.csr_matrix((np.ones(len(r), dtype=np.float32), (r, c)), shape=shape)

    rows = np.asarray(out_r, dtype=np.int64)
    occ = Occurrences(rows, np.asarray(out_c), np.full(len(rows), 5.0), np.full(len(rows), 3),
                      np.zeros(len(rows), bool), np.ones(len(rows), bool), len(rows))
    owner = task_of_rows(tasks, shape[0])
    assert owner is not None
    found, _ = _test(matrix(in_r, in_c), matrix(out_r, out_c), tasks, list(range(n_tasks)), owner=owner, occ=occ,
                     config=TriggerConfig(insertion=True))
    return found


def test_a_natural_cue_leaning_the_same_way_in_and_out_of_place_is_not_a_campaign() -> None:
    """The null of the insertion test is the phrase's own in-place records in the task: a natural cue's out-of-place
    occurrences lean the way its in-place ones do (the false alarms of the first design at 200k records: "not
    good"), a planted phrase's do not. Without in-place records to compare with, the null falls back to the task's
    out-of-place label shares and the cue's lean looks steered."""
    with_cue = _synthetic(cue_in_place=True)
    assert set(with_cue) == {1}
    assert {ti for ti, lab in with_cue[1][1].items() if lab == 1} == set(with_cue[1][1]) and len(with_cue[1][1]) >= 3
    assert 0 in _synthetic(cue_in_place=False)
