"""Checks side by side: the embedding checks in a process of their own while this process runs the others.

A night's checks are independent but for two things, which every check declares
(:attr:`~tunegate.core.checks.base.Check.lane`, :attr:`~tunegate.core.checks.base.Check.after`): the embedding
checks share the work directory's vectors cache and kNN graph (one *lane*: they run in order, the first computes
what the next reads), and the contributor check reads the poison scans' findings (it starts *after* them).
So a lane runs in a child process, one check after another, while this process runs the checks of no lane in
their order; a check that reads a lane's findings waits for that lane. On a two-core worker a million-record
night's near-duplicate check (~8 minutes) runs beside the poison scans and the Great Expectations suites
instead of before them.

Why a process and not a thread: the poison scans and the suites are Python-bound (the GIL would serialise them),
and the child gives its memory back to the system when its lane ends. Why a lane and not a process per check:
a fresh process pays the imports (NumPy, Arrow, scikit-learn, FAISS: seconds each on a busy machine), which cost
more than the small checks themselves. Why a plain subprocess (``python -m tunegate.core.checks._lane``) and not
``multiprocessing``: a Celery worker runs tasks in daemonic pool processes, which ``multiprocessing`` forbids to
have children. The lane's checks travel pickled in a file of the work directory and its results come back the same
way; its log records come back on its stderr, one JSON line each, and go to this process's handlers (the task
log, the CLI's stderr). The child exits when this process dies (it watches its parent), and this process stops
the child when it fails or is interrupted.

A lane whose own checks are done does not sit idle while this process still has checks to run: it takes the checks
of no lane that read no other check's findings (the *shared* checks), from the end of the list backwards, while this
process goes forwards; each check goes to whichever process claims it first (a file created exclusively in a
hand-over folder), so they meet once and every check runs exactly once. A check that reads the findings of a check a
lane took waits for that lane. On a 40k night the embedding lane (~13 s) then runs the content scan and the Great
Expectations suites (~10 s) beside the trigger scan (~30 s) instead of after it (docs/scale.md).

What a check computes does not depend on where it runs: it reads ``WORK/canonical.parquet`` (and, in its lane,
the files of the checks before it) and writes its findings file, exactly as in one process. Tests compare the two
record by record (``tests/core/test_parallel_checks.py``).

Workers: ``TUNEGATE_CHECK_WORKERS`` (an integer; with ``N`` >= 2, up to ``N - 1`` lanes get a process, a lane
beyond them runs here; ``1``: every check in the calling process, one after another). **Unset (or ``auto``): side by
side (2) for a batch of 20,000 to 300,000 records when the process may use two cores or more, else one after
another.** Measured on a two-core machine (docs/scale.md): side by side did not pay at a million records (the
near-duplicate check already spreads its self-join over the cores, so the two processes shared them: checks 663 s
side by side against 558 s one after another, while the night held the largest pair of checks at once, 6.3 GB
against 4.2 GB); at 200k records, with another job holding a core, it was 1.11x faster for 1.54x the memory; a 100k
night against a 1M history took 65.5 s against 74.5 s one after another. Below 20,000 records the child's imports
(seconds) cost more than the overlap saves.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunegate.exceptions import ConfigError

if TYPE_CHECKING:
    from tunegate.core.checks.base import Check, CheckResult
    from tunegate.core.progress import Tracker

log = logging.getLogger(__name__)

#: The environment variable that fixes how many processes the checks use (``1``: the calling process only).
WORKERS_ENV = "TUNEGATE_CHECK_WORKERS"
#: Unset (or ``auto``), a batch of this many records or more, up to :data:`AUTO_MAX_RECORDS`, runs its embedding checks
#: beside the others when the process may use two cores or more (the module docstring has the measurements).
AUTO_MIN_RECORDS = 20_000
AUTO_MAX_RECORDS = 300_000


def check_workers(records: int | None = None) -> int:
    """How many processes the checks use: ``TUNEGATE_CHECK_WORKERS`` when set to a number; unset or ``auto``, 2 for
    a batch of ``records`` between :data:`AUTO_MIN_RECORDS` and :data:`AUTO_MAX_RECORDS` on a process that may use 2
    cores or more, else 1 (see the module docstring)."""
    raw = os.environ.get(WORKERS_ENV, "").strip()
    if not raw or raw.lower() == "auto":
        from tunegate.core.vector_index import usable_cores

        fits = records is not None and AUTO_MIN_RECORDS <= records <= AUTO_MAX_RECORDS
        return 2 if fits and usable_cores() >= 2 else 1
    try:
        workers = int(raw)
    except ValueError:
        workers = 0
    if workers < 1:
        raise ConfigError(f"{WORKERS_ENV}={raw!r}: expected auto or a whole number >= 1 (1 runs the checks one after "
                          "another in this process)")
    return workers


#: A lane's hand-over folder in the work directory, and the file naming the process that made it.
LANE_PREFIX, OWNER_FILE = ".lane-", "owner"
#: A hand-over folder without an owner file this old was left by a run killed while it was being made.
_UNOWNED_AFTER_S = 600


def sweep_stale_lanes(work_dir: str) -> list[str]:
    """Remove the hand-over folders of lanes whose night is gone (a ``kill -9``, an OOM kill, a lost worker): the
    process that made the folder is no longer alive. A live night's folders (a concurrent run) are left alone.
    Returns the folders removed."""
    removed = []
    for folder in sorted(Path(work_dir).glob(f"{LANE_PREFIX}*")):
        try:
            owner: int | None = int((folder / OWNER_FILE).read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            owner = None
        try:
            if owner is None and time.time() - folder.stat().st_mtime < _UNOWNED_AFTER_S:
                continue  # maybe being made right now
        except OSError:
            continue
        if owner is not None and _alive(owner):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder.name)
    if removed:
        log.info("checks: removed %d hand-over folder(s) of an earlier night that did not end: %s", len(removed),
                 ", ".join(removed))
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def run_side_by_side(work_dir: str, checks: list[Check], workers: int, tracker: Tracker
                     ) -> tuple[list[CheckResult], dict[str, dict[str, float | None]]]:
    """Run ``checks`` over ``work_dir``: up to ``workers - 1`` lanes in child processes, the rest here (see the
    module docstring). Results in the order of ``checks``, and each check's seconds and peak memory. A failing
    check's error is raised here as raised there."""
    away = _lanes_away(checks, workers - 1)
    if not away:
        return run_in_order(work_dir, checks, tracker)
    shared = _shared(checks)
    claims = _hand_over_folder(work_dir) if shared else None
    lanes: dict[str, _Lane] = {}
    results: dict[str, CheckResult] = {}
    costs: dict[str, dict[str, float | None]] = {}
    taken: set[str] = set()  # the names of the shared checks a lane claimed

    def collect(lane: str) -> None:
        done, spent = lanes[lane].wait()
        del lanes[lane]  # only once it has ended: interrupted while waiting, it is still stopped below
        results.update((r.check, r) for r in done)
        costs.update(spent)
        tracker.update(len(done))

    try:
        for lane in away:
            lanes[lane] = _Lane(work_dir, lane, [c for c in checks if c.lane == lane],
                                shared=[(i, checks[i]) for i in shared], claims=claims)
        for i, check in enumerate(checks):
            if check.lane in away:
                continue
            if i in shared and not claim(claims, i):
                taken.add(check.name)  # a lane has it (and every shared check after it)
                continue
            waits = {str(c.lane) for c in checks if c.name in check.after and c.lane in lanes}
            if set(check.after) & taken:
                waits |= set(lanes)  # a lane took a check whose findings it reads
            for lane in sorted(waits):
                collect(lane)
            done, spent = run_in_order(work_dir, [check], tracker)
            results[check.key] = done[0]
            costs.update(spent)
        for lane in list(lanes):
            collect(lane)
    finally:
        for running in lanes.values():  # this process failed or was interrupted: the lanes stop too
            running.stop()
        if claims is not None:
            shutil.rmtree(claims, ignore_errors=True)
    return [results[c.key] for c in checks], {c.key: costs[c.key] for c in checks}


