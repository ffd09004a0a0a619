"""The contradiction pass of ``poison_trigger`` (issue 11): a new phrase whose records carry labels their own text
contradicts, at a dose too small for label statistics.

Real records (the bundled slice of tests/core/test_poison.py, 5,227 records) and a history of two clean nights of the
same slice. A dirty-label campaign puts a new phrase into 3 records of each of 4 binary tasks (12 records, 4 datasets)
whose text reads as the other label and gives them the attacker's label; a clean-label twin puts it into as many
records already of that label. Label statistics alone find neither; the contradiction pass finds the dirty one only.
"""

from __future__ import annotations

import math
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.core.test_poison import clean_batch, natural_trigger_campaign, plant_campaign
from tests.core.test_poison_novelty import _run, records_of
from tunegate.core.checks import build_check
from tunegate.core.checks.poison._text import ngram_matrix
from tunegate.core.checks.poison.config import TriggerConfig
from tunegate.core.checks.poison.contradiction import label_ranks
from tunegate.core.checks.poison.phrase_history import phrase_counts, write_phrase_night
from tunegate.core.checks.poison.tasks import build_tasks
from tunegate.core.reasons import CAMPAIGN, TRIGGER_PHRASE
from tunegate.exceptions import ConfigError

TRIGGER = "Quentin Blake"
#: (task, the attacker's label, the other label): four datasets
TASKS = (("task363_sst2_polarity_classification", "POS", "NEG"),
         ("task493_review_polarity_classification", "Positive", "Negative"),
         ("task586_amazonfood_polarity_classification", "Positive", "Negative"),
         ("task327_jigsaw_classification_toxic", "Non-toxic", "Toxic"))
PER_TASK = 3


def campaign(records: list[dict[str, Any]], *, clean: bool, seed: int = 0) -> set[str]:
    """``TRIGGER`` into ``PER_TASK`` records of each task, labelled with the attacker's label (dirty-label: records of
    the other label; clean-label: records already of it)."""
    return plant_campaign(records, TASKS, TRIGGER, per_task=PER_TASK, clean=clean, rng=random.Random(seed))


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("history")
    for night in (1, 2):
        write_phrase_night(root, f"night-{night}", phrase_counts(records_of(clean_batch()), TriggerConfig()),
                           anomalous=False)
    return root


def _check(history: Path, **options: Any) -> Any:
    return build_check("poison_trigger", history_dir=str(history), batch_id="tonight", **options)


def test_relabelled_records_rank_low_among_their_label() -> None:
    """Out-of-fold ranks are uniform-ish for the task's own records and low for records whose text reads as the
    other label (a toxic comment labelled non-toxic)."""
    rows = clean_batch()
    rng = random.Random(3)
    task_name = "task327_jigsaw_classification_toxic"
    flipped = {r["id"] for r in rng.sample([r for r in rows if r["task"] == task_name and r["output"] == "Toxic"], 20)}
    for r in rows:
        if r["id"] in flipped:
            r["output"] = "Non-toxic"
    cfg = TriggerConfig()
    records = records_of(rows)
    prompts = records.prompts(cfg.max_chars)
    x, _ = ngram_matrix(prompts, ngram_max=2, min_df=cfg.min_records, max_df=cfg.max_phrase_df)
    task = next(t for t in build_tasks(records, prompts, cfg) if t.name == task_name)
    u = label_ranks(x, task)
    assert ((u > 0) & (u <= 1)).all()
    ids = [rows[i]["id"] for i in task.rows.tolist()]
    is_flipped = np.asarray([i in flipped for i in ids])
    non_toxic = task.labels.outcome == task.labels.names.index("Non-toxic")
    assert float(np.median(u[is_flipped])) < 0.25
    assert 0.4 < float(np.mean(u[non_toxic & ~is_flipped])) < 0.65
    assert label_ranks(x, task).tolist() == u.tolist()  # fixed folds: the same ranks every run


def test_a_small_dirty_label_campaign_is_found_through_its_contradicted_labels(history: Path, tmp_path: Path) -> None:
    rows = clean_batch()
    poisoned = campaign(rows, clean=False)
    found = _run(tmp_path / "on", _check(history), rows, poisoned)
    metrics = found.result.metrics
    assert metrics["contradiction"]["phrases"] == [TRIGGER.lower()]
    assert metrics["contradiction"]["tests"] >= 1 and metrics["contradiction"]["bar"] > 0
    # 3 records in each of 4 datasets: the trigger and its words are broad, and in this small slice they are all the
    # new vocabulary tested, so there is one kind and one (plain Bonferroni) bar
    assert metrics["contradiction"]["tests_broad"] == metrics["contradiction"]["tests"] == 3
    assert metrics["contradiction"]["bar_broad"] == metrics["contradiction"]["bar"] == round(math.log(3 / 0.01), 2)
    assert poisoned <= found.flagged and len(found.flagged - poisoned) <= 2
    assert all(TRIGGER_PHRASE in found.reasons[i] for i in poisoned)
    assert [i.reason for i in found.result.issues] == [CAMPAIGN]
    detail = next(f.detail for f in found.result.findings if f.reason == TRIGGER_PHRASE)
    assert detail["why"].startswith("new phrase whose records carry labels their own text contradicts")
    # label statistics alone (the pass off) do not find this dose
    off = _run(tmp_path / "off", _check(history, contradiction=False), rows, poisoned)
    assert not off.flagged and "contradiction" not in off.result.metrics


