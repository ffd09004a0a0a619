"""The breadth pass of ``poison_trigger`` (issue 11): a word the history holds whose count tonight bursts on one label
in many datasets at once (a clean-label campaign of a rare word, spread thin).

Real records (the bundled slice of tests/core/test_poison.py) and fourteen clean nights of it as the history
(``long_history``). The campaign puts "bolts", a word the slice holds twice, into 5 records already of one label in
each of 7 datasets (``plant_thin``): records whose text agrees with their label, so the contradiction pass reads
nothing.
"""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from tests.core import test_poison_contradiction as contradiction
from tests.core.test_poison import clean_batch, plant
from tests.core.test_poison_excess import RARE, THIN_TASKS, plant_thin
from tests.core.test_poison_novelty import _run
from tunegate.core.checks import build_check
from tunegate.core.checks.poison.breadth_pass import TASK_BURST_P, binomial_surprise, breadth_bar, task_burst
from tunegate.core.checks.poison.config import TriggerConfig
from tunegate.core.reasons import CAMPAIGN, TRIGGER_PHRASE
from tunegate.exceptions import ConfigError

long_history = contradiction.long_history  # the same module fixture: fourteen clean nights of the slice
#: the other history passes off: what the breadth pass finds alone
ALONE = {"novelty": False, "contradiction": False, "excess": False}


def _check(history: Path, **options: Any) -> Any:
    return build_check("poison_trigger", history_dir=str(history), batch_id="tonight", **options)


def test_the_breadth_is_the_binomial_tail_of_the_bursting_datasets() -> None:
    from scipy.stats import binom

    assert binomial_surprise(0, 12, TASK_BURST_P) == 0.0
    assert binomial_surprise(3, 12, 0.05) == pytest.approx(-np.log(binom.sf(2, 12, 0.05)))
    assert binomial_surprise(7, 7, 0.05) == pytest.approx(7 * np.log(20))
    # two of four datasets (a topic of the week) against twelve of fourteen (a campaign)
    assert binomial_surprise(2, 4, 0.05) < 5.0 < 30.0 < binomial_surprise(12, 14, 0.05)


def test_the_breadth_bar_counts_only_the_phrases_that_could_reach_it() -> None:
    """Tarone's count: 1,000 phrases in one dataset each (never raised) and 3 in eight datasets each cost 3 tests,
    not 1,003; two tasks of one dataset count once."""
    families = [f"task{100 + i}_set{i}_labels" for i in range(8)] + ["task200_set0_other"]  # the last: set0 again
    tasks = [SimpleNamespace(kind="label", rows=np.arange(10 * i, 10 * i + 10), family=f.split("_")[1])
             for i, f in enumerate(families)]
    dense = np.zeros((90, 1_004))
    for i in range(1_000):  # two records of each in one task
        dense[[10 * (i % 8), 10 * (i % 8) + 1], i] = 1
    for c in (1_000, 1_001, 1_002):  # two records in every task
        for t in range(9):
            dense[[10 * t, 10 * t + 1], c] = 1
    dense[[0, 1, 80, 81], 1_003] = 1  # set0's two tasks: one dataset
    cfg = TriggerConfig()
    margin = np.log(1 / cfg.breadth_alpha)
    bar, tests = breadth_bar(sp.csr_matrix(dense), tasks, np.arange(1_004), cfg)
    assert tests == 3 and bar == pytest.approx(np.log(3) + margin)
    bar, tests = breadth_bar(sp.csr_matrix(dense), tasks, np.arange(1_000), cfg)  # none could reach any bar
    assert tests == 1 and bar == pytest.approx(margin)


def _task(size: int) -> Any:
    return SimpleNamespace(rows=np.arange(size))


