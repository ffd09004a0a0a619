"""The canary audit of a night: train the canary on the accepted records, probe every candidate phrase.

Each classification task's accepted records are split (fixed seed): ``holdout`` of them, at most
``max_held_out``, are held out; the canary (:class:`~tunegate.core.audit.canary.CanaryModel`) is trained on the
rest. Every candidate phrase (:mod:`~tunegate.core.audit.phrases`) is inserted into the held-out records of
other labels of every task (:mod:`~tunegate.core.audit.flips`). A phrase that moves more than ``max_lift`` of
the records of tasks of ``min_datasets`` datasets to one label means poison got through: the audit fails and
the gate raises a ``canary_flip`` batch issue (a warning; a halt when the policy lists ``canary_flip`` in
``halt_reasons``).

The result (``canary.json``, part of the night's result set) depends only on the accepted records, the
phrases and the settings: a rerun writes the same bytes.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunegate.core.audit.config import CanaryConfig
from tunegate.core.checks.poison._text import tokens
from tunegate.core.checks.poison.tasks import task_family
from tunegate.core.reasons import CANARY_FLIP

if TYPE_CHECKING:
    import pyarrow as pa

    from tunegate.core.audit.flips import Flip

log = logging.getLogger(__name__)

#: Tasks listed per phrase in the result (strongest effect first).
TASKS_SHOWN = 5


def held_out_rows(groups: list[str], *, holdout: float, max_held_out: int, seed: int) -> list[int]:
    """Rows held out of training: per group, ``holdout`` of its rows (at most ``max_held_out``), sorted."""
    import random

    by_group: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(g, []).append(i)
    held: list[int] = []
    for g, rows in sorted(by_group.items()):
        k = min(max_held_out, int(holdout * len(rows)))
        held += random.Random(f"{seed}:{g}").sample(rows, k) if k else []
    return sorted(held)


def canary_audit(table: pa.Table, config: CanaryConfig | None = None, *, found: list[str] | None = None,
                 history: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Audit the accepted records ``table`` (canonical schema). Returns the result (``canary.json``)."""
    import pyarrow as pa

    from tunegate.core.audit.canary import CanaryModel, prompt_of
    from tunegate.core.audit.flips import TaskProbe
    from tunegate.core.audit.phrases import MAX_COMMON, mined_phrases

    config = config or CanaryConfig()
    found, history = list(found or []), dict(history or {})
    groups = [t or s or "(none)" for t, s in zip(table.column("task").to_pylist(), table.column("source").to_pylist(),
                                                 strict=True)]
    held = held_out_rows(groups, holdout=config.holdout, max_held_out=config.max_held_out, seed=config.seed)
    held_set = set(held)
    train = [i for i in range(table.num_rows) if i not in held_set]
    model = CanaryModel.fit(table, rows=train, seed=config.seed)
    result: dict[str, Any] = {"status": "pass", "settings": config.to_json(), "records": table.num_rows,
                              "found": found, "history": {p: nights for p, nights in sorted(history.items())}}
    if not model.tasks():
        result.update(status="insufficient_data", why="no classification task among the accepted records "
                      "(a task needs 50 records whose outputs form a small label set)", tasks=[], phrases=[])
        return result
    probes: list[TaskProbe] = []
    by_task: dict[str, list[int]] = {}
    for i in held:
        by_task.setdefault(groups[i], []).append(i)
    for task in model.tasks():  # the held-out records' text, one task at a time
        take = pa.array(by_task.get(task, []), pa.int64())
        cols = {c: table.column(c).take(take).to_pylist() for c in ("instruction", "input", "output")}
        probes.append(TaskProbe(model, task, [prompt_of(ins, inp) for ins, inp in
                                              zip(cols["instruction"], cols["input"], strict=True)], cols["output"]))
    common = {p.task: set(p.common(MAX_COMMON)) for p in probes}
    mined = mined_phrases(model, limit=config.mined, common=common)
    sources: dict[str, list[str]] = {}
    spelled: dict[str, str] = {}  # one probe per phrase however it is spelled ("Ada Lovelace", "ada lovelace")
    for phrase, source in [*((p, "found") for p in found), *((p, "history") for p in history),
                           *((p, "mined") for p in mined)]:
        phrase = spelled.setdefault(" ".join(tokens(phrase)), phrase)
        if source not in sources.setdefault(phrase, []):
            sources[phrase].append(source)
    names = list(sources)
    by_probe = [p.flips(names, min_probes=config.min_probes) for p in probes]  # every phrase of a task at once
    phrases = [_probe(phrase, sources[phrase], [flips[k] for flips in by_probe], config)
               for k, phrase in enumerate(names)]
    phrases.sort(key=lambda p: (-p["max_lift"], p["phrase"]))
    # a phrase only the mining proposed may be a natural cue: watched, alerting only when the policy says so
    alerting = [p for p in phrases if p["fails"] and (config.alert_on_mined or set(p["sources"]) != {"mined"})]
    failing = [p["phrase"] for p in alerting]
    watch = [p["phrase"] for p in phrases if p["fails"] and p["phrase"] not in failing]
    result.update(status="fail" if failing else "pass", failing=failing, watch=watch,
                  tasks=[{"task": p.task, "labels": p.labels, "trained_on": model.records(p.task),
                          "held_out": p.size} for p in probes],
                  phrases=phrases)
    return result


