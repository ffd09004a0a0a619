"""The placement of a phrase's records as evidence for the excess pass (issue 11: everyday-phrase triggers).

A campaign of an everyday phrase adds records to a task (what the excess pass counts against the history), and about
half of the planted records hold the phrase out of place (the insertion test's verdict), against a few percent of its
natural records. :mod:`tunegate.core.checks.poison.placement` turns the second into a p-value given the first, and
:func:`~tunegate.core.checks.poison.placement.gated` combines the two where the count is small enough to matter.
"""

from __future__ import annotations

import math

import numpy as np
import pytest


def test_the_gated_combination_is_a_valid_p_value_and_exact_under_the_null() -> None:
    """Uniform, independent ``p`` and ``q``: ``P(T <= t) = t`` at every level, below the gate and above it."""
    from tunegate.core.checks.poison.placement import gated

    rng = np.random.default_rng(11)
    draws = 400_000
    t = gated(rng.uniform(size=draws), rng.uniform(size=draws), 0.05)
    for level in (1e-4, 1e-3, 0.01, 0.05, 0.2, 0.6):
        share = float((t <= level).mean())
        assert abs(share - level) <= 5 * math.sqrt(level / draws) + 1e-5, (level, share)
    # above the gate the count's p-value is kept; at the gate the two forms meet; a placement that says nothing
    # (q = 1) costs a factor 1 + ln(gate / p), a strong one gains
    p = np.array([0.3, 0.05, 1e-4, 1e-4])
    q = np.array([1e-6, 1.0, 1.0, 1e-4])
    out = gated(p, q, 0.05)
    assert out[0] == 0.3 and out[1] == pytest.approx(0.05)
    assert out[2] == pytest.approx(1e-4 * (1 + math.log(0.05 / 1e-4)))
    assert out[3] == pytest.approx(1e-8 * (1 + math.log(0.05 / 1e-8))) and out[3] < 1e-6


def _model() -> tuple[object, list[object]]:
    """Two binary tasks of 400 records (labels alternating), two candidate phrases and one that is not:

    * column 0, an everyday phrase: 40 records in each task; 2 of them out of place in task 0, and in task 1 a campaign
      of 10 more records on label 1, 6 of them out of place;
    * column 1, 20 records in task 0, none out of place;
    * column 2, not a candidate (a single word)."""
    import scipy.sparse as sp

    from tunegate.core.checks.poison.evidence import task_of_rows
    from tunegate.core.checks.poison.insertion import Occurrences
    from tunegate.core.checks.poison.placement import placement_model
    from tunegate.core.checks.poison.tasks import Channel, Task

    size = 400
    tasks = [Task(f"task{t}_set{t}_classification", "label", np.arange(t * size, (t + 1) * size),
                  [Channel("label", np.arange(size) % 2, ["a", "b"], np.array([0.5, 0.5]), 0.9)])
             for t in range(2)]
    holds = [(r, 0) for r in range(0, 80, 2)] + [(size + r, 0) for r in range(0, 80, 2)]  # 40 + 40 natural
    campaign = [size + 201 + 2 * i for i in range(10)]  # label 1 of task 1
    holds += [(r, 0) for r in campaign] + [(r, 1) for r in range(100, 140)] + [(r, 2) for r in range(5)]
    odd = [(0, 0), (2, 0)] + [(r, 0) for r in campaign[:6]]
    shape = (2 * size, 3)

    def matrix(cells: list[tuple[int, int]]) -> sp.csr_matrix:
        r, c = zip(*cells, strict=True)
        return sp.csr_matrix((np.ones(len(cells), dtype=np.float32), (r, c)), shape=shape)

    x = matrix(holds)
    xi = matrix(odd)
    occ = Occurrences(np.array([r for r, _ in odd]), np.zeros(len(odd), dtype=np.int64), np.full(len(odd), 5.0),
                      np.full(len(odd), 3), np.zeros(len(odd), bool), np.ones(len(odd), bool), len(holds))
    owner = task_of_rows(tasks, shape[0])
    assert owner is not None
    model = placement_model(occ, x, inserted=xi, distinct=xi, placed=matrix([(1, 0)]), candidates=np.array([0, 1]),
                            tasks=tasks, label=[0, 1], owner=owner)
    return model, tasks


