"""``scan``: the whole flow in one process (ingest -> checks -> gate -> publish), as the CLI and CI use it.

The Airflow DAG runs the same stages as separate tasks over the same work directory; both build their
checks from the same policy (:func:`build_checks`) and add a night to the history through the same
:func:`publish`.

A scan holds the output directory's lock (:func:`tunegate.core.gate.output_lock`) from start to end, and its
outputs are one result set: the previous set is invalidated before ingest, and ``summary.json`` (the commit
marker) is written only after the gate and, with a history, after the history update. A run killed at any
point leaves a directory every reader refuses until the night is rerun; the rerun replaces the night's
contribution to the history (same batch id), so nothing is published twice.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunegate.core.checks import Check, build_check, run_checks
from tunegate.core.gate import (
    ACCEPTED_FILE,
    SUMMARY_FILE,
    begin_outputs,
    commit_outputs,
    fault_point,
    gate,
    load_committed,
    output_lock,
)
from tunegate.core.ingest import ingest
from tunegate.core.policy import DEFAULT_SUITES, GatePolicy
from tunegate.exceptions import ConfigError

if TYPE_CHECKING:
    from tunegate.core.checks.poison._text import Records

log = logging.getLogger(__name__)

WORK_DIR = "work"
__all__ = ["DEFAULT_SUITES", "HISTORY_CHECKS", "WORK_DIR", "build_checks", "history_spec", "publish", "scan"]

#: Checks that read the persisted history (see tunegate.core.history): its accepted records (near duplicates,
#: outliers), what earlier nights measured (the refusal baseline of poison_content, the phrase statistics of
#: poison_trigger) or its contributor ledger (tunegate.core.ledger: who is new, for contributor_policy).
HISTORY_CHECKS = frozenset({"near_duplicate", "embedding_outlier", "poison_content", "poison_trigger",
                            "contributor_policy"})


def build_checks(policy: GatePolicy | None = None, *, history_dir: str | Path | None = None,
                 batch_id: str | None = None, gx: bool = True, checks: bool = True) -> list[Check]:
    """The checks a policy turns on (default: all), then one Great Expectations check per suite.

    ``history_dir`` and ``batch_id`` go to the checks that compare against the history of accepted
    batches (a rerun of ``batch_id`` is compared against the history without its earlier contribution).
    ``gx=False`` leaves out the suites, ``checks=False`` everything but the suites (the DAG runs them as
    separate tasks).
    """
    policy = policy or GatePolicy()
    built: list[Check] = []
    if checks:
        for name, options in policy.enabled_checks():
            if name in HISTORY_CHECKS and history_dir is not None:
                options = {**options, "history_dir": str(history_dir), "batch_id": batch_id}
            built.append(build_check(name, **options))
    if gx:
        built += [build_check("gx_suite", suite=s) for s in policy.suites]
    return built


def history_spec(policy: GatePolicy) -> Any:
    """The embedding a new history is started with: the one the policy's history checks use."""
    from tunegate.core.checks._vectors import EmbeddingCheck
    from tunegate.core.embeddings import EmbeddingSpec

    for name, options in policy.enabled_checks():
        if name in HISTORY_CHECKS:
            check = build_check(name, **options)
            if isinstance(check, EmbeddingCheck):
                return check.spec
    return EmbeddingSpec()


def publish(out_dir: str | Path, history_dir: str | Path, *, batch_id: str | None = None,
            policy: GatePolicy | None = None, cache_dir: str | Path | None = None) -> dict[str, Any]:
    """Add a gated batch's accepted records to the history: the one publish step of the CLI and the DAG.

    Only a committed result set is published (:func:`tunegate.core.gate.load_committed`: an interrupted or
    incomplete set is a :class:`TunegateError`), under the output directory's lock. A halted batch never
    enters (returns ``{"added": 0, ...}`` and changes nothing). ``batch_id`` names the batch in the history
    (default: the output folder's name); publishing a name that is already there replaces that batch's
    contribution, so a rerun of a night never adds it twice. The result is also written into
    ``summary.json`` under ``history`` (one atomic replace of the marker; the set stays committed).
    """
    out = Path(out_dir)
    with output_lock(out):
        summary = load_committed(out)
        result = _add_to_history(out, history_dir, summary, batch_id=batch_id, policy=policy, cache_dir=cache_dir)
        if summary.get("verdict") != "halt":
            from tunegate.core.io import write_json_atomic

            summary["history"] = result
            write_json_atomic(out / SUMMARY_FILE, summary)
    return result