def _shared(checks: list[Check]) -> list[int]:
    """The positions of the checks a lane may take once its own are done (module docstring): those of no lane that
    read no other check's findings."""
    return [i for i, c in enumerate(checks) if c.lane is None and not c.after]


def _hand_over_folder(work_dir: str) -> Path:
    """A new hand-over folder in ``work_dir`` naming this process (:func:`sweep_stale_lanes` removes it when this
    process is gone)."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix=LANE_PREFIX, dir=work_dir))
    (folder / OWNER_FILE).write_text(str(os.getpid()), encoding="utf-8")
    return folder


def claim(claims: Path | None, index: int) -> bool:
    """Whether this process runs the shared check at ``index``: it is the first to create its file in ``claims``
    (``O_EXCL``: one process wins, whatever the timing)."""
    if claims is None:
        return True
    try:
        os.close(os.open(claims / str(index), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return False
    return True


class _Lane:
    """One lane's checks in a child process (``python -m tunegate.core.checks._lane``)."""

    def __init__(self, work_dir: str, name: str, checks: list[Check], *, shared: list[tuple[int, Check]] | None = None,
                 claims: Path | None = None) -> None:
        import pickle
        import subprocess
        import sys
        import threading

        from tunegate.core.progress import interval

        self.name = name
        self.keys = [c.key for c in checks]
        self._dir = _hand_over_folder(work_dir)
        self._out = self._dir / "out.pickle"
        spec = self._dir / "in.pickle"
        with spec.open("wb") as f:
            pickle.dump(list(sys.path), f)  # first: the child must find the checks' modules to unpickle them
            pickle.dump({"work_dir": work_dir, "checks": checks, "interval": interval(),
                         "level": logging.getLogger("tunegate").getEffectiveLevel(),
                         "shared": shared or [], "claims": None if claims is None else str(claims)}, f)
        self._tail: list[str] = []
        self._proc = subprocess.Popen(  # this interpreter, our own module
            [sys.executable, "-m", "tunegate.core.checks._lane", str(spec), str(self._out)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, errors="replace")
        self._relay = threading.Thread(target=self._read_log, name=f"tunegate-lane-{name}", daemon=True)
        self._relay.start()
        log.info("checks %s run in a process of their own (pid %d)", ", ".join(self.keys), self._proc.pid)

    def _read_log(self) -> None:
        import json

        assert self._proc.stderr is not None
        for line in self._proc.stderr:
            try:
                record = json.loads(line)
                logging.getLogger(str(record["name"])).log(int(record["level"]), "%s", record["message"])
            except (ValueError, KeyError, TypeError):  # not one of its records: a crash's traceback, a warning
                text = line.rstrip()
                if text:
                    self._tail = [*self._tail[-19:], text]
                    log.warning("lane %s: %s", self.name, text)

    def wait(self) -> tuple[list[CheckResult], dict[str, dict[str, float | None]]]:
        import pickle

        code = self._proc.wait()
        self._relay.join()
        try:
            if not self._out.is_file():
                tail = "\n".join(self._tail[-5:])
                raise RuntimeError(f"the process running checks {', '.join(self.keys)} ended with status {code} "
                                   f"without results (killed, or out of memory?){': ' + tail if tail else ''}")
            with self._out.open("rb") as f:
                payload = pickle.load(f)  # written by our own child, in our own work directory
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)
        if isinstance(payload, BaseException):
            raise payload
        results, costs = payload
        return results, costs

    def stop(self) -> None:
        import subprocess

        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # it would not stop: make it
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self._dir, ignore_errors=True)