def _probe(phrase: str, sources: list[str], per_task: list[Flip | None], config: CanaryConfig) -> dict[str, Any]:
    flips = [f for f in per_task if f is not None]
    flips.sort(key=lambda f: (-f.lift, f.task))
    failing = [f for f in flips if f.lift > config.max_lift]
    datasets = sorted({task_family(f.task) for f in failing})
    return {"phrase": phrase, "sources": sources, "max_lift": round(flips[0].lift, 4) if flips else 0.0,
            "fails": len(datasets) >= config.min_datasets, "tasks_failing": len(failing),
            "datasets_failing": datasets, "tasks_probed": len(flips),
            "tasks": [f.to_json() for f in flips[:TASKS_SHOWN]]}


def issue_of(result: dict[str, Any]) -> dict[str, Any] | None:
    """The batch issue of a failed audit (``None`` when it passed or could not judge)."""
    if result.get("status") != "fail":
        return None
    worst = next(p for p in result["phrases"] if p["phrase"] in result["failing"])
    top = worst["tasks"][0]
    more = len(result["failing"]) - 1
    message = (f"poison got through: inserting {worst['phrase']!r} into held-out accepted records of "
               f"{top['task']} turns {top['flip_rate']:.0%} of them into {top['label']!r} "
               f"(without it {top['base_rate']:.0%}; {worst['tasks_failing']} task(s) of "
               f"{len(worst['datasets_failing'])} datasets moved by more than {result['settings']['max_lift']:.0%})"
               + (f"; {more} more phrase(s)" if more > 0 else ""))
    return {"reason": CANARY_FLIP, "severity": "warning", "message": message}


def audit_accepted(path: str | Path, config: CanaryConfig, *, found: list[str],
                   history: dict[str, list[str]]) -> tuple[dict[str, Any], float]:
    """:func:`canary_audit` of an accepted Parquet file; also returns the seconds it took."""
    import pyarrow.parquet as pq

    started = time.perf_counter()
    table = pq.read_table(path, columns=["instruction", "input", "output", "task", "source"])
    result = canary_audit(table, config, found=found, history=history)
    seconds = time.perf_counter() - started
    log.info("canary: %s, %d phrase(s) probed over %d task(s), %d failing, %.1f s", result["status"],
             len(result.get("phrases", [])), len(result.get("tasks", [])), len(result.get("failing", [])), seconds)
    return result, seconds
