"""The gate: findings + policy -> verdict, and every record written to exactly one place.

Reads the work directory (canonical records, rejected input, findings of every check); never
recomputes a check. Writes, atomically, into the output directory:

    accepted.parquet    records that passed (canonical schema)
    quarantine.parquet  flagged records: canonical schema + ``reasons`` + ``findings`` (the evidence)
    rejected.jsonl      input that could not be parsed or normalized (file, line, raw text, error)
    summary.json        counts, verdict, per-check results, input sha256 (a :class:`dict`)
    report.html         the human-readable report
    held.parquet        instead of accepted.parquet when the batch halts: the records that passed their
                        checks, held back so that no consumer can pick up a halted night

**A result set, not files.** ``summary.json`` is the commit marker of the set: it is removed first when a run
of the directory starts (so the previous night's set stops being valid at once), written last, and holds
the sha256 and size of every other output under ``commit.files``. :func:`load_committed` is what every
reader calls: no summary, no ``commit`` section, or a file that does not match it means the outputs are
incomplete or from an interrupted run. One run per output directory at a time: :func:`output_lock`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tunegate import __version__
from tunegate.core.checks.base import load_findings, load_summaries
from tunegate.core.ingest import CANONICAL_FILE, REJECTED_FILE, IngestResult
from tunegate.core.io import atomic_path, atomic_write, commit, copy_atomic, write_json_atomic, write_text_atomic
from tunegate.core.policy import GatePolicy
from tunegate.exceptions import TunegateError

log = logging.getLogger(__name__)

ACCEPTED_FILE = "accepted.parquet"
QUARANTINE_FILE = "quarantine.parquet"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"
HELD_FILE = "held.parquet"
DATA_DOCS_DIR = "data_docs"
#: The OS-level lock of an output directory, and the sidecar naming its holder (pid, host) for the message.
LOCK_FILE = ".tunegate.lock"
LOCK_OWNER_FILE = ".tunegate.lock.owner"
VERDICTS = ("pass", "quarantine", "halt")
_SAMPLES_PER_REASON = 5
_SAMPLE_CHARS = 2_000  # characters of a field kept for the report's examples
_MAX_HALT_MESSAGES = 10


def gate(work_dir: str | Path, out_dir: str | Path, policy: GatePolicy | None = None, *,
         commit_set: bool = True) -> dict[str, Any]:
    """Partition the batch, decide the verdict and write all outputs. Returns the summary.

    The previous set of ``out_dir`` is invalidated first (:func:`begin_outputs`). With ``commit_set`` (the
    default) the set is committed at the end (:func:`commit_outputs` writes ``summary.json``); without it the
    caller commits after a later step (``scan`` does, after the history update). Call it holding
    :func:`output_lock` of ``out_dir``.
    """
    policy = policy or GatePolicy()
    work, out = Path(work_dir), Path(out_dir)
    begin_outputs(out, keep=work / REJECTED_FILE)
    findings = load_findings(work)

    # row -> (quarantining reasons, all findings of the row)
    flagged: dict[int, tuple[list[str], list[dict[str, Any]]]] = {}
    reported: Counter[str] = Counter()
    for row, row_findings in findings.items():
        reasons = sorted({f["reason"] for f in row_findings if policy.quarantines(f["reason"])})
        if reasons:
            flagged[row] = (reasons, sorted(row_findings, key=lambda f: (f["check"], f["reason"])))
        else:
            reported.update({f["reason"] for f in row_findings})

    # the passing records go to a temporary file that becomes accepted.parquet, or held.parquet on halt
    tmp_acc = atomic_path(out / ACCEPTED_FILE)
    try:
        summary = _write_partition(work, out, policy, tmp_acc, flagged=flagged, reported=reported)
    finally:
        tmp_acc.unlink(missing_ok=True)
    if commit_set:
        commit_outputs(out, summary)
    log.info("gate: verdict=%s total=%d accepted=%d held=%d quarantined=%d rejected=%d", summary["verdict"],
             summary["total"], summary["accepted"], summary["held"], summary["quarantined"], summary["rejected"])
    return summary


def _write_partition(work: Path, out: Path, policy: GatePolicy, tmp_acc: Path, *,
                     flagged: dict[int, tuple[list[str], list[dict[str, Any]]]],
                     reported: Counter[str]) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tunegate.core.report import render_report
    from tunegate.core.schema import canonical_schema, quarantine_schema

    ingest = IngestResult.load(work)
    check_summaries = load_summaries(work)
    reason_counts: Counter[str] = Counter()
    samples: dict[str, list[dict[str, Any]]] = {}
    accepted = quarantined = 0
    # the writers close (leaving the with) before the files are renamed into place
    with (atomic_write(out / QUARANTINE_FILE) as tmp_q,
          pq.ParquetWriter(tmp_acc, canonical_schema(), compression="zstd") as acc_w,
          pq.ParquetWriter(tmp_q, quarantine_schema(), compression="zstd") as q_w):
        source = pq.ParquetFile(work / CANONICAL_FILE)
        start = 0
        for rb in source.iter_batches(batch_size=50_000):
            n = rb.num_rows
            rows = range(start, start + n)
            mask = [r in flagged for r in rows]
            q_idx = [i for i, m in enumerate(mask) if m]
            if len(q_idx) < n:
                keep = pa.array([not m for m in mask])
                acc_w.write_batch(rb.filter(keep))
                accepted += n - len(q_idx)
            if q_idx:
                qb = rb.take(pa.array(q_idx, pa.int64()))
                reasons_col, findings_col = [], []
                for i in q_idx:
                    reasons, row_findings = flagged[start + i]
                    reasons_col.append(reasons)
                    findings_col.append(row_findings)
                    reason_counts.update(reasons)
                    for reason in reasons:
                        bucket = samples.setdefault(reason, [])
                        if len(bucket) < _SAMPLES_PER_REASON:
                            bucket.append(_sample(qb, len(reasons_col) - 1, row_findings, reason))
                table = pa.Table.from_batches([qb]).append_column(
                    "reasons", pa.array(reasons_col, pa.list_(pa.string()))).append_column(
                    "findings", pa.array(findings_col, quarantine_schema().field("findings").type))
                q_w.write_table(table.cast(quarantine_schema()))
                quarantined += len(q_idx)
            start += n

    fault_point("gate_writes")  # test-only: quarantine.parquet written, the passing records not yet placed
    rejected_src = work / REJECTED_FILE
    if rejected_src.resolve() != (out / REJECTED_FILE).resolve():
        copy_atomic(rejected_src, out / REJECTED_FILE)

    _publish_artifacts(work, out, check_summaries)
    rejected = ingest.rejected
    total = ingest.total
    verdict, halt_reasons, alerts = _decide(policy, check_summaries, total=total, records=ingest.records,
                                            accepted=accepted, quarantined=quarantined, rejected=rejected)
    summary: dict[str, Any] = {
        "tunegate_version": __version__,
        "verdict": verdict,
        "total": total,
        "accepted": accepted,
        "quarantined": quarantined,
        "rejected": rejected,
        "held": 0,
        "conservation_ok": accepted + quarantined + rejected == total,
        "reasons": dict(reason_counts.most_common()),
        "reported_only": dict(reported.most_common()),
        "halt_reasons": halt_reasons,
        "alerts": alerts,
        "checks": {s["check"]: s for s in check_summaries},
        "check_status": _check_status(policy, check_summaries),
        "inputs": [{"path": i.path, "sha256": i.sha256, "records": i.records, "rejected": i.rejected}
                   for i in ingest.inputs],
        "policy": policy.to_json(),
        "out_dir": str(out.resolve()),
        "outputs": {"accepted": ACCEPTED_FILE, "quarantine": QUARANTINE_FILE, "rejected": REJECTED_FILE,
                    "summary": SUMMARY_FILE, "report": REPORT_FILE},
    }
    if not summary["conservation_ok"]:  # a bug, never a data problem: refuse to let the batch through
        summary["verdict"] = "halt"
        summary["halt_reasons"].append(
            f"record accounting is off: {accepted} + {quarantined} + {rejected} != {total}")
    if summary["verdict"] == "halt":
        # a halted night leaves no accepted.parquet a consumer could pick up: the passing records are held
        summary["accepted"], summary["held"] = 0, accepted
        outputs = summary["outputs"]
        summary["outputs"] = {"held": HELD_FILE, **{k: v for k, v in outputs.items() if k != "accepted"}}
        commit(tmp_acc, out / HELD_FILE)
    else:
        commit(tmp_acc, out / ACCEPTED_FILE)
    write_text_atomic(out / REPORT_FILE, render_report(summary, samples, _rejected_samples(rejected_src)))
    return summary


# --- the result set: invalidate, commit, verify; one run per output directory -------------------------------

def incomplete_message(out_dir: str | Path, why: str) -> str:
    return f"outputs of {out_dir} are incomplete or from an interrupted run; rerun the night ({why})"


#: Test-only: the name of a :func:`fault_point` at which the process kills itself with SIGKILL.
FAULT_POINT_ENV = "TUNEGATE_FAULT_POINT"


def fault_point(name: str) -> None:
    """Test-only hook: ``kill -9`` this process here when ``$TUNEGATE_FAULT_POINT`` equals ``name``.

    A no-op otherwise (one environment lookup). The fault tests (tests/core/test_faults.py) use it to stop a
    run at a precise stage boundary, the way a killed worker or an OOM kill would. Points: ``ingested``,
    ``checked`` (scan), ``gate_writes`` (gate, quarantine written, passing records not yet placed),
    ``history_updated`` (scan, history updated, set not yet committed).
    """
    if os.environ.get(FAULT_POINT_ENV) == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def remove_stale_temps(directory: Path) -> list[Path]:
    """Remove the temporary siblings (``.NAME.*.tmp``) that :func:`tunegate.core.io.atomic_path` made in
    ``directory`` and a killed process left behind; returns what was removed. Call it only under the
    directory's lock: a live writer's temporary file looks the same."""
    removed = []
    for tmp in directory.glob(".*.tmp") if directory.is_dir() else ():
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def begin_outputs(out_dir: str | Path, *, keep: Path | None = None) -> None:
    """Invalidate the directory's previous result set before anything of a new run is written.

    The marker (``summary.json``) goes first, so from that instant no reader accepts the old set; then the
    old outputs themselves (above all ``accepted.parquet``, which a careless consumer might read without
    the marker), the Data Docs, and the temporary files a killed run left. Call it holding the lock.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / SUMMARY_FILE).unlink(missing_ok=True)
    for name in (ACCEPTED_FILE, HELD_FILE, QUARANTINE_FILE, REPORT_FILE, REJECTED_FILE):
        path = out / name
        if keep is None or not path.exists() or path.resolve() != keep.resolve():
            path.unlink(missing_ok=True)
    shutil.rmtree(out / DATA_DOCS_DIR, ignore_errors=True)
    removed = remove_stale_temps(out)
    if removed:
        log.info("gate: removed %d temporary file(s) an interrupted run left in %s", len(removed), out)


