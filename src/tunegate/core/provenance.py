"""Provenance of a night: the manifest the gate writes, ``trace`` (where a record came from, where it went) and
``verify`` (tamper evidence).

``manifest.json`` is part of the night's committed result set (``summary.json`` holds its sha256 like any other
output's). It says what made the night: the tunegate version, the policy (sha256 of its canonical JSON, and of the
policy file when one was given), each Great Expectations suite (file, sha256, meta version), each check that ran
(its config, its status), each input file (sha256, bytes, records, rejected), the embedding model spec the vector
checks used, every output (sha256, bytes, rows) and the *batch digest* of the accepted records.

Per-record data is not copied into the manifest: ``accepted.parquet`` and ``quarantine.parquet`` already carry
``id``, ``content_sha256``, ``source_file`` and ``source_line`` (and the quarantine every finding). The one
per-record fact no output kept is a finding the policy reports without quarantining (``ignore_reasons``): those
rows go to ``reported.parquet`` (written only when there are any), so a trace never claims such a record passed
a check that flagged it. docs/provenance.md has the fields and the decisions.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunegate import __version__
from tunegate.core.io import write_json_atomic
from tunegate.core.outputs import (
    MANIFEST_FILE,
    REPORTED_FILE,
    SUMMARY_FILE,
    file_entry,
    file_sha256,
    load_committed,
)
from tunegate.core.schema import visible
from tunegate.exceptions import TunegateError

if TYPE_CHECKING:
    import pyarrow as pa

    from tunegate.core.policy import GatePolicy

log = logging.getLogger(__name__)

__all__ = ["DIGEST_METHOD", "MANIFEST_FILE", "MANIFEST_FORMAT", "REPORTED_FILE", "VerifyResult", "batch_digest",
           "build_manifest", "file_sha256", "format_trace", "load_manifest", "policy_sha256", "reported_schema",
           "trace", "verify", "write_manifest"]

#: Bumped when the meaning of a manifest field changes.
MANIFEST_FORMAT = 1
#: How the batch digest is computed, spelled out in the manifest so a trainer can recompute it without tunegate.
DIGEST_METHOD = ("sha256 of the records' content_sha256 values (lowercase hex), sorted ascending, duplicates kept, "
                 "each followed by a newline")
#: The checks whose metrics carry the embedding spec they used.
_EMBEDDING_CHECKS = ("near_duplicate", "embedding_outlier")
_SHA256_HEX = frozenset("0123456789abcdef")


# --------------------------------------------------------------------------------------------------
# writing


def reported_schema() -> pa.Schema:
    """``reported.parquet``: records that passed (accepted, or held on a halt) with findings the policy reports
    without quarantining: where the record is, and the findings (the quarantine's finding struct)."""
    import pyarrow as pa

    from tunegate.core.schema import canonical_schema, quarantine_schema

    canonical = canonical_schema()
    return pa.schema([canonical.field(n) for n in ("id", "content_sha256", "source_file", "source_line")]
                     + [quarantine_schema().field("findings")])


def policy_sha256(policy: GatePolicy) -> str:
    """sha256 of the policy's canonical JSON (sorted keys, no whitespace): the same settings, the same hash,
    whichever file, flags or operator arguments built them."""
    blob = json.dumps(policy.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def batch_digest(path: Path) -> dict[str, Any]:
    """The digest of a Parquet file's records: :data:`DIGEST_METHOD` over its ``content_sha256`` column."""
    import pyarrow.parquet as pq

    hashes = sorted(pq.read_table(path, columns=["content_sha256"]).column(0).to_pylist())
    h = hashlib.sha256()
    for value in hashes:
        h.update(f"{value}\n".encode("ascii"))
    return {"records": len(hashes), "sha256": h.hexdigest(), "method": DIGEST_METHOD}


def build_manifest(out: Path, summary: dict[str, Any], policy: GatePolicy, *,
                   policy_file: str | Path | None = None) -> dict[str, Any]:
    """The manifest of the result set in ``out`` whose (uncommitted) summary is ``summary``.

    Nothing in it depends on where or when the night ran (no output path, no clock): a rerun of the same
    inputs with the same policy writes the same bytes."""
    outputs = {key: rel for key, rel in summary["outputs"].items() if key not in ("summary", "manifest")}
    published = "held" if "held" in outputs else "accepted"
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "tunegate_version": __version__,
        "verdict": summary["verdict"],
        "policy": {"sha256": policy_sha256(policy), "file": _policy_file(policy_file)},
        "suites": _suites(summary),
        "checks": _checks(summary, policy),
        "embedding": _embedding(summary),
        "inputs": [{**i, "bytes": _input_bytes(str(i["path"]))} for i in summary["inputs"]],
        "outputs": {key: _output_entry(out, rel, key, summary) for key, rel in outputs.items()},
        "artifacts": {rel: file_entry(out / rel) for s in summary.get("checks", {}).values()
                      for rel in sorted(s.get("artifacts", {}).values())},
        "batch_digest": {"output": published, **batch_digest(out / outputs[published])},
    }
    return manifest


def write_manifest(out: Path, summary: dict[str, Any], policy: GatePolicy, *,
                   policy_file: str | Path | None = None) -> dict[str, Any]:
    """Write ``manifest.json`` (atomically) and name it in ``summary["outputs"]``, so that the commit
    (:func:`tunegate.core.outputs.commit_outputs`) records its sha256 with every other output's."""
    manifest = build_manifest(out, summary, policy, policy_file=policy_file)
    write_json_atomic(out / MANIFEST_FILE, manifest)
    summary["outputs"]["manifest"] = MANIFEST_FILE
    return manifest


def _output_entry(out: Path, rel: str, key: str, summary: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {"path": rel, **file_entry(out / rel)}
    if rel.endswith(".parquet"):
        import pyarrow.parquet as pq

        entry["rows"] = pq.ParquetFile(out / rel).metadata.num_rows
    elif key == "rejected":
        entry["rows"] = int(summary["rejected"])
    return entry


def _policy_file(path: str | Path | None) -> dict[str, Any] | None:
    if not path:
        return None
    p = Path(path)
    try:
        return {"path": str(p.resolve()), "sha256": file_sha256(p)}
    except OSError as exc:  # it was read a moment ago; say so rather than fail the night over the manifest
        log.warning("provenance: policy file %s is unreadable now (%s); manifest records no sha256", p, exc)
        return {"path": str(p), "sha256": None}


def _suites(summary: dict[str, Any]) -> list[dict[str, Any]]:
    suites = []
    for key, s in summary.get("checks", {}).items():
        metrics = s.get("metrics") or {}
        if "suite_path" not in metrics:
            continue
        path = Path(str(metrics["suite_path"]))
        entry: dict[str, Any] = {"name": metrics.get("suite"), "check": key, "path": str(path), "sha256": None,
                                 "version": None}
        try:
            data = path.read_bytes()
            entry["sha256"] = hashlib.sha256(data).hexdigest()
            meta = json.loads(data).get("meta") or {}
            entry["version"] = meta.get("version") or meta.get("tunegate_version")
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("provenance: suite file %s is unreadable now (%s)", path, exc)
        suites.append(entry)
    return suites


def _checks(summary: dict[str, Any], policy: GatePolicy) -> list[dict[str, Any]]:
    """Every check that ran, in run order: its status, its config and what it flagged.

    ``config`` is the options the policy gives the check, every default filled in (the CLI and the DAG build
    their checks from that same policy); ``None`` for a check the policy does not turn on (a caller-built list)."""
    from tunegate.core.checks import check_class

    configured = dict(policy.enabled_checks())
    status = summary.get("check_status") or {}
    ran = summary.get("checks", {})
    order = [k for k in status if k in ran] + sorted(k for k in ran if k not in status)
    checks = []
    for key in order:
        s = ran[key]
        metrics = s.get("metrics") or {}
        config: dict[str, Any] | None = None
        if "suite_path" in metrics:
            config = {"suite": metrics.get("suite")}
        elif key in configured:
            config = check_class(key).config_class.from_mapping(configured[key]).to_json()
        entry: dict[str, Any] = {"name": key, **(status.get(key) or {"status": "ok"}), "config": config,
                                 "flagged_records": s.get("flagged_records", 0), "reasons": s.get("reasons", {})}
        if metrics.get("history_generation") is not None:
            entry["history_generation"] = metrics["history_generation"]
        checks.append(entry)
    return checks


def _embedding(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The embedding specs the vector checks used (one entry per distinct spec), with the spec's fingerprint
    (which covers the static model's files) and the MiniLM package version for that backend."""
    from tunegate.core.embeddings import EmbeddingSpec

    by_spec: dict[str, dict[str, Any]] = {}
    for name in _EMBEDDING_CHECKS:
        spec = ((summary.get("checks", {}).get(name) or {}).get("metrics") or {}).get("embedding")
        if not isinstance(spec, dict):
            continue
        key = json.dumps(spec, sort_keys=True)
        if key in by_spec:
            by_spec[key]["checks"].append(name)
            continue
        entry: dict[str, Any] = {"checks": [name], "spec": spec, "fingerprint": None}
        try:
            entry["fingerprint"] = EmbeddingSpec.from_json(spec).fingerprint()
        except (OSError, TunegateError) as exc:
            log.warning("provenance: no fingerprint for embedding %s (%s)", spec, exc)
        if spec.get("backend") == "minilm":
            from importlib import metadata

            from tunegate.core.embeddings.spec import MINILM_PACKAGE

            try:
                entry["model"] = {"package": MINILM_PACKAGE, "version": metadata.version(MINILM_PACKAGE)}
            except metadata.PackageNotFoundError:
                entry["model"] = {"package": MINILM_PACKAGE, "version": None}
        by_spec[key] = entry
    return list(by_spec.values())


def _input_bytes(url: str) -> int | None:
    """Stored size of an input (a ``save_to_disk`` folder: its Arrow data files), ``None`` when it cannot be
    reached now (a remote input behind a connection the gate does not hold)."""
    from tunegate.core.io import DEFAULT_STORAGE, hf_disk_shards

    try:
        fs, path = DEFAULT_STORAGE.resolve(url)
        files = [f for _, f in hf_disk_shards(fs, path)] if fs.isdir(path) else [path]
        return sum(int(fs.size(f)) for f in files)
    except Exception as exc:  # any filesystem's error: the size is a nicety, the sha256 is the evidence
        log.warning("provenance: size of input %s unknown (%s)", url, exc)
        return None


# --------------------------------------------------------------------------------------------------
# reading


def load_manifest(out_dir: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(summary, manifest)`` of a committed result set (sizes checked; ``verify`` checks the hashes)."""
    out = Path(out_dir)
    summary = load_committed(out, verify_hashes=False)
    if "manifest" not in summary.get("outputs", {}):
        raise TunegateError(f"{out}: the night has no {MANIFEST_FILE} (it was gated by an older tunegate); rerun "
                            "the night to trace its records")
    try:
        manifest = json.loads((out / summary["outputs"]["manifest"]).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TunegateError(f"{out}: {MANIFEST_FILE} is unreadable ({exc})") from None
    if not isinstance(manifest, dict):
        raise TunegateError(f"{out}: {MANIFEST_FILE} is not a manifest (not a JSON object)")
    return summary, manifest


def _looks_like_sha256(key: str) -> bool:
    return len(key) == 64 and set(key) <= _SHA256_HEX


def _match_rows(path: Path, key: str, columns: list[str]) -> list[dict[str, Any]]:
    """Rows of a Parquet output whose id or content_sha256 is ``key``, read in bounded memory."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    found: list[dict[str, Any]] = []
    for rb in pq.ParquetFile(path).iter_batches(batch_size=50_000, columns=columns):
        mask = pc.equal(rb.column(columns.index("id")), key)
        if _looks_like_sha256(key):
            mask = pc.or_(mask, pc.equal(rb.column(columns.index("content_sha256")), key))
        if pc.any(mask).as_py():
            found += rb.filter(mask).to_pylist()
    return found


_WHERE = ["id", "content_sha256", "source_file", "source_line"]


def _rejected_matches(path: Path, key: str) -> list[dict[str, Any]]:
    """Rejected input lines whose raw text parses to an object with this id (most rejected lines do not parse;
    they have no id and no content hash to trace by: find them by file and line in rejected.jsonl)."""
    found = []
    with open(path, encoding="utf-8") as f:
        for text in f:
            entry = json.loads(text)
            try:
                raw = json.loads(entry.get("raw") or "")
            except (ValueError, RecursionError):
                continue
            if isinstance(raw, dict) and raw.get("id") == key:
                found.append(entry)
    return found


def trace(out_dir: str | Path, key: str) -> dict[str, Any]:
    """Where the records with id or content_sha256 ``key`` came from and where they went.

    One entry per matching record (an id is unique in a night unless the input reused it; exact copies share a
    content hash): its source (file, that file's sha256 from the manifest, line), its outcome (accepted, held,
    quarantined with reasons and findings, or rejected with the error), every later review decision on it from
    ``audit.jsonl`` (released by whom and when, into which file; confirmed as poison), the checks it passed
    (every check that ran with status ``ok`` and gave it no finding) and the versions the night ran with.
    A :class:`TunegateError` when the night has no committed manifest or no record matches."""
    out = Path(out_dir)
    summary, manifest = load_manifest(out)
    outputs: dict[str, str] = summary["outputs"]
    inputs = {str(i["path"]): i for i in manifest.get("inputs", [])}
    checks = manifest.get("checks", [])
    decisions = _decisions(out)
    reported: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    if "reported" in outputs:
        for row in _match_rows(out / outputs["reported"], key, [*_WHERE, "findings"]):
            reported[(row["id"], row["source_file"], row["source_line"])] = row["findings"]

    records: list[dict[str, Any]] = []
    for where in ("accepted", "held"):
        if where in outputs:
            for row in _match_rows(out / outputs[where], key, _WHERE):
                findings = reported.get((row["id"], row["source_file"], row["source_line"]), [])
                records.append(_traced(row, where, findings, checks=checks, inputs=inputs, decisions=decisions))
    for row in _match_rows(out / outputs["quarantine"], key, [*_WHERE, "reasons", "findings"]):
        traced = _traced(row, "quarantined", row["findings"], checks=checks, inputs=inputs,
                          decisions=decisions)
        traced["reasons"] = row["reasons"]
        records.append(traced)
    for entry in _rejected_matches(out / outputs["rejected"], key):
        source = _source(str(entry.get("source_file")), entry.get("source_line"), inputs)
        records.append({"id": key, "content_sha256": None, "output": "rejected", "error": entry.get("error"),
                        "source": source, "findings": [], "decisions": [], "checks_passed": [],
                        "checks_not_judged": []})
    if not records:
        raise TunegateError(f"{out}: no record with id or content_sha256 {key!r} in accepted, held, quarantined or "
                            "rejected records of this night")
    return {"dir": str(out), "key": key, "records": records, "versions": _versions(manifest),
            "batch_digest": manifest.get("batch_digest")}


def _source(path: str, line: Any, inputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    info = inputs.get(path) or {}
    return {"file": path, "line": line, "file_sha256": info.get("sha256")}


def _traced(row: dict[str, Any], where: str, findings: list[dict[str, Any]], *, checks: list[dict[str, Any]],
            inputs: dict[str, dict[str, Any]], decisions: list[dict[str, Any]]) -> dict[str, Any]:
    flagged_by = {str(f["check"]) for f in findings}
    ref = (row["id"], row["content_sha256"])
    return {
        "id": row["id"], "content_sha256": row["content_sha256"], "output": where,
        "source": _source(row["source_file"], row["source_line"], inputs),
        "findings": [{"check": f["check"], "reason": f["reason"], "score": f["score"]} for f in findings],
        "decisions": [{k: v for k, v in d.items() if k != "records"} for d in decisions if ref in d["records"]],
        "checks_passed": [c["name"] for c in checks if c.get("status") == "ok" and c["name"] not in flagged_by],
        "checks_not_judged": [{"name": c["name"], "status": c.get("status"), "reason": c.get("reason")}
                              for c in checks if c.get("status") != "ok" and c["name"] not in flagged_by],
    }


def _decisions(out: Path) -> list[dict[str, Any]]:
    """The review decisions of the night (release, confirm) as the audit log records them."""
    from tunegate.core.review.audit import AUDIT_FILE, read_log

    found = []
    for entry in read_log(out / AUDIT_FILE).entries:
        if entry["action"] not in ("release", "confirm"):
            continue
        refs = {(r.get("id"), r.get("content_sha256")) for r in entry.get("records") or () if isinstance(r, dict)}
        released = entry.get("released_file") if isinstance(entry.get("released_file"), dict) else None
        found.append({"action": entry["action"], "by": entry.get("by"), "at": entry.get("at"),
                      "why": entry.get("why"), "released_file": released.get("path") if released else None,
                      "audit_line": entry.get("line"), "records": refs})
    return found


def _versions(manifest: dict[str, Any]) -> dict[str, Any]:
    return {"tunegate": manifest.get("tunegate_version"), "policy": manifest.get("policy"),
            "suites": [{k: s.get(k) for k in ("name", "sha256", "version")} for s in manifest.get("suites", [])],
            "embedding": [{"spec": e.get("spec"), "fingerprint": e.get("fingerprint")}
                          for e in manifest.get("embedding", [])]}


def format_trace(result: dict[str, Any]) -> str:
    """A few lines per record for a person."""
    lines: list[str] = []
    for r in result["records"]:
        src = r["source"]
        lines.append(f"record {r['id']} (content_sha256 {r['content_sha256'] or '-'})")
        lines.append(f"  source: {src['file']}:{src['line']} (file sha256 {src['file_sha256'] or 'unknown'})")
        if r["output"] == "quarantined":
            lines.append(f"  output: quarantined, reasons: {', '.join(r['reasons'])}")
        elif r["output"] == "rejected":
            lines.append(f"  output: rejected: {r['error']}")
        else:
            note = " (the night halted: held back, never published)" if r["output"] == "held" else ""
            lines.append(f"  output: {r['output']}{note}")
        for f in r["findings"]:
            lines.append(f"    finding {f['check']}: {f['reason']} (score {f['score']:.3g})")
        for d in r["decisions"]:
            what = f"released into {d['released_file']}" if d["action"] == "release" else "confirmed as poison"
            lines.append(f"  {what} by {d['by']} at {d['at']} (why: {d['why']}; audit.jsonl line {d['audit_line']})")
        if r["output"] != "rejected":
            lines.append("  checks passed: " + (", ".join(r["checks_passed"]) or "none"))
            for c in r["checks_not_judged"]:
                why = f" ({c['reason']})" if c["reason"] else ""
                lines.append(f"  not judged by {c['name']}: {c['status']}{why}")
    v = result["versions"]
    policy = v["policy"] or {}
    pfile = policy.get("file") or {}
    lines.append(f"versions: tunegate {v['tunegate']}, policy sha256 {policy.get('sha256')}"
                 + (f" (file {pfile.get('path')}, sha256 {pfile.get('sha256')})" if pfile else ""))
    for s in v["suites"]:
        lines.append(f"  suite {s['name']}: sha256 {s['sha256']}, version {s['version'] or '-'}")
    for e in v["embedding"]:
        lines.append(f"  embedding {e['spec'].get('backend')}: fingerprint {e['fingerprint']}")
    # ids, paths and errors come from the input: a newline in one is written out, not obeyed
    return "\n".join(visible(line, keep="\t") for line in lines)




# --------------------------------------------------------------------------------------------------
# verify


@dataclass
class VerifyResult:
    """What ``verify`` compared (``checked``: one line each) and every mismatch it found (``problems``)."""

    dir: Path
    checked: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: sha256 of each file read so far: the commit and the manifest name the same outputs, read once
    hashes: dict[Path, str] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"dir": str(self.dir), "ok": self.ok, "checked": self.checked, "problems": self.problems}


def verify(out_dir: str | Path, *, sources: bool = False) -> VerifyResult:
    """Recompute the sha256 of every file the night's summary commit and manifest name, the row counts and the
    batch digest, and each released file against the audit log; with ``sources``, also the inputs, the policy
    file and the suite files (they live outside the night and may have moved). Collects every mismatch.

    A :class:`TunegateError` only when there is nothing to verify against (no directory, no summary and no
    manifest, an unreadable manifest)."""
    out = Path(out_dir)
    if not out.is_dir():
        raise TunegateError(f"{out}: no such directory (has the batch run?)")
    result = VerifyResult(out)
    summary = _read_json(out / SUMMARY_FILE)
    manifest = _read_json(out / MANIFEST_FILE)
    if summary is None and manifest is None:
        raise TunegateError(f"{out}: neither {SUMMARY_FILE} nor {MANIFEST_FILE}: no result set to verify")
    if summary is None:
        result.problems.append(f"{SUMMARY_FILE} is missing or unreadable: the result set is not committed")
    else:
        files = (summary.get("commit") or {}).get("files") or {}
        if MANIFEST_FILE not in files:
            result.problems.append(f"{SUMMARY_FILE} does not commit a {MANIFEST_FILE}")
        for rel, entry in sorted(files.items()):
            _compare(result, out, rel, entry, f"{SUMMARY_FILE} commit")
    if manifest is None:
        result.problems.append(f"{MANIFEST_FILE} is missing or unreadable")
        return result
    for key, entry in sorted((manifest.get("outputs") or {}).items()):
        if _compare(result, out, str(entry.get("path")), entry, f"{MANIFEST_FILE} output {key}") and "rows" in entry:
            _compare_rows(result, out / str(entry["path"]), int(entry["rows"]))
    for rel, entry in sorted((manifest.get("artifacts") or {}).items()):
        _compare(result, out, rel, entry, f"{MANIFEST_FILE} artifact")
    _verify_digest(result, out, manifest)
    _verify_released(result, out)
    if sources:
        _verify_sources(result, manifest)
    return result


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _compare(result: VerifyResult, out: Path, rel: str, entry: dict[str, Any], by: str) -> bool:
    path = out / rel
    if not path.is_file():
        result.problems.append(f"{rel}: missing ({by} names it)")
        return False
    if path not in result.hashes:
        result.hashes[path] = file_sha256(path)
    actual = result.hashes[path]
    if actual != entry.get("sha256"):
        result.problems.append(f"{rel}: sha256 {actual} is not the {entry.get('sha256')} that {by} recorded")
        return False
    result.checked.append(f"{rel}: sha256 matches {by}")
    return True


def _compare_rows(result: VerifyResult, path: Path, expected: int) -> None:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = int(pq.ParquetFile(path).metadata.num_rows)
    else:
        with open(path, "rb") as f:
            rows = sum(1 for line in f if line.strip())
    if rows != expected:
        result.problems.append(f"{path.name}: {rows} rows, the manifest recorded {expected}")


def _verify_digest(result: VerifyResult, out: Path, manifest: dict[str, Any]) -> None:
    recorded = manifest.get("batch_digest") or {}
    entry = (manifest.get("outputs") or {}).get(str(recorded.get("output"))) or {}
    path = out / str(entry.get("path"))
    if not recorded or not path.is_file():
        result.problems.append("batch digest: the manifest names no published output to recompute it from")
        return
    try:
        actual = batch_digest(path)
    except Exception as exc:  # a tampered file may not even be Parquet any more
        result.problems.append(f"batch digest: {path.name} is unreadable ({type(exc).__name__}: {exc})")
        return
    if (actual["sha256"], actual["records"]) != (recorded.get("sha256"), recorded.get("records")):
        result.problems.append(f"batch digest of {path.name}: {actual['sha256']} over {actual['records']} records, "
                               f"the manifest recorded {recorded.get('sha256')} over {recorded.get('records')}")
    else:
        result.checked.append(f"batch digest of {path.name}: {actual['sha256']} over {actual['records']} records")


def _verify_released(result: VerifyResult, out: Path) -> None:
    from tunegate.core.review.audit import AUDIT_FILE, read_log

    for entry in read_log(out / AUDIT_FILE).entries:
        released = entry.get("released_file")
        if entry["action"] == "release" and isinstance(released, dict) and isinstance(released.get("path"), str):
            _compare(result, out, released["path"], released, f"{AUDIT_FILE} line {entry['line']}")


def _verify_sources(result: VerifyResult, manifest: dict[str, Any]) -> None:
    from tunegate.core.io import sha256_file

    named = [(str(i.get("path")), i.get("sha256"), "input") for i in manifest.get("inputs", [])]
    pfile = (manifest.get("policy") or {}).get("file")
    if pfile:
        named.append((str(pfile.get("path")), pfile.get("sha256"), "policy file"))
    named += [(str(s.get("path")), s.get("sha256"), f"suite {s.get('name')}") for s in manifest.get("suites", [])]
    for url, expected, what in named:
        try:
            actual = sha256_file(url)
        except Exception as exc:  # any filesystem's error: the source moved or is out of reach
            result.problems.append(f"{what} {url}: cannot be read ({type(exc).__name__}: {exc})")
            continue
        if actual != expected:
            result.problems.append(f"{what} {url}: sha256 {actual} is not the {expected} the manifest recorded")
        else:
            result.checked.append(f"{what} {url}: sha256 matches the manifest")