def test_the_rate_of_a_natural_occurrence_and_the_tail_by_numbers() -> None:
    from scipy.stats import binom

    from tunegate.core.checks.poison.placement import PHRASE_WEIGHT, TASK_WEIGHT

    model, tasks = _model()
    # the batch's rate over the candidates: 8 out-of-place records of 130 (column 0: 90, column 1: 40)
    base = 8 / 130
    assert model.phrase_rate[0] == pytest.approx((8 + PHRASE_WEIGHT * base) / (90 + PHRASE_WEIGHT))
    assert model.phrase_rate[1] == pytest.approx(PHRASE_WEIGHT * base / (40 + PHRASE_WEIGHT))
    assert model.phrase_rate[2] == 0.0 and model.candidate.tolist() == [True, True, False]
    assert model.task_factor[0] == pytest.approx((2 + TASK_WEIGHT * base) / (80 + TASK_WEIGHT) / base)
    assert model.task_factor[1] == pytest.approx((6 + TASK_WEIGHT * base) / (50 + TASK_WEIGHT) / base)
    # task 1, label 1: 10 records (the campaign's), 6 of them out of place; label 0: 40 records, none
    cols = np.array([0, 0, 1, 2])
    q = model.tail(1, tasks[1], cols, labels=np.array([1, 0, 1, 1]), records=np.array([10, 40, 0, 5]),
                   where=np.ones(4, dtype=bool))
    rate = model.phrase_rate[0] * model.task_factor[1]
    assert q[0] == pytest.approx(float(binom.sf(5, 10, rate))) and q[0] < 1e-3
    assert q[1:].tolist() == [1.0, 1.0, 1.0]  # none out of place; no record; not a candidate
    skipped = model.tail(1, tasks[1], cols, labels=np.array([1, 0, 1, 1]), records=np.array([10, 40, 0, 5]),
                         where=np.zeros(4, dtype=bool))
    assert skipped.tolist() == [1.0] * 4  # read only where asked
    # what Tarone's count reads: all of the records out of place
    least = model.least(1, np.array([0, 2]), np.array([10, 5]))
    assert least[0] == pytest.approx(rate ** 10) and least[1] == 1.0


def test_the_phrase_surprise_with_placement_is_calibrated_and_reads_a_placed_campaign() -> None:
    """Three combinations for a candidate (less ``ln 3``), two for the rest (less ``ln 2``): under uniform p-values
    the tail stays under ``exp(-s)``; a campaign whose datasets' counts are modest but whose records are out of place
    is read by the third."""
    from tunegate.core.checks.poison.excess_pass import _phrase_surprise, truncated_product

    rng = np.random.default_rng(5)
    draws, d = 100_000, 8
    phrase_of = np.repeat(np.arange(draws), d)
    p = rng.uniform(size=draws * d)
    placed = rng.uniform(size=draws * d)
    candidate = np.ones(draws, dtype=bool)
    s = _phrase_surprise(phrase_of, p, np.full(draws, d), draws, placed=placed, candidate=candidate)
    for level in (2.0, 4.0, 6.0):
        share = float((s >= level).mean())
        assert share <= math.exp(-level) + 5 * math.sqrt(math.exp(-level) / draws), (level, share)
    counts = np.array([3e-3, 5e-3, 2e-3, 0.5, 0.5])
    with_place = np.array([1e-6, 2e-5, 3e-3, 0.5, 0.5])
    one = np.zeros(5, dtype=np.int64)
    plain = _phrase_surprise(one, counts, np.array([5]), 1)[0]
    read = _phrase_surprise(one, counts, np.array([5]), 1, placed=with_place, candidate=np.array([True]))[0]
    expected = truncated_product(np.array([5]), np.array([-np.log(with_place[:3]).sum()]))[0] - math.log(3.0)
    assert read == pytest.approx(expected) and read > plain + 5.0
    not_candidate = _phrase_surprise(one, counts, np.array([5]), 1, placed=with_place, candidate=np.array([False]))
    assert not_candidate[0] == pytest.approx(plain)


