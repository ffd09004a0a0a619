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


def test_concurrent_update_waits_for_the_writer_and_a_dead_writers_lock_is_gone(
        two_nights: tuple[Path, CanonicalBatch]) -> None:
    import subprocess
    import sys

    from tunegate.core.history import writing as history_module

    history, night2 = two_nights
    # a lock file left behind by a killed writer holds nothing: the OS released its lock with the process
    (history / ".update.lock").write_text("pid 1 on elsewhere\n", encoding="utf-8")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from filelock import FileLock; lock = FileLock(sys.argv[1]); lock.acquire(); "
        "print('held', flush=True); time.sleep(60)"), str(history / ".update.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(HistoryError, match=r"being updated by another process \(holder unknown\); waited 1 s"), \
                history_module.writer_lock(history, timeout=1.0):
            pass
    finally:
        holder.kill()
        holder.wait()
    # the holder died: the next writer gets the lock at once, no person has to delete anything
    with history_module.writer_lock(history, timeout=1.0):
        pass
    assert update_history(history, night2.path)["history_records"] > 0


@pytest.mark.parametrize(("options", "message"), [
    ({"threshold": 1.5}, r"near_duplicate threshold must be a number in \(0\.0, 1\.0\], got 1\.5"),
    ({"k": 0}, "near_duplicate k must be an integer between 1 and 1000, got 0"),
    ({"fields": "prompt+answer"}, r"near_duplicate embedding fields 'prompt\+answer'"),
    ({"embedding": "word2vec"}, "near_duplicate embedding backend 'word2vec' is unknown"),
    ({"flat_max": -1}, "near_duplicate flat_max must be an integer >= 0, got -1"),
    ({"flood_alpha": 2}, r"near_duplicate flood_alpha must be a number in \(0\.0, 1\.0\), got 2"),
    ({"embedding": "static"}, "near_duplicate embedding backend 'static' needs model_path"),
    ({"thresold": 0.9},  # the check's own options first, then the embedding options it shares
     r"near_duplicate: unknown option 'thresold'; allowed: threshold \(default None\), k \(default 10\).*"
     r"embedding \(default 'hashing'\)"),
    ({"embedding": "minilm"}, "near_duplicate: no calibrated threshold for the 'minilm' backend"),
])
def test_misconfiguration_fails_at_construction(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_check("near_duplicate", **options)


def test_options_are_one_frozen_config_and_the_threshold_follows_the_backend(tmp_path: Path) -> None:
    import dataclasses

    from tunegate.core.checks.near_duplicate import NearDuplicateCheck, NearDuplicateConfig
    from tunegate.core.policy import check_options

    config = NearDuplicateConfig(threshold=0.97, k=20)
    check = NearDuplicateCheck(config)
    assert check.config is config and (check.threshold, check.k) == (0.97, 20)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.k = 5  # type: ignore[misc]
    # no threshold given: the backend's calibrated one (hashing 0.95, static 0.98), resolved, not stored
    assert build_check("near_duplicate").threshold == 0.95
    static = build_check("near_duplicate", embedding="static", model_path=str(tmp_path))
    assert static.threshold == 0.98 and static.config.threshold is None  # type: ignore[attr-defined]
    options = check_options("near_duplicate")
    assert list(options)[:2] == ["threshold", "k"] and options["threshold"] is None  # its own options first
    assert {"history_dir", "batch_id", "template_variants"} <= set(options)


def test_the_ivf_self_join_agrees_with_exact_search(slice_batch: CanonicalBatch) -> None:
    exact = build_check("near_duplicate").run(slice_batch)
    ivf = build_check("near_duplicate", flat_max=500).run(slice_batch)
    assert ivf.metrics["batch_index"] == "ivf" and exact.metrics["batch_index"] == "flat"
    assert [(f.row, f.detail["representative"]) for f in ivf.findings] == \
        [(f.row, f.detail["representative"]) for f in exact.findings]


# --- the rule: a near-duplicate is the same training example said again ------------------------------------


def _self_instruct() -> list[dict[str, Any]]:
    import gzip
    import json

    from tests.conftest import DATA

    with gzip.open(DATA / "self_instruct_slice.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_records_sharing_a_task_definition_but_not_what_is_asked_are_distinct(slice_batch: CanonicalBatch) -> None:
    """FAISS proposes them (>= 0.95: one long definition shared, a short input that differs); the text says no."""
    result = build_check("near_duplicate").run(slice_batch)
    ids = ids_of(slice_batch)
    pairs = {frozenset((ids[f.row], f.detail["representative"])) for f in result.findings}
    # "Comment: ;)" vs "Comment: :)" (toxicity), "Comment:" vs "Comment: ;-))))", two tweets that share a
    # run of @USER mentions but say different things
    for a, b in (("task327-00727", "task327-01145"), ("task328-01662", "task328-01780"),
                 ("task286-00603", "task286-01027")):
        assert frozenset((a, b)) not in pairs
    assert result.metrics["candidate_pairs_distinct"] >= 3
    assert "input: a different word in a short text" in result.metrics["distinct_because"]
    assert result.metrics["status"] == "ok"


def test_a_different_answer_makes_an_edited_copy_distinct(superni_slice: list[dict[str, Any]]) -> None:
    from tunegate.core.checks.near_duplicate import field_words, pair_difference

    fields = ("instruction", "input", "output")
    by_id = {r["id"]: r for r in superni_slice}
    story, edited = by_id["task288-00152"], by_id["task288-00271"]  # one wire story, two wordings: a pair

    def words(rec: dict[str, Any]) -> list[tuple[str, ...]]:
        return [field_words(rec[f], 20_000) for f in fields]

    assert pair_difference(words(story), words(edited), fields) is None
    # the same story with another headline is another example (a short answer must match word for word)
    relabelled = dict(edited, output=story["output"].replace("welcomes", "rejects"))
    assert pair_difference(words(story), words(relabelled), fields) == "output: a different short answer"
    # so is a toxicity comment with the other label
    comment = by_id["task327-01659"]
    flipped = dict(comment, output="Toxic" if comment["output"] != "Toxic" else "Non-toxic")
    assert pair_difference(words(comment), words(flipped), fields) == "output: a different short answer"


def test_empty_fields_are_not_evidence_of_similarity() -> None:
    from tunegate.core.checks.near_duplicate import field_words, pair_difference

    fields = ("instruction", "input", "output")
    records = [r for r in _self_instruct() if r["input"]]
    rec = records[0]
    words = [field_words(rec[f], 20_000) for f in fields]
    # the same record with its input emptied: one side empty, the other not, is a difference
    emptied = [field_words(dict(rec, input="")[f], 20_000) for f in fields]
    assert pair_difference(words, emptied, fields) == "input: empty on one side"
    # two records without input agree on that field only vacuously: what decides is the rest
    no_input = [r for r in _self_instruct() if not r["input"]][:2]
    a, b = ([field_words(r[f], 20_000) for f in fields] for r in no_input)
    assert pair_difference(a, b, fields) is not None
    assert pair_difference(a, a, fields) is None
    # and when every compared field is empty on both sides there is no evidence at all
    assert pair_difference([()], [()], ("input",)) == "every field is empty"


def test_light_edits_are_the_same_example_and_new_words_are_not(superni_slice: list[dict[str, Any]]) -> None:
    from tunegate.core.checks.near_duplicate import field_difference, field_words

    def words(text: str) -> tuple[str, ...]:
        return field_words(text, 20_000)

    by_id = {r["id"]: r for r in superni_slice}
    story = by_id["task288-00152"]["input"]  # 35 words
    rng = random.Random(1)
    for _ in range(20):
        assert field_difference(words(story), words(light_edit({"input": story}, rng)["input"])) is None
    assert field_difference(words(story), words(story.replace("afghan president", "AFGHAN PRESIDENT"))) is None
    # a new clause inside the story is new content, another number is another fact
    assert field_difference(words(story), words(story.replace("thursday", "thursday after a long meeting"))) \
        == "different content (a run of 3+ words)"
    assert field_difference(words("A man is playing a guitar."), words("A man is playing a flute.")) \
        == "a different word in a short text"
    assert field_difference(words("Comment: HuH?"), words("Comment: Huh..")) is None  # punctuation and case


def test_a_one_record_batch_says_it_cannot_compare(tmp_path: Path, superni_slice: list[dict[str, Any]]) -> None:
    result = build_check("near_duplicate").run(make_batch(tmp_path, "one", superni_slice[:1]))
    assert result.findings == [] and result.metrics["status"] == "insufficient_data"
    assert "nothing to compare with" in result.metrics["status_reason"]
    assert [(i.reason, i.severity) for i in result.issues] == [("check_skipped", "info")]


def test_history_matches_are_verified_on_the_accepted_batch_text(
        tmp_path: Path, superni_slice: list[dict[str, Any]]) -> None:
    history = tmp_path / "history"
    night1 = make_batch(tmp_path, "night1", superni_slice[:1500])
    update_history(history, night1.path, batch_id="night1")
    by_id = {r["id"]: r for r in superni_slice[:1500]}
    rng = random.Random(4)
    originals = [r for r in superni_slice[:1500:60] if len(r["input"]) >= 80]
    edited = [dict(light_edit(r, rng), id=f"edited-{r['id']}") for r in originals]
    # a history record with another answer: FAISS finds it, the text says it is another example
    relabelled = [dict(r, id=f"relabelled-{r['id']}", output=by_id[o["id"]]["output"])
                  for r, o in zip(originals[:5], originals[5:10], strict=True) if r["output"] != o["output"]]
    night2 = make_batch(tmp_path, "night2", superni_slice[1500:2000] + edited + relabelled)
    result = build_check("near_duplicate", history_dir=str(history)).run(night2)
    ids = ids_of(night2)
    nd = {ids[row]: f.detail for row, f in by_row(result, "near_duplicate").items()}
    assert {r["id"] for r in edited} <= set(nd)
    assert all(nd[r["id"]]["in"] == "history" for r in edited)
    assert relabelled and not {r["id"] for r in relabelled} & set(nd)

    # the accepted batch file is gone: matches cannot be verified, so they are not flagged, and it says so
    night1.path.rename(night1.path.with_suffix(".moved"))
    again = build_check("near_duplicate", history_dir=str(history)).run(night2)
    assert not {r["id"] for r in edited} & {ids[f.row] for f in again.findings}
    assert [i.severity for i in again.issues if i.reason == "history_text_missing"] == ["warning"]


def test_template_variants_are_duplicates_unless_the_policy_keeps_them(
        tmp_path: Path, superni_slice: list[dict[str, Any]]) -> None:
    """P3-style data: the same real review and label under two prompt wrappers, 60 records each."""
    reviews = [r for r in superni_slice if r["task"] == "task493_review_polarity_classification"
               and len(r["input"].split()) >= 40][:60]
    wrappers = [("Review: {}\nWhat is the sentiment expressed in this review?", "imdb_Text_Expressed_Sentiment"),
                ("{}\nThe sentiment expressed for the movie is", "imdb_Movie_Expressed_Sentiment")]
    records = [{"instruction": w.format(r["input"]), "input": "", "output": r["output"], "task": task,
                "id": f"{task}-{i}"} for w, task in wrappers for i, r in enumerate(reviews)]
    batch = make_batch(tmp_path, "p3", records)
    default = by_row(build_check("near_duplicate").run(batch), "near_duplicate")
    kept = by_row(build_check("near_duplicate", template_variants=False).run(batch), "near_duplicate")
    assert len(default) == 60  # every record under the second wrapper repeats one under the first
    assert all(f.detail["representative"].startswith("imdb_Text") for f in default.values())
    assert kept == {}


def test_a_batch_checked_against_an_older_generation_is_not_published(
        two_nights: tuple[Path, CanonicalBatch], tmp_path: Path, superni_slice: list[dict[str, Any]]) -> None:
    """Two batches checked against the same history: the second to publish must be re-checked first."""
    from tunegate.exceptions import HistoryConflict

    history, night2 = two_nights
    seen = build_check("near_duplicate", history_dir=str(history)).run(night2).metrics["history_generation"]
    other = make_batch(tmp_path, "other", superni_slice[3000:3100])
    update_history(history, other.path, batch_id="other", expected_generation=seen)  # the first one wins
    count = open_history(history).count
    with pytest.raises(HistoryConflict, match=f"moved from generation {seen} to {seen + 1}"):
        update_history(history, night2.path, batch_id="night2", expected_generation=seen)
    assert open_history(history).count == count  # nothing written
    again = build_check("near_duplicate", history_dir=str(history)).run(night2).metrics["history_generation"]
    assert update_history(history, night2.path, batch_id="night2", expected_generation=again)["added"] > 0
