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
        assert f.detail["reference"] == "history"
        # far outside its group, not a borderline call: a translation scores well above the SST-2 median
        assert f.score - f.detail["median"] > 0.3
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
    sst2 = [r for r in rest if r["task"] == SST2][:20]  # the group needs records of its own for a centre
    batch = make_batch(tmp_path, "night2", rest[:600] + sst2 + planted)
    result = build_check("embedding_outlier", reference_dir=str(history), history_dir=str(tmp_path / "none"),
                         k=5).run(batch)
    flagged = _flagged(batch, result)
    assert {r["id"] for r in planted} <= set(flagged)
    assert result.metrics["reference"] == "reference" and result.metrics["k"] == 5


@pytest.mark.parametrize(("options", "message"), [
    ({"z": 0}, r"embedding_outlier z must be a number in \(0\.0, inf\], got 0"),
    ({"group_by": "contributor"}, "embedding_outlier group_by must be one of task, source, none, got 'contributor'"),
    ({"min_group": 1}, "embedding_outlier min_group must be an integer >= 3, got 1"),
    ({"k": 5000}, "embedding_outlier k must be an integer between 1 and 1000, got 5000"),
    ({"min_spread": 1.5}, r"embedding_outlier min_spread must be a number in \[0\.0, 1\.0\), got 1\.5"),
    ({"reference_dir": 7}, "embedding_outlier reference_dir must be a path, got 7"),
    ({"zz": 3}, r"embedding_outlier: unknown option 'zz'; allowed: k \(default 10\), z \(default 3.5\).*"
                r"embedding \(default 'hashing'\)"),
    ({"min_typical_similarity": 2},
     r"embedding_outlier min_typical_similarity must be a number in \[-1\.0, 1\.0\], got 2"),
])
def test_misconfiguration_fails_at_construction(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_check("embedding_outlier", **options)


def _self_instruct() -> list[dict[str, Any]]:
    import gzip
    import json

    from tests.conftest import DATA

    with gzip.open(DATA / "self_instruct_slice.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_free_form_instructions_have_no_shape_to_depart_from_and_it_says_so(tmp_path: Path) -> None:
    """Self-Instruct: every record unlike every other. Before min_typical_similarity its least typical
    records were flagged; a reviewer keeps them all."""
    records = [dict(r, task="self_instruct") for r in _self_instruct()]
    result = build_check("embedding_outlier").run(make_batch(tmp_path, "free", records))
    assert result.findings == []
    assert result.metrics["status"] == "insufficient_data"
    assert "without a common shape" in result.metrics["status_reason"]
    assert [(i.reason, i.severity) for i in result.issues] == [("check_skipped", "info")]


def test_small_groups_are_left_out_by_name(
        tmp_path: Path, nights: tuple[Path, list[dict[str, Any]], list[dict[str, Any]]]) -> None:
    _, rest, ted = nights
    batch = make_batch(tmp_path, "small", rest[:400] + ted[:3])  # three translations: no centre of their own
    result = build_check("embedding_outlier").run(batch)
    assert result.metrics["status"] == "ok"
    skipped = [i for i in result.issues if i.reason == "check_skipped"]
    assert len(skipped) == 1 and TED in skipped[0].message and "fewer than 5 records" in skipped[0].message
    assert result.metrics["records_judged"] <= 400


def test_a_one_record_batch_is_insufficient_data(tmp_path: Path, superni_slice: list[dict[str, Any]]) -> None:
    result = build_check("embedding_outlier").run(make_batch(tmp_path, "one", superni_slice[:1]))
    assert result.findings == [] and result.metrics["status"] == "insufficient_data"
    assert "fewer than k=10" in result.metrics["status_reason"]
    assert [i.reason for i in result.issues] == ["check_skipped"]


def test_a_tight_group_needs_a_real_departure(
        tmp_path: Path, nights: tuple[Path, list[dict[str, Any]], list[dict[str, Any]]]) -> None:
    """Without min_spread, records 0.03 from a tight group's centre are outliers (6 false alarms here)."""
    history, rest, ted = nights
    planted = [dict(r, task=SST2, id=f"planted-{r['id']}") for r in ted[:6]]
    batch = make_batch(tmp_path, "night2", rest[:900] + planted + rest[900:])
    loose = build_check("embedding_outlier", history_dir=str(history), min_spread=0.0).run(batch)
    tight = build_check("embedding_outlier", history_dir=str(history)).run(batch)
    assert {f.row for f in tight.findings} < {f.row for f in loose.findings}
    assert len(tight.findings) == len(planted)
