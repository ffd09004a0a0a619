"""Checks side by side (tunegate.core.checks._parallel): same findings and outputs as one after another; lanes run
in a child process in order; errors come back as raised; the number of processes is the environment's or the
batch's."""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
from pathlib import Path
from typing import ClassVar

import pytest

from tests.conftest import NIGHTLY
from tunegate.core.checks import CanonicalBatch, Check, CheckResult, run_checks
from tunegate.core.checks._parallel import (
    AUTO_MAX_RECORDS,
    AUTO_MIN_RECORDS,
    WORKERS_ENV,
    _lanes_away,
    check_workers,
    fix_mmap_threshold,
)
from tunegate.exceptions import BatchHalted, ConfigError, InputError


class _Probe(Check):
    """Says which process ran it and what its lane's earlier checks had written when it started."""

    name = "probe"
    lane: ClassVar[str | None] = "probe-lane"

    def run(self, batch: CanonicalBatch) -> CheckResult:
        seen = sorted(p.name for p in (batch.work_dir / "findings").glob("*.json")) \
            if (batch.work_dir / "findings").is_dir() else []
        return CheckResult(self.name, [], [], {"pid": os.getpid(), "seen": seen, "rows": batch.num_rows})


class _ProbeLater(_Probe):
    name = "probe_later"


class _Here(Check):
    name = "here"

    def run(self, batch: CanonicalBatch) -> CheckResult:
        return CheckResult(self.name, [], [], {"pid": os.getpid()})


class _Fails(Check):
    name = "fails"
    lane: ClassVar[str | None] = "failing-lane"

    def run(self, batch: CanonicalBatch) -> CheckResult:
        raise InputError("cannot read this", path="batch.jsonl", line=7)


class _Dies(Check):
    name = "dies"
    lane: ClassVar[str | None] = "dying-lane"

    def run(self, batch: CanonicalBatch) -> CheckResult:
        logging.getLogger("tunegate.test.lane").warning("about to die in %d", os.getpid())
        os._exit(9)


class _ReadsProbe(Check):
    name = "reads_probe"
    lane: ClassVar[str | None] = "other-lane"
    after: ClassVar[tuple[str, ...]] = ("here",)

    def run(self, batch: CanonicalBatch) -> CheckResult:
        return CheckResult(self.name, [], [], {})


class _Busy(Check):
    """Runs here and holds this process until the lane has saved the findings of ``quick`` (at most 60 s): the lane,
    its own checks done, takes the shared checks after this one meanwhile."""

    name = "busy"

    def run(self, batch: CanonicalBatch) -> CheckResult:
        import time

        deadline = time.monotonic() + 60
        while not (batch.work_dir / "findings" / "quick.json").is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
        return CheckResult(self.name, [], [], {"pid": os.getpid()})


class _Quick(_Here):
    name = "quick"


class _QuickToo(_Here):
    name = "quick_too"


class _ReadsQuick(Check):
    """Reads ``quick``'s findings (so it is no shared check): says whether they were there when it started."""

    name = "reads_quick"
    after: ClassVar[tuple[str, ...]] = ("quick",)

    def run(self, batch: CanonicalBatch) -> CheckResult:
        return CheckResult(self.name, [], [], {"pid": os.getpid(),
                                               "saw": (batch.work_dir / "findings" / "quick.json").is_file()})


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tunegate.core.ingest import ingest

    work = tmp_path_factory.mktemp("parallel") / "work"
    ingest([str(NIGHTLY)], work)
    return work


def _copy(work: Path, to: Path) -> Path:
    shutil.copytree(work, to)
    return to


