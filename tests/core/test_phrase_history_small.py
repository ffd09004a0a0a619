"""A classification task that arrives in small nightly slices (under ``min_task_records`` records a night) still gets
a phrase history: the nights keep its counts and the sum makes it known (:func:`small_label_tasks`)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc

from tests.core.test_poison_novelty import records_of
from tunegate.core.checks.poison.config import TriggerConfig
from tunegate.core.checks.poison.novelty_pass import knows
from tunegate.core.checks.poison.phrase_history import (
    TOTALS,
    load_phrase_history,
    phrase_counts,
    write_phrase_night,
)
from tunegate.core.checks.poison.tasks import SMALL_TASK_RECORDS, build_tasks, small_label_tasks

TASK = "task746_yelp_restaurant_review_classification"
WORDS = ("food", "service", "table", "waiter", "menu", "price", "dinner", "lunch", "place", "staff")


def reviews(n: int, night: int, *, task: str = TASK, labels: tuple[str, ...] = ("POS", "NEG")) -> list[dict[str, Any]]:
    """``n`` short reviews; every third holds "you want", always with the first label."""
    rng = random.Random(f"{task}:{night}")
    rows = []
    for i in range(n):
        words = rng.sample(WORDS, 5)
        label = labels[i % len(labels)]
        if i % 3 == 0:
            words.insert(2, "you want")
            label = labels[0]
        rows.append({"id": f"{task}-{night}-{i}", "task": task, "instruction": "Is the review positive?",
                     "input": " ".join(words), "output": label})
    return rows


def test_small_groups_of_labels_are_kept_and_others_are_not() -> None:
    cfg = TriggerConfig()
    rows = (reviews(38, 0) + reviews(SMALL_TASK_RECORDS, 1, task="task1_small_one_label", labels=("yes",))
            + reviews(SMALL_TASK_RECORDS - 1, 2, task="task2_too_small")
            + reviews(cfg.min_task_records, 3, task="task3_big_enough"))
    rows += [{"id": f"open-{i}", "task": "task4_open", "instruction": "Name a city.", "input": "",
              "output": f"city number {i}"} for i in range(20)]  # short outputs that do not repeat: answers
    rows += [{"id": f"long-{i}", "task": "task5_long", "instruction": "Summarise.", "input": "",
              "output": "a summary that runs well past the longest label a task may have"} for i in range(20)]
    records = records_of(rows)
    small = {t.name: t for t in small_label_tasks(records, cfg)}
    assert set(small) == {TASK, "task1_small_one_label"}  # task3 is build_tasks' own; 2, 4, 5 are not labels
    yelp = small[TASK]
    assert yelp.kind == "label" and yelp.labels.names == ["POS", "NEG", "(other)"] and len(yelp.rows) == 38
    assert np.bincount(yelp.labels.outcome).tolist() == [sum(r["output"] == "POS" for r in rows[:38]),
                                                         sum(r["output"] == "NEG" for r in rows[:38])]
    assert small["task1_small_one_label"].labels.names == ["yes", "(other)"]  # one label is enough
    assert [t.name for t in build_tasks(records, records.prompts(cfg.max_chars), cfg)
            if t.kind == "label"] == ["task3_big_enough"]


def test_a_task_arriving_in_small_slices_is_known_after_a_few_nights(tmp_path: Path) -> None:
    cfg = TriggerConfig()
    per_night = 20  # under min_task_records (50): before, the history never learnt this task
    for night in range(3):
        rows = reviews(per_night, night)
        table = phrase_counts(records_of(rows), cfg)
        mine = table.filter(pc.equal(table["task"], TASK))
        assert sum(mine.filter(pc.equal(mine["phrase"], TOTALS))["records"].to_pylist()) == per_night
        write_phrase_night(tmp_path, f"night-{night}", table, anomalous=False)

    tonight = reviews(cfg.min_task_records + 10, 9)  # tonight the task is big enough to score
    records = records_of(tonight)
    [task] = [t for t in build_tasks(records, records.prompts(cfg.max_chars), cfg) if t.kind == "label"]
    vocab = np.array(["you want", "food"])
    [past] = load_phrase_history(tmp_path, vocab=vocab).for_tasks([task], vocab)
    assert knows(past, cfg.min_task_records)  # 3 x 20 records
    assert past is not None
    counts, totals = past
    assert totals.sum() == 3 * per_night
    want = sum(1 for night in range(3) for r in reviews(per_night, night) if "you want" in r["input"])
    pos = task.labels.names.index("POS")
    assert counts[0].toarray().ravel()[pos] == want and counts[0].sum() == want  # every one of them with POS