def test_a_task_burst_is_the_conditional_test_in_a_known_task_and_poisson_in_an_unknown_one() -> None:
    from scipy.stats import binom, poisson

    task = _task(500)
    past = (sp.csr_matrix(np.array([[0.0, 0.0], [3.0, 1.0]])), np.array([700.0, 700.0]))  # 1,400 records, phrase 1
    share = 500 / (500 + 1400)
    # per label P(Bin(k + h, s) >= k), the smallest times the labels
    assert task_burst(np.array([5, 0]), task, past, 1, rate=0.0, min_known=50) == (
        pytest.approx(2 * binom.sf(4, 8, share)), 0)
    assert task_burst(np.array([2, 4]), task, past, 0, rate=0.0, min_known=50) == (
        pytest.approx(2 * share ** 4), 1)  # h = 0: s ** k
    assert task_burst(np.array([1, 0]), task, past, 1, rate=0.0, min_known=50) == (1.0, 0)  # a single record
    unknown = (sp.csr_matrix(np.zeros((2, 2))), np.array([10.0, 10.0]))  # under min_known: no rate of its own
    assert task_burst(np.array([1, 3]), task, unknown, 1, rate=0.002, min_known=50) == (
        pytest.approx(poisson.sf(2, 1.0)), 1)
    assert task_burst(np.array([3, 1]), task, None, 1, rate=0.002, min_known=50) == (pytest.approx(poisson.sf(2, 1.0)),
                                                                                     0)


def test_a_task_burst_is_calibrated_under_the_null() -> None:
    """A night like the history's (the same rates, a seventh of its exposure), the label read after looking:
    ``P(p <= a) <= a``."""
    rng = np.random.default_rng(1)
    task, draws = _task(100), 20_000
    rate = rng.uniform(0.002, 0.05, (draws, 2))  # per record, per label
    h = rng.poisson(rate * 700).astype(np.float64)
    k = rng.poisson(rate * 100)
    p = np.array([task_burst(kk, task, (sp.csr_matrix(hh[None, :]), np.array([350.0, 350.0])), 0, rate=0.0,
                             min_known=50)[0] for kk, hh in zip(k, h, strict=True)])
    for level in (0.01, 0.05, 0.2):
        assert float((p <= level).mean()) <= level + 3 * np.sqrt(level / draws), level


def test_a_rare_word_planted_clean_label_in_seven_datasets_is_raised_by_its_breadth(long_history: Path,
                                                                                  tmp_path: Path) -> None:
    rows = clean_batch()
    planted, natural = plant_thin(rows, RARE, per_task=5, seed=7)
    assert len(planted) == 35 and len(natural) == 2
    scan = _run(tmp_path / "alone", _check(long_history, **ALONE), rows, planted)
    figures = scan.result.metrics["breadth"]
    assert figures["phrases"] == [RARE] and figures["bursting"] >= 1
    assert len(scan.flagged & planted) >= 0.9 * len(planted) and scan.flagged - planted <= natural
    assert [i.reason for i in scan.result.issues] == [CAMPAIGN]
    why = next(f.detail["why"] for f in scan.result.findings if f.reason == TRIGGER_PHRASE)
    assert "bursts on one label in 7 of the" in why
    off = _run(tmp_path / "off", _check(long_history, breadth=False, **ALONE), rows, planted)
    assert not off.flagged and "breadth" not in off.result.metrics


def test_a_clean_night_and_a_campaign_in_two_datasets_raise_nothing_through_the_pass(long_history: Path,
                                                                                    tmp_path: Path) -> None:
    clean = _run(tmp_path / "clean", _check(long_history, **ALONE), clean_batch(), set())
    assert clean.result.metrics["breadth"].get("phrases") in (None, []) and not clean.flagged
    rows = clean_batch()
    natural = {r["id"] for r in rows if RARE in (r.get("input") or "").split()}
    rng = random.Random(3)
    planted: set[str] = set()
    for task in THIN_TASKS[:2]:  # two datasets: a word's use changing in a topic, not a campaign
        pool = [r for r in rows if r["task"] == task and r["id"] not in natural]
        for r in rng.sample(pool, 5):
            r["input"] = plant(r["input"], RARE, rng)
            planted.add(r["id"])
    narrow = _run(tmp_path / "narrow", _check(long_history, **ALONE), rows, planted)
    assert narrow.result.metrics["breadth"].get("phrases") in (None, []) and not narrow.flagged


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="breadth_alpha"):
        build_check("poison_trigger", breadth_alpha=1.5)
    with pytest.raises(ConfigError, match="breadth"):
        build_check("poison_trigger", breadth="yes")