def _file_entry(path: Path) -> dict[str, Any]:
    import hashlib

    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return {"sha256": digest, "bytes": path.stat().st_size}


def commit_outputs(out_dir: str | Path, summary: dict[str, Any]) -> dict[str, Any]:
    """Commit the result set: record each output's sha256 and size in the summary, then write ``summary.json``
    (atomically, last). Until this returns, readers refuse the directory. Returns the summary."""
    out = Path(out_dir)
    files = [rel for key, rel in summary["outputs"].items() if key != "summary"]
    for s in summary.get("checks", {}).values():
        files += list(s.get("artifacts", {}).values())
    summary["commit"] = {"files": {rel: _file_entry(out / rel) for rel in sorted(set(files))}}
    write_json_atomic(out / SUMMARY_FILE, summary)
    return summary


def load_committed(out_dir: str | Path, *, verify_hashes: bool = True) -> dict[str, Any]:
    """The summary of a committed result set; raises :class:`TunegateError` (:func:`incomplete_message`) when
    there is none: no ``summary.json``, no ``commit`` section, or an output that is missing or does not match
    its recorded size and sha256. Every reader of a night's outputs goes through this."""
    out = Path(out_dir)
    path = out / SUMMARY_FILE
    if not out.is_dir():
        raise TunegateError(f"{out}: no such directory (has the batch run?)")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TunegateError(incomplete_message(out, f"no {SUMMARY_FILE}")) from None
    except (OSError, ValueError) as exc:
        raise TunegateError(incomplete_message(out, f"{SUMMARY_FILE} is unreadable: {exc}")) from None
    files = (summary.get("commit") or {}).get("files") if isinstance(summary, dict) else None
    if not isinstance(files, dict) or not files:
        raise TunegateError(incomplete_message(out, f"{SUMMARY_FILE} has no commit record"))
    for rel, entry in sorted(files.items()):
        target = out / rel
        if not target.is_file():
            raise TunegateError(incomplete_message(out, f"{rel} is missing"))
        if target.stat().st_size != entry.get("bytes"):
            raise TunegateError(incomplete_message(out, f"{rel} is not the file the summary committed (size)"))
        if verify_hashes and _file_entry(target)["sha256"] != entry.get("sha256"):
            raise TunegateError(incomplete_message(out, f"{rel} is not the file the summary committed (sha256)"))
    return dict(summary)