def _add_to_history(out: Path, history_dir: str | Path, summary: dict[str, Any], *, batch_id: str | None,
                    policy: GatePolicy | None, cache_dir: str | Path | None) -> dict[str, Any]:
    from tunegate.core.history import batch_statistics, update_history
    from tunegate.core.ledger import record_night

    name = batch_id or out.resolve().name
    if summary.get("verdict") == "halt":
        log.warning("publish: %s halted; nothing is added to the history %s", out, history_dir)
        return {"added": 0, "batch_id": name, "dir": str(history_dir), "note": "halted batches never enter"}
    spec = history_spec(policy or GatePolicy.from_mapping(summary.get("policy", {})))
    result = update_history(history_dir, out / ACCEPTED_FILE, batch_id=name, spec=spec, cache_dir=cache_dir,
                            expected_generation=checked_generation(summary), statistics=batch_statistics(summary))
    # the contributor ledger beside it: this night's file is written (a rerun's replaced) from the same outputs
    ledger = record_night(history_dir, out, summary, batch_id=name)
    # the two poison scans' night statistics, counted from one read of the accepted records' text
    records = _accepted_text(out, summary)
    phrases = _record_phrases(history_dir, out, summary, name, policy, records=records)
    responses = _record_responses(history_dir, out, summary, name, policy, records=records)
    return {**result, "batch_id": name, "dir": str(Path(history_dir).resolve()), "ledger": ledger,
            **({"phrases": phrases} if phrases else {}), **({"responses": responses} if responses else {})}


def _accepted_text(out: Path, summary: dict[str, Any]) -> Records | None:
    """The accepted records' text columns, when a poison scan ran and the night has an accepted file (else ``None``:
    the night statistics write nothing)."""
    from tunegate.core.checks.poison.phrase_history import accepted_file, read_accepted

    accepted = accepted_file(out, summary)
    ran = set(summary.get("checks") or {}) & {"poison_trigger", "poison_content"}
    return read_accepted(accepted) if ran and accepted.is_file() else None


def _record_phrases(history_dir: str | Path, out: Path, summary: dict[str, Any], name: str,
                    policy: GatePolicy | None, *, records: Records | None) -> dict[str, Any] | None:
    """The night's phrase statistics for tomorrow's ``poison_trigger`` (its tokenisation options from the policy)."""
    from tunegate.core.checks.poison.config import TriggerConfig
    from tunegate.core.checks.poison.phrase_history import record_phrase_night

    config = TriggerConfig.from_mapping(_check_options(summary, policy, "poison_trigger"))
    return record_phrase_night(history_dir, out, summary, batch_id=name, config=config, records=records)


def _record_responses(history_dir: str | Path, out: Path, summary: dict[str, Any], name: str,
                      policy: GatePolicy | None, *, records: Records | None) -> dict[str, Any] | None:
    """The night's per-source response phrases for tomorrow's ``poison_content`` (its options from the policy)."""
    from tunegate.core.checks.poison.config import ContentConfig
    from tunegate.core.checks.poison.response_history import record_response_night

    config = ContentConfig.from_mapping(_check_options(summary, policy, "poison_content"))
    return record_response_night(history_dir, out, summary, batch_id=name, config=config, records=records)


def _check_options(summary: dict[str, Any], policy: GatePolicy | None, check: str) -> dict[str, Any]:
    """``check``'s options in the night's policy, without the history they were run against."""
    options = dict((policy or GatePolicy.from_mapping(summary.get("policy", {}))).enabled_checks()).get(check) or {}
    return {k: v for k, v in options.items() if k not in ("history_dir", "batch_id")}


def checked_generation(summary: dict[str, Any]) -> int | None:
    """The history generation the batch's history checks compared against (``None``: none did)."""
    for name in ("near_duplicate", "embedding_outlier"):
        generation = (summary.get("checks", {}).get(name, {}).get("metrics") or {}).get("history_generation")
        if generation is not None:
            return int(generation)
    return None


#: Times a batch is re-checked when another batch entered the history while it was being checked.
MAX_RECHECKS = 3


