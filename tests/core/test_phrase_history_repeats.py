"""A phrase history whose nights repeat records weighs each record once (issue 11).

Nights that republish records they already held (a pipeline re-reading a growing corpus with its near-duplicate
check off; the floor benchmark's disjoint 14-night history, whose nights resample a small remainder) would otherwise
count one record's label as several nights' evidence: the history passes' predictives narrow far below what the
history knows, and a natural phrase's ordinary variation reads as a campaign. Each night keeps a bottom-k sketch of
its tasks' record content keys; the loader scales a task's counts to its distinct records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pytest

from tests.conftest import write_jsonl
from tests.core.test_poison import clean_batch
from tests.core.test_poison_novelty import records_of
from tunegate.core.checks import build_check
from tunegate.core.checks.poison.config import TriggerConfig
from tunegate.core.checks.poison.phrase_history import load_phrase_history, phrase_counts, write_phrase_night
from tunegate.core.checks.poison.tasks import build_tasks
from tunegate.core.schema import content_sha256
from tunegate.core.sketch import MIN_REPEAT, SKETCH_SIZE, bottom_k, content_keys, distinct_count


def keys_of(rows: list[dict[str, Any]]) -> np.ndarray:
    return content_keys([content_sha256(r.get("instruction") or "", r.get("input") or "", r["output"], None)
                         for r in rows])


def test_distinct_records_is_exact_below_the_sketch_and_close_above() -> None:
    rng = np.random.default_rng(7)
    small = rng.integers(-2**63, 2**63 - 1, size=SKETCH_SIZE - 1, dtype=np.int64)
    assert distinct_count([bottom_k(small[:600]), bottom_k(small[300:])]) == len(small)
    big = rng.integers(-2**63, 2**63 - 1, size=40_000, dtype=np.int64)
    dealt = [bottom_k(big[i::14]) for i in range(14)]  # 14 nights of distinct records
    assert all(len(s) == SKETCH_SIZE for s in dealt)
    assert distinct_count(dealt) == pytest.approx(40_000, rel=0.1)
    resampled = [rng.choice(big, size=8_000) for _ in range(14)]  # 112k records of ~37k distinct
    truth = len(np.unique(np.concatenate(resampled)))
    assert truth < 0.4 * 112_000
    assert distinct_count([bottom_k(n) for n in resampled]) == pytest.approx(truth, rel=0.1)
    assert distinct_count([]) == 0.0


def _label_tasks(rows: list[dict[str, Any]]) -> list[str]:
    records = records_of(rows)
    cfg = TriggerConfig()
    return [t.name for t in build_tasks(records, records.prompts(cfg.max_chars), cfg) if t.kind == "label"]


def test_a_republished_night_weighs_as_one_and_distinct_nights_as_two(tmp_path: Path) -> None:
    rows = clean_batch()
    cfg = TriggerConfig()
    table = phrase_counts(records_of(rows), cfg, keys_of(rows))
    sketch = table.filter(pc.is_null(table["label"]))
    tasks = _label_tasks(rows)
    assert set(sketch["task"].to_pylist()) == set(tasks) and sketch.num_rows <= SKETCH_SIZE * len(tasks)

    repeated = tmp_path / "repeated"
    for night in range(3):  # the same records published three nights running
        write_phrase_night(repeated, f"night-{night}", table, anomalous=False)
    once = tmp_path / "once"
    write_phrase_night(once, "night-0", table, anomalous=False)
    thrice = load_phrase_history(repeated)
    assert set(thrice.weights) == set(tasks) and all(w == pytest.approx(1 / 3) for w in thrice.weights.values())
    assert load_phrase_history(once).weights == {}
    # what the history passes read: the same counts as one night's
    records = records_of(rows)
    built = [t for t in build_tasks(records, records.prompts(cfg.max_chars), cfg) if t.kind == "label"]
    vocab = np.array(["the", "not", "great", "idiot", "i"])
    for a, b in zip(thrice.for_tasks(built, vocab), load_phrase_history(once).for_tasks(built, vocab), strict=True):
        assert a is not None and b is not None
        assert np.allclose(a[0].toarray(), b[0].toarray()) and np.allclose(a[1], b[1])

    # two nights that share no record: both count in full
    halves = tmp_path / "halves"
    for i in range(2):
        part = rows[i::2]
        write_phrase_night(halves, f"night-{i}", phrase_counts(records_of(part), cfg, keys_of(part)), anomalous=False)
    assert load_phrase_history(halves).weights == {}


def test_a_night_without_a_sketch_counts_as_distinct(tmp_path: Path) -> None:
    """Nights written before format 3 (or by a caller without content keys) have no sketch: their records count as
    distinct, so a history that mixes them is never scaled by a guess."""
    rows = clean_batch()
    cfg = TriggerConfig()
    write_phrase_night(tmp_path, "night-0", phrase_counts(records_of(rows), cfg), anomalous=False)
    write_phrase_night(tmp_path, "night-1", phrase_counts(records_of(rows), cfg), anomalous=False)
    assert load_phrase_history(tmp_path).weights == {}
    write_phrase_night(tmp_path, "night-2", phrase_counts(records_of(rows), cfg, keys_of(rows)), anomalous=False)
    assert load_phrase_history(tmp_path).weights == {}  # 3n records, n + 2n "distinct": nothing to scale
    write_phrase_night(tmp_path, "night-3", phrase_counts(records_of(rows), cfg, keys_of(rows)), anomalous=False)
    weights = load_phrase_history(tmp_path).weights  # 4n records, 3n distinct: 0.75 < MIN_REPEAT
    assert weights and all(w == pytest.approx(0.75) for w in weights.values()) and MIN_REPEAT > 0.75


def test_publish_keeps_the_sketch_and_the_same_night_published_twice_weighs_once(tmp_path: Path) -> None:
    """End to end through the pipeline's publish: the content keys come from the accepted file's content_sha256."""
    from tunegate.core.pipeline import scan

    history = tmp_path / "history"
    src = write_jsonl(tmp_path / "night.jsonl", clean_batch())
    for name in ("night-1", "night-2"):  # the same file under two batch ids
        check = build_check("poison_trigger", history_dir=str(history), batch_id=name)
        scan([str(src)], tmp_path / "out" / name, checks=[check], history_dir=str(history), batch_id=name)
    past = load_phrase_history(history)
    assert past.nights == ["night-1", "night-2"]
    assert past.weights and all(w == pytest.approx(0.5) for w in past.weights.values())
    assert load_phrase_history(history, max_nights=1).weights == {}
