"""Progress: log lines at a bounded rate where nobody watches a terminal, tqdm bars where someone does."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_jsonl
from tunegate.core import progress as progress_module
from tunegate.core.ingest import ingest


@pytest.fixture(autouse=True)
def _restore_mode() -> Any:
    saved = dict(progress_module._MODE)
    yield
    progress_module._MODE.update(saved)


def test_log_mode_reports_a_long_stage_at_a_bounded_rate(tmp_path: Path, superni_slice: list[dict],
                                                        caplog: pytest.LogCaptureFixture) -> None:
    progress_module.configure(bars=False, interval=0.0)  # every update may log: the stage is "long"
    caplog.set_level(logging.INFO, logger="tunegate.progress")
    ingest([str(write_jsonl(tmp_path / "b.jsonl", superni_slice[:50]))], tmp_path / "work")
    lines = [r.getMessage() for r in caplog.records if r.name == "tunegate.progress"]
    assert lines[-1].startswith("ingest 1 file(s): done, 50 records")
    assert any(line.startswith("ingest 1 file(s): 25 records,") for line in lines)


def test_the_default_interval_keeps_a_short_stage_silent(tmp_path: Path, superni_slice: list[dict],
                                                         caplog: pytest.LogCaptureFixture) -> None:
    progress_module.configure(bars=False, interval=progress_module.DEFAULT_INTERVAL)
    caplog.set_level(logging.INFO, logger="tunegate.progress")
    ingest([str(write_jsonl(tmp_path / "b.jsonl", superni_slice[:50]))], tmp_path / "work")
    assert [r for r in caplog.records if r.name == "tunegate.progress"] == []


def test_bars_are_drawn_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Tty()
    monkeypatch.setattr("sys.stderr", screen)
    progress_module.configure(bars=True)
    with progress_module.progress("embed", 10, "vectors") as p:
        for _ in range(10):
            p.update()
    assert "embed" in screen.getvalue() and "vectors" in screen.getvalue()
    monkeypatch.setattr("sys.stderr", io.StringIO())  # not a terminal: no bar, whatever the CLI asked
    progress_module.configure(bars=True)
    assert progress_module._MODE["bars"] is False


def test_faiss_loader_chatter_stays_out_of_info() -> None:
    progress_module.quiet_libraries()
    assert not logging.getLogger("faiss.loader").isEnabledFor(logging.INFO)