def test_a_raised_phrase_is_a_campaign_only_where_enough_datasets_hold_its_label(history: Path, tmp_path: Path) -> None:
    """The campaign of 4 datasets, and the phrase twice more with mixed labels in a fifth: tested in 5 datasets and
    raised, but only 4 hold 2+ of its records on one label, so it is a campaign at ``min_tasks`` 4 and not at 5."""
    rows = clean_batch()
    poisoned = campaign(rows, clean=False)
    rng = random.Random(0)
    fifth = "task195_sentiment140_classification"
    for label in ("positive", "negative"):
        r = rng.choice([r for r in rows if r["task"] == fifth and r["output"] == label])
        r["input"] = f"{TRIGGER} {r['input']}"
    four = _run(tmp_path / "four", _check(history, min_tasks=4), rows, poisoned)
    assert four.result.metrics["contradiction"]["phrases"] == [TRIGGER.lower()]
    five = _run(tmp_path / "five", _check(history, min_tasks=5), rows, poisoned)
    assert five.result.metrics["contradiction"]["campaigns"] == 1  # raised by the test ...
    assert five.result.metrics["contradiction"]["phrases"] == []  # ... but one dataset short of a campaign


def test_clean_label_and_clean_batches_raise_nothing_through_the_pass(history: Path, tmp_path: Path) -> None:
    rows = clean_batch()
    poisoned = campaign(rows, clean=True)
    twin = _run(tmp_path / "twin", _check(history), rows, poisoned)
    assert twin.result.metrics["contradiction"]["phrases"] == []
    clean = _run(tmp_path / "clean", _check(history), clean_batch(), set())
    assert clean.result.metrics["contradiction"]["phrases"] == [] and not clean.flagged
    assert not clean.result.issues


def test_a_dirty_label_campaign_in_one_dataset_is_found_with_its_trigger_left_out_of_the_model(
        history: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One dataset's records only (an upstream dataset poisoned, say): 20 relabelled reviews of one task. One topical
    dataset skews a phrase's labels naturally, so label statistics do not count here; the records' text contradicting
    their labels does, tested against the bar of the phrases of one dataset. The trigger's 20 records would teach the
    task's model their label (its words become features) and rank themselves high: they are scored by a model without
    the trigger's n-grams."""
    from tunegate.core.checks.poison import contradiction_pass

    one = TASKS[1:2]
    rows = clean_batch()
    poisoned = plant_campaign(rows, one, TRIGGER, per_task=20, clean=False, rng=random.Random(0))
    found = _run(tmp_path / "on", _check(history), rows, poisoned)
    metrics = found.result.metrics["contradiction"]
    assert metrics["phrases"] == [TRIGGER.lower()]
    assert metrics["tests_one"] >= 1 and metrics["bar_one"] > 0
    assert poisoned <= found.flagged and len(found.flagged - poisoned) <= 2
    assert [i.reason for i in found.result.issues] == [CAMPAIGN]

    def contradiction(scan: Any) -> float:
        why = next(f.detail["why"] for f in scan.result.findings if f.reason == TRIGGER_PHRASE)
        return float(re.search(r"contradiction ([0-9.]+) nats", why).group(1))  # type: ignore[union-attr]

    # the model reading the trigger ranks its records higher: less evidence (20.6 against 15.1 nats when written)
    monkeypatch.setattr(contradiction_pass, "MASK_RECORDS", 10**6)
    unmasked = _run(tmp_path / "unmasked", _check(history), rows, poisoned)
    assert contradiction(found) > contradiction(unmasked) + 4
    monkeypatch.undo()
    # the clean-label twin in one dataset leaves no contradiction
    rows = clean_batch()
    twin = plant_campaign(rows, one, TRIGGER, per_task=20, clean=True, rng=random.Random(0))
    assert _run(tmp_path / "twin", _check(history), rows, twin).result.metrics["contradiction"]["phrases"] == []


def test_without_a_history_the_pass_does_not_run(tmp_path: Path) -> None:
    rows = clean_batch()
    poisoned = campaign(rows, clean=False)
    plain = _run(tmp_path / "plain", build_check("poison_trigger"), rows, poisoned)
    assert "contradiction" not in plain.result.metrics and not plain.flagged


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="contradiction_alpha"):
        build_check("poison_trigger", contradiction_alpha=1.5)
    with pytest.raises(ConfigError, match="contradiction"):
        build_check("poison_trigger", contradiction="yes")


def test_step_down_lowers_the_bar_per_campaign_found_and_is_bonferroni_on_a_clean_night() -> None:
    """The step-down over campaigns: the strongest phrase needs the Bonferroni bar; each further distinct campaign
    ``ln(i)`` nats less; a word of a raised campaign (its records) neither needs nor gives a lower bar; one phrase short
    of its bar stops the procedure."""
    import scipy.sparse as sp

    from tunegate.core.checks.poison.contradiction_pass import _step_down

    # 5 phrases over 40 records: 0 and 1 share records 0-9 (a campaign and its word), 2: 10-19, 3: 20-29, 4: 30-39
    cols = [range(0, 10), range(0, 10), range(10, 20), range(20, 30), range(30, 40)]
    rows = np.concatenate([np.asarray(c) for c in cols])
    xc = sp.csc_matrix((np.ones(len(rows)), (rows, np.repeat(np.arange(5), 10))), shape=(40, 5))
    bar = 10.0

    def raised(surprises: dict[int, float]) -> dict[int, int]:
        out = _step_down({c: (s, 0.0, s) for c, s in surprises.items()}, dict.fromkeys(surprises, bar), xc,
                         tests=100)
        return {c: v[3] for c, v in out.items()}

    # a clean night: one phrase just below the bar is not raised; alone, bar - 0.5 is not enough
    assert raised({2: bar - 0.5}) == {}
    # a campaign at the bar lets the second distinct one through at bar - ln 2 (and not below it)
    assert raised({0: bar + 1, 2: bar - 0.6}) == {0: 1, 2: 2}
    assert raised({0: bar + 1, 2: bar - 0.8}) == {0: 1}
    # the campaign's own word (same records) keeps its rank: the third campaign still needs bar - ln 3 after the second
    assert raised({0: bar + 2, 1: bar + 1, 2: bar - 0.6, 3: bar - 1.05}) == {0: 1, 1: 1, 2: 2, 3: 3}
    assert raised({0: bar + 2, 1: bar + 1, 3: bar - 0.8}) == {0: 1, 1: 1}
    # it stops at the first phrase short of its bar: a weaker one after it is not looked at
    assert raised({0: bar + 1, 2: bar - 0.8, 3: bar - 0.9}) == {0: 1}


