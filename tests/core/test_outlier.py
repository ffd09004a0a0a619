"""embedding_outlier on the bundled slice: records unlike anything trusted, judged against their own group.

The planted outliers are real records too: English-to-Italian TED translations (task1091) filed under a
sentiment task, against a reference that holds no translation task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.core.test_near_duplicate import make_batch
from tunegate.core.checks import CanonicalBatch, build_check
from tunegate.core.history import update_history
from tunegate.exceptions import ConfigError

TED = "task1091_ted_translation_en_it"
SST2 = "task363_sst2_polarity_classification"


@pytest.fixture(scope="module")
def nights(tmp_path_factory: pytest.TempPathFactory, superni_slice: list[dict[str, Any]]
           ) -> tuple[Path, list[dict[str, Any]], list[dict[str, Any]]]:
    """A history of every other record of 19 tasks; the rest of those tasks; six TED records."""
    tmp = tmp_path_factory.mktemp("outlier")
    others = [r for r in superni_slice if r["task"] != TED]
    ted = [r for r in superni_slice if r["task"] == TED]
    history = tmp / "history"
    accepted = make_batch(tmp, "night1", others[::2])
    update_history(history, accepted.path, batch_id="night1")
    return history, others[1::2], ted


def _flagged(batch: CanonicalBatch, result: Any) -> dict[str, Any]:
    ids = batch.read_columns(["id"]).column(0).to_pylist()
    return {ids[f.row]: f for f in result.findings if f.reason == "embedding_outlier"}


def test_off_task_records_are_outliers_against_the_history(
        tmp_path: Path, nights: tuple[Path, list[dict[str, Any]], list[dict[str, Any]]]) -> None:
    history, rest, ted = nights
    planted = [dict(r, task=SST2, id=f"planted-{r['id']}") for r in ted[:6]]
    batch = make_batch(tmp_path, "night2", rest[:900] + planted + rest[900:])
    result = build_check("embedding_outlier", history_dir=str(history)).run(batch)
    flagged = _flagged(batch, result)
    for r in planted:
        f = flagged[r["id"]]
        assert f.detail["group"] == SST2 and f.detail["threshold_from"] == "group"
        assert f.detail["reference"] == "history" and f.score > f.detail["threshold"]
    false_alarms = len(set(flagged) - {r["id"] for r in planted})
    assert false_alarms <= 0.02 * len(rest)  # the robust z rule flags the far tail only
    assert result.metrics["reference"] == "history" and result.metrics["reference_records"] == 1740


def test_without_history_the_batch_is_its_own_reference(
        tmp_path: Path, nights: tuple[Path, list[dict[str, Any]], list[dict[str, Any]]]) -> None:
    _, rest, ted = nights
    planted = [dict(r, task=SST2, id=f"planted-{r['id']}") for r in ted[:4]]
    batch = make_batch(tmp_path, "alone", rest + planted)
    result = build_check("embedding_outlier").run(batch)
    flagged = _flagged(batch, result)
    assert {r["id"] for r in planted} <= set(flagged)
    assert all(f.detail["reference"] == "batch" for f in flagged.values())
    assert len(flagged) - len(planted) <= 0.02 * len(rest)


def test_a_whole_new_task_is_judged_within_its_own_group(
        tmp_path: Path, nights: tuple[Path, list[dict[str, Any]], list[dict[str, Any]]]) -> None:
    history, rest, ted = nights
    batch = make_batch(tmp_path, "newtask", rest + ted)
    result = build_check("embedding_outlier", history_dir=str(history)).run(batch)
    flagged = _flagged(batch, result)
    assert sum(i.startswith("task1091") for i in flagged) <= 0.05 * len(ted)  # not 120 outliers
    assert next(iter(result.metrics["farthest_groups"])) == TED  # but the report shows the task stands apart


def test_a_reference_corpus_given_by_path_is_used_first(
        tmp_path: Path, nights: tuple[Path, list[dict[str, Any]], list[dict[str, Any]]]) -> None:
    history, rest, ted = nights
    planted = [dict(r, task=SST2, id=f"planted-{r['id']}") for r in ted[:3]]
    batch = make_batch(tmp_path, "night2", rest[:600] + planted)
    result = build_check("embedding_outlier", reference_dir=str(history), history_dir=str(tmp_path / "none"),
                         k=5).run(batch)
    flagged = _flagged(batch, result)
    assert {r["id"] for r in planted} <= set(flagged)
    assert result.metrics["reference"] == "reference" and result.metrics["k"] == 5


@pytest.mark.parametrize(("options", "message"), [
    ({"z": 0}, "robust z-score"),
    ({"group_by": "contributor"}, "group_by must be one of"),
    ({"min_group": 1}, "min_group"),
    ({"k": 5000}, "k must be"),
])
def test_misconfiguration_fails_at_construction(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_check("embedding_outlier", **options)
