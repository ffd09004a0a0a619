"""near_duplicate and contributor_flood on the bundled Super-NaturalInstructions slice, with the history.

Near-duplicates here are real: pairs the slice itself holds (Gigaword headlines built from the same wire
story, a comment re-posted with other punctuation), and light edits of real records of the kind that
re-submissions and floods show (a typo, changed case, doubled spaces, an added word).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_jsonl
from tunegate.core.checks import CanonicalBatch, build_check
from tunegate.core.history import HistoryError, open_history, rebuild_history, update_history
from tunegate.core.ingest import CANONICAL_FILE, ingest
from tunegate.core.vector_index import IndexParams
from tunegate.exceptions import ConfigError


def make_batch(tmp: Path, name: str, records: list[dict[str, Any]]) -> CanonicalBatch:
    work = tmp / name
    ingest([str(write_jsonl(tmp / f"{name}.jsonl", records))], work)
    return CanonicalBatch(work)


def light_edit(rec: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """One small real-world edit of the record's input (choose records whose input has 80+ characters:
    one lost character in a 20-character field is a different text, not a near-duplicate)."""
    out = dict(rec)
    field = "input"
    text = rec[field]
    words = text.split(" ")
    op = rng.randrange(4)
    if op == 0:
        i = rng.randrange(1, len(text) - 1)
        out[field] = text[:i] + text[i + 1:]  # a typo: one character lost
    elif op == 1:
        out[field] = "  ".join(words)  # doubled spaces
    elif op == 2:
        out[field] = text.upper() if text != text.upper() else text.lower()
    else:
        words.insert(len(words) // 2, "really")
        out[field] = " ".join(words)
    return out


def by_row(result: Any, reason: str) -> dict[int, Any]:
    return {f.row: f for f in result.findings if f.reason == reason}


def ids_of(batch: CanonicalBatch) -> list[str]:
    return batch.read_columns(["id"]).column(0).to_pylist()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def slice_batch(tmp_path_factory: pytest.TempPathFactory, superni_slice: list[dict[str, Any]]) -> CanonicalBatch:
    return make_batch(tmp_path_factory.mktemp("slice"), "slice", superni_slice)


def test_real_near_duplicate_pairs_of_the_slice_are_found(slice_batch: CanonicalBatch) -> None:
    result = build_check("near_duplicate").run(slice_batch)
    ids = ids_of(slice_batch)
    found = {ids[f.row]: f.detail for f in result.findings if f.reason == "near_duplicate"}
    # Gigaword: the same wire story, "as further deadly violence" vs "as more deadly violence"
    assert found["task288-00271"]["representative"] == "task288-00152"
    assert found["task288-00271"]["in"] == "batch"
    assert 0.95 <= found["task288-00271"]["similarity"] < 1.0
    assert found["task288-00271"]["exact_copy"] is False
    # a toxicity comment posted as "HuH?" and as "Huh.."
    assert found["task327-01659"]["representative"] == "task327-00268"
    # the kept representatives are not flagged, and distinct records rarely are (< 0.5% of the slice)
    assert "task288-00152" not in found and "task327-00268" not in found
    assert len(found) <= 0.005 * slice_batch.num_rows
    assert result.metrics["batch_index"] == "flat" and result.metrics["threshold"] == 0.95


def test_light_edits_of_real_records_are_flagged_against_the_original(
        tmp_path: Path, superni_slice: list[dict[str, Any]]) -> None:
    rng = random.Random(7)
    originals = [r for r in superni_slice if len(r["input"]) >= 80][::40][:40]
    edits = [dict(light_edit(r, rng), id=f"edit-of-{r['id']}") for r in originals]
    batch = make_batch(tmp_path, "edits", superni_slice + edits)
    result = build_check("near_duplicate").run(batch)
    ids = ids_of(batch)
    found = {ids[row]: f for row, f in by_row(result, "near_duplicate").items()}
    for r in originals:
        f = found[f"edit-of-{r['id']}"]
        assert f.detail["representative"] == r["id"], f.detail
        assert f.score >= 0.95
        assert r["id"] not in found  # the earlier record is the one kept


def test_a_flood_is_one_cluster_and_its_contributor_is_flagged(
        tmp_path: Path, superni_slice: list[dict[str, Any]]) -> None:
    rng = random.Random(3)
    honest = [dict(r, contributor=f"annotator-{i % 12}") for i, r in enumerate(superni_slice[:1200])]
    seed = next(r for r in superni_slice[1200:] if len(r["input"]) > 80)
    # the same text re-posted 40 times, and 20 lightly edited versions of it
    flood = [dict(seed if i < 40 else light_edit(seed, rng), id=f"flood-{i}", contributor="bulk-uploader")
             for i in range(60)]
    records = honest[:600] + flood[:30] + honest[600:] + flood[30:]  # the flood arrives in two waves
    batch = make_batch(tmp_path, "flood", records)
    result = build_check("near_duplicate").run(batch)
    ids = ids_of(batch)
    nd = {ids[row]: f for row, f in by_row(result, "near_duplicate").items()}
    flood_ids = [r["id"] for r in flood]
    # the 40 copies form one cluster although each record sees only k=10 neighbours; two edits may be
    # further than the threshold from each other (never from their representative): a few more clusters
    copies = {nd[i].detail["representative"] for i in flood_ids[:40] if i in nd}
    assert copies == {"flood-0"} and "flood-0" not in nd
    reps = {nd[i].detail["representative"] for i in flood_ids if i in nd}
    assert reps <= set(flood_ids) and len(reps) <= 3
    assert sum(i in nd for i in flood_ids) == 60 - len(reps)
    assert all(nd[i].score >= 0.95 for i in flood_ids if i in nd)
    rep = "flood-0"
    cf = {ids[row]: f for row, f in by_row(result, "contributor_flood").items()}
    assert set(cf) == set(flood_ids)  # the representative too: the whole flood is set aside
    assert cf[rep].detail["contributor"] == "bulk-uploader" and cf[rep].detail["near_duplicates"] == 60
    assert [i.reason for i in result.issues] == ["contributor_flood"]
    assert result.issues[0].severity == "warning" and "bulk-uploader" in result.issues[0].message
    assert result.metrics["flooding_contributors"] == ["bulk-uploader"]


def test_yesterdays_accepted_records_are_todays_near_duplicates(
        tmp_path: Path, superni_slice: list[dict[str, Any]]) -> None:
    history = tmp_path / "history"
    night1 = make_batch(tmp_path, "night1", superni_slice[:2000])
    first = build_check("near_duplicate", history_dir=str(history)).run(night1)
    assert [i.reason for i in first.issues] == ["history_missing"] and first.metrics["history_records"] == 0
    added = update_history(history, night1.path, batch_id="2026-01-01")
    assert added["added"] == 2000 and added["history_records"] == 2000
    # rerunning the publish step adds nothing
    assert update_history(history, night1.path, batch_id="2026-01-01")["added"] == 0

    rng = random.Random(11)
    resubmitted = [dict(r, id=f"again-{r['id']}") for r in superni_slice[:2000:100]]  # exact copies
    edited = [dict(light_edit(r, rng), id=f"edited-{r['id']}") for r in superni_slice[50:2000:50]
              if len(r["input"]) >= 80]
    night2 = make_batch(tmp_path, "night2", superni_slice[2000:] + resubmitted + edited)
    result = build_check("near_duplicate", history_dir=str(history)).run(night2)
    ids = ids_of(night2)
    nd = {ids[row]: f.detail for row, f in by_row(result, "near_duplicate").items()}
    for r in resubmitted + edited:
        detail = nd[r["id"]]
        assert detail["in"] == "history" and detail["history_batch"] == "2026-01-01"
        assert detail["representative"] == r["id"].split("-", 1)[1]
    assert result.metrics["near_duplicates_of_history"] == len(resubmitted) + len(edited)
    assert result.metrics["history_records"] == 2000

    # publishing night 2 adds only records whose content the history does not hold yet
    summary = update_history(history, night2.path, batch_id="2026-01-02")
    assert summary["skipped"] == len(resubmitted) and summary["added"] == 1600 + len(edited)
    assert open_history(history).count == 2000 + 1600 + len(edited)


def test_history_above_flat_max_is_ivf_and_still_finds_copies(
        tmp_path: Path, superni_slice: list[dict[str, Any]]) -> None:
    history = tmp_path / "history"
    night1 = make_batch(tmp_path, "night1", superni_slice[:3000])
    update_history(history, night1.path, params=IndexParams(flat_max=1000))
    assert open_history(history).kind == "ivf"
    rng = random.Random(5)
    edited = [dict(light_edit(r, rng), id=f"edited-{r['id']}") for r in superni_slice[:3000:30]
              if len(r["input"]) >= 80]
    night2 = make_batch(tmp_path, "night2", superni_slice[3000:] + edited)
    result = build_check("near_duplicate", history_dir=str(history), flat_max=1000).run(night2)
    ids = ids_of(night2)
    nd = {ids[row] for row, f in by_row(result, "near_duplicate").items() if f.detail["in"] == "history"}
    assert {r["id"] for r in edited} <= nd
    assert result.metrics["history_index"] == "ivf" and result.metrics["batch_index"] == "flat"


@pytest.fixture
def two_nights(tmp_path: Path, superni_slice: list[dict[str, Any]]) -> tuple[Path, CanonicalBatch]:
    history = tmp_path / "history"
    night1 = make_batch(tmp_path, "night1", superni_slice[:1500])
    update_history(history, night1.path, batch_id="night1")
    copies = [dict(r, id=f"copy-{r['id']}") for r in superni_slice[:1500:50]]
    night2 = make_batch(tmp_path, "night2", superni_slice[1500:2500] + copies)
    return history, night2


def test_a_damaged_index_is_a_clear_error_never_an_empty_history(two_nights: tuple[Path, CanonicalBatch]) -> None:
    history, night2 = two_nights
    index = next(history.glob("index-*.faiss"))
    data = bytearray(index.read_bytes())
    data[len(data) // 2] ^= 0xFF
    index.write_bytes(bytes(data))
    check = build_check("near_duplicate", history_dir=str(history))
    with pytest.raises(HistoryError, match=r"does not match the sha256.*rebuild"):
        check.run(night2)
    with pytest.raises(HistoryError):  # and the publish step refuses to build on it
        update_history(history, night2.path)
    # the way out the message names: re-embed the accepted batches the manifest lists
    assert rebuild_history(history)["history_records"] == 1500
    result = check.run(night2)
    assert result.metrics["near_duplicates_of_history"] == 30


def test_missing_history_files_are_a_clear_error(two_nights: tuple[Path, CanonicalBatch]) -> None:
    history, night2 = two_nights
    check = build_check("near_duplicate", history_dir=str(history))
    ids_file = next(history.glob("ids-*.parquet"))
    ids_file.rename(ids_file.with_suffix(".moved"))
    with pytest.raises(HistoryError, match=r"ids-000001\.parquet.*missing"):
        check.run(night2)
    ids_file.with_suffix(".moved").rename(ids_file)
    (history / "manifest.json").rename(history / "manifest.moved")
    with pytest.raises(HistoryError, match=r"manifest\.json is missing"):
        check.run(night2)
    (history / "manifest.moved").rename(history / "manifest.json")
    (history / "manifest.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(HistoryError, match="unreadable"):
        check.run(night2)


def test_rebuild_refuses_when_an_accepted_batch_is_gone(two_nights: tuple[Path, CanonicalBatch]) -> None:
    history, _ = two_nights
    source = history.parent / "night1" / CANONICAL_FILE
    source.rename(source.with_suffix(".gone"))
    with pytest.raises(HistoryError, match="is gone"):
        rebuild_history(history)
    assert open_history(history).count == 1500  # the failed rebuild left the history as it was


def test_a_history_of_another_embedding_is_refused(two_nights: tuple[Path, CanonicalBatch]) -> None:
    history, night2 = two_nights
    with pytest.raises(ConfigError, match="configure the same embedding"):
        build_check("near_duplicate", history_dir=str(history), fields="output").run(night2)


def test_concurrent_update_is_refused(two_nights: tuple[Path, CanonicalBatch]) -> None:
    history, night2 = two_nights
    (history / ".update.lock").write_text("pid 1 on elsewhere\n", encoding="utf-8")
    with pytest.raises(HistoryError, match="being updated by another process"):
        update_history(history, night2.path)


@pytest.mark.parametrize(("options", "message"), [
    ({"threshold": 1.5}, "threshold"),
    ({"k": 0}, "k must be"),
    ({"fields": "prompt+answer"}, "embedding fields"),
    ({"embedding": "word2vec"}, "backend 'word2vec' is unknown"),
    ({"flat_max": -1}, "flat_max"),
    ({"flood_alpha": 2}, "flood_alpha"),
    ({"embedding": "static"}, "needs model_path"),
    ({"thresold": 0.9}, "unexpected keyword"),
    ({"embedding": "minilm"}, "no calibrated threshold"),
])
def test_misconfiguration_fails_at_construction(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_check("near_duplicate", **options)


def test_the_ivf_self_join_agrees_with_exact_search(slice_batch: CanonicalBatch) -> None:
    exact = build_check("near_duplicate").run(slice_batch)
    ivf = build_check("near_duplicate", flat_max=500).run(slice_batch)
    assert ivf.metrics["batch_index"] == "ivf" and exact.metrics["batch_index"] == "flat"
    assert [(f.row, f.detail["representative"]) for f in ivf.findings] == \
        [(f.row, f.detail["representative"]) for f in exact.findings]