def _publish_consistently(out: Path, work: Path, history_dir: str | Path, summary: dict[str, Any], *, name: str,
                          policy: GatePolicy, checks: list[Check], policy_file: str | Path | None = None
                          ) -> dict[str, Any]:
    """Add the batch to the history only against the generation it was checked with: if another batch was
    added meanwhile (:class:`HistoryConflict`), re-run the history checks and the gate, then try again."""
    from tunegate.core.checks._vectors import WORK_CACHE
    from tunegate.exceptions import HistoryConflict

    for attempt in range(MAX_RECHECKS + 1):
        try:
            # the checks' vectors are in the work dir's cache: the history reuses them instead of re-embedding
            summary["history"] = _add_to_history(out, history_dir, summary, batch_id=name, policy=policy,
                                                 cache_dir=work / WORK_CACHE)
            return summary
        except HistoryConflict as exc:
            if attempt == MAX_RECHECKS:
                raise
            log.warning("publish: %s; re-checking the batch against the current history", exc)
            run_checks(str(work), [c for c in checks if c.name in HISTORY_CHECKS])
            summary = gate(work, out, policy, commit_set=False, policy_file=policy_file)
            if summary["verdict"] == "halt":
                return summary
    raise AssertionError("unreachable")


def check_out_dir(inputs: list[str], out_dir: str | Path) -> None:
    """Refuse an output directory that is an input directory or lies inside one (or inside a glob's fixed
    leading directories): the next run of that input would read the outputs back as input."""
    target = Path(out_dir).resolve()
    for spec in inputs:
        if "://" in spec and not spec.startswith("file://"):
            continue
        path = spec.removeprefix("file://")
        base = Path(path)
        if any(c in path for c in "*?["):
            fixed = []
            for part in base.parts:
                if any(c in part for c in "*?["):
                    break
                fixed.append(part)
            base = Path(*fixed) if fixed else Path()
        elif not base.is_dir():
            continue
        base = base.resolve()
        if target == base or base in target.parents:
            raise ConfigError(f"output directory {out_dir} is inside the input {spec} (or is it): the outputs "
                              "would be read back as input; choose an output directory outside the inputs")


def scan(inputs: list[str], out_dir: str | Path, *, fmt: str = "auto", policy: GatePolicy | None = None,
         checks: list[Check] | None = None, keep_work: bool = False, batch_size: int = 10_000,
         history_dir: str | None = None, batch_id: str | None = None,
         policy_file: str | Path | None = None) -> dict[str, Any]:
    """Run the gate over ``inputs`` and write the outputs under ``out_dir``; returns the summary.

    Takes ``out_dir``'s lock first: a second run into the same directory fails at once (a
    :class:`TunegateError` naming the holder). Checks are built (from ``policy`` unless given) before any
    input is read, so a misconfiguration fails before work starts. With ``history_dir``, the accepted
    records of a batch that did not halt are added to the history (``summary["history"]`` says what was
    added), so tomorrow's checks see them; the result set is committed after that. ``policy_file``: the file
    ``policy`` was read from, recorded in the night's manifest (path and sha256).
    """
    policy = policy or GatePolicy()
    out = Path(out_dir)
    check_out_dir(inputs, out)
    options = policy.input_options() if policy.input else None
    if options is not None and fmt != "auto":
        raise ConfigError(f"the input format is given twice: format {fmt!r} and the policy's input section "
                          f"{dict(policy.input)}; use one (container/layout/columns supersede the format)")
    with output_lock(out):
        name = batch_id or out.resolve().name
        checks = build_checks(policy, history_dir=history_dir, batch_id=name) if checks is None else checks
        work = out / WORK_DIR
        begin_outputs(out)  # the previous night's set stops being valid now, not when this one is written
        if work.exists():
            shutil.rmtree(work)  # a rerun starts clean: stale findings of another batch must not leak in
        ingest(inputs, work, fmt=fmt, options=options, batch_size=batch_size)
        fault_point("ingested")
        run_checks(str(work), checks)
        fault_point("checked")
        summary = gate(work, out, policy, commit_set=False, policy_file=policy_file)
        if history_dir and summary["verdict"] != "halt":
            summary = _publish_consistently(out, work, history_dir, summary, name=name, policy=policy, checks=checks,
                                            policy_file=policy_file)
            fault_point("history_updated")
        commit_outputs(out, summary)
        if not keep_work:
            shutil.rmtree(work, ignore_errors=True)
    return summary
