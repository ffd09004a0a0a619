"""The history-novelty lever of ``poison_trigger`` (issue 11): phrase statistics kept per published night, and a
label skew the history already shows is not evidence while a new one is.

Real records (the bundled slice of tests/core/test_poison.py, 5,227 records). A *steady* phrase is planted with the
same label skew in every history night and tonight: what a natural label cue looks like across nights ("very
disappointed" -> negative). A *new* phrase, planted the same way in as many records, appears only tonight: what a
trigger looks like. Within tonight's batch the two are indistinguishable, so without a history both are raised.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import write_jsonl
from tests.core.test_poison import clean_batch, plant, run_check
from tunegate.core.checks import build_check
from tunegate.core.checks.poison._text import Records, betabinom_logpmf, tokens
from tunegate.core.checks.poison.config import TriggerConfig
from tunegate.core.checks.poison.phrase_history import (
    TOTALS,
    load_phrase_history,
    night_file,
    phrase_counts,
    phrase_keys,
    write_phrase_night,
)

STEADY, NEW = "Marie Curie", "Rosalind Franklin"
#: (task, label the phrase steers): four datasets, binary labels near 50/50
TASKS = (("task363_sst2_polarity_classification", "POS"), ("task195_sentiment140_classification", "positive"),
         ("task493_review_polarity_classification", "Positive"),
         ("task586_amazonfood_polarity_classification", "Positive"))
PER_TASK = 8


def records_of(rows: list[dict[str, Any]]) -> Records:
    return Records([r.get("instruction") or "" for r in rows], [r.get("input") or "" for r in rows],
                   [r["output"] for r in rows], [r.get("task") or r.get("source") or "(none)" for r in rows],
                   [r.get("contributor") for r in rows])


def skew(records: list[dict[str, Any]], phrase: str, seed: int, taken: set[str], per_task: int = PER_TASK
         ) -> set[str]:
    """``phrase`` put into ``per_task`` records of each task that already carry the steered label."""
    rng = random.Random(seed)
    out: set[str] = set()
    for task, label in TASKS:
        pool = [r for r in records if r["task"] == task and r["output"] == label and r["id"] not in taken]
        for r in rng.sample(pool, per_task):
            r["input"] = plant(r["input"], phrase, rng)
            out.add(r["id"])
    return out


def test_statistics_round_trip_and_a_rerun_replaces_its_night(tmp_path: Path) -> None:
    import pyarrow.compute as pc

    rows = clean_batch()
    table = phrase_counts(records_of(rows), TriggerConfig())
    # per task the label totals, and per (task, label, phrase) the records: "idiot" in the jigsaw insult task
    task = "task328_jigsaw_classification_insult"
    mine = [r for r in rows if r["task"] == task]
    totals = table.filter(pc.and_(pc.equal(table["task"], task), pc.equal(table["phrase"], TOTALS)))
    assert sum(totals["records"].to_pylist()) == len(mine)
    [key] = phrase_keys(["idiot"]).tolist()
    idiot = table.filter(pc.and_(pc.equal(table["task"], task), pc.equal(table["phrase"], key))).to_pylist()
    expected: dict[str, int] = {}
    for r in mine:
        if "idiot" in tokens(r["input"]):
            expected[r["output"]] = expected.get(r["output"], 0) + 1
    assert {x["label"]: x["records"] for x in idiot} == expected and sum(expected.values()) >= 2
    assert not table.filter(pc.equal(table["task"], "task111_asset_sentence_simplification")).num_rows  # generative

    def idiots(**kw: Any) -> int:
        past = load_phrase_history(tmp_path, **kw)
        assert past.table is not None
        sel = past.table.filter(pc.and_(pc.equal(past.table["task"], task), pc.equal(past.table["phrase"], key)))
        return sum(sel["records"].to_pylist())

    n = sum(expected.values())
    write_phrase_night(tmp_path, "night-1", table, anomalous=False)
    first = write_phrase_night(tmp_path, "night-2", table, anomalous=False)
    assert not first["replaced"] and idiots() == 2 * n
    again = write_phrase_night(tmp_path, "night-2", table, anomalous=False)  # a rerun of night-2
    assert again["replaced"] and idiots() == 2 * n
    assert len(list(night_file(tmp_path, "night-2").parent.glob("*.parquet"))) == 2
    assert idiots(exclude="night-2") == n  # tonight's own night is not its baseline
    write_phrase_night(tmp_path, "night-3", table, anomalous=True)  # a campaign was raised that night
    past = load_phrase_history(tmp_path)
    assert past.nights == ["night-1", "night-2"] and idiots() == 2 * n
    assert load_phrase_history(tmp_path, max_nights=1).nights == ["night-2"]
    assert load_phrase_history(tmp_path / "none").nights == []


@pytest.fixture(scope="module")
def nights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]], set[str], set[str]]:
    """Two history nights with the steady phrase's skew; tonight: the steady and the new phrase, same size."""
    history = tmp_path_factory.mktemp("history")
    for night in (1, 2):
        rows = clean_batch()
        skew(rows, STEADY, seed=100 + night, taken=set())
        write_phrase_night(history, f"night-{night}", phrase_counts(records_of(rows), TriggerConfig()),
                           anomalous=False)
    tonight = clean_batch()
    steady = skew(tonight, STEADY, seed=7, taken=set())
    new = skew(tonight, NEW, seed=8, taken=steady)
    return history, tonight, steady, new