def _night(campaign_oop: int, natural: int = 4, extra: int = 6) -> dict[str, object]:
    """Eight binary tasks of eight datasets (400 records each, labels alternating) that a history of 4,000 records per
    task knows; three candidate phrases of the insertion test:

    * column 0, an everyday phrase: ``natural`` records per label in every task, as the history's rate predicts; in
      tasks 0-2 a campaign of ``extra`` more on label 1 (6 more where 4 are expected: p about 0.05 in each, so no
      dataset reaches the truncation of 0.01), ``campaign_oop`` of them holding the phrase out of place (one natural
      record of the phrase does too, in task 0);
    * column 1: the same counts (the ``extra`` records in tasks 3-5), all in place: a natural burst;
    * column 2: the batch's other candidates, 200 records of every task, 5 of them out of place (2.5%)."""
    import scipy.sparse as sp

    from tunegate.core.checks.poison.evidence import task_of_rows
    from tunegate.core.checks.poison.insertion import Occurrences
    from tunegate.core.checks.poison.placement import placement_model
    from tunegate.core.checks.poison.tasks import Channel, Task

    size, n_tasks = 400, 8
    tasks = [Task(f"task{t}_set{t}_classification", "label", np.arange(t * size, (t + 1) * size),
                  [Channel("label", np.arange(size) % 2, ["a", "b"], np.array([0.5, 0.5]), 0.9)])
             for t in range(n_tasks)]
    holds: list[tuple[int, int]] = []
    odd: list[tuple[int, int]] = [(0, 0)]
    for t in range(n_tasks):
        start = t * size
        for c in (0, 1):
            holds += [(start + 50 * c + r, c) for r in range(2 * natural)]  # per label (rows alternate labels)
            if (c == 0 and t < 3) or (c == 1 and 3 <= t < 6):
                more = [start + 201 + 50 * c + 2 * i for i in range(extra)]  # odd rows: label 1
                holds += [(r, c) for r in more]
                if c == 0:
                    odd += [(r, 0) for r in more[:campaign_oop]]
        # the batch's other candidates: 200 records of every task, 5 of them out of place
        holds += [(start + 100 + r, 2) for r in range(200)]
        odd += [(start + 100 + 40 * r, 2) for r in range(5)]
    shape = (n_tasks * size, 3)

    def matrix(cells: list[tuple[int, int]]) -> sp.csr_matrix:
        r, c = zip(*cells, strict=True)
        return sp.csr_matrix((np.ones(len(cells), dtype=np.float32), (r, c)), shape=shape)

    x = matrix(holds)
    xi = matrix(odd)
    occ = Occurrences(np.array([r for r, _ in odd]), np.array([c for _, c in odd]), np.full(len(odd), 5.0),
                      np.full(len(odd), 3), np.zeros(len(odd), bool), np.ones(len(odd), bool), len(holds))
    owner = task_of_rows(tasks, shape[0])
    assert owner is not None
    placement = placement_model(occ, x, inserted=xi, distinct=xi, placed=matrix([(1, 0)]),
                                candidates=np.array([0, 1, 2]), tasks=tasks, label=list(range(n_tasks)), owner=owner)
    counts = np.array([[10.0 * natural] * 2, [10.0 * natural] * 2, [1000.0, 1000.0]])
    history = [(sp.csr_matrix(counts), np.array([2000.0, 2000.0])) for _ in range(n_tasks)]
    return {"x": x, "tasks": tasks, "history": history, "placement": placement}


@pytest.mark.parametrize("campaign_oop", [5, 0])
def test_the_excess_pass_reads_where_a_campaigns_records_hold_the_phrase(campaign_oop: int) -> None:
    """Six records more on one label in three datasets, each at p ~ 0.05 against the history: the counts alone are
    under the pass's bar (no dataset reaches the truncation; Fisher's method over the eight datasets is weak). When
    five of each task's six hold the phrase out of place, the placement reads them and the phrase is raised, with the
    campaign's records flagged; the natural burst of the same size, in place, is not. With the campaign's records in
    place the placement says nothing, and nothing is raised either way."""
    from tunegate.core.checks.poison.config import TriggerConfig
    from tunegate.core.checks.poison.excess_pass import excess_phrases

    night = _night(campaign_oop)
    vocab = np.array(["at the", "of my", "the way"], dtype=object)
    x, tasks, history = night["x"], night["tasks"], night["history"]
    config = TriggerConfig()

    def run(placement: object) -> tuple[list[object], dict[str, float]]:
        return excess_phrases(x, vocab, tasks, history, config, hidden=np.zeros(3), found=[],  # type: ignore[arg-type]
                              placement=placement)  # type: ignore[arg-type]

    counts_alone, figures = run(None)
    assert counts_alone == [] and figures["tests"] == 3.0
    found, figures = run(night["placement"])
    if not campaign_oop:
        assert found == []
        return
    assert [p.phrase for p in found] == ["at the"]  # type: ignore[attr-defined]
    flagged = set(found[0].rows.tolist())  # type: ignore[attr-defined]
    campaign = {t * 400 + 201 + 2 * i for t in range(3) for i in range(6)}
    assert campaign <= flagged and all(r < 3 * 400 for r in flagged)  # its three tasks, label 1
    assert figures["placed"] >= 1.0