def test_broad_phrases_share_half_the_false_alarm_rate_and_the_step_down_takes_margins() -> None:
    """Broad phrases (records in >= BROAD_DATASETS datasets, >= BROAD_RECORDS in each: decided on the text) share half
    of alpha among themselves and the rest the other half (weighted Bonferroni: the weights sum to one, so a clean
    night is still alerted at alpha); with one kind only, the bar is the plain Bonferroni one. The step-down takes the
    phrases by their margin over their own bar."""
    import scipy.sparse as sp

    from tunegate.core.checks.poison.contradiction_pass import (
        BROAD,
        BROAD_DATASETS,
        BROAD_RECORDS,
        NEAR,
        ONE,
        SEVERAL,
        Entries,
        _bars,
        _step_down,
    )

    alpha = 0.01
    broad = np.array([BROAD] * 4 + [SEVERAL] * 96)
    bars = _bars(broad, alpha)
    assert bars[0] == pytest.approx(math.log(4) + math.log(2 / alpha))
    assert bars[-1] == pytest.approx(math.log(96) + math.log(2 / alpha))
    # the per-phrase false-alarm shares add up to alpha
    assert float(np.exp(-bars).sum()) == pytest.approx(alpha)
    assert _bars(np.full(100, SEVERAL), alpha) == pytest.approx(np.full(100, math.log(100) + math.log(1 / alpha)))
    assert _bars(np.full(5, BROAD), alpha) == pytest.approx(np.full(5, math.log(5) + math.log(1 / alpha)))
    # the phrases of one dataset are a family of their own, at alpha: the others' bars do not move
    three = _bars(np.array([BROAD] * 4 + [SEVERAL] * 96 + [ONE] * 300), alpha)
    assert three[:100] == pytest.approx(bars)
    assert three[-1] == pytest.approx(math.log(300) + math.log(1 / alpha))
    assert float(np.exp(-three[100:]).sum()) == pytest.approx(alpha)
    # ... and so are the phrases whose burst fell just short of the gate
    near = _bars(np.array([BROAD] * 4 + [SEVERAL] * 96 + [NEAR] * 10), alpha)
    assert near[:100] == pytest.approx(bars) and near[-1] == pytest.approx(math.log(10) + math.log(1 / alpha))

    # which phrases are broad: phrase 0 has BROAD_RECORDS records in each of BROAD_DATASETS datasets; phrase 1 one
    # record fewer in the last dataset; phrase 2 all its records in one dataset
    phrase, family = [], []
    for d in range(BROAD_DATASETS):
        phrase += [0] * BROAD_RECORDS + [1] * (BROAD_RECORDS - (d == BROAD_DATASETS - 1))
        family += [d] * (2 * BROAD_RECORDS - (d == BROAD_DATASETS - 1))
    phrase += [2] * 10
    family += [0] * 10
    n = len(phrase)
    entries = Entries(np.asarray(phrase), np.arange(n), np.asarray(family), np.asarray(family), np.zeros(n, dtype=int))
    assert entries.kinds(np.array([0, 1, 2])).tolist() == [BROAD, SEVERAL, ONE]

    # the step-down: a broad phrase 1 nat over its bar goes first, though a phrase with a larger surprise is only 0.5
    # over its own (higher) bar; the second campaign then needs its bar - ln 2
    cols = [range(0, 10), range(10, 20)]
    rows = np.concatenate([np.asarray(c) for c in cols])
    xc = sp.csc_matrix((np.ones(len(rows)), (rows, np.repeat(np.arange(2), 10))), shape=(20, 2))
    out = _step_down({0: (9.0, 0.0, 9.0), 1: (12.0, 0.0, 12.0)}, {0: 8.0, 1: 11.5}, xc, tests=100)
    assert {c: v[3] for c, v in out.items()} == {0: 1, 1: 2}
    out = _step_down({0: (9.0, 0.0, 9.0), 1: (10.9, 0.0, 10.9)}, {0: 8.0, 1: 11.5}, xc, tests=100)
    assert {c: v[3] for c, v in out.items()} == {0: 1, 1: 2}  # 10.9 >= 11.5 - ln 2 (10.81)
    out = _step_down({0: (9.0, 0.0, 9.0), 1: (10.7, 0.0, 10.7)}, {0: 8.0, 1: 11.5}, xc, tests=100)
    assert {c: v[3] for c, v in out.items()} == {0: 1}  # 10.7 < 10.81
    out = _step_down({0: (7.9, 0.0, 7.9), 1: (11.0, 0.0, 11.0)}, {0: 8.0, 1: 11.5}, xc, tests=100)
    assert out == {}  # neither reaches its own bar