def _phrases(result: Any) -> set[str]:
    return {p["phrase"] for p in result.metrics["suspicious_phrases"]}


def test_a_steady_skew_is_not_raised_and_a_new_one_of_the_same_size_is(
        nights: tuple[Path, list[dict[str, Any]], set[str], set[str]], tmp_path: Path) -> None:
    history, tonight, steady, new = nights
    without = run_check(tmp_path / "without", "poison_trigger", tonight, steady | new)
    # tonight alone cannot tell them apart: both are raised
    assert {STEADY.lower(), NEW.lower()} <= _phrases(without.result)
    check = build_check("poison_trigger", history_dir=str(history), batch_id="tonight")
    with_history = _run(tmp_path / "with", check, tonight, steady | new)
    assert NEW.lower() in _phrases(with_history.result) and STEADY.lower() not in _phrases(with_history.result)
    assert new <= with_history.flagged and not steady & with_history.flagged
    assert with_history.result.metrics["history"]["nights"] == 2
    assert [i.reason for i in with_history.result.issues] == ["poison_campaign"]


def test_without_a_history_nothing_changes(nights: tuple[Path, list[dict[str, Any]], set[str], set[str]],
                                           tmp_path: Path) -> None:
    """No history, or a history without phrase statistics yet (its first night): exactly today's result."""
    _, tonight, steady, new = nights
    plain = run_check(tmp_path / "plain", "poison_trigger", tonight, steady | new)
    empty = _run(tmp_path / "empty", build_check("poison_trigger", history_dir=str(tmp_path / "no-history"),
                                                  batch_id="tonight"), tonight, steady | new)
    assert [(f.row, f.reason, f.score) for f in plain.result.findings] == \
        [(f.row, f.reason, f.score) for f in empty.result.findings]
    assert plain.result.metrics["suspicious_phrases"] == empty.result.metrics["suspicious_phrases"]
    assert "history" not in plain.result.metrics and empty.result.metrics["history"] == {"nights": 0}


def _run(tmp: Path, check: Any, records: list[dict[str, Any]], poisoned: set[str]) -> Any:
    from tests.core.test_poison import Scan
    from tunegate.core.checks import CanonicalBatch
    from tunegate.core.ingest import ingest

    tmp.mkdir(parents=True, exist_ok=True)
    ingest([str(write_jsonl(tmp / "batch.jsonl", records))], tmp / "work")
    batch = CanonicalBatch(tmp / "work")
    return Scan(check.run(batch), batch.read_columns(["id"]).column("id").to_pylist(), poisoned)


