"""atomic_write: a reader sees the old file or the new one, never half of one, and no temporary stays."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunegate.core.io import atomic_write


def test_the_new_file_appears_only_when_the_block_ends(tmp_path: Path) -> None:
    final = tmp_path / "out" / "summary.json"
    with atomic_write(final) as tmp:
        tmp.write_text("new", encoding="utf-8")
        assert not final.exists() and tmp.parent == final.parent
    assert final.read_text(encoding="utf-8") == "new"
    assert [p.name for p in final.parent.iterdir()] == ["summary.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    final = tmp_path / "accepted.parquet"
    final.write_text("old", encoding="utf-8")
    with pytest.raises(OSError, match="disk full"), atomic_write(final) as tmp:
        tmp.write_text("half", encoding="utf-8")
        raise OSError("disk full")
    assert final.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["accepted.parquet"]