@contextmanager
def output_lock(out_dir: str | Path) -> Iterator[None]:
    """One run per output directory: an OS-level lock (``filelock``, flock) that dies with its holder.

    Taken without waiting: a second run into the same directory fails at once with a :class:`TunegateError`
    naming the holder (pid and host, from a sidecar file the holder writes), instead of deleting the other
    run's work directory. The lock is not re-entrant across calls; take it once per run.
    """
    from filelock import FileLock, Timeout

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out / LOCK_FILE), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise TunegateError(f"{out} is in use by another tunegate run ({_lock_holder(out)}); wait for it to "
                            "finish, or choose another output directory (the lock is released when that "
                            "process ends)") from None
    try:
        owner = {"pid": os.getpid(), "host": socket.gethostname()}
        write_json_atomic(out / LOCK_OWNER_FILE, owner)
        yield
    finally:
        lock.release()


def _lock_holder(out: Path) -> str:
    try:
        owner = json.loads((out / LOCK_OWNER_FILE).read_text(encoding="utf-8"))
        return f"pid {owner['pid']} on {owner['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


def _publish_artifacts(work: Path, out: Path, check_summaries: list[dict[str, Any]]) -> None:
    """Copy the checks' HTML artifacts (GX Data Docs) next to the outputs; summary paths become OUT-relative."""
    for s in check_summaries:
        for name, rel in list(s.get("artifacts", {}).items()):
            src = work / rel
            if not src.is_file():
                s["artifacts"].pop(name)
                continue
            target = out / DATA_DOCS_DIR / Path(rel).name
            copy_atomic(src, target)
            s["artifacts"][name] = f"{DATA_DOCS_DIR}/{target.name}"