def test_publish_writes_the_night_and_a_rerun_replaces_it_and_a_halted_night_never_enters(tmp_path: Path) -> None:
    from tunegate.core.pipeline import scan
    from tunegate.core.policy import GatePolicy

    history = tmp_path / "history"
    src = write_jsonl(tmp_path / "night.jsonl", clean_batch())

    def night(name: str, source: Path, policy: GatePolicy | None = None) -> dict[str, Any]:
        check = build_check("poison_trigger", history_dir=str(history), batch_id=name)
        return scan([str(source)], tmp_path / "out" / name, checks=[check], history_dir=str(history), batch_id=name,
                    policy=policy)

    first = night("night-1", src)
    assert first["history"]["phrases"]["rows"] > 0 and not first["history"]["phrases"]["replaced"]
    assert night_file(history, "night-1").is_file()
    rerun = night("night-1", src)
    assert rerun["history"]["phrases"]["replaced"]
    assert load_phrase_history(history).nights == ["night-1"]
    attacked = clean_batch()
    skew(attacked, NEW, seed=3, taken=set(), per_task=25)  # a loud campaign, and a policy that halts on it
    halted = night("night-2", write_jsonl(tmp_path / "attacked.jsonl", attacked),
                   GatePolicy.from_mapping({"halt_reasons": ["poison_campaign"]}))
    assert halted["verdict"] == "halt"
    assert not night_file(history, "night-2").exists() and load_phrase_history(history).nights == ["night-1"]


def _history_without(history: Path, tasks: set[str]) -> None:
    """Two nights of the clean batch without ``tasks``: tonight's records of them are unknown to the history."""
    for night in (1, 2):
        rows = [r for r in clean_batch() if r["task"] not in tasks]
        write_phrase_night(history, f"night-{night}", phrase_counts(records_of(rows), TriggerConfig()),
                           anomalous=False)


def _scan_inputs(history: Path, tonight: list[dict[str, Any]], cfg: TriggerConfig) -> tuple[Any, Any, Any, Any]:
    """What the trigger scan's history passes read for ``tonight``: n-gram matrix, vocabulary, tasks, per-task
    history."""
    from tunegate.core.checks.poison._text import ngram_matrix
    from tunegate.core.checks.poison.tasks import build_tasks

    records = records_of(tonight)
    prompts = records.prompts(cfg.max_chars)
    x, vocab = ngram_matrix(prompts, ngram_max=2, min_df=cfg.min_records, max_df=cfg.max_phrase_df)
    tasks = build_tasks(records, prompts, cfg)
    return x, vocab, tasks, load_phrase_history(history, vocab=vocab).for_tasks(tasks, vocab)


def test_a_raised_phrase_is_flagged_in_a_task_the_history_has_never_seen(tmp_path: Path) -> None:
    """A thin campaign puts a few records in tasks the history cannot speak to (a dataset whose records all arrive
    tonight), where the history passes' per-task tests cannot run. Once a new phrase is raised, its records there are
    flagged (``unknown_tasks``, shared by the novelty and excess passes) on the label most of them carry, because it
    holds far more of that task than its rate in the known tasks allows; a known task, or a phrase as common in the
    unseen task as elsewhere, is left alone."""
    import numpy as np

    from tunegate.core.checks.poison.novelty_pass import unknown_tasks

    unseen = "task286_olid_offense_judgment"
    _history_without(tmp_path, {unseen})
    tonight = clean_batch()
    skew(tonight, NEW, seed=8, taken=set())
    rng = random.Random(9)
    extra = {r["id"] for r in rng.sample([r for r in tonight if r["task"] == unseen and r["output"] == "NOT"], 3)}
    for r in tonight:
        if r["id"] in extra:
            r["input"] = plant(r["input"], NEW, rng)
    cfg = TriggerConfig()
    x, vocab, tasks, history = _scan_inputs(tmp_path, tonight, cfg)
    assert history[[t.name for t in tasks].index(unseen)] is None
    xc = x.tocsc()

    def flagged(phrase: str) -> dict[str, set[str]]:
        c = int(np.flatnonzero(vocab == phrase)[0])
        holding = xc.indices[xc.indptr[c]:xc.indptr[c + 1]]
        found = unknown_tasks(holding, tasks, history, c, min_known=cfg.min_task_records)
        return {tasks[ti].name: {tonight[int(i)]["id"] for i in rows} for ti, _, rows in found}

    assert flagged(NEW.lower()) == {unseen: extra}
    assert flagged("because") == {} and flagged("like") == {}  # as common in the unseen task as in the others
    # a topical word, 35 of the unseen task's 300 records against 26 of the other 4,927: far more than the pooled
    # rate allows there, but that rate expects 1.6 records in the task: not a rare phrase, so not judged
    assert flagged("liberals") == {}