def test_a_lane_runs_in_a_child_process_in_order_while_the_rest_runs_here(ingested: Path, tmp_path: Path) -> None:
    work = _copy(ingested, tmp_path / "work")
    results = run_checks(str(work), [_Probe(), _Here(), _ProbeLater()], workers=2)
    assert [r.check for r in results] == ["probe", "here", "probe_later"]  # the order asked, wherever they ran
    probe, here, later = (r.metrics for r in results)
    assert here["pid"] == os.getpid()
    assert probe["pid"] != os.getpid() and later["pid"] == probe["pid"]  # one process for the lane
    assert "probe.json" in later["seen"]  # the lane's second check started after the first had saved
    assert probe["rows"] == CanonicalBatch(str(work)).num_rows
    for name in ("probe", "here", "probe_later"):
        assert (work / "findings" / f"{name}.json").is_file()
    times = json.loads((work / "timings.json").read_text(encoding="utf-8"))
    assert set(times) == {"probe", "here", "probe_later"}
    assert all(t["peak_rss_mb"] is None or t["peak_rss_mb"] > 0 for t in times.values())


def test_a_lane_done_with_its_own_checks_takes_the_shared_ones_from_the_end(ingested: Path, tmp_path: Path) -> None:
    """This process is busy; the lane takes the shared checks after it, from the end backwards, each exactly once; a
    check that reads one of them waits for the lane and then runs here; nothing of the claims is left behind."""
    work = _copy(ingested, tmp_path / "work")
    results = run_checks(str(work), [_Probe(), _Busy(), _Quick(), _QuickToo(), _ReadsQuick()], workers=2)
    assert [r.check for r in results] == ["probe", "busy", "quick", "quick_too", "reads_quick"]
    by = {r.check: r.metrics for r in results}
    lane = by["probe"]["pid"]
    assert lane != os.getpid()
    assert by["quick"]["pid"] == by["quick_too"]["pid"] == lane  # taken by the lane
    assert by["busy"]["pid"] == by["reads_quick"]["pid"] == os.getpid()  # claimed here first; not shared
    assert by["reads_quick"]["saw"]  # it waited for the lane that ran what it reads
    times = json.loads((work / "timings.json").read_text(encoding="utf-8"))
    assert set(times) == {"probe", "busy", "quick", "quick_too", "reads_quick"}
    assert not list(work.glob(".lane-*"))


def test_one_worker_runs_everything_here(ingested: Path, tmp_path: Path) -> None:
    work = _copy(ingested, tmp_path / "work")
    results = run_checks(str(work), [_Probe(), _Here()], workers=1)
    assert {r.metrics["pid"] for r in results} == {os.getpid()}


def test_an_error_in_a_lane_comes_back_as_raised(ingested: Path, tmp_path: Path) -> None:
    work = _copy(ingested, tmp_path / "work")
    with pytest.raises(InputError, match=r"^batch.jsonl:7: cannot read this$") as info:
        run_checks(str(work), [_Fails(), _Here()], workers=2)
    assert (info.value.path, info.value.line) == ("batch.jsonl", 7)


def test_a_lane_that_dies_stops_the_night_with_what_it_said(ingested: Path, tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    work = _copy(ingested, tmp_path / "work")
    with caplog.at_level(logging.INFO), \
            pytest.raises(RuntimeError, match=r"checks dies ended with status 9 without results"):
        run_checks(str(work), [_Dies(), _Here()], workers=2)
    said = [r for r in caplog.records if r.name == "tunegate.test.lane"]  # its log came back under its own logger
    assert said and said[0].levelno == logging.WARNING and said[0].getMessage().startswith("about to die in ")
    assert not list(work.glob(".lane-*"))  # its hand-over files are gone


def test_a_lane_that_reads_another_checks_findings_stays_here() -> None:
    assert _lanes_away([_Probe(), _Here(), _ReadsProbe()], 3) == ["probe-lane"]
    assert _lanes_away([_Probe(), _Here(), _ReadsProbe()], 0) == []
    assert _lanes_away([_ReadsProbe()], 3) == ["other-lane"]  # what it waits for is not in this call


def test_workers_come_from_the_environment_else_from_the_batch_and_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WORKERS_ENV, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert check_workers() == 1  # no batch size: one after another
    assert check_workers(AUTO_MIN_RECORDS - 1) == 1  # the child's imports would cost more than the overlap
    assert check_workers(AUTO_MIN_RECORDS) == 2
    assert check_workers(AUTO_MAX_RECORDS) == 2
    assert check_workers(AUTO_MAX_RECORDS + 1) == 1  # a million records: both processes' memory, no time saved
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert check_workers(100_000) == 1  # one core: nothing to overlap
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setenv(WORKERS_ENV, "auto")
    assert check_workers(100_000) == 2
    monkeypatch.setenv(WORKERS_ENV, "1")
    assert check_workers(100_000) == 1
    monkeypatch.setenv(WORKERS_ENV, "2")
    assert check_workers() == 2
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv(WORKERS_ENV, bad)
        with pytest.raises(ConfigError, match=WORKERS_ENV):
            check_workers()


def test_tunegate_errors_survive_a_trip_between_processes() -> None:
    for exc in (InputError("bad", path="f.jsonl", line=3), BatchHalted("halt", ["poison_campaign"]), ConfigError("x")):
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc) and str(back) == str(exc) and back.__dict__ == exc.__dict__


