"""The gate: findings + policy -> verdict, and every record written to exactly one place.

Reads the work directory (canonical records, rejected input, findings of every check); never
recomputes a check. Writes, atomically, into the output directory:

    accepted.parquet    records that passed (canonical schema)
    quarantine.parquet  flagged records: canonical schema + ``reasons`` + ``findings`` (the evidence)
    rejected.jsonl      input that could not be parsed or normalized (file, line, raw text, error)
    summary.json        counts, verdict, per-check results, input sha256 (a :class:`dict`)
    report.html         the human-readable report
    manifest.json       provenance: versions, policy, suites, checks, inputs, outputs, batch digest
                        (:mod:`tunegate.core.provenance`)
    reported.parquet    only when there are any: passing records with findings the policy does not quarantine
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
from collections import Counter
from pathlib import Path
from typing import Any

from tunegate import __version__
from tunegate.core.checks.base import load_findings, load_summaries
from tunegate.core.ingest import CANONICAL_FILE, REJECTED_FILE, IngestResult
from tunegate.core.io import atomic_path, atomic_write, commit, copy_atomic, write_text_atomic
from tunegate.core.outputs import (
    ACCEPTED_FILE,
    CANARY_FILE,
    DATA_DOCS_DIR,
    HELD_FILE,
    LOCK_FILE,
    LOCK_OWNER_FILE,
    MANIFEST_FILE,
    QUARANTINE_FILE,
    REPORT_FILE,
    REPORTED_FILE,
    SUMMARY_FILE,
    begin_outputs,
    commit_outputs,
    fault_point,
    incomplete_message,
    load_committed,
    output_lock,
    remove_stale_temps,
)
from tunegate.core.policy import GatePolicy

log = logging.getLogger(__name__)

# the result-set names and functions live in tunegate.core.outputs; they are re-exported here for callers
__all__ = ["ACCEPTED_FILE", "DATA_DOCS_DIR", "HELD_FILE", "LOCK_FILE", "LOCK_OWNER_FILE", "MANIFEST_FILE",
           "QUARANTINE_FILE", "REPORTED_FILE", "REPORT_FILE", "SUMMARY_FILE", "VERDICTS", "begin_outputs",
           "commit_outputs", "fault_point", "gate", "halt_message", "incomplete_message", "load_committed",
           "output_lock", "remove_stale_temps"]

VERDICTS = ("pass", "quarantine", "halt")
_MAX_HALT_MESSAGES = 10


def gate(work_dir: str | Path, out_dir: str | Path, policy: GatePolicy | None = None, *,
         commit_set: bool = True, policy_file: str | Path | None = None) -> dict[str, Any]:
    """Partition the batch, decide the verdict and write all outputs. Returns the summary.

    The previous set of ``out_dir`` is invalidated first (:func:`begin_outputs`). With ``commit_set`` (the
    default) the set is committed at the end (:func:`commit_outputs` writes ``summary.json``); without it the
    caller commits after a later step (``scan`` does, after the history update). Call it holding
    :func:`output_lock` of ``out_dir``. ``policy_file``: the file ``policy`` was read from, recorded (path and
    sha256) in the manifest.
    """
    policy = policy or GatePolicy()
    work, out = Path(work_dir), Path(out_dir)
    begin_outputs(out, keep=work / REJECTED_FILE)
    findings = load_findings(work)

    # row -> (quarantining reasons, all findings of the row)
    flagged: dict[int, tuple[list[str], list[dict[str, Any]]]] = {}
    reported: Counter[str] = Counter()
    reported_rows: dict[int, list[dict[str, Any]]] = {}  # passing rows with findings: kept for provenance
    for row, row_findings in findings.items():
        reasons = sorted({f["reason"] for f in row_findings if policy.quarantines(f["reason"])})
        ordered = sorted(row_findings, key=lambda f: (f["check"], f["reason"]))
        if reasons:
            flagged[row] = (reasons, ordered)
        else:
            reported.update({f["reason"] for f in row_findings})
            reported_rows[row] = ordered

    # the passing records go to a temporary file that becomes accepted.parquet, or held.parquet on halt
    tmp_acc = atomic_path(out / ACCEPTED_FILE)
    try:
        summary = _write_partition(work, out, policy, tmp_acc, flagged=flagged, reported=reported,
                                   reported_rows=reported_rows, policy_file=policy_file, findings=findings)
    finally:
        tmp_acc.unlink(missing_ok=True)
    if commit_set:
        commit_outputs(out, summary)
    log.info("gate: verdict=%s total=%d accepted=%d held=%d quarantined=%d rejected=%d", summary["verdict"],
             summary["total"], summary["accepted"], summary["held"], summary["quarantined"], summary["rejected"])
    return summary


def _write_partition(work: Path, out: Path, policy: GatePolicy, tmp_acc: Path, *,
                     flagged: dict[int, tuple[list[str], list[dict[str, Any]]]],
                     reported: Counter[str], reported_rows: dict[int, list[dict[str, Any]]],
                     policy_file: str | Path | None, findings: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tunegate.core.ledger import contributor_summary
    from tunegate.core.provenance import reported_schema, write_manifest
    from tunegate.core.report import render_report
    from tunegate.core.schema import canonical_schema, quarantine_schema

    ingest = IngestResult.load(work)
    check_summaries = load_summaries(work)
    reason_counts: Counter[str] = Counter()
    accepted = quarantined = 0
    reported_tables: list[pa.Table] = []
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
                table = pa.Table.from_batches([qb]).append_column(
                    "reasons", pa.array(reasons_col, pa.list_(pa.string()))).append_column(
                    "findings", pa.array(findings_col, quarantine_schema().field("findings").type))
                q_w.write_table(table.cast(quarantine_schema()))
                quarantined += len(q_idx)
            r_idx = [i for i in range(n) if start + i in reported_rows]
            if r_idx:
                names = reported_schema().names[:-1]
                rt = pa.Table.from_batches([rb.take(pa.array(r_idx, pa.int64())).select(names)])
                rt = rt.append_column("findings", pa.array([reported_rows[start + i] for i in r_idx],
                                                           reported_schema().field("findings").type))
                reported_tables.append(rt.cast(reported_schema()))
            start += n
    if reported_tables:
        with atomic_write(out / REPORTED_FILE) as tmp_r:
            pq.write_table(pa.concat_tables(reported_tables), tmp_r, compression="zstd")

    fault_point("gate_writes")  # test-only: quarantine.parquet written, the passing records not yet placed
    rejected_src = work / REJECTED_FILE
    if rejected_src.resolve() != (out / REJECTED_FILE).resolve():
        copy_atomic(rejected_src, out / REJECTED_FILE)

    _publish_artifacts(work, out, check_summaries)
    canary = _canary(out, tmp_acc, policy, findings, check_summaries)
    rejected = ingest.rejected
    total = ingest.total
    verdict, halt_reasons, alerts = _decide(policy, check_summaries, total=total, records=ingest.records,
                                            accepted=accepted, quarantined=quarantined, rejected=rejected,
                                            canary=canary)
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
    if reported_tables:
        summary["outputs"]["reported"] = REPORTED_FILE
    if canary is not None:
        summary["canary"] = canary
        if (out / CANARY_FILE).is_file():
            summary["outputs"]["canary"] = CANARY_FILE
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
    # tonight against the contributor ledger (movers, new and flooding contributors), for the report and the alert
    summary["ledger"] = contributor_summary(summary, out)
    # the report reads its examples (strongest first) back from the outputs just written, in bounded memory
    write_text_atomic(out / REPORT_FILE, render_report(summary, out, _rejected_samples(rejected_src)))
    # last: the manifest records every other output's sha256 (and the commit records the manifest's)
    write_manifest(out, summary, policy, policy_file=policy_file)
    return summary


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


def _canary(out: Path, passing: Path, policy: GatePolicy, findings: dict[int, list[dict[str, Any]]],
            check_summaries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The canary audit of the passing records (docs/audit.md): the summary's ``canary`` entry, ``None`` when the
    policy turned it off. An audit that crashes is reported (an alert), never the night's end."""
    config = policy.canary_config()
    if not config.enabled:
        return None
    from tunegate.core.audit.night import audit_night

    try:
        return audit_night(out, passing, config, findings=findings, check_summaries=check_summaries)
    except Exception as exc:  # a bug in the audit must not cost the night its verdict on the records
        log.exception("canary audit failed")
        return {"status": "error", "why": f"{type(exc).__name__}: {exc}", "issues": []}


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
    from tunegate.core.policy import configurable_checks, in_run_order

    disabled = set(policy.disabled_checks())
    for name in configurable_checks():
        if name not in status:
            status[name] = {"status": "disabled",
                            "reason": "turned off by the policy" if name in disabled else "not run (the run's checks)"}
    return in_run_order(status)


def _rejected_samples(path: Path, limit: int = 20) -> list[dict[str, Any]]:

    out: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            out.append(json.loads(line))
            if len(out) >= limit:
                break
    return out


def _decide(policy: GatePolicy, check_summaries: list[dict[str, Any]], *, total: int, records: int,
            accepted: int, quarantined: int, rejected: int, canary: dict[str, Any] | None = None
            ) -> tuple[str, list[str], list[str]]:
    halts: list[str] = []
    alerts: list[str] = []
    raised = [(s["check"], issue) for s in check_summaries for issue in s.get("issues", [])]
    raised += [("canary", issue) for issue in (canary or {}).get("issues", [])]
    for name, issue in raised:
        message = f"{name}: {issue['message']}"
        if policy.halts_on(issue["severity"], issue["reason"]):
            halts.append(message)
        elif issue["severity"] != "info":
            alerts.append(message)
    if canary is not None and canary.get("status") == "error":
        alerts.append(f"canary: the audit could not run ({canary['why']})")
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