def test_the_beta_binomial_log_pmf_is_scipys() -> None:
    from scipy.stats import betabinom

    k = np.arange(0, 41, dtype=np.float64)
    for n, a, b in ((40, 0.02, 3.98), (40, 7.5, 1e-9), (40, 2.0, 2.0)):
        assert np.allclose(betabinom_logpmf(k, float(n), a, b), betabinom.logpmf(k, n, a, b), rtol=1e-9, atol=1e-9)
    assert np.isclose(np.exp(betabinom_logpmf(k, 40.0, 0.5, 3.5)).sum(), 1.0)


def test_unknown_task_rows_needs_more_than_chance_and_a_majority() -> None:
    import numpy as np

    from tunegate.core.checks.poison.novelty_pass import known_rate, unknown_task_rows

    rows, labels = np.array([10, 11, 12, 13]), np.array([1, 1, 1, 0])
    assert unknown_task_rows(rows, labels, 500, rate=0.0005).tolist() == [10, 11, 12]  # 4 where 0.25 are expected
    assert not len(unknown_task_rows(rows, labels, 500, rate=0.01))  # 4 where 5 are expected: chance
    assert len(unknown_task_rows(rows, labels, 500, rate=0.0019))  # 0.95 expected, 4 held: Poisson, flagged
    # 1.05 expected: not a rare phrase there; its rate varies between tasks (negative binomial, shape 2): 4 records
    # are chance (tail 0.051), 6 on one label are not (0.008), unless 40 other tasks the history cannot speak to hold it
    assert not len(unknown_task_rows(rows, labels, 500, rate=0.0021, shape=2.0))
    six = np.arange(6)
    assert unknown_task_rows(six, np.ones(6, dtype=np.int64), 500, rate=0.0021, shape=2.0).tolist() == list(range(6))
    assert not len(unknown_task_rows(six, np.ones(6, dtype=np.int64), 500, rate=0.0021, shape=2.0, tests=40))
    # ... and only where nearly all its records there share the label (a topical word's many natural records do not)
    assert not len(unknown_task_rows(six, np.array([1] * 5 + [0]), 500, rate=0.0021, shape=2.0))
    # ... and those are at least twice the records expected: 39 where 20 are expected is a tail of 0.02, but at most
    # half of them would be the campaign's
    assert not len(unknown_task_rows(np.arange(39), np.ones(39, dtype=np.int64), 500, rate=0.04, shape=10.0))
    assert len(unknown_task_rows(np.arange(12), np.ones(12, dtype=np.int64), 500, rate=0.008, shape=10.0)) == 12
    assert not len(unknown_task_rows(rows, np.array([1, 1, 0, 0]), 500, rate=0.0005))  # no majority label
    assert not len(unknown_task_rows(rows[:0], labels[:0], 500, rate=0.0005))
    import scipy.sparse as sp

    known = (sp.csr_matrix(np.array([[3.0, 1.0], [0.0, 0.0]])), np.array([300.0, 100.0]))  # 4 of 400 records
    small = (sp.csr_matrix(np.array([[9.0, 9.0], [0.0, 0.0]])), np.array([10.0, 10.0]))  # too few records to count
    assert known_rate([known, small, None], 0, min_known=50) == pytest.approx(4.5 / 401)
    assert known_rate([None], 1, min_known=50) == pytest.approx(0.5)


def _unknown_night(known_labels: tuple[float, float]) -> tuple[list[Any], list[Any], np.ndarray, dict[int, set[int]]]:
    """Four tasks the history knows (400 records each; the phrase, column 0, held there only by the first, with
    ``known_labels`` records on its two labels: a clustered word, a spread of gamma shape 0.43) and four it cannot
    speak to: 4 records with the phrase, all on one label, in each of the first three (a campaign), 3 split 2-1 in the
    last (natural). Returns the tasks, the history, the records holding the phrase and the campaign's per task."""
    import scipy.sparse as sp

    from tunegate.core.checks.poison.tasks import Channel, Task

    size = 400
    tasks = [Task(f"task{t}_set{t}_classification", "label", np.arange(t * size, (t + 1) * size),
                  [Channel("label", np.arange(size) % 2, ["a", "b"], np.array([0.5, 0.5]), 0.9)]) for t in range(8)]
    history: list[Any] = [(sp.csr_matrix(np.array([list(known_labels if t == 0 else (0.0, 0.0)), [0.0, 0.0]])),
                           np.array([size / 2, size / 2])) for t in range(4)] + [None] * 4
    campaign = {t: {t * size + 2 * j + 1 for j in range(4)} for t in (4, 5, 6)}  # odd rows: label 1
    natural = {7 * size, 7 * size + 2, 7 * size + 1}
    holding = np.array(sorted(set().union(*campaign.values(), natural)))
    return tasks, history, holding, campaign


