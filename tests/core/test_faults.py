"""Fault tests: ``tunegate scan`` killed with SIGKILL at each stage boundary, then rerun.

Each case runs the real CLI in a subprocess over an output directory that already holds a committed night
(the previous run of the same batch id, published to the history), kills it at one point, and checks:

* in between, no partial set is visible: ``tunegate summary`` refuses the directory (exit 2), and the
  history still verifies;
* after a plain rerun, every input record is in exactly one place, the outputs equal a clean run's, the
  history holds the night once (same count as a clean run) and verifies, and no temporary file is left.

The kill points are :func:`tunegate.core.gate.fault_point` names (``$TUNEGATE_FAULT_POINT``, test-only), plus
one inside the history writer (new generation written, manifest not yet switched), reached by patching the
writer in the child process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.conftest import slice_records, write_jsonl

pytestmark = pytest.mark.slow

BATCH = "night"
#: Runs the CLI; with $FAULT_IN_HISTORY set, dies just before the history's manifest (its commit point) is written.
_RUNNER = """
import os, signal, sys
if os.environ.get("FAULT_IN_HISTORY"):
    import tunegate.core.history.writing as w
    original = w.write_json_atomic
    def write_json_atomic(path, obj):
        if path.name == w.MANIFEST:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(path, obj)
    w.write_json_atomic = write_json_atomic
from tunegate.cli import main
sys.exit(main(sys.argv[1:]))
"""
FAULTS = ["ingested", "checked", "gate_writes", "in_history_update", "history_updated"]


def _scan(inp: Path, out: Path, history: Path, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TUNEGATE_FAULT_POINT", "FAULT_IN_HISTORY")}
    env["PYTHONWARNINGS"] = "ignore"
    if fault == "in_history_update":
        env["FAULT_IN_HISTORY"] = "1"
    elif fault:
        env["TUNEGATE_FAULT_POINT"] = fault
    args = ["scan", str(inp), "--out", str(out), "--history", str(history), "--batch-id", BATCH,
            "--no-suite", "--check", "exact_duplicate", "-q"]
    return subprocess.run([sys.executable, "-c", _RUNNER, *args], capture_output=True, text=True, env=env,
                          timeout=300, check=False)


def _summary(out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tunegate.cli", "summary", str(out)], capture_output=True,
                          text=True, timeout=120, check=False, env=dict(os.environ, PYTHONWARNINGS="ignore"))


def _places(out: Path) -> dict[str, list[int]]:
    """Input line numbers per place (accepted, quarantine, rejected)."""
    lines = {name: sorted(pq.read_table(out / f"{name}.parquet", columns=["source_line"]).column(0).to_pylist())
             for name in ("accepted", "quarantine")}
    rejected = (out / "rejected.jsonl").read_text(encoding="utf-8").splitlines()
    lines["rejected"] = sorted(json.loads(r)["source_line"] for r in rejected)
    return lines


def _history(history: Path) -> tuple[int, list[str]]:
    from tunegate.core.history import open_history

    h = open_history(history, verify=True)
    return h.count, h.batch_names()


def _night(records: list[dict[str, Any]], path: Path) -> Path:
    write_jsonl(path, records)
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"instruction": "cut off\n')  # two malformed lines: rejected, still accounted for
        f.write('{"instruction": 3, "output": "x"}\n')
    return path


@pytest.fixture(scope="module")
def nights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    records = slice_records()
    inputs = tmp_path_factory.mktemp("inputs")
    yesterday = _night(records[:120] + records[:6], inputs / "a.jsonl")
    tonight = _night(records[100:260] + records[150:158], inputs / "b.jsonl")
    clean = tmp_path_factory.mktemp("clean")
    proc = _scan(tonight, clean / "out", clean / "history")
    assert proc.returncode == 0, proc.stderr
    return {"yesterday": yesterday, "tonight": tonight, "clean_out": clean / "out",
            "clean_history": _history(clean / "history"),
            "lines": sum(1 for ln in tonight.read_text(encoding="utf-8").splitlines() if ln.strip())}


@pytest.mark.parametrize("fault", FAULTS)
def test_a_kill_leaves_no_visible_partial_set_and_a_rerun_repairs_it(fault: str, nights: dict[str, Any],
                                                                    tmp_path: Path) -> None:
    out, history = tmp_path / "out", tmp_path / "history"
    assert _scan(nights["yesterday"], out, history).returncode == 0  # a committed, published night
    assert _summary(out).returncode == 0
    yesterday = _history(history)

    killed = _scan(nights["tonight"], out, history, fault=fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    # in between: the directory is refused, not reported with yesterday's (or half of tonight's) summary
    refused = _summary(out)
    assert refused.returncode == 2
    assert f"outputs of {out} are incomplete or from an interrupted run; rerun the night" in refused.stderr
    # the history is never half-written: yesterday's generation, or tonight's if its update completed
    assert _history(history) in (yesterday, nights["clean_history"])

    rerun = _scan(nights["tonight"], out, history)
    assert rerun.returncode == 0, rerun.stderr
    assert _summary(out).returncode == 0
    places = _places(out)
    every_line = sorted(places["accepted"] + places["quarantine"] + places["rejected"])
    assert every_line == list(range(1, nights["lines"] + 1))  # each record in exactly one place
    assert places == _places(nights["clean_out"])
    assert _history(history) == nights["clean_history"]  # the night once: same count as a clean run
    assert not list(out.glob(".*.tmp")) and not (out / "work").exists()


def test_a_second_scan_into_a_running_directory_fails_at_once(nights: dict[str, Any], tmp_path: Path) -> None:
    """The first run is stopped (SIGSTOP) while it holds the lock; the second fails naming it, and deletes nothing."""
    out, history = tmp_path / "out", tmp_path / "history"
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    args = ["scan", str(nights["tonight"]), "--out", str(out), "--history", str(history), "--no-suite",
            "--check", "exact_duplicate", "-q", "--keep-work"]
    first = subprocess.Popen([sys.executable, "-m", "tunegate.cli", *args], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        from tunegate.core.gate import LOCK_OWNER_FILE

        owner = out / LOCK_OWNER_FILE
        deadline = 600
        while not (owner.is_file() and json.loads(owner.read_text(encoding="utf-8") or "{}").get("pid") == first.pid):
            assert first.poll() is None and deadline, "the first run never took the lock"
            deadline -= 1
            subprocess.run(["sleep", "0.05"], check=True)
        first.send_signal(signal.SIGSTOP)
        second = subprocess.run([sys.executable, "-m", "tunegate.cli", *args], capture_output=True, text=True,
                                env=env, timeout=120, check=False)
        assert second.returncode == 2
        assert f"{out} is in use by another tunegate run (pid {first.pid} on " in second.stderr
    finally:
        first.send_signal(signal.SIGCONT)
        first.wait(timeout=300)
    assert first.returncode == 0  # its work directory was not deleted under it
    assert _summary(out).returncode == 0