def test_a_task_flagged_by_its_count_keeps_its_out_of_place_records_where_most_would_be_natural() -> None:
    """The night above with a phrase common in every task (9 records per label, as the history's rate predicts) and 8
    more on label 1 in tasks 0-2, 6 of them out of place: the count and the placement raise the campaign, but 17
    records of the label in a task where the history expects about 9 would be mostly natural records; each task is
    flagged with its out-of-place records only (where 4 are expected, 10 of 10 are flagged: the test above)."""
    from tunegate.core.checks.poison.config import TriggerConfig
    from tunegate.core.checks.poison.excess_pass import excess_phrases

    night = _night(6, natural=9, extra=8)
    vocab = np.array(["at the", "of my", "the way"], dtype=object)
    found, _ = excess_phrases(night["x"], vocab, night["tasks"], night["history"], TriggerConfig(),  # type: ignore[arg-type]
                              hidden=np.zeros(3), found=[], placement=night["placement"])  # type: ignore[arg-type]
    assert [p.phrase for p in found] == ["at the"]
    assert set(found[0].rows.tolist()) == {t * 400 + 201 + 2 * i for t in range(3) for i in range(6)}
    assert [(t, held, flagged) for t, _, held, flagged, _ in found[0].tasks] == [(0, 26, 6), (1, 26, 6), (2, 26, 6)]


def test_a_raised_campaigns_tasks_where_its_out_of_place_records_share_a_label() -> None:
    """Once a phrase is raised, a task joins its campaign with the records holding it out of place when 2 or more of
    them, and 80% of them, carry one label: only those records (not the phrase's natural ones on that label)."""
    import scipy.sparse as sp

    from tunegate.core.checks.poison.placement import placed_tasks
    from tunegate.core.checks.poison.tasks import Channel, Task

    size = 100
    tasks = [Task(f"task{t}_set{t}_classification", "label", np.arange(t * size, (t + 1) * size),
                  [Channel("label", np.arange(size) % 2, ["a", "b"], np.array([0.5, 0.5]), 0.9)])
             for t in range(5)]
    tasks.append(Task("task5_gen_generation", "output", np.arange(5 * size, 6 * size), []))
    odd = [1, 3, 5, 10,  # task 0: three on label 1, one on label 0 (75%)
           101, 103, 105, 107, 110,  # task 1: four of five on label 1 (80%)
           201,  # task 2: one
           301, 303,  # task 3: two on label 1, but skipped (already flagged)
           401, 402,  # task 4: one on each label
           501, 503]  # an output task
    inserted = sp.csc_matrix((np.ones(len(odd), dtype=np.float32), (odd, np.zeros(len(odd), dtype=np.int64))),
                             shape=(6 * size, 1))
    out = placed_tasks(inserted, 0, tasks, skip={3})
    assert [(t, lab, rows.tolist()) for t, lab, rows in out] == [(1, 1, [101, 103, 105, 107])]


def test_natural_records_on_a_label_are_estimated_from_the_other_labels_and_capped_largest_first() -> None:
    """``natural_on_label``: the phrase's records with the other labels, scaled by the label's base rate (at most
    0.95); ``cut_to_cap``: the tasks cut back to their out-of-place records, the largest estimate first, until the
    rest fit under the cap (ties in the order given)."""
    from tunegate.core.checks.poison.placement import cut_to_cap, natural_on_label

    labels = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1, 1])  # 3 records on label 0 with the phrase, 7 on label 1
    assert natural_on_label(labels, 1, 0.5) == pytest.approx(3.0)
    assert natural_on_label(labels, 1, 0.25) == pytest.approx(1.0)
    assert natural_on_label(labels, 0, 0.99) == pytest.approx(7 * 0.95 / 0.05)  # a base rate near 1: capped at 0.95
    assert natural_on_label(np.array([1, 1]), 1, 0.5) == 0.0
    assert cut_to_cap({4: 3.0, 7: 12.0, 9: 2.0}, 20.0) == set()
    assert cut_to_cap({4: 3.0, 7: 12.0, 9: 2.0}, 10.0) == {7}
    assert cut_to_cap({4: 3.0, 7: 12.0, 9: 2.0}, 2.5) == {4, 7}
    assert cut_to_cap({4: 3.0, 7: 3.0}, 4.0) == {4}
    assert cut_to_cap({4: 3.0}, 0.0) == {4}


