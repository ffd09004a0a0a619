"""The excess pass of ``poison_trigger`` (issue 11: everyday-phrase triggers): tonight's count of a phrase's records on
one label against the history's, per task, combined over datasets by the truncated product method.

Real records (the bundled slice of tests/core/test_poison.py, 5,227 records). "at the" is an everyday phrase there:
126 records over 25 tasks with mixed labels. Planted in 16 more records of four sentiment tasks (300 records each), on
one label, it is neither new nor exclusive (the other passes do not see it) but its count on that label is more than
the history's two nights allow (12 per task were not enough against two nights of 300 records: 4.3-8.4 nats per task,
9 in all against a bar of 11.1).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.core import test_poison_contradiction as contradiction
from tests.core.test_poison import clean_batch, plant
from tests.core.test_poison_novelty import _run, records_of, skew
from tunegate.core.checks.poison import phrase_history
from tunegate.core.checks.poison.config import TriggerConfig
from tunegate.core.checks.poison.excess_pass import truncated_product, upper_tail
from tunegate.core.checks.poison.phrase_history import load_phrase_history, phrase_counts, write_phrase_night

EVERYDAY = "at the"
history = contradiction.history  # the same module fixture: two clean nights of the slice
_check = contradiction._check


def test_upper_tail_is_the_beta_binomial_tail_and_never_below_it() -> None:
    """Against the direct sum of the pmf (scipy's ``sf`` is ``1 - cdf``: off by 1e-5 relative at 1e-7)."""
    from scipy.stats import betabinom

    rng = np.random.default_rng(0)
    k = rng.integers(0, 60, 400).astype(np.float64)
    a, b, n = rng.uniform(0.5, 80, 400), rng.uniform(50, 2000, 400), 500.0
    mine = upper_tail(k, n, a, b)
    direct = np.array([betabinom.pmf(np.arange(int(k[i]), 501), 500, a[i], b[i]).sum() for i in range(len(k))])
    assert np.all(mine >= direct * (1 - 1e-9))
    small = direct < 0.01  # exact where the tail is small (what decides a test); a bounded overestimate near the mode
    assert small.sum() >= 100 and np.allclose(mine[small], direct[small], rtol=1e-9, atol=0.0)
    assert np.all(mine[k == 0] == 1.0)


def test_upper_tail_in_blocks_is_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    from tunegate.core.checks.poison import excess_pass

    rng = np.random.default_rng(2)
    k = rng.integers(0, 40, 1000).astype(np.float64)
    a, b = rng.uniform(0.5, 30, 1000), rng.uniform(50, 2000, 1000)
    whole = upper_tail(k, 400.0, a, b)
    monkeypatch.setattr(excess_pass, "BLOCK", 7)
    assert np.array_equal(upper_tail(k, 400.0, a, b), whole)


def test_upper_tail_above_a_level_skips_only_tails_above_it() -> None:
    """``above``: every tail at most the level is the full computation's; the others are it or 1 (skipped once their
    first terms pass the level)."""
    rng = np.random.default_rng(3)
    k = rng.integers(0, 40, 3000).astype(np.float64)
    a, b = rng.uniform(0.5, 30, 3000), rng.uniform(50, 2000, 3000)
    full, quick = upper_tail(k, 500.0, a, b), upper_tail(k, 500.0, a, b, above=0.05)
    small = full <= 0.05
    assert small.sum() > 300 and (~small).sum() > 300
    assert np.array_equal(quick[small], full[small])
    rest = quick[~small]
    assert np.all((rest == 1.0) | (rest == full[~small])) and (rest == 1.0).mean() > 0.5


def test_truncated_product_tail_is_exact_under_the_null() -> None:
    """Uniform p-values of 12 datasets: the share of draws whose surprise reaches ``s`` is ``exp(-s)`` (at most that
    where ``s`` is below the surprise of the smallest ``W > 0``: the statistic is 0 when no p-value is under tau)."""
    rng = np.random.default_rng(1)
    draws, d, tau = 200_000, 12, 0.01
    p = rng.uniform(size=(draws, d))
    w = np.where(p <= tau, -np.log(p), 0.0).sum(axis=1)
    s = truncated_product(np.full(draws, d), w, tau)
    some = 1 - (1 - tau) ** d  # P(W > 0) = 0.114 < exp(-1)
    assert float((s >= 1.0).mean()) == pytest.approx(some, abs=0.005) and some < math.exp(-1.0)
    for level in (3.0, 5.0, 7.0):
        share = float((s >= level).mean())
        expected = math.exp(-level)
        assert abs(share - expected) <= 5 * math.sqrt(expected / draws), (level, share, expected)
    assert truncated_product(np.array([5]), np.array([0.0]))[0] == 0.0


def test_the_phrase_surprise_is_calibrated_and_fisher_reads_a_thin_spread() -> None:
    """The better of the truncated product and Fisher's method, less ``ln 2``: under uniform p-values of 12 datasets
    its tail is at most ``exp(-s)``. Eight datasets at p = 0.02 (a rare word, a few records in each: none below the
    truncation) are read by Fisher's method alone; one dataset at 1e-9 among twenty at 0.5 by the truncated product."""
    from scipy.special import gammaincc

    from tunegate.core.checks.poison.excess_pass import _phrase_surprise

    rng = np.random.default_rng(4)
    draws, d = 100_000, 12
    p = rng.uniform(size=(draws, d)).ravel()
    s = _phrase_surprise(np.repeat(np.arange(draws), d), p, np.full(draws, d), draws)
    for level in (2.0, 4.0, 6.0):
        share = float((s >= level).mean())
        assert share <= math.exp(-level) + 5 * math.sqrt(math.exp(-level) / draws), (level, share)
    thin = _phrase_surprise(np.zeros(8, dtype=np.int64), np.full(8, 0.02), np.array([8]), 1)[0]
    assert truncated_product(np.array([8]), np.array([0.0]))[0] == 0.0  # nothing under the truncation
    fisher = -math.log(float(gammaincc(8, -8 * math.log(0.02))))
    assert thin == pytest.approx(fisher - math.log(2.0)) and thin > 12.0
    one = np.array([1e-9, *[0.5] * 19])
    strong = _phrase_surprise(np.zeros(20, dtype=np.int64), one, np.array([20]), 1)[0]
    tpm = truncated_product(np.array([20]), np.array([-math.log(1e-9)]))[0]
    assert strong == pytest.approx(tpm - math.log(2.0))


def test_a_night_keeps_exact_counts_and_the_history_says_what_may_be_hidden(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow.compute as pc

    rows = clean_batch()
    table = phrase_counts(records_of(rows), TriggerConfig())
    # a phrase kept for the night has its count in every task, one record included (format 1 kept 2 and more)
    phrases = pc.not_equal(table["phrase"], phrase_history.TOTALS)
    per_task: dict[tuple[str, int], int] = {}
    for r in table.filter(phrases).to_pylist():
        per_task[(r["task"], r["phrase"])] = per_task.get((r["task"], r["phrase"]), 0) + r["records"]
    assert sum(1 for n in per_task.values() if n == 1) > 0.3 * len(per_task)
    [key] = phrase_history.phrase_keys([EVERYDAY]).tolist()
    assert sum(1 for task, phrase in per_task if phrase == key) >= 10
    write_phrase_night(tmp_path, "night-1", table, anomalous=False)
    write_phrase_night(tmp_path, "night-2", table, anomalous=False)
    vocab = np.array([EVERYDAY, "zqx never said"], dtype=object)
    past = load_phrase_history(tmp_path, vocab=vocab)
    assert past.truncated == 0
    assert past.hidden(vocab).tolist() == [0.0, 2.0]  # kept by both nights; never kept: one record a night may hide
    monkeypatch.setattr(phrase_history, "FORMAT", 1)  # a night written by the previous release
    write_phrase_night(tmp_path, "night-3", table, anomalous=False)
    past = load_phrase_history(tmp_path, vocab=vocab)
    assert past.truncated == 1 and past.hidden(vocab).tolist() == [0.0, 2.0]  # format 1 is counted apart


def test_a_history_with_a_night_from_before_symbols_were_tokens_is_blind_to_phrases_with_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nights of format < 4 never counted a phrase with a pictographic symbol: while one is summed, the history
    cannot say such a phrase is new (an emoji common in tweets would read as new vocabulary on the nights after an
    upgrade), and the history passes read ``x`` without those phrases' columns; words are unaffected."""
    import scipy.sparse as sp

    from tunegate.core.checks.poison.trigger import _without_blind

    table = phrase_counts(records_of(clean_batch()), TriggerConfig())
    vocab = np.array([EVERYDAY, "😂", "lol 😂", "★ ★"], dtype=object)
    write_phrase_night(tmp_path, "night-1", table, anomalous=False)
    assert load_phrase_history(tmp_path, vocab=vocab).blind(vocab).tolist() == [False] * 4
    monkeypatch.setattr(phrase_history, "FORMAT", 3)  # a night written by the previous release
    write_phrase_night(tmp_path, "night-0", table, anomalous=False)
    past = load_phrase_history(tmp_path, vocab=vocab)
    assert not past.symbols and past.blind(vocab).tolist() == [False, True, True, True]
    x = sp.csr_matrix(np.array([[1, 1, 0, 1], [1, 0, 1, 0], [0, 1, 1, 1]], dtype=np.float32))
    metrics: dict[str, Any] = {}
    xh = _without_blind(x, vocab, past, metrics)
    assert xh.toarray().tolist() == [[1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]] and metrics == {"blind_phrases": 3}
    assert x.toarray()[:, 1:].sum() == 6  # the scan's own matrix keeps them (the passes without a history read it)
    monkeypatch.setattr(phrase_history, "FORMAT", 4)
    write_phrase_night(tmp_path, "night-0", table, anomalous=False)  # a rerun of that night by this release
    past = load_phrase_history(tmp_path, vocab=vocab)
    assert past.symbols and _without_blind(x, vocab, past, metrics) is x


def test_an_everyday_phrase_planted_on_one_label_is_raised_by_its_excess(history: Path, tmp_path: Path) -> None:
    tonight = clean_batch()
    planted = skew(tonight, EVERYDAY, seed=3, taken=set(), per_task=16)
    # the insertion pass (on by default) reads these placements too: off here, to see what the counts alone find
    without = _run(tmp_path / "off", _check(history, excess=False, insertion=False), tonight, planted)
    assert EVERYDAY not in {p["phrase"] for p in without.result.metrics["suspicious_phrases"]}
    scan = _run(tmp_path / "on", _check(history, insertion=False), tonight, planted)
    excess = scan.result.metrics["excess"]
    assert excess["phrases"] == [EVERYDAY] and excess["tarone"] <= excess["tests"]
    assert planted <= scan.flagged
    natural = scan.flagged - planted  # the phrase's natural records on the same label in the steered tasks
    assert len(natural) <= len(planted) // 2
    assert "poison_campaign" in [i.reason for i in scan.result.issues]
    why = next(f.detail["why"] for f in scan.result.findings if f.detail.get("phrase") == EVERYDAY)
    assert "earlier nights" in why
    # the default: the insertion pass raises it first and the excess pass's records join that campaign
    default = _run(tmp_path / "default", _check(history), tonight, planted)
    assert default.result.metrics["insertion"]["phrases"] == [EVERYDAY] and default.result.metrics["excess"][
        "phrases"] == []
    assert default.result.metrics["excess"]["joined"] == 1  # the pass says it agreed
    assert scan.flagged <= default.flagged and len(default.flagged - planted) <= len(planted) // 2


def test_a_clean_night_raises_nothing(history: Path, tmp_path: Path) -> None:
    scan = _run(tmp_path / "clean", _check(history), clean_batch(), set())
    assert scan.result.metrics["excess"]["phrases"] == []
    assert not scan.flagged


def test_a_campaign_in_one_dataset_is_raised_by_its_excess_as_a_family_of_its_own(history: Path,
                                                                                    tmp_path: Path) -> None:
    """A clean-label campaign run in one dataset (an upstream dataset poisoned): a new name in 20 reviews of one task
    that already carry its first label. One dataset's label skew is how a topical dataset looks, and clean-label
    records contradict nothing; but the history's two nights of the task (600 records) held the name in none, so the
    count is tested, against the bar of the phrases held by one dataset."""
    from tests.core.test_poison_contradiction import TRIGGER, plant_campaign

    task = ("task493_review_polarity_classification", "Positive", "Negative")
    tonight = clean_batch()
    planted = plant_campaign(tonight, [task], TRIGGER, per_task=20, clean=True, rng=random.Random(4))
    scan = _run(tmp_path / "one", _check(history), tonight, planted)
    excess = scan.result.metrics["excess"]
    assert excess["phrases"] == [TRIGGER.lower()]
    assert excess["tests_one"] >= 1 and excess["bar_one"] > 0
    assert planted <= scan.flagged and len(scan.flagged - planted) <= 2
    assert "poison_campaign" in [i.reason for i in scan.result.issues]
    why = next(f.detail["why"] for f in scan.result.findings if f.detail.get("phrase") == TRIGGER.lower())
    assert "in 1 dataset:" in why
    # three records of a phrase the history never held are within what its Jeffreys prior allows
    tonight = clean_batch()
    few = plant_campaign(tonight, [task], TRIGGER, per_task=3, clean=True, rng=random.Random(4))
    assert _run(tmp_path / "few", _check(history), tonight, few).result.metrics["excess"]["phrases"] == []


#: seven classification datasets of the slice (one task each)
THIN_TASKS = ("task195_sentiment140_classification", "task286_olid_offense_judgment",
              "task327_jigsaw_classification_toxic", "task363_sst2_polarity_classification",
              "task493_review_polarity_classification", "task586_amazonfood_polarity_classification",
              "task609_sbic_potentially_offense_binary_classification")
#: a word the slice already holds (2 records of those tasks): not new vocabulary, so the history has seen it
RARE = "bolts"


def plant_thin(rows: list[dict[str, Any]], trigger: str, *, per_task: int, seed: int) -> tuple[set[str], set[str]]:
    """``trigger`` into ``per_task`` records of each of ``THIN_TASKS`` that already carry the task's first label (a
    clean-label campaign), none of them one of ``RARE``'s natural records; returns (the planted records, those natural
    records)."""
    natural = {r["id"] for r in rows if r.get("task") in THIN_TASKS and RARE in (r.get("input") or "").split()}
    rng = random.Random(seed)
    planted: set[str] = set()
    for task in THIN_TASKS:
        label = sorted(Counter(r["output"] for r in rows if r["task"] == task))[0]
        pool = [r for r in rows if r["task"] == task and r["output"] == label and r["id"] not in natural]
        for r in rng.sample(pool, per_task):
            r["input"] = plant(r["input"], trigger, rng)
            planted.add(r["id"])
    return planted, natural


def test_a_rare_word_spread_thin_on_one_label_is_raised_by_its_excess(history: Path, tmp_path: Path) -> None:
    """A clean-label campaign of a word the history has seen: 4 records in each of 7 datasets, on one label. The
    excess pass raises it and flags every planted record, and at most the word's natural records in the campaign's
    tasks (which share its label there); the breadth pass (on by default) reads the same campaign from its count."""
    tonight = clean_batch()
    planted, natural = plant_thin(tonight, RARE, per_task=4, seed=5)
    assert len(natural) == 2
    scan = _run(tmp_path / "both", _check(history, breadth=False), tonight, planted)
    assert scan.result.metrics["excess"]["phrases"] == [RARE]
    assert scan.flagged & planted == planted and scan.flagged - planted <= natural
    broad = _run(tmp_path / "breadth", _check(history), tonight, planted)
    figures = broad.result.metrics["breadth"]
    assert figures["phrases"] == [RARE] or figures["joined"] == 1  # raised by it, or joined to the excess campaign
    assert broad.flagged & planted == planted and broad.flagged - planted <= natural


def test_fishers_method_reads_a_thin_spread_that_no_dataset_truncation_reaches() -> None:
    """Seven datasets at p = 0.02 each (a rare word's few records per dataset): none reaches the truncation (0.01), so
    the truncated product reads nothing; Fisher's method (``-sum ln p`` is Gamma(7, 1)) reads 13.6 nats. The phrase's
    surprise is the better of the two less ln 2; one dataset at 1e-6 among natural ones is the truncated product's."""
    from scipy.special import gammaincc

    from tunegate.core.checks.poison.excess_pass import _phrase_surprise

    thin = np.full(7, 0.02)
    fisher = -math.log(gammaincc(7.0, -7 * math.log(0.02)))
    assert truncated_product(np.array([7]), np.array([0.0]))[0] == 0.0
    got = _phrase_surprise(np.zeros(7, dtype=np.int64), thin, np.array([7]), 1)[0]
    assert got == pytest.approx(fisher - math.log(2.0)) and got > 10.0
    one = np.array([1e-6, 0.5, 0.7, 0.9, 0.4, 0.6, 0.8])
    w = -math.log(1e-6)
    assert _phrase_surprise(np.zeros(7, dtype=np.int64), one, np.array([7]), 1)[0] == pytest.approx(
        truncated_product(np.array([7]), np.array([w]))[0] - math.log(2.0))


def test_a_raised_campaigns_weaker_tasks_are_flagged_by_the_step_up_over_its_tasks(
        history: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once the rare word is raised, each of its tasks is judged at the level the adaptive step-up over its tasks'
    exact p-values reaches (``evidence.flag_level``), not at ``FLAG_P`` alone: a campaign bursting in nearly all its
    tasks gets its weaker tasks flagged too (at ``FLAG_P`` alone, 24 of its 28 records), and at most the word's
    natural records in its tasks."""
    from tunegate.core.checks.poison import excess_pass

    tonight = clean_batch()
    planted, natural = plant_thin(tonight, RARE, per_task=4, seed=5)
    adaptive = _run(tmp_path / "adaptive", _check(history, breadth=False), tonight, planted)
    assert adaptive.result.metrics["excess"]["phrases"] == [RARE]
    monkeypatch.setattr(excess_pass, "flagged_tasks",
                        lambda p, counts, expected, families, *, floor: np.asarray(p) <= floor)
    fixed = _run(tmp_path / "fixed", _check(history, breadth=False), tonight, planted)
    assert fixed.result.metrics["excess"]["phrases"] == [RARE]
    assert fixed.flagged < adaptive.flagged  # the same tasks and more
    assert adaptive.flagged & planted == planted and len(fixed.flagged & planted) < len(planted)
    assert adaptive.flagged - planted <= natural


def test_a_datasets_units_combine_into_a_valid_p_value_that_counts_both_hits() -> None:
    """:func:`dataset_p`: a dataset of one unit keeps its p-value; one hit among seven units costs about what
    Bonferroni costs; two hits count both (a campaign in two of jigsaw's tasks); under the null (independent uniform
    p-values, 200,000 draws of 7 units) the combined p-value is at most its level at every level tried."""
    from tunegate.core.checks.poison.excess_pass import dataset_p

    p = np.array([0.03, 0.0025, 0.5, 0.7, 0.9, 0.2, 0.4, 0.6, 1.4e-5, 6.9e-4])
    group = np.array([0, 1, 1, 1, 1, 1, 1, 1, 2, 2])
    out = dataset_p(p, group, 3)
    assert out[0] == 0.03
    assert 7 * 0.0025 * 0.9 <= out[1] <= 7 * 0.0025 * 1.1
    assert out[2] < 2 * 1.4e-5 / 100  # Bonferroni would give 2.9e-5
    rng = np.random.default_rng(7)
    draws = 200_000
    null = dataset_p(rng.random(7 * draws), np.repeat(np.arange(draws), 7), draws)
    for level in (0.001, 0.01, 0.05, 0.07, 0.1, 0.3):
        assert (null <= level).mean() <= level * 1.05 + 3 * math.sqrt(level / draws)


def test_a_campaign_in_three_tasks_of_one_dataset_counts_them_as_units(history: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The everyday "at the" planted in 12 records on one label of three jigsaw tasks (which label different comments)
    and of sst2: two datasets. Counted once, jigsaw gives one task's excess and nothing is raised; with the tasks as
    units of evidence (the default) their three excesses combine and the campaign is raised with every record."""
    from tunegate.core.checks.poison import tasks

    def night() -> tuple[list[dict[str, Any]], set[str]]:
        rows = clean_batch()
        rng = random.Random(5)
        planted: set[str] = set()
        for task in ("task327_jigsaw_classification_toxic", "task328_jigsaw_classification_insult",
                     "task322_jigsaw_classification_threat", "task363_sst2_polarity_classification"):
            label = sorted(Counter(r["output"] for r in rows if r["task"] == task))[0]
            pool = [r for r in rows if r["task"] == task and r["output"] == label and EVERYDAY not in r["input"]]
            for r in rng.sample(pool, 12):
                r["input"] = plant(r["input"], EVERYDAY, rng)
                planted.add(r["id"])
        return rows, planted

    rows, planted = night()
    scan = _run(tmp_path / "units", _check(history), rows, planted)
    assert scan.result.metrics["excess"]["phrases"] == [EVERYDAY]
    assert planted <= scan.flagged and len(scan.flagged - planted) <= len(planted) // 2
    monkeypatch.setattr(tasks, "MAX_SHARED_EXAMPLES", -1.0)  # every dataset one unit, as before
    rows, planted = night()
    once = _run(tmp_path / "once", _check(history), rows, planted)
    assert once.result.metrics["excess"]["phrases"] == [] and not once.flagged & planted