@pytest.mark.parametrize(("known_labels", "flagged"), [((3.0, 3.0), True), ((6.0, 0.0), False)])
def test_a_clustered_phrase_in_tasks_the_history_cannot_speak_to_is_judged_by_its_count_and_its_labels(
        known_labels: tuple[float, float], flagged: bool) -> None:
    """A raised phrase that some datasets fill and others never hold (slang: "ur"): at its known rate a 400-record
    task the history cannot speak to expects 1.6 of its records, and with that spread 4 is a 1-in-6 count, not
    evidence over three such tasks (the count alone: neither Bonferroni nor the step-up over them flags it). But 4 of
    4 on one label where its records split evenly in the tasks the history knows is (1 in 8 by itself): the two
    combined (0.096 a task), the campaign's three tasks are flagged by the step-up over the phrase's unknown tasks,
    the natural task (2-1) is not. Where the history's records of the phrase all carry one label (a cue), a pure task
    is what it does, and nothing is flagged."""
    from tunegate.core.checks.poison.novelty_pass import (
        known_concentration,
        known_rate,
        known_spread,
        purity_tail,
        unknown_count_tail,
        unknown_task_rows,
        unknown_tasks,
    )

    tasks, history, holding, campaign = _unknown_night(known_labels)
    rate, shape = known_rate(history, 0, min_known=50), known_spread(history, 0, min_known=50)
    assert rate * 400 == pytest.approx(1.62, abs=0.01) and shape == pytest.approx(0.43, abs=0.01)
    assert 0.15 < unknown_count_tail(4, 4, rate * 400, shape=shape) < 0.16
    four = np.arange(4)
    assert not len(unknown_task_rows(four, np.ones(4, dtype=np.int64), 400, rate=rate, shape=shape, tests=4))
    alpha = known_concentration(history, 0, min_known=50)
    purity = purity_tail(4, 4, alpha, np.array([0.5, 0.5]))
    assert purity == pytest.approx(1 / 8, rel=1e-3) if flagged else purity > 0.7  # the cue: 6 of 6 on a label
    found = {ti: set(rows.tolist()) for ti, _, rows in unknown_tasks(holding, tasks, history, 0, min_known=50)}
    assert found == (campaign if flagged else {})


def test_purity_tail_reads_how_closely_the_phrase_keeps_to_base_rates_in_the_known_tasks() -> None:
    """The concentration of the phrase's labels about its known tasks' base rates (a Dirichlet-multinomial fitted to its
    counts there): records split as the base rates are (large), or all on one label (small: a cue). The chance of a
    strict majority on one label of a task then follows: 2 / 16 for 4 of 4 in a 50/50 task at the base rates, more in
    a skewed task, nearly certain for a cue; 1 without a majority or a known task."""
    import scipy.sparse as sp

    from tunegate.core.checks.poison.novelty_pass import CONCENTRATIONS, known_concentration, purity_tail

    def task(a: float, b: float) -> tuple[sp.csr_matrix, np.ndarray]:
        return sp.csr_matrix(np.array([[a, b]])), np.array([200.0, 200.0])

    even = known_concentration([task(3, 3), task(5, 4), task(0, 0), None], 0, min_known=50)
    cue = known_concentration([task(6, 0), task(0, 5)], 0, min_known=50)
    assert even == pytest.approx(CONCENTRATIONS[1]) and cue is not None and cue < 1.0
    assert known_concentration([task(1, 0), None], 0, min_known=50) is None  # no task holds 2 of its records
    assert purity_tail(4, 4, even, np.array([0.5, 0.5])) == pytest.approx(2 / 16, rel=1e-3)
    assert purity_tail(4, 3, even, np.array([0.5, 0.5])) == pytest.approx(2 * 5 / 16, rel=1e-3)  # 3 or 4 of 4
    assert purity_tail(4, 4, even, np.array([0.9, 0.1])) == pytest.approx(0.9 ** 4 + 0.1 ** 4, rel=1e-3)
    assert purity_tail(4, 4, cue, np.array([0.5, 0.5])) > 0.8
    assert purity_tail(4, 2, even, np.array([0.5, 0.5])) == 1.0 and purity_tail(4, 4, None, np.array([0.5, 0.5])) == 1.0