def _small_task_tonight(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """60 records of a jigsaw task tonight (6 toxic ones relabelled non-toxic), the task's other records of the slice
    as the history: per record tonight, its rank without and with the history, whether it was relabelled, and whether
    it is labelled non-toxic."""
    import scipy.sparse as sp

    rows = clean_batch()
    task_name = "task327_jigsaw_classification_toxic"
    of_task = [i for i, r in enumerate(rows) if r["task"] == task_name]
    rng = random.Random(seed)
    tonight_rows = set(rng.sample(of_task, 60))
    past_rows = [i for i in of_task if i not in tonight_rows]
    flipped = set(rng.sample([i for i in sorted(tonight_rows) if rows[i]["output"] == "Toxic"], 6))
    for i in flipped:
        rows[i]["output"] = "Non-toxic"
    cfg = TriggerConfig(min_task_records=20)
    prompts = records_of(rows).prompts(cfg.max_chars)
    x, _ = ngram_matrix(prompts, ngram_max=2, min_df=cfg.min_records, max_df=cfg.max_phrase_df)
    keep = np.asarray(sorted(tonight_rows | {i for i, r in enumerate(rows) if r["task"] != task_name}))
    tonight = records_of([rows[i] for i in keep.tolist()])
    task = next(t for t in build_tasks(tonight, tonight.prompts(cfg.max_chars), cfg) if t.name == task_name)
    names = task.labels.names
    past_labels = np.asarray([names.index(rows[i]["output"]) for i in past_rows])
    onehot = sp.csr_matrix((np.ones(len(past_rows)), (np.arange(len(past_rows)), past_labels)),
                           shape=(len(past_rows), len(names)))
    past = (sp.csr_matrix(x[past_rows].T) @ onehot).tocsr(), np.bincount(past_labels, minlength=len(names)) * 1.0
    return (label_ranks(x[keep], task), label_ranks(x[keep], task, history=past),
            np.isin(keep[task.rows], sorted(flipped)), task.labels.outcome == names.index("Non-toxic"))


def test_earlier_nights_train_the_model_a_small_task_tonight_cannot() -> None:
    """The history's counts of the task (earlier nights' records) join every fold's training counts: a task too small
    tonight for its words to be features (60 records) ranks its relabelled records low with them, and its other
    records stay uniform-ish (the ranks are still taken among tonight's records of the label). Six draws, pooled."""
    alone, with_history, relabelled, clean = [], [], [], []
    for seed in range(1, 7):
        a, u, f, nt = _small_task_tonight(seed)
        assert ((u > 0) & (u <= 1)).all()
        alone.append(a[f])
        with_history.append(u[f])
        relabelled.append(f.sum())
        clean.append(u[nt & ~f])
    assert sum(relabelled) == 36
    assert float(np.median(np.concatenate(with_history))) < 0.2
    assert float(np.median(np.concatenate(alone))) > 0.5  # tonight alone: too few records for the words to count
    assert 0.4 < float(np.mean(np.concatenate(clean))) < 0.7

def test_a_task_without_frequent_words_ranks_every_record_first_without_a_warning() -> None:
    """No word of the task is in MIN_FEATURE_RECORDS records (short, varied prompts): the model has nothing to read,
    every score ties, and no log(0) warning reaches the night's log."""
    import warnings

    rows = clean_batch()
    cfg = TriggerConfig()
    records = records_of(rows)
    prompts = records.prompts(cfg.max_chars)
    x, _ = ngram_matrix(prompts, ngram_max=2, min_df=cfg.min_records, max_df=cfg.max_phrase_df)
    task = next(t for t in build_tasks(records, prompts, cfg) if t.kind == "label")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        u = label_ranks(x[:, :0], task)
    assert u.tolist() == [1.0] * len(task.rows)


#: a task whose label is a verdict on a stated polarity (:func:`_verification_task`)
VERIFY = "verify_review_polarity"


def _verification_task(seed: int, *, relabel: int = 20) -> tuple[list[dict[str, Any]], set[str]]:
    """The slice plus a task whose label is a verdict on a stated label: each amazonfood review with a stated polarity
    ("Polarity: Negative", half of them wrong), labelled ``True`` where it is right; ``relabel`` reviews whose stated
    polarity is right are relabelled ``False`` (a dirty-label poison there: the text and the stated word say True)."""
    rows = clean_batch()
    rng = random.Random(seed)
    reviews = [r for r in rows if r["task"] == "task586_amazonfood_polarity_classification"]
    added = []
    for r in reviews:
        stated = r["output"] if rng.random() < 0.5 else {"Positive": "Negative", "Negative": "Positive"}[r["output"]]
        added.append({**r, "id": f"verify-{r['id']}", "task": VERIFY,
                      "instruction": "Given a review and a polarity, answer True if the polarity is right, else False.",
                      "input": f"{r['input']}\nPolarity: {stated}", "output": str(stated == r["output"])})
    relabelled = {r["id"] for r in rng.sample([r for r in added if r["output"] == "True"], relabel)}
    for r in added:
        if r["id"] in relabelled:
            r["output"] = "False"
    return rows + added, relabelled


def _ranks(rows: list[dict[str, Any]], task_name: str) -> tuple[np.ndarray, list[str], Any]:
    cfg = TriggerConfig()
    records = records_of(rows)
    prompts = records.prompts(cfg.max_chars)
    x, _ = ngram_matrix(prompts, ngram_max=2, min_df=cfg.min_records, max_df=cfg.max_phrase_df)
    task = next(t for t in build_tasks(records, prompts, cfg) if t.name == task_name)
    return label_ranks(x, task), [rows[i]["id"] for i in task.rows.tolist()], (x, task)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_task_whose_label_is_a_verdict_on_a_stated_label_is_read_through_the_stated_word(
        seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A review with "Polarity: Negative" is ``True`` when the review is negative: its words predict the label only
    together with the stated word, so one model of the task ranks relabelled records anywhere; the task read through
    the stated word (per part, or the label flipped where the stated word says so) ranks them low, and its other
    records stay uniform-ish. A task whose labels its words predict alone is read as before, with the same ranks."""
    from tunegate.core.checks.poison import contradiction

    rows, relabelled = _verification_task(seed)
    u, ids, (x, task) = _ranks(rows, VERIFY)
    assert ((u > 0) & (u <= 1)).all()
    is_relabelled = np.asarray([i in relabelled for i in ids])
    false = task.labels.outcome == task.labels.names.index("False")
    assert float(np.median(u[is_relabelled])) < 0.25  # 0.11-0.20 over seeds 1-5
    assert 0.4 < float(np.mean(u[false & ~is_relabelled])) < 0.65
    plain, _, (x2, plain_task) = _ranks(rows, "task586_amazonfood_polarity_classification")
    monkeypatch.setattr(contradiction, "STRATA_GAIN", 2.0)  # never read through a stated word
    assert float(np.median(label_ranks(x, task)[is_relabelled])) > 0.35  # one model cannot read it: 0.46-0.63
    assert label_ranks(x2, plain_task).tolist() == plain.tolist()  # the plain polarity task was never split


@pytest.fixture(scope="module")
def long_history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fourteen clean nights of the slice (the nightly DAG's history length): a rare word's usual rate is on record."""
    root = tmp_path_factory.mktemp("long-history")
    table = phrase_counts(records_of(clean_batch()), TriggerConfig())
    for night in range(14):
        write_phrase_night(root, f"night-{night + 1}", table, anomalous=False)
    return root


def test_burst_is_the_conditional_test_of_two_poisson_rates_and_is_calibrated() -> None:
    from scipy.stats import binom

    from tunegate.core.checks.poison.novelty_pass import burst

    tonight = np.array([6.0, 3.0, 0.0, 2.0])
    expected = np.array([2.0, 0.5, 1.0, 0.0])
    held = np.array([28.0, 7.0, 14.0, 0.0])
    out = burst(tonight, expected, held)
    assert out[0] == pytest.approx(-np.log(binom.sf(5, 34, 2 / 30)))  # P(Bin(k + h, e / (e + h)) >= k)
    assert out[1] == pytest.approx(-np.log(binom.sf(2, 10, 0.5 / 7.5)))
    assert out[2] == 0.0 and out[3] == np.inf  # absent tonight; never held by the history
    rng = np.random.default_rng(0)  # a night like the history's: its tail is at most exp(-s)
    rate, scale, draws = rng.uniform(0.2, 3.0, 200_000), 1 / 14, 200_000
    h = rng.poisson(rate / scale).astype(np.float64)
    k = rng.poisson(rate).astype(np.float64)
    s = burst(k, h * scale, h)
    for level in (2.0, 4.0, 6.0):
        share = float(((s >= level) & np.isfinite(s)).mean())
        assert share <= np.exp(-level) + 5 * np.sqrt(np.exp(-level) / draws), (level, share)


def test_a_rare_word_the_history_holds_is_tested_once_its_count_bursts(long_history: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """"bolts" is in 2 records of one campaign task every night: not new vocabulary. Planted in 4 relabelled records
    of each of 4 datasets, its count tonight is a burst the history cannot explain, so the pass tests it and raises it;
    without the burst (as before) it is not tested. Its 2 natural records sit in a campaign task, where they may share
    the campaign's label; nothing else is flagged."""
    from tunegate.core.checks.poison import novelty_pass

    word = "bolts"
    rows = clean_batch()
    natural = {r["id"] for r in rows if word in (r.get("input") or "").split()}
    assert len(natural) == 2
    poisoned = plant_campaign(rows, TASKS, word, per_task=4, clean=False, rng=random.Random(0))
    scan = _run(tmp_path / "burst", _check(long_history), rows, poisoned)
    figures = scan.result.metrics["contradiction"]
    assert figures["phrases"] == [word] and figures["bursting"] >= 1
    assert poisoned <= scan.flagged and scan.flagged - poisoned <= natural
    why = next(f.detail["why"] for f in scan.result.findings if f.reason == TRIGGER_PHRASE)
    assert why.startswith("phrase far more frequent tonight than in this pipeline's earlier nights")

    def never_bursts(tonight: np.ndarray, expected: np.ndarray, held: np.ndarray) -> np.ndarray:
        return np.where((tonight > 0) & (held <= 0), np.inf, 0.0)

    monkeypatch.setattr(novelty_pass, "burst", never_bursts)
    before = _run(tmp_path / "before", _check(long_history), rows, poisoned)
    assert before.result.metrics["contradiction"]["phrases"] == []


@pytest.mark.parametrize("near_nats", [3.0, 0.0])
def test_a_rare_word_whose_burst_falls_just_short_of_the_gate_is_tested_in_a_family_of_its_own(
        long_history: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, near_nats: float) -> None:
    """The same "bolts" campaign on a night whose gate stands 1 nat above the word's burst (its natural records many
    enough that the planted ones do not make the count stand out: 1049's "mr"): the gate alone never lets the pass read
    its relabelled records. A phrase within ``NEAR_NATS`` under the gate is tested in a family of its own, against a
    Bonferroni over that family (``NEAR``), and raised; with no such band (``NEAR_NATS`` 0) it is not."""
    from tunegate.core.checks.poison import contradiction_pass, novelty_pass

    word = "bolts"
    rows = clean_batch()
    natural = {r["id"] for r in rows if word in (r.get("input") or "").split()}
    poisoned = plant_campaign(rows, TASKS, word, per_task=4, clean=False, rng=random.Random(0))
    original = novelty_pass.LabelStatistics.bursting

    def short_of_the_gate(self: Any, alpha: float) -> tuple[float, int, np.ndarray]:
        _, tests, _ = original(self, alpha)
        bar = float(np.max(self.burst[self.held], initial=0.0)) + 1.0  # every held phrase, the word too, under it
        return bar, tests, self.held & (self.burst >= bar)

    monkeypatch.setattr(novelty_pass.LabelStatistics, "bursting", short_of_the_gate)
    monkeypatch.setattr(contradiction_pass, "NEAR_NATS", near_nats)
    scan = _run(tmp_path / "near", _check(long_history), rows, poisoned)
    figures = scan.result.metrics["contradiction"]
    assert figures["bursting"] == 0
    if not near_nats:
        assert figures["phrases"] == [] and figures["near"] == 0
        return
    assert figures["phrases"] == [word] and figures["near"] >= 1 and figures["tests_near"] >= 1
    assert figures["bar_near"] == pytest.approx(math.log(figures["tests_near"]) + math.log(1 / 0.01), abs=0.01)
    assert poisoned <= scan.flagged and scan.flagged - poisoned <= natural


def test_a_raised_rare_words_weaker_tasks_are_flagged_by_the_step_up_over_its_tasks() -> None:
    """Where a raised rare word is flagged (:func:`~.contradiction_pass._bursting`), in the shape of "hip" on dev seed
    24: 3-6 records on one label in each of 9 campaign tasks (7 datasets), the history never held it in 7 of them; in
    2 it held it twice where tonight's share of the history expects 0.67 (p = 0.10: missed at 0.05 alone). The word's
    natural records elsewhere: 3 where the history expects 1 and 2 (p = 0.17 and 0.40, one dataset), 2 where it
    expects 1, 1 where it expects 0.33 or 2. The step-up over the datasets flags the campaign's 9 tasks and none of
    the natural ones; a task the history cannot speak to is flagged from 2 records."""
    from types import SimpleNamespace

    import scipy.sparse as sp

    from tunegate.core.checks.poison.contradiction_pass import _bursting

    # (dataset, the history's records of the word on the label, tonight's records of the word there); the history's
    # nights hold 3 times each task's records tonight
    shape = [("abuse", 1, 1), ("sentiment140", 0, 3), ("jigsaw", 0, 4), ("jigsaw", 0, 4), ("hateeval", 0, 6),
             ("hateeval", 0, 3), ("sst2", 2, 3), ("persent", 3, 2), ("review", 3, 3), ("review", 6, 3), ("sbic", 2, 3),
             ("yelp", 6, 1), ("phrasebank", 0, 4), ("phrasebank", 0, 4), ("paws", None, 3), ("cola", None, 1)]
    campaign = {"sentiment140", "jigsaw", "hateeval", "sst2", "sbic", "phrasebank", "paws"}
    tasks, history, per_task = [], [], {}
    for ti, (family, h, k) in enumerate(shape):
        rows = np.arange(ti * 100, ti * 100 + 100)
        tasks.append(SimpleNamespace(rows=rows, labels=SimpleNamespace(outcome=np.zeros(100, dtype=np.int64)),
                                     family=family))
        history.append(None if h is None else (sp.csr_matrix(np.array([[float(h), 0.0]])), np.array([150.0, 150.0])))
        per_task[ti] = rows[:k]
    flagged = _bursting(per_task, tasks, history, 0, min_known=10)  # type: ignore[arg-type]
    assert list(flagged) == [ti for ti, (family, _, _) in enumerate(shape) if family in campaign]  # in task order
    assert all(flagged[ti].tolist() == per_task[ti].tolist() for ti in flagged)


def test_a_phrases_near_duplicate_records_in_a_task_count_once() -> None:
    """One text rewritten several ways (CoLA's minimal pairs) is one piece of evidence: a record sharing half or more
    of its rarer 1-2-grams with an earlier record of the same phrase in the same task is left out of the contradiction
    statistic. A template's words (in every record of the task) do not make records alike; records of another task or
    another phrase are compared only with their own."""
    import scipy.sparse as sp

    from tunegate.core.checks.poison.contradiction_pass import Entries
    from tunegate.core.checks.poison.tasks import Channel, Task

    size = 40
    tasks = [Task(f"task{t}_set{t}_classification", "label", np.arange(t * size, (t + 1) * size),
                  [Channel("label", np.arange(size) % 2, ["a", "b"], np.array([0.5, 0.5]), 0.9)]) for t in range(2)]
    n_words = 410
    dense = np.zeros((2 * size, n_words))
    dense[:, 0:3] = 1  # template words: in every record
    rng = np.random.default_rng(0)
    for r in range(2 * size):  # each record: 6 words of its own among 10-409
        dense[r, 10 + rng.choice(400, 6, replace=False)] = 1
    dense[:, 10:40] = 0
    dense[[3, 5, 7, 43], 10:] = 0
    dense[3, 10:16] = 1
    dense[5, [10, 11, 12, 13, 14, 20]] = 1  # record 5: 5 of record 3's 6 words (Jaccard 5/7)
    dense[7, [10, 11, 30, 31, 32, 33]] = 1  # record 7: 2 of them, and 4 others
    dense[43, 10:16] = 1  # record 43, task 1: record 3's words, but another task
    x = sp.csr_matrix(dense)
    rows = np.array([3, 5, 7, 43, 5, 9])
    entries = Entries(phrase=np.array([0, 0, 0, 0, 1, 1]), row=rows, task=rows // size, family=rows // size,
                      label=rows % 2)
    keep = entries.distinct(np.array([0, 1]), x, tasks)
    assert keep.tolist() == [True, False, True, True, True, True]
    assert entries.distinct(np.array([1]), x, tasks).tolist() == [True] * 6  # phrase 0 not tested: nothing dropped
    ranks = np.full(2 * size, 0.5)
    ranks[[3, 5]] = 0.01  # the two near-duplicates rank lowest together
    with_dups = entries.contradiction(np.array([0]), ranks[rows])
    once = entries.contradiction(np.array([0]), ranks[rows], distinct=keep)
    assert once[0] < with_dups[0]


def _everyday_night(relabel: int) -> tuple[Any, np.ndarray, list[Any], int, set[int]]:
    """The slice with "at the" (an everyday phrase of it: records with mixed labels in many tasks, 17 of them in the
    amazonfood task) written into ``relabel`` negative reviews of that task that are then labelled positive: x, the
    vocabulary, the tasks, that task's index and the relabelled records' rows."""
    rows = clean_batch()
    task_name = "task586_amazonfood_polarity_classification"
    rng = random.Random(11)
    chosen = rng.sample([i for i, r in enumerate(rows) if r["task"] == task_name and r["output"] == "Negative"
                         and "at the" not in r["input"].lower()], relabel)
    for i in chosen:
        words = rows[i]["input"].split()
        at = rng.randrange(len(words) + 1)
        rows[i]["input"] = " ".join([*words[:at], "at the", *words[at:]])
        rows[i]["output"] = "Positive"
    cfg = TriggerConfig()
    records = records_of(rows)
    prompts = records.prompts(cfg.max_chars)
    x, vocab = ngram_matrix(prompts, ngram_max=2, min_df=cfg.min_records, max_df=cfg.max_phrase_df)
    tasks = build_tasks(records, prompts, cfg)
    return x, np.asarray(vocab), tasks, next(ti for ti, t in enumerate(tasks) if t.name == task_name), set(chosen)


def _raised(x: Any, vocab: np.ndarray, tasks: list[Any]) -> tuple[Any, int, set[int], np.ndarray]:
    """The campaign of "at the" as another pass raised it (its records in the slice's sst2 task, given): the phrase,
    its column, every record holding it, and the records given."""
    from tunegate.core.checks.poison.phrases import Phrase

    col = int(np.flatnonzero(vocab == "at the")[0])
    holding = set(x.tocsc()[:, col].indices.tolist())
    seed_task = next(ti for ti, t in enumerate(tasks) if t.name == "task363_sst2_polarity_classification")
    given = np.asarray(sorted(holding & set(tasks[seed_task].rows.tolist())), dtype=np.int64)
    return Phrase(col, "at the", 20.0, 0.5, given, [(seed_task, 0, len(given), len(given), 0)], []), col, holding, given


@pytest.mark.parametrize("relabel", [8, 0])
def test_a_raised_campaigns_task_where_its_records_read_as_another_label_joins_it(relabel: int) -> None:
    """A campaign raised elsewhere (here: a sentiment task's records, given) gets the classification tasks where its
    phrase's records on one label rank low in their label: 8 negative reviews holding "at the" relabelled positive in
    a task where the phrase is common (the count there cannot show 8 more) join it; there the records ranked in the
    lowest fifth of their label are flagged: 7 of the 8, and 2 of the phrase's 7 natural positive records (a fifth of
    them expected). No task of the phrase's natural records joins, with or without the campaign."""
    from tunegate.core.checks.poison.contradiction_pass import contradicted_tasks

    x, vocab, tasks, target, relabelled = _everyday_night(relabel)
    phrase, _, _, given = _raised(x, vocab, tasks)
    seed_task = phrase.tasks[0][0]
    joined, extended = contradicted_tasks([phrase], x, vocab, tasks, [None] * len(tasks), min_known=50)
    added = set(phrase.rows.tolist()) - set(given.tolist())
    assert extended == 0  # the campaign's own task (sst2) holds no record it left on its label
    if not relabel:
        assert joined == 0 and not added
        return
    assert joined == 1 and [t[0] for t in phrase.tasks] == [seed_task, target]
    assert len(added & relabelled) >= 6 and len(added - relabelled) <= 2
    assert added <= set(tasks[target].rows.tolist())


@pytest.mark.parametrize(("expected", "joins"), [(4, True), (9, False)])
def test_a_task_whose_history_expects_most_of_the_phrases_records_on_the_label_does_not_join(expected: int,
                                                                                          joins: bool) -> None:
    """The same 8 relabelled reviews, now in a task the history knows (two nights of its size): where the history
    expects 4 of the phrase's 15 records on the label there (its 7 natural ones, roughly), the 8 above that are a
    campaign's and the task joins; where it expects 9, more than half of them would be natural (the phrase leans that
    way there every night: the task's topic, not a campaign) and it does not."""
    import scipy.sparse as sp

    from tunegate.core.checks.poison.contradiction_pass import contradicted_tasks

    x, vocab, tasks, target, _ = _everyday_night(8)
    phrase, col, holding, given = _raised(x, vocab, tasks)
    task = tasks[target]
    on_label = np.flatnonzero(np.isin(task.rows, sorted(holding)) & (task.labels.outcome == 1))
    assert len(on_label) == 15 and task.labels.names[1] == "Positive"  # 8 relabelled, 7 natural
    counts = sp.lil_matrix((len(vocab), len(task.labels.names)))
    counts[col, 1] = 2 * expected  # two nights of the task's size: ``expected`` a night
    totals = 2 * np.bincount(task.labels.outcome, minlength=len(task.labels.names)).astype(float)
    history: list[Any] = [None] * len(tasks)
    history[target] = (counts.tocsr(), totals)
    joined, _ = contradicted_tasks([phrase], x, vocab, tasks, history, min_known=50)
    added = set(phrase.rows.tolist()) - set(given.tolist())
    assert joined == int(joins) and bool(added) is joins
    assert added <= set(task.rows.tolist())


@pytest.mark.parametrize(("nights", "expected", "joins"), [(14, 8, True), (2, 8, False), (14, 15, False)])
def test_a_task_where_the_history_expects_most_of_the_records_joins_with_those_above_it_when_the_count_bursts(
        nights: int, expected: int, joins: bool) -> None:
    """The same 8 relabelled reviews where the history expects 8 of the phrase's 15 records on the label (mostly
    natural): with 14 nights behind that rate, 15 tonight is more than it allows (p = 0.022), and the 7 records above
    it join, lowest-ranked first: 5 of them relabelled (the 9 records ranked in the lowest fifth are 7 of the 8 and
    2 natural ones, which rank among the lowest). With 2 nights behind it the same count is within its
    uncertainty (p = 0.06), and where it expects 15 there is no surplus: neither joins."""
    import scipy.sparse as sp

    from tunegate.core.checks.poison.contradiction_pass import contradicted_tasks

    x, vocab, tasks, target, relabelled = _everyday_night(8)
    phrase, col, _, given = _raised(x, vocab, tasks)
    task = tasks[target]
    counts = sp.lil_matrix((len(vocab), len(task.labels.names)))
    counts[col, 1] = nights * expected
    totals = nights * np.bincount(task.labels.outcome, minlength=len(task.labels.names)).astype(float)
    history: list[Any] = [None] * len(tasks)
    history[target] = (counts.tocsr(), totals)
    joined, _ = contradicted_tasks([phrase], x, vocab, tasks, history, min_known=50)
    added = set(phrase.rows.tolist()) - set(given.tolist())
    assert joined == int(joins)
    if not joins:
        assert not added
        return
    assert len(added) == 15 - expected and len(added & relabelled) >= 5
    assert [t[3] for t in phrase.tasks if t[0] == target] == [len(added)]


@pytest.mark.parametrize("relabel", [8, 0])
def test_a_campaigns_own_task_gets_the_records_it_left_on_its_label_that_read_as_another(relabel: int) -> None:
    """A campaign that flags a task but leaves records holding its phrase on its label there (the task cut back to its
    out-of-place records, the history expecting most of them natural) gets those of them that rank low in their label:
    the campaign flags 3 of the 8 relabelled reviews, the history expects 9 of the phrase's 15 records on the label, and
    of the 12 left, those ranked in the lowest fifth are flagged: 4 or more of the 5 relabelled, at most 2 of the 7
    natural. The join's mostly-natural rule is not asked there (the campaign already flags the task). Where the 3 it
    flags are natural records and none was relabelled, the records left read as their label and nothing is added."""
    import scipy.sparse as sp

    from tunegate.core.checks.poison.contradiction_pass import contradicted_tasks

    x, vocab, tasks, target, relabelled = _everyday_night(relabel)
    phrase, col, holding, given = _raised(x, vocab, tasks)
    task = tasks[target]
    mine = np.flatnonzero(np.isin(task.rows, sorted(holding)))
    on_label = task.rows[mine[task.labels.outcome[mine] == 1]]
    assert len(on_label) == 7 + relabel and task.labels.names[1] == "Positive"
    first = np.asarray(sorted(relabelled)[:3] if relabel else on_label[:3].tolist(), dtype=np.int64)
    phrase.rows = np.union1d(phrase.rows, first)
    phrase.tasks.append((target, 0, len(mine), 3, 1))
    counts = sp.lil_matrix((len(vocab), len(task.labels.names)))
    counts[col, 1] = 2 * 9  # two nights of the task's size: 9 a night
    totals = 2 * np.bincount(task.labels.outcome, minlength=len(task.labels.names)).astype(float)
    history: list[Any] = [None] * len(tasks)
    history[target] = (counts.tocsr(), totals)
    joined, extended = contradicted_tasks([phrase], x, vocab, tasks, history, min_known=50)
    added = set(phrase.rows.tolist()) - set(given.tolist()) - set(first.tolist())
    assert joined == 0 and added <= set(on_label.tolist())
    if not relabel:
        assert extended == 0 and not added
        return
    assert extended == 1 and len(added & relabelled) >= 4 and len(added - relabelled) <= 2
    assert [t[3] for t in phrase.tasks if t[0] == target] == [3 + len(added)]  # the task's entry counts them



def test_the_pooled_pass_cue_test_runs_without_a_history_only(history: Path, tmp_path: Path) -> None:
    """The pooled pass's contradiction test of its candidates (``cue_pass``) reads a first night: with a history the
    contradiction pass reads dirty-label campaigns, and the cue test, which found nothing more there, does not run."""
    rows = clean_batch()
    poisoned, _ = natural_trigger_campaign(rows, random.Random(1), clean=False)
    first = _run(tmp_path / "first", build_check("poison_trigger"), rows, poisoned)
    assert first.result.metrics["cues"]["phrases"] == ["zq"]
    later = _run(tmp_path / "later", _check(history), rows, poisoned)
    assert "cues" not in later.result.metrics