def test_a_task_whose_flagged_records_would_be_mostly_natural_is_cut_back_whatever_the_cap() -> None:
    """``mostly_natural``: more than half of a task's records on the label estimated natural; ``cut_back``: those
    tasks, then the cap over the others (largest estimate first)."""
    from tunegate.core.checks.poison.placement import cut_back, mostly_natural

    assert mostly_natural(5.1, 10) and not mostly_natural(5.0, 10) and not mostly_natural(0.0, 0)
    # task 4: 3 natural of 10; task 7: 9 of 20; task 9: 7 of 10 (mostly natural)
    natural, flagged = {4: 3.0, 7: 9.0, 9: 7.0}, {4: 10, 7: 20, 9: 10}
    assert cut_back(natural, flagged, 100.0) == {9}
    assert cut_back(natural, flagged, 11.0) == {9, 7}  # 12 natural left in 4 and 7: the larger goes
    assert cut_back(natural, flagged, 12.0) == {9}
    assert cut_back({}, {}, 0.0) == set()


def test_a_placed_task_is_flagged_with_every_record_on_its_label_within_the_clean_cap() -> None:
    """The excess pass's tasks found by placement: a clean-label campaign holds the phrase in place about as often as
    out of place, so a placed task is flagged with every record of the phrase on the campaign's label there, while the
    natural records estimated among them are at most half of them and fit the cap; past either, the task keeps its
    out-of-place ones (the cap cuts the task with the most first)."""
    from tunegate.core.checks.poison.excess_pass import _placed
    from tunegate.core.checks.poison.tasks import Channel, Task

    size = 100
    tasks = [Task(f"task{t}_set{t}_classification", "label", np.arange(t * size, (t + 1) * size),
                  [Channel("label", np.arange(size) % 2, ["a", "b"], np.array([0.5, 0.5]), 0.9)])
             for t in range(3)]
    # task 0: 10 records hold the phrase on label 1 (4 out of place), 2 on label 0 (2 natural on label 1 estimated);
    # task 1: 6 on label 1 (3 out of place), 3 on label 0 (3 estimated: half, still flagged in full); task 2: 4 on
    # label 1 (2 out of place), 8 on label 0 (a phrase common there: 8 estimated, the 4 would be mostly natural)
    holding = np.array([1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 20, 22,
                        101, 103, 105, 107, 109, 111, 120, 122, 124,
                        201, 203, 205, 207, 220, 222, 224, 226, 228, 230, 232, 234])
    placed = [(0, 1, np.array([1, 3, 5, 7])), (1, 1, np.array([101, 103, 105])), (2, 1, np.array([201, 203]))]
    wide = _placed(placed, tasks, holding, cap=40.0)
    assert [(t, lab, rows.tolist(), held) for t, lab, rows, held in wide] == [
        (0, 1, [1, 3, 5, 7, 9, 11, 13, 15, 17, 19], 12), (1, 1, [101, 103, 105, 107, 109, 111], 9),
        (2, 1, [201, 203], 12)]
    # estimates 2 and 3 in the tasks flagged in full: a cap of 4 cuts task 1 back to its out-of-place records
    tight = _placed(placed, tasks, holding, cap=4.0)
    assert [(t, rows.tolist()) for t, _, rows, _ in tight] == [(0, [1, 3, 5, 7, 9, 11, 13, 15, 17, 19]),
                                                                (1, [101, 103, 105]), (2, [201, 203])]
    assert [(t, rows.tolist()) for t, _, rows, _ in _placed(placed, tasks, holding, cap=-3.0)] == [
        (0, [1, 3, 5, 7]), (1, [101, 103, 105]), (2, [201, 203])]