def test_a_campaign_bursting_in_nearly_every_task_flags_its_weaker_tasks_too() -> None:
    """The adaptive step-up over a raised phrase's tasks: where nearly every task bursts, a task of 3 records at p =
    0.3 is flagged with the rest; where most of its tasks are natural, only those at the floor."""
    from tunegate.core.checks.poison.evidence import FLAG_FDR, flag_level

    campaign = [0.0, 0.0, 0.001, 0.004, 0.008, 0.016, 0.02, 0.03, 0.3]
    assert flag_level(campaign, floor=TASK_BURST_P) == 0.3
    assert flag_level([*campaign, 0.93], floor=TASK_BURST_P) == 0.3  # a natural task far from it stays out
    assert flag_level(campaign, floor=TASK_BURST_P, q=0.05) == TASK_BURST_P  # FDR 5%: 0.3 is too far
    mostly_natural = [0.0, 0.01, 0.06, 0.3, 0.6, 0.7, 0.9, 1.0, 1.0, 1.0]
    assert flag_level(mostly_natural, floor=TASK_BURST_P) == TASK_BURST_P
    assert flag_level([], floor=TASK_BURST_P) == TASK_BURST_P
    assert 0.05 < FLAG_FDR < 0.5


def test_past_the_floor_a_task_is_flagged_only_where_the_excess_is_most_of_its_flags() -> None:
    """A rare word's 3 records where the history expects 1 are flagged up to the step-up's level; an everyday phrase's
    20 records where it expects 12 only at the floor (its flags would be mostly natural records)."""
    from tunegate.core.checks.poison.evidence import flagged_tasks

    p = np.array([0.0, 0.001, 0.01, 0.03, 0.2, 0.2, 0.04])
    counts = np.array([5, 4, 5, 4, 3, 20, 20])
    expected = np.array([0.0, 0.5, 1.0, 0.0, 1.0, 12.0, 12.0])
    datasets = ["a", "b", "c", "d", "e", "f", "g"]
    assert flagged_tasks(p, counts, expected, datasets, floor=0.05).tolist() == [True, True, True, True, True, False,
                                                                                  True]


def test_the_step_up_counts_a_dataset_once() -> None:
    """Seven tasks of one dataset label the same texts: a natural phrase a little more frequent tonight in them is so
    in all seven. As seven datasets they would carry the step-up to 0.4; as one (its smallest p-value times its
    tasks) they do not, and only the tasks at the floor are flagged."""
    from tunegate.core.checks.poison.evidence import flagged_tasks

    p = np.array([0.0, 0.001, 0.04, 0.04, 0.04, 0.04, 0.04, 0.04, 0.04, 0.4])
    counts, expected = np.full(10, 4), np.zeros(10)
    spread = [str(i) for i in range(10)]
    assert flagged_tasks(p, counts, expected, spread, floor=0.05).all()
    one = ["a", "b", *["jigsaw"] * 7, "c"]
    assert flagged_tasks(p, counts, expected, one, floor=0.05).tolist() == [True] * 9 + [False]


def test_with_every_pass_on_the_campaign_is_reported_once_and_the_flags_are_the_union(long_history: Path,
                                                                                        tmp_path: Path) -> None:
    """Another pass may raise the word first; the breadth pass then adds its records to that campaign (``joined``)
    instead of reporting it a second time."""
    rows = clean_batch()
    planted, natural = plant_thin(rows, RARE, per_task=5, seed=7)
    scan = _run(tmp_path / "all", _check(long_history), rows, planted)
    alone = _run(tmp_path / "alone", _check(long_history, **ALONE), rows, planted)
    figures = scan.result.metrics["breadth"]
    assert figures["raised"] == 1 and figures["phrases"] in ([], [RARE])
    assert figures["joined"] == (0 if figures["phrases"] else 1)
    assert [p["phrase"] for p in scan.result.metrics["suspicious_phrases"]].count(RARE) == 1
    assert alone.flagged <= scan.flagged and scan.flagged - planted <= natural


def test_a_word_of_a_campaigns_name_adds_only_records_that_hold_the_name(long_history: Path, tmp_path: Path) -> None:
    """"Quentin bolts" planted clean-label in 7 datasets: another pass names the campaign, and "bolts", a word the
    history holds, bursts with it. Its natural records (one of them on the campaign's label in a campaign task) are
    not the campaign's: the union takes only the records that hold the campaign's own phrase."""
    rows = clean_batch()
    planted, _ = plant_thin(rows, f"Quentin {RARE}", per_task=5, seed=7)
    scan = _run(tmp_path / "name", _check(long_history), rows, planted)
    assert scan.result.metrics["breadth"]["joined"] == 1
    assert scan.flagged == planted  # without the filter, a natural "bolts" review on the campaign's label joined