@pytest.mark.slow
def test_the_default_gate_side_by_side_equals_one_after_another(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Every default check and both suites: the night's outputs are the same bytes either way."""
    import pyarrow.parquet as pq

    from tunegate.core.pipeline import scan

    outs = {}
    for workers in ("1", "2"):
        monkeypatch.setenv(WORKERS_ENV, workers)
        outs[workers] = tmp_path / f"out-{workers}"
        summary = scan([str(NIGHTLY)], outs[workers], keep_work=True)
        assert summary["verdict"] in {"pass", "quarantine", "halt"}
    one, two = outs["1"], outs["2"]
    times = json.loads((two / "work" / "timings.json").read_text(encoding="utf-8"))
    assert {"near_duplicate", "embedding_outlier", "poison_trigger", "gx_instruction_record"} <= set(times)
    for name in ("accepted.parquet", "quarantine.parquet"):
        assert pq.read_table(one / name).equals(pq.read_table(two / name)), name
    assert (one / "rejected.jsonl").read_bytes() == (two / "rejected.jsonl").read_bytes()
    for findings in sorted((one / "work" / "findings").glob("*.parquet")):
        assert pq.read_table(findings).equals(pq.read_table(two / "work" / "findings" / findings.name)), findings.name
    first, second = (json.loads((o / "summary.json").read_text(encoding="utf-8")) for o in (one, two))
    for key in ("verdict", "accepted", "quarantined", "rejected", "reasons", "halt_reasons", "conservation_ok"):
        assert first[key] == second[key], key


@pytest.mark.parametrize("workers", [2, 1])
def test_hand_over_folders_of_a_killed_night_are_swept_and_a_live_nights_kept(ingested: Path, tmp_path: Path,
                                                                              workers: int) -> None:
    """A ``kill -9`` leaves a lane's hand-over folder behind (nothing reads it again); the next run of the checks in
    that work directory removes it, side by side or not (a night killed with ``TUNEGATE_CHECK_WORKERS=2`` and retried
    without it). A folder whose owner is alive (a concurrent night) and one just being made stay."""
    import subprocess
    import sys

    from tunegate.core.checks._parallel import OWNER_FILE, sweep_stale_lanes

    work = _copy(ingested, tmp_path / "work")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    for name, owner in ((".lane-killed", str(gone.pid)), (".lane-live", str(os.getpid())), (".lane-making", None)):
        (work / name).mkdir()
        (work / name / "out.pickle").write_bytes(b"x" * 100)
        if owner is not None:
            (work / name / OWNER_FILE).write_text(owner, encoding="utf-8")
    old = work / ".lane-unowned-old"
    old.mkdir()
    os.utime(old, (0, 0))
    results = run_checks(str(work), [_Probe(), _Here()], workers=workers)
    assert [r.check for r in results] == ["probe", "here"]
    assert sorted(p.name for p in work.glob(".lane-*")) == [".lane-live", ".lane-making"]
    assert sweep_stale_lanes(str(work)) == []  # nothing more to sweep


def test_the_mmap_threshold_is_fixed_on_glibc() -> None:
    """Large blocks keep their own pages (returned when freed) instead of glibc's moving threshold: set, and setting
    it again is harmless."""
    import platform
    import sys

    expected = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert fix_mmap_threshold() is expected
    assert fix_mmap_threshold() is expected