def _check_status(policy: GatePolicy, check_summaries: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Per check: ``ok``, ``insufficient_data`` (it said the batch is too small or too uniform to judge, and
    why) or ``disabled`` (the policy turned it off): every check of the product appears, run or not."""
    status: dict[str, dict[str, str]] = {}
    for s in check_summaries:
        metrics = s.get("metrics") or {}
        entry = {"status": str(metrics.get("status", "ok"))}
        if metrics.get("status_reason"):
            entry["reason"] = str(metrics["status_reason"])
        status[s["check"]] = entry
    from tunegate.core.policy import configurable_checks

    disabled = set(policy.disabled_checks())
    for name in configurable_checks():
        if name not in status:
            status[name] = {"status": "disabled",
                            "reason": "turned off by the policy" if name in disabled else "not run (the run's checks)"}
    order = {name: i for i, name in enumerate(configurable_checks())}
    return dict(sorted(status.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def _sample(qb: Any, i: int, row_findings: list[dict[str, Any]], reason: str) -> dict[str, Any]:
    import pyarrow.compute as pc

    # the report shows a few hundred characters: cut in Arrow, so one huge record is never copied whole
    rec = {c: pc.utf8_slice_codeunits(qb.column(c).slice(i, 1), 0, _SAMPLE_CHARS)[0].as_py()
           for c in ("id", "instruction", "input", "output", "source_file")}
    rec["source_line"] = qb.column("source_line")[i].as_py()
    rec["evidence"] = [f for f in row_findings if f["reason"] == reason][:1]
    return rec


def _rejected_samples(path: Path, limit: int = 20) -> list[dict[str, Any]]:
    import json

    out: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            out.append(json.loads(line))
            if len(out) >= limit:
                break
    return out


def _decide(policy: GatePolicy, check_summaries: list[dict[str, Any]], *, total: int, records: int,
            accepted: int, quarantined: int, rejected: int) -> tuple[str, list[str], list[str]]:
    halts: list[str] = []
    alerts: list[str] = []
    for s in check_summaries:
        for issue in s.get("issues", []):
            message = f"{s['check']}: {issue['message']}"
            if policy.halts_on(issue["severity"], issue["reason"]):
                halts.append(message)
            elif issue["severity"] != "info":
                alerts.append(message)
    if total and rejected / total > policy.max_rejected_fraction:
        halts.append(f"{rejected} of {total} input records ({rejected / total:.1%}) could not be parsed; "
                     f"policy max_rejected_fraction is {policy.max_rejected_fraction:.1%}")
    if records and quarantined / records > policy.max_quarantined_fraction:
        halts.append(f"{quarantined} of {records} records ({quarantined / records:.1%}) were quarantined; "
                     f"policy max_quarantined_fraction is {policy.max_quarantined_fraction:.1%}")
    if accepted < policy.min_accepted:
        halts.append(f"only {accepted} records accepted; policy min_accepted is {policy.min_accepted}")
    if len(halts) > _MAX_HALT_MESSAGES:
        halts = [*halts[:_MAX_HALT_MESSAGES], f"... and {len(halts) - _MAX_HALT_MESSAGES} more"]
    if halts:
        return "halt", halts, alerts
    if quarantined or rejected or alerts:
        return "quarantine", halts, alerts
    return "pass", halts, alerts


def halt_message(summary: dict[str, Any]) -> str:
    """A bounded, readable one-paragraph message for logs, exceptions and alerts."""
    held = f", {summary['held']} held (not published)" if summary.get("held") else ""
    head = (f"tunegate verdict {summary['verdict'].upper()}: {summary['total']} records, {summary['accepted']} "
            f"accepted{held}, {summary['quarantined']} quarantined, {summary['rejected']} rejected")
    lines = [head]
    lines += [f"  - {r}" for r in summary.get("halt_reasons", [])[:_MAX_HALT_MESSAGES]]
    top = sorted(summary.get("reasons", {}).items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    if top:
        lines.append("  top reasons: " + ", ".join(f"{k}={v}" for k, v in top))
    lines.append(f"  report: {Path(summary['out_dir']) / REPORT_FILE}")
    return "\n".join(lines)
