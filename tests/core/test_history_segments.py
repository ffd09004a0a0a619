"""The history's nights as append-only segments: a night writes only its own records' index and id map, the
base and earlier segments stay untouched on disk, reads see one index, and segments fold into a new base."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from tests.core.test_near_duplicate import by_row, ids_of, light_edit, make_batch
from tunegate.core.checks import build_check
from tunegate.core.embeddings import EmbeddingSpec, embed_table
from tunegate.core.history import HistoryError, open_history, rebuild_history, update_history
from tunegate.core.history import writing as history_writing
from tunegate.core.vector_index import IndexParams

IVF = IndexParams(flat_max=500)  # the slice is small: IVF from a few hundred records on


def _manifest(history: Path) -> dict[str, Any]:
    return json.loads((history / "manifest.json").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def _files(history: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in history.iterdir()
            if p.suffix in {".faiss", ".parquet"} and p.name != "known_poison.parquet"}


def _self_matches(history: Path, batch_dir: Path) -> None:
    """Every record of an added batch finds itself (cosine ~1) at a position whose id map names it."""
    h = open_history(history)
    vectors = embed_table(batch_dir / "canonical.parquet", h.spec or EmbeddingSpec())
    import pyarrow.parquet as pq

    table = pq.read_table(batch_dir / "canonical.parquet", columns=["content_sha256"])
    digests = table.column(0).to_pylist()
    sims, pos = h.search(vectors, 1, nprobe=64)
    assert (sims[:, 0] > 0.999).all()
    assert h.column("content_sha256", pos[:, 0]) == digests


@pytest.fixture
def nights(tmp_path: Path, superni_slice: list[dict[str, Any]]) -> list[Path]:
    """Four nights of distinct records (the slice in four parts)."""
    n = len(superni_slice) // 4
    return [make_batch(tmp_path, f"night{i}", superni_slice[i * n:(i + 1) * n]).path.parent for i in range(4)]


def test_a_night_appends_a_segment_and_leaves_the_base_untouched(tmp_path: Path, nights: list[Path]) -> None:
    history = tmp_path / "history"
    update_history(history, nights[0] / "canonical.parquet", batch_id="n0", params=IVF)
    first = _manifest(history)
    assert first["index"]["type"] == "ivf" and first["cells"] and "segments" not in first
    base = _files(history)

    summary = update_history(history, nights[1] / "canonical.parquet", batch_id="n1", params=IVF)
    second = _manifest(history)
    assert summary["segments"] == 1 and summary["generation"] == 2
    assert second["index"] == first["index"] and second["ids"] == first["ids"]  # the base is the same file
    (segment,) = second["segments"]
    assert segment["index"] == "index-000002.faiss" and segment["count"] == summary["added"]
    after = _files(history)
    assert {k: v for k, v in after.items() if k in base} == base  # not rewritten, not even touched
    assert set(after) - set(base) == {"index-000002.faiss", "ids-000002.parquet"}

    h = open_history(history)
    assert h.count == first["count"] + segment["count"] == second["count"]
    assert h.batch_names() == ["n0", "n1"]
    for night in nights[:2]:
        _self_matches(history, night)


def test_reads_find_tonight_s_copies_in_a_segment(tmp_path: Path, nights: list[Path],
                                                  superni_slice: list[dict[str, Any]]) -> None:
    history = tmp_path / "history"
    update_history(history, nights[0] / "canonical.parquet", batch_id="n0", params=IVF)
    update_history(history, nights[1] / "canonical.parquet", batch_id="n1", params=IVF)
    n = len(superni_slice) // 4
    rng = random.Random(3)
    edited = [dict(light_edit(r, rng), id=f"edited-{r['id']}") for r in superni_slice[n:2 * n:25]
              if len(r["input"]) >= 80]
    assert edited
    tonight = make_batch(tmp_path, "tonight", superni_slice[3 * n:] + edited)
    result = build_check("near_duplicate", history_dir=str(history), flat_max=IVF.flat_max).run(tonight)
    ids = ids_of(tonight)
    found = {ids[row]: f.detail for row, f in by_row(result, "near_duplicate").items() if f.detail["in"] == "history"}
    for r in edited:  # copies of records that live in the segment, named with their batch
        assert found[r["id"]]["history_batch"] == "n1"
        assert found[r["id"]]["representative"] == r["id"].split("-", 1)[1]


def test_segments_fold_into_a_new_base(tmp_path: Path, nights: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(history_writing, "MAX_SEGMENTS", 2)
    history = tmp_path / "history"
    for i in range(3):
        update_history(history, nights[i] / "canonical.parquet", batch_id=f"n{i}", params=IVF)
    assert len(_manifest(history)["segments"]) == 2
    count = open_history(history).count
    added = update_history(history, nights[3] / "canonical.parquet", batch_id="n3", params=IVF)["added"]
    folded = _manifest(history)
    assert "segments" not in folded and folded["index"]["file"] == "index-000004.faiss"
    assert folded["cells"]["file"] == "cells-000004.faiss"
    assert sorted(_files(history)) == ["cells-000004.faiss", "ids-000004.parquet", "index-000004.faiss"]
    h = open_history(history)
    assert added > 0 and h.count == count + added
    assert h.batch_names() == ["n0", "n1", "n2", "n3"]
    for night in nights:
        _self_matches(history, night)


def test_a_rerun_of_a_segment_s_night_replaces_it(tmp_path: Path, nights: list[Path]) -> None:
    history = tmp_path / "history"
    update_history(history, nights[0] / "canonical.parquet", batch_id="n0", params=IVF)
    update_history(history, nights[1] / "canonical.parquet", batch_id="n1", params=IVF)
    before = open_history(history).count
    summary = update_history(history, nights[2] / "canonical.parquet", batch_id="n1", params=IVF)  # rerun of n1
    assert summary["replaced"] > 0
    h = open_history(history)
    assert h.batch_names() == ["n0", "n1"]
    assert h.count == before - summary["replaced"] + summary["added"]
    _self_matches(history, nights[0])
    _self_matches(history, nights[2])


def test_a_damaged_or_missing_segment_is_a_clear_error(tmp_path: Path, nights: list[Path]) -> None:
    history = tmp_path / "history"
    update_history(history, nights[0] / "canonical.parquet", batch_id="n0", params=IVF)
    update_history(history, nights[1] / "canonical.parquet", batch_id="n1", params=IVF)
    count = open_history(history).count
    segment = history / "index-000002.faiss"
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF
    segment.write_bytes(bytes(data))
    with pytest.raises(HistoryError, match=r"index-000002\.faiss does not match the sha256.*rebuild"):
        open_history(history)
    segment.unlink()
    with pytest.raises(HistoryError, match=r"index-000002\.faiss .*is missing"):
        open_history(history)
    (history / "ids-000002.parquet").unlink()
    with pytest.raises(HistoryError, match=r"ids-000002\.parquet \(generation 2\) is missing.*rebuild"):
        update_history(history, nights[2] / "canonical.parquet", batch_id="n2", params=IVF)
    assert rebuild_history(history)["history_records"] == count  # the way out the messages name
    h = open_history(history)
    assert h.batch_names() == ["n0", "n1"] and "segments" not in _manifest(history)
    _self_matches(history, nights[1])


def test_a_history_written_before_segments_is_loaded_whole_once(tmp_path: Path, nights: list[Path]) -> None:
    history = tmp_path / "history"
    update_history(history, nights[0] / "canonical.parquet", batch_id="n0", params=IVF)
    manifest = _manifest(history)
    (history / manifest.pop("cells")["file"]).unlink()  # as an older tunegate wrote it: no cells file
    (history / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    update_history(history, nights[1] / "canonical.parquet", batch_id="n1", params=IVF)
    upgraded = _manifest(history)
    assert "segments" not in upgraded and upgraded["cells"]  # rewritten once, with its cells
    update_history(history, nights[2] / "canonical.parquet", batch_id="n2", params=IVF)
    assert len(_manifest(history)["segments"]) == 1
    assert open_history(history).batch_names() == ["n0", "n1", "n2"]


def test_a_segment_update_that_dies_before_its_manifest_leaves_the_previous_generation(
        tmp_path: Path, nights: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    history = tmp_path / "history"
    update_history(history, nights[0] / "canonical.parquet", batch_id="n0", params=IVF)
    update_history(history, nights[1] / "canonical.parquet", batch_id="n1", params=IVF)
    before = _manifest(history)
    count = open_history(history).count

    def die(path: Path, obj: Any) -> None:
        raise KeyboardInterrupt("killed before the commit point")

    with monkeypatch.context() as patch:
        patch.setattr(history_writing, "write_json_atomic", die)
        with pytest.raises(KeyboardInterrupt):
            update_history(history, nights[2] / "canonical.parquet", batch_id="n2", params=IVF)
    assert (history / "index-000003.faiss").is_file()  # tonight's segment was written, never committed
    assert _manifest(history) == before
    h = open_history(history)
    assert h.count == count and h.batch_names() == ["n0", "n1"]

    update_history(history, nights[2] / "canonical.parquet", batch_id="n2", params=IVF)  # the rerun
    after = _manifest(history)
    assert [s["index"] for s in after["segments"]] == ["index-000002.faiss", "index-000003.faiss"]
    assert set(_files(history)) == {"cells-000001.faiss", "index-000001.faiss", "ids-000001.parquet",
                                    "index-000002.faiss", "ids-000002.parquet", "index-000003.faiss",
                                    "ids-000003.parquet"}
    assert open_history(history).batch_names() == ["n0", "n1", "n2"]
    _self_matches(history, nights[2])