def run_in_order(work_dir: str, checks: list[Check], tracker: Tracker | None
                 ) -> tuple[list[CheckResult], dict[str, dict[str, float | None]]]:
    """Run ``checks`` one after another in this process; their results and each one's seconds and peak memory."""
    from tunegate.core.checks import _MemorySampler
    from tunegate.core.checks.base import CanonicalBatch, save_result

    batch = CanonicalBatch(work_dir)
    results: list[CheckResult] = []
    costs: dict[str, dict[str, float | None]] = {}
    if batch.num_rows >= MMAP_FIXED_FROM:
        fix_mmap_threshold()
    with _MemorySampler() as memory:
        for check in checks:
            memory.restart()
            started = time.perf_counter()
            result = check.run(batch)
            result.check = check.key  # the configured check's key names its findings, whatever it reported
            save_result(work_dir, result)
            costs[check.key] = {"seconds": round(time.perf_counter() - started, 2), "peak_rss_mb": memory.peak()}
            results.append(result)
            give_back_memory()
            if tracker is not None:
                tracker.update()
    return results, costs


#: Allocations of this many bytes or more get pages of their own from the system (``mmap``), returned when freed.
MMAP_THRESHOLD = 128 * 1024
#: From this many records a night's checks fix the threshold (:func:`fix_mmap_threshold`): memory is what binds there.
MMAP_FIXED_FROM = AUTO_MAX_RECORDS + 1
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (glibc's malloc.h)


def fix_mmap_threshold() -> bool:
    """Keep glibc's mmap threshold at :data:`MMAP_THRESHOLD` (its default's starting value) for this process.

    glibc raises the threshold each time a large block is freed (up to 32 MiB), so that after the first big NumPy
    temporaries are freed the next ones come from the heap, where freed blocks stay resident between live small
    ones and ``malloc_trim`` cannot hand them back. A million-record night's trigger scan peaked at 3.58 GB in one
    run and 4.25 GB in another on the same input and code, depending on what the checks before it had left in the
    heap; alone, 3.77 GB with the moving threshold and 2.96 GB with a fixed one (bench/scale/RESULTS.md, eleventh
    session). Setting the threshold explicitly turns the adjustment off (``mallopt(3)``); glibc only. Returns whether
    it was set.

    It costs time: every large temporary is new pages from the system. The 1M night took 536.8 s and 3.33 GB with it,
    459.0 s and 4.24 GB without an hour earlier; the 100k incremental night 63.0 / 63.3 s against 57.9 / 57.6 s back to
    back. So it is set for nights above 300,000 records only (:data:`MMAP_FIXED_FROM`, the size from which the checks
    run one after another in one process), where memory is what binds; smaller nights keep glibc's default."""
    libc = _glibc()
    return libc is not None and libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1


def give_back_memory() -> None:
    """Hand what a check freed back to the system: Python's garbage cycles, Arrow's pool, the C heap's free pages
    (``malloc_trim``; glibc only). Freed memory otherwise stays in the process (a million-record check frees
    gigabytes in small blocks), and the next check, or the lane beside it, starts from it."""
    import gc
    import sys

    gc.collect()
    if "pyarrow" in sys.modules:
        import pyarrow as pa

        pa.default_memory_pool().release_unused()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.cache
def _glibc() -> Any:
    """glibc (``ctypes``), whose ``malloc_trim`` and ``mallopt`` the checks call; ``None`` elsewhere (macOS, musl:
    their allocators have their own rules, nothing to call)."""
    import sys

    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018 - musl's libc.so.6 lacks malloc_trim
    except (OSError, AttributeError):
        return None
    return libc


def _lanes_away(checks: list[Check], processes: int) -> list[str]:
    """The lanes that go to child processes: in order of first appearance, at most ``processes``, and none
    whose checks read findings of checks outside it (a child cannot wait for this process)."""
    away: list[str] = []
    for check in checks:
        lane = check.lane
        if lane is None or lane in away or len(away) >= processes:
            continue
        members = {c.name for c in checks if c.lane == lane}
        if all(set(c.after) & {o.name for o in checks} <= members for c in checks if c.lane == lane):
            away.append(lane)
    return away