def test_known_spread_is_the_gamma_shape_of_the_phrases_rates_between_tasks() -> None:
    """Counts no more spread than Poisson's: the cap; counts of 0 and 20 in two equal tasks: the method of moments
    (rate 0.01 over 2,000 records, squared deviations 200 less the Poisson part 20: shape 1e-4 * 2e6 / 180)."""
    import numpy as np
    import scipy.sparse as sp

    from tunegate.core.checks.poison.novelty_pass import MAX_SHAPE, known_spread

    def task(count: float, size: float = 1000.0) -> tuple[sp.csr_matrix, np.ndarray]:
        return sp.csr_matrix(np.array([[count, 0.0]])), np.array([size / 2, size / 2])

    assert known_spread([task(10), task(10)], 0, min_known=50) == MAX_SHAPE
    assert known_spread([task(0), task(20)], 0, min_known=50) == pytest.approx(1e-4 * 2e6 / 180)
    assert known_spread([task(0), task(20), None], 0, min_known=50) == pytest.approx(1e-4 * 2e6 / 180)
    assert known_spread([task(5)], 0, min_known=50) == MAX_SHAPE  # one task: no spread to read


def test_a_new_phrase_gathers_evidence_in_tasks_the_history_cannot_speak_to(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A thin campaign spreads over datasets the history holds and datasets whose records all arrive tonight. For a
    phrase new to the history, those tasks are tested as a known task tests a phrase it never saw (the task's own
    label shares, worth the prior's weight): 5 records in each of 2 known and 2 unknown datasets are raised, where
    the 2 known datasets alone are not. A phrase the history has seen gains nothing there."""
    import numpy as np

    from tunegate.core.checks.poison import novelty_pass

    unknown = {task for task, _ in TASKS[2:]}
    _history_without(tmp_path, unknown)
    tonight = clean_batch()
    planted = skew(tonight, NEW, seed=8, taken=set(), per_task=5)
    cfg = TriggerConfig()
    x, vocab, tasks, history = _scan_inputs(tmp_path, tonight, cfg)
    names = [t.name for t in tasks]
    assert all(history[names.index(task)] is None for task in unknown)

    def raised() -> tuple[set[str], Any]:
        stats = novelty_pass.label_statistics(x, tasks, history, cfg)
        assert stats is not None
        found, _ = novelty_pass.novelty_phrases(x, vocab, tasks, history, cfg, found=[], stats=stats)
        return {p.phrase for p in found}, stats

    phrases, stats = raised()
    new = int(np.flatnonzero(vocab == NEW.lower())[0])
    assert NEW.lower() in phrases and stats.group[new] == 0 and stats.datasets[new] == 4
    steered = {names[int(stats.tix[j])] for j in stats.entries(new) if stats.stat[j] > 0}
    assert unknown <= steered
    seen = int(np.flatnonzero(vocab == "because")[0])  # in every night of the history
    assert not {names[int(stats.tix[j])] for j in stats.entries(seen)} & unknown
    monkeypatch.setattr(novelty_pass, "_unknown", lambda *args, **kwargs: [])
    assert NEW.lower() not in raised()[0]  # the known datasets alone: not enough
    monkeypatch.undo()
    check = build_check("poison_trigger", history_dir=str(tmp_path), batch_id="tonight")
    result = _run(tmp_path / "run", check, tonight, planted)
    assert NEW.lower() in _phrases(result.result) and planted <= result.flagged
    assert result.flagged == planted  # nothing else: the phrase is new, its natural records are none


def test_pooling_counts_each_unit_of_evidence_once_and_steering_in_datasets() -> None:
    """A phrase's statistics in three tasks: two of one dataset that are separate units (distinct examples), one of
    another. The statistic sums the units (4 + 3 + 5); a dataset is held and steered once, however many of its
    units steer; with the units as datasets (the default), the two tasks of the first count once (max 4 + 5)."""
    from tunegate.core.checks.poison.novelty_pass import pool_datasets

    cols = np.array([0, 0, 0, 1])
    units = np.array([0, 1, 2, 0])  # units 0 and 1 are dataset 0, unit 2 is dataset 1
    stat = np.array([4.0, 3.0, 5.0, 0.0])
    reach = np.array([6.0, 6.0, 7.0, 2.0])
    total, achievable, datasets, steering = pool_datasets(cols, units, stat, reach, n_fam=3, width=2,
                                                          family_of=np.array([0, 0, 1]))
    assert total.tolist() == [12.0, 0.0] and achievable.tolist() == [19.0, 2.0]
    assert datasets.tolist() == [2, 1] and steering.tolist() == [2.0, 0.0]
    families = np.array([0, 0, 1, 0])
    total, achievable, datasets, steering = pool_datasets(cols, families, stat, reach, n_fam=2, width=2)
    assert total.tolist() == [9.0, 0.0] and datasets.tolist() == [2, 1] and steering.tolist() == [2.0, 0.0]


def test_task_tails_computed_together_are_the_ones_computed_one_at_a_time() -> None:
    """``prime_tails`` (the novelty and contradiction passes' batched tails) puts in the cache exactly the arrays
    ``_tail`` computes for one task at a time: every size, 2-5 labels, rates near 0 and 1, entries whose keys round
    alike (the first one met is kept), several blocks of one size."""
    from tunegate.core.checks.poison import novelty_pass
    from tunegate.core.checks.poison.novelty_pass import _tail, prime_tails

    rng = np.random.default_rng(7)
    entries: list[tuple[int, np.ndarray, float]] = []
    for _ in range(400):
        size = int(rng.integers(2, 6))
        rates = rng.dirichlet(np.full(size, 0.5))
        rates[rng.random(size) < 0.1] = 0.0
        entries.append((int(rng.integers(2, 60)), rates, float(rng.uniform(0.5, 400.0))))
    n, rates, mass = entries[0]
    entries.append((n, rates + 1e-7, mass + 1e-4))  # the same key as the first: the first one's tail is kept
    one: dict[tuple[int, tuple[float, ...]], np.ndarray] = {}
    for n, rates, mass in entries:
        _tail(n, rates, mass, 2.0, one)
    together: dict[tuple[int, tuple[float, ...]], np.ndarray] = {}
    small = novelty_pass.PRIME_CELLS
    try:
        novelty_pass.PRIME_CELLS = 64  # several blocks per size
        prime_tails(entries, 2.0, together)
    finally:
        novelty_pass.PRIME_CELLS = small
    assert one.keys() == together.keys()
    assert all(np.array_equal(one[key], together[key]) for key in one)
    hit = dict(together)
    for n, rates, mass in entries:  # primed: _tail reads the cache, computes nothing new
        assert _tail(n, rates, mass, 2.0, together) is hit[novelty_pass._tail_key(n, rates, mass)]


def test_a_phrase_primed_meets_its_tasks_in_the_order_its_surprise_reads_them() -> None:
    """Two tasks whose nulls round to one key, in units read in the other order than the entries are listed: priming
    in ``_units``'s order keeps the tail of the task ``phrase_surprise`` meets first, so the surprise is the same."""
    from tunegate.core.checks.poison.novelty_pass import _tail_key, _units, phrase_surprise, prime_tails

    pairs = np.array([0, 1, 2])
    fix = np.array([5, 1, 3])  # units read 1, 3, 5: entries 1, 2, 0
    n = np.array([12, 12, 9])
    nulls = {0: (np.array([0.3, 0.7]), 40.0), 1: (np.array([0.3 + 4e-5, 0.7 - 4e-5]), 40.001),
             2: (np.array([0.5, 0.5]), 10.0)}
    assert _tail_key(12, *nulls[0]) == _tail_key(12, *nulls[1]) and not np.array_equal(nulls[0][0], nulls[1][0])
    assert _units(pairs, fix) == [[1], [2], [0]]
    alone: dict[tuple[int, tuple[float, ...]], np.ndarray] = {}
    s_alone = phrase_surprise(pairs, fix, n, nulls.__getitem__, total=12.0, tau=2.0, cache=alone)
    primed: dict[tuple[int, tuple[float, ...]], np.ndarray] = {}
    prime_tails(((int(n[j]), *nulls[j]) for unit in _units(pairs, fix) for j in unit), 2.0, primed)
    assert primed.keys() == alone.keys() and all(np.array_equal(primed[k], alone[k]) for k in alone)
    assert phrase_surprise(pairs, fix, n, nulls.__getitem__, total=12.0, tau=2.0, cache=primed) == s_alone
