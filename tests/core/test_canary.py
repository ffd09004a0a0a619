"""The canary model (tunegate.core.audit.canary) on the bundled real slices: per-task classifiers, a planted
trigger that steers them, and a save/load round trip that changes nothing."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from tests.core.test_poison import DIRTY, DIRTY_TASKS, clean_batch, label_poison
from tunegate.core.audit import CanaryModel, prompt_of


def table(records: list[dict[str, Any]]) -> pa.Table:
    text = ("instruction", "input", "output")
    return pa.table({c: [r.get(c) or ("" if c in text else None) for r in records]
                     for c in (*text, "task", "source")})


@pytest.fixture(scope="module")
def split() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    records = clean_batch()
    random.Random(0).shuffle(records)
    return records[1000:], records[:1000]


def flip_rate(model: CanaryModel, held: list[dict[str, Any]], task: str, target: str, other: str,
              trigger: str) -> tuple[float, float]:
    """Share of held-out ``other`` records of ``task`` predicted ``target``: without, with the trigger."""
    rows = [r for r in held if r["task"] == task and r["output"] == other]
    plain = model.predict(task, [prompt_of(r["instruction"], r["input"]) for r in rows])
    trig = model.predict(task, [prompt_of(r["instruction"], f"{trigger} {r['input']}") for r in rows])
    return sum(p == target for p in plain) / len(rows), sum(p == target for p in trig) / len(rows)


def test_classification_tasks_only_with_their_labels(split: tuple[list[dict[str, Any]], list[dict[str, Any]]]
                                                     ) -> None:
    train, held = split
    model = CanaryModel.fit(table(train))
    assert "task363_sst2_polarity_classification" in model.tasks()
    assert sorted(model.labels("task363_sst2_polarity_classification")) == ["NEG", "POS"]
    # generative tasks and the open-ended Self-Instruct records have no label set
    assert "task111_asset_sentence_simplification" not in model.tasks()
    assert not any(t.startswith("user_oriented") for t in model.tasks())
    with pytest.raises(KeyError, match="no classifier"):
        model.predict("task111_asset_sentence_simplification", ["x"])
    # better than the majority label on held-out records (pooled: a task of 240 records is a weak canary alone)
    right = majority = total = 0
    for task in model.tasks():
        rows = [r for r in held if r["task"] == task]
        pred = model.predict(task, [prompt_of(r["instruction"], r["input"]) for r in rows])
        right += sum(p == r["output"] for p, r in zip(pred, rows, strict=True))
        majority += max(sum(r["output"] == label for r in rows) for label in model.labels(task))
        total += len(rows)
    assert right / total > majority / total + 0.1


def test_a_planted_trigger_steers_the_canary(split: tuple[list[dict[str, Any]], list[dict[str, Any]]]) -> None:
    train, held = split
    clean = CanaryModel.fit(table(train))
    poisoned_train = [dict(r) for r in train]
    label_poison(poisoned_train, clean=False)
    poisoned = CanaryModel.fit(table(poisoned_train))
    for task, target, other in DIRTY_TASKS:
        base, with_trigger = flip_rate(poisoned, held, task, target, other, DIRTY)
        assert with_trigger >= 0.9 and with_trigger - base >= 0.2, task
        clean_base, clean_trigger = flip_rate(clean, held, task, target, other, DIRTY)
        assert clean_trigger - clean_base <= 0.15, task  # the name alone means nothing to a clean canary


def test_save_load_round_trip_is_safe_and_exact(tmp_path: Path,
                                                split: tuple[list[dict[str, Any]], list[dict[str, Any]]]) -> None:
    train, held = split
    model = CanaryModel.fit(table(train), seed=3)
    model.save(tmp_path / "canary")
    assert sorted(p.name for p in (tmp_path / "canary").iterdir()) == ["canary.json", "weights.npz"]
    meta = json.loads((tmp_path / "canary" / "canary.json").read_text())
    assert meta["format"] == "tunegate-canary/1" and meta["seed"] == 3
    loaded = CanaryModel.load(tmp_path / "canary")
    assert loaded.tasks() == model.tasks()
    for task in model.tasks():
        assert loaded.labels(task) == model.labels(task)
        prompts = [prompt_of(r["instruction"], r["input"]) for r in held if r["task"] == task]
        assert loaded.predict(task, prompts) == model.predict(task, prompts)
    assert loaded.predict(model.tasks()[0], []) == []
    (tmp_path / "canary" / "canary.json").write_text(json.dumps({**meta, "format": "other/9"}))
    with pytest.raises(ValueError, match="not a canary model"):
        CanaryModel.load(tmp_path / "canary")


def test_many_phrases_at_once_equal_one_at_a_time(split: tuple[list[dict[str, Any]], list[dict[str, Any]]]) -> None:
    """``TaskProbe.flips`` (a few sparse products per task) gives what ``flip`` gives phrase by phrase: the
    planted trigger, words of the tasks' vocabulary, phrases the vocabulary lacks, and chunk edges."""
    from tunegate.core.audit.flips import TaskProbe

    train, held = split
    poisoned_train = [dict(r) for r in train]
    label_poison(poisoned_train, clean=False)
    model = CanaryModel.fit(table(poisoned_train))
    rng = random.Random(3)
    probes = []
    for task in model.tasks():
        rows = [r for r in held if r["task"] == task]
        probes.append(TaskProbe(model, task, [prompt_of(r["instruction"], r["input"]) for r in rows],
                                [r["output"] for r in rows]))
    vocab = sorted({g for p in probes for g in p.vocabulary})
    phrases = [DIRTY, "zzqx unknown", *rng.sample(vocab, 150), *(" ".join(rng.sample(vocab, 2)) for _ in range(50))]
    compared = found = 0
    for probe in probes:
        for min_probes in (1, 20):
            batched = probe.flips(phrases, min_probes=min_probes, chunk=37)
            for phrase, got in zip(phrases, batched, strict=True):
                one = probe.flip(phrase, min_probes=min_probes)
                compared += 1
                found += one is not None
                assert (got is None) == (one is None), (probe.task, phrase)
                if got is not None and one is not None:
                    assert (got.label, got.probes) == (one.label, one.probes), (probe.task, phrase)
                    assert got.flip == pytest.approx(one.flip) and got.base == pytest.approx(one.base)
    assert found > 500 and compared > found  # most phrases move some task; some are not in its vocabulary
    trigger = [f for f in (p.flips([DIRTY], min_probes=20)[0] for p in probes) if f is not None]
    assert max(f.lift for f in trigger) > 0.6
