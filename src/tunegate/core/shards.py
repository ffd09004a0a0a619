"""A night in shards: plan, process each shard alone, merge into the same work directory as an unsharded ingest.

The sharded nightly DAG (``dags/tunegate_nightly_sharded.py``) runs ``plan -> shard (mapped) -> merge ->
validate -> scan -> gate -> publish``. What is per record and embarrassingly parallel runs in the shards;
what needs the whole batch runs after the merge, over one table, exactly as the unsharded DAG runs it, so the
verdict and every output are those of the unsharded run on the same input (docs/scale.md)::

    WORK/shards/plan.json          the input files in reading order and each shard's contiguous run of them
    WORK/shards/00000/             one shard, written under a temporary name and renamed when complete:
        canonical.parquet          its records (rows numbered from 0 within the shard)
        rejected.jsonl             its unparseable records
        ingest.json                its input files' sha256 and counts
        derived_ids.parquet        rows whose id was derived from the content (renumbered by the merge)
        findings/record_size.*     the per-record checks that ran in the shard (:data:`SHARD_CHECKS`)
        embeddings/                the shard's vectors, per embedding the policy's checks use
        shard.json                 written last: what the shard holds

* **plan** expands the inputs into files (sorted, as ingest does) and cuts them into contiguous runs of about
  equal bytes: shard ``i`` holds files before shard ``i + 1``'s, so concatenating the shards in order gives
  the unsharded reading order (rows, ``source_file``/``source_line``, rejected records).
* **shard** ingests its files, runs the per-record checks and embeds its records. It writes only under its own
  directory, renamed into place when complete: a retry redoes that shard alone and replaces it whole.
* **merge** concatenates the shards into ``WORK/canonical.parquet`` (renumbering derived ids so they are the
  unsharded ones), ``rejected.jsonl`` and ``ingest.json``, shifts the shards' findings to global rows, and
  gathers their vectors into the work directory's embedding cache (the batch checks then embed nothing).
  It reads only the shards and rewrites its outputs whole: rerunning it gives the same files.

The whole-batch checks (GX suites, exact and near duplicates through one FAISS index over every shard's
vectors plus the history, outliers, both poison scans) then run over the merged table: see
:func:`merge_checks`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunegate.core.io import Storage, expand_inputs, write_json_atomic
from tunegate.exceptions import ConfigError, TunegateError

if TYPE_CHECKING:
    from tunegate.core.readers import InputOptions
    from tunegate.core.readers.pieces import InputPiece

log = logging.getLogger(__name__)

SHARDS_DIR = "shards"
PLAN_FILE = "plan.json"
SHARD_FILE = "shard.json"
DERIVED_FILE = "derived_ids.parquet"
#: A shard's per-record results of each GX suite (``<check key>.json``, a ``GxPartial``).
GX_DIR = "gx"
#: Checks whose findings depend on the record alone: they run in the shards, the merge shifts their rows.
SHARD_CHECKS = frozenset({"record_size"})
#: Input bytes per shard when the shard count is not given: 32 MiB, about 50,000 records of the instruction
#: corpora tunegate is measured on (~650 bytes a JSONL record). A file is never split (docs/scale.md).
DEFAULT_SHARD_BYTES = 32 << 20
#: The most shards a night is cut into when the count is derived from the batch size.
MAX_SHARDS = 256


@dataclass(frozen=True)
class ShardPlan:
    """The night's inputs in reading order, as *units* (a whole file, or a piece of a large JSON Lines file,
    :class:`~tunegate.core.readers.pieces.InputPiece`), their bytes, and per shard the half-open range
    ``[start, stop)`` of units it reads."""

    units: list[str | InputPiece]
    sizes: list[int]
    ranges: list[tuple[int, int]]

    @property
    def count(self) -> int:
        return len(self.ranges)

    def shard_units(self, index: int) -> list[str | InputPiece]:
        start, stop = self.ranges[index]
        return self.units[start:stop]

    def to_json(self) -> dict[str, Any]:
        return {"units": [u if isinstance(u, str) else u.to_json() for u in self.units], "sizes": self.sizes,
                "ranges": [list(r) for r in self.ranges], "shards": self.count, "bytes": sum(self.sizes),
                "files": len(dict.fromkeys(_unit_path(u) for u in self.units))}

    @classmethod
    def load(cls, work_dir: str | Path) -> ShardPlan:
        from tunegate.core.readers.pieces import InputPiece

        path = Path(work_dir) / SHARDS_DIR / PLAN_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise TunegateError(f"{path} is missing: the night's shards were not planned (rerun the plan task)"
                                ) from exc
        return cls(units=[u if isinstance(u, str) else InputPiece.from_json(u) for u in data["units"]],
                   sizes=[int(s) for s in data["sizes"]], ranges=[(int(a), int(b)) for a, b in data["ranges"]])


def _unit_path(unit: str | InputPiece) -> str:
    return unit if isinstance(unit, str) else unit.path


def shard_count(total_bytes: int, shards: int | None = None, shard_bytes: int = DEFAULT_SHARD_BYTES) -> int:
    """``shards`` if given, else one shard per ``shard_bytes`` of input, between 1 and :data:`MAX_SHARDS`."""
    if shards is None:
        return min(MAX_SHARDS, max(1, math.ceil(total_bytes / shard_bytes)))
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise ConfigError(f"shards must be a positive integer or null (from the batch size), got {shards!r}")
    return shards


def cut(sizes: Sequence[int], count: int) -> list[tuple[int, int]]:
    """Cut files (their sizes, in order) into ``count`` non-empty contiguous runs of about equal bytes.

    Shard ``k`` ends at the first file boundary where the bytes so far reach ``k / count`` of the total, moved
    so that every shard keeps at least one file.
    """
    import bisect
    import itertools

    n = len(sizes)
    count = max(1, min(count, n))
    weights = list(sizes) if sum(sizes) else [1] * n
    cumulative = list(itertools.accumulate(weights, initial=0))  # cumulative[j]: bytes of files[:j]
    total = cumulative[-1]
    bounds = [0]
    for k in range(1, count):
        j = bisect.bisect_left(cumulative, total * k / count)
        bounds.append(min(max(j, bounds[-1] + 1), n - (count - k)))
    bounds.append(n)
    return list(itertools.pairwise(bounds))


def plan_shards(inputs: list[str], work_dir: str | Path, *, shards: int | None = None,
                shard_bytes: int = DEFAULT_SHARD_BYTES, options: InputOptions | None = None, filesystem: Any = None,
                storage_options: Mapping[str, Any] | None = None) -> ShardPlan:
    """Expand ``inputs`` (as :func:`tunegate.core.ingest.ingest` does), cut the large JSON Lines files into pieces
    and the whole into shards of about equal bytes; the plan is written to ``WORK/shards/plan.json``.

    The work directory is emptied first: a rerun of the night starts clean. A file is cut only when it is larger
    than a shard's share of the bytes (:func:`~tunegate.core.readers.pieces.split_jsonl` reads it once for that:
    its sha256 and the line numbers at the cuts). There are never more shards than units.
    """
    from tunegate.core.readers import InputOptions
    from tunegate.core.readers.pieces import split_jsonl

    options = options or InputOptions()
    storage = Storage(filesystem=filesystem, storage_options=dict(storage_options or {}))
    work = Path(work_dir)
    if work.exists():
        shutil.rmtree(work)
    files = expand_inputs(inputs, storage)
    file_sizes = [_size(storage, f) for f in files]
    count = shard_count(sum(file_sizes), shards, shard_bytes)
    share = max(1, math.ceil(sum(file_sizes) / count))
    units: list[str | InputPiece] = []
    sizes: list[int] = []
    for url, size in zip(files, file_sizes, strict=True):
        pieces = split_jsonl(url, math.ceil(size / share), options, storage) if size > share else None
        if pieces:
            units.extend(pieces)
            sizes.extend(p.stop - p.start for p in pieces)
        else:
            units.append(url)
            sizes.append(size)
    plan = ShardPlan(units=units, sizes=sizes, ranges=cut(sizes, min(count, len(units))))
    write_json_atomic(work / SHARDS_DIR / PLAN_FILE, plan.to_json())
    log.info("shards: %d file(s) (%d unit(s)), %.1f MB -> %d shard(s)%s", len(files), len(units),
             sum(sizes) / 1e6, plan.count, "" if shards is None else f" (asked for {shards})")
    return plan


def _size(storage: Storage, url: str) -> int:
    fs, path = storage.resolve(url)
    return int(fs.du(path) if fs.isdir(path) else fs.size(path) or 0)


def shard_dir(work_dir: str | Path, index: int) -> Path:
    return Path(work_dir) / SHARDS_DIR / f"{index:05d}"


@dataclass(frozen=True)
class EmbeddingTarget:
    """An embedding the policy's checks use, and the cache its vectors go to (``None``: the work directory's)."""

    spec: Any  # EmbeddingSpec
    cache_dir: str | None


def embedding_targets(checks: Iterable[Any]) -> list[EmbeddingTarget]:
    """The distinct embeddings (and persistent caches) of the embedding checks among ``checks``."""
    from tunegate.core.checks._vectors import EmbeddingCheck

    seen: dict[tuple[str, str | None], EmbeddingTarget] = {}
    for check in checks:
        if isinstance(check, EmbeddingCheck):
            cache = None if check.cache_dir is None else str(check.cache_dir)
            seen.setdefault((check.spec.fingerprint(), cache), EmbeddingTarget(check.spec, cache))
    return list(seen.values())


def run_shard(work_dir: str | Path, index: int, *, policy: Any = None, options: Any = None,
              filesystem: Any = None, storage_options: Mapping[str, Any] | None = None,
              batch_size: int = 10_000) -> dict[str, Any]:
    """Process shard ``index`` of the plan: ingest its files and pieces, run :data:`SHARD_CHECKS`, embed its records.

    Everything is written into a temporary sibling of the shard's directory, which replaces the directory
    when complete; a failed or killed try leaves the previous state (or none) and only temporary files
    of this shard, which the next try removes.
    """
    from tunegate.core.policy import GatePolicy
    from tunegate.core.readers import InputOptions

    started = time.monotonic()
    work = Path(work_dir)
    plan = ShardPlan.load(work)
    if not 0 <= index < plan.count:
        raise TunegateError(f"shard {index} is not in the plan of {work} ({plan.count} shards)")
    units = plan.shard_units(index)
    final = shard_dir(work, index)
    with _shard_lock(final):
        info = _write_shard(final, units, policy=policy or GatePolicy(), options=options or InputOptions(),
                            storage=Storage(filesystem=filesystem, storage_options=dict(storage_options or {})),
                            batch_size=batch_size)
    info["seconds"] = round(time.monotonic() - started, 2)
    log.info("shard %d: %d unit(s) -> %d records, %d rejected in %.1fs", index, len(units), info["records"],
             info["rejected"], info["seconds"])
    return info


@contextmanager
def _shard_lock(final: Path) -> Iterator[None]:
    """One try of a shard at a time (an OS-level lock that dies with its holder)."""
    from tunegate.core.io import owned_lock

    def busy(holder: str) -> TunegateError:
        return TunegateError(f"shard {final.name} of {final.parent.parent} is being written by another try "
                             f"({holder}); wait for it to finish")

    with owned_lock(final.parent / f".{final.name}.lock", timeout=0, busy=busy):
        yield


def _write_shard(final: Path, units: list[str | InputPiece], *, policy: Any, options: InputOptions,
                 storage: Storage, batch_size: int) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tunegate.core.checks import CanonicalBatch, run_checks
    from tunegate.core.checks.gx_suite import GxSuiteCheck
    from tunegate.core.embeddings import embed_table
    from tunegate.core.ingest import ingest_sources
    from tunegate.core.outputs import fault_point
    from tunegate.core.pipeline import build_checks

    for stale in final.parent.glob(f".{final.name}.tmp*"):  # an earlier try of this shard that died
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp", dir=final.parent))
    try:
        derived: list[int] = []
        result = ingest_sources(units, tmp, options=options, storage=storage, batch_size=batch_size,
                                derived_rows=derived)
        digests = pq.read_table(tmp / "canonical.parquet", columns=["content_sha256"]).column(0)
        pq.write_table(pa.table({"row": pa.array(derived, pa.int64()),
                                 "content_sha256": digests.take(pa.array(derived, pa.int64()))}),
                       tmp / DERIVED_FILE)
        checks = build_checks(policy, gx=False)
        run_checks(str(tmp), [c for c in checks if c.name in SHARD_CHECKS])
        batch = CanonicalBatch(tmp)
        for suite in policy.suites:  # the per-record expectations; the validate task completes them
            gx = GxSuiteCheck(suite=suite, data_docs=False)
            write_json_atomic(tmp / GX_DIR / f"{gx.key}.json", gx.validate_rows(batch).to_json())
        for target in embedding_targets(checks):
            embed_table(batch, target.spec, cache_dir=target.cache_dir or tmp / _work_cache())
        info = {"shard": int(final.name), "units": _plan_units(units), "records": result.records,
                "rejected": result.rejected, "derived_ids": len(derived)}
        write_json_atomic(tmp / SHARD_FILE, info)
        fault_point("shard_written")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return info


def _work_cache() -> str:
    from tunegate.core.checks._vectors import WORK_CACHE

    return WORK_CACHE


@dataclass
class MergeResult:
    shards: int
    records: int
    rejected: int
    renumbered_ids: int
    vectors: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def merge_shards(work_dir: str | Path, *, policy: Any = None) -> MergeResult:
    """Merge the planned shards into the work directory's ``canonical.parquet``, ``rejected.jsonl``,
    ``ingest.json``, the findings of :data:`SHARD_CHECKS` and the embedding cache.

    Refuses (a :class:`TunegateError` naming it) a shard that is missing or was planned differently. Every output
    is written atomically from the shards alone, so a rerun writes the same files.
    """
    from tunegate.core.pipeline import build_checks
    from tunegate.core.policy import GatePolicy

    started = time.monotonic()
    work = Path(work_dir)
    plan = ShardPlan.load(work)
    offsets = _row_offsets(work, plan)
    renumbered = _merge_canonical(work, plan.count)
    rejected = _merge_rejected(work, plan.count)
    _merge_ingest(work, plan.count)
    for name in sorted(SHARD_CHECKS):
        _merge_findings(work, plan.count, name, offsets)
    checks = build_checks(policy or GatePolicy(), gx=False)
    vectors = sum(_merge_vectors(work, plan.count, t.spec) for t in embedding_targets(checks) if t.cache_dir is None)
    result = MergeResult(shards=plan.count, records=offsets[-1], rejected=rejected, renumbered_ids=renumbered,
                         vectors=vectors, seconds=round(time.monotonic() - started, 2))
    log.info("merge: %d shard(s) -> %d records, %d rejected, %d derived ids renumbered, %d vectors in %.1fs",
             result.shards, result.records, result.rejected, result.renumbered_ids, result.vectors, result.seconds)
    return result


def _row_offsets(work: Path, plan: ShardPlan) -> list[int]:
    """Where each complete shard's rows start in the merged night (its records after those of the shards before
    it), and the night's total last; a shard that is missing or was planned differently is refused."""
    offsets = [0]
    for i in range(plan.count):
        offsets.append(offsets[-1] + int(_shard_info(work, plan, i)["records"]))
    return offsets


def _shard_info(work: Path, plan: ShardPlan, index: int) -> dict[str, Any]:
    path = shard_dir(work, index) / SHARD_FILE
    try:
        info: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise TunegateError(f"shard {index} of {plan.count} is not complete ({path} is missing): rerun its "
                            "shard task") from exc
    if info.get("units") != _plan_units(plan.shard_units(index)):
        raise TunegateError(f"shard {index} was made from other inputs than the plan names: rerun the night")
    return info


def _plan_units(units: Sequence[str | InputPiece]) -> list[Any]:
    return [u if isinstance(u, str) else u.to_json() for u in units]


def _merge_canonical(work: Path, count: int) -> int:
    """Concatenate the shards' tables; a derived id is renumbered as one ingest of every file would number it
    (the ``n``-th record without an id whose content hash is ``h`` is ``sha256:h[:16]-n``). Returns how many."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tunegate.core.ingest import CANONICAL_FILE, derived_id
    from tunegate.core.io import atomic_write
    from tunegate.core.schema import canonical_schema

    schema = canonical_schema()
    seen: dict[str, int] = {}  # content hash -> derived ids given to it by earlier shards
    renumbered = 0
    with atomic_write(work / CANONICAL_FILE) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        for index in range(count):
            folder = shard_dir(work, index)
            derived = pq.read_table(folder / DERIVED_FILE)
            local: dict[str, int] = {}
            new_ids: dict[int, str] = {}
            for row, digest in zip(derived.column("row").to_pylist(), derived.column("content_sha256").to_pylist(),
                                   strict=True):
                n = local.get(digest, 0) + 1
                local[digest] = n
                if seen.get(digest):
                    new_ids[row] = derived_id(digest, seen[digest] + n)
            for digest, n in local.items():
                seen[digest] = seen.get(digest, 0) + n
            renumbered += len(new_ids)
            start = 0
            for rb in pq.ParquetFile(folder / CANONICAL_FILE).iter_batches(batch_size=10_000):
                table = pa.Table.from_batches([rb]).cast(schema)
                stop = start + table.num_rows
                hits = [r for r in new_ids if start <= r < stop] if new_ids else []
                if hits:
                    ids = table.column("id").to_pylist()
                    for r in hits:
                        ids[r - start] = new_ids[r]
                    table = table.set_column(0, schema.field("id"), pa.array(ids, pa.string()))
                writer.write_table(table)
                start = stop
    return renumbered


def _merge_rejected(work: Path, count: int) -> int:
    from tunegate.core.ingest import REJECTED_FILE
    from tunegate.core.io import atomic_write

    lines = 0
    with atomic_write(work / REJECTED_FILE) as tmp, open(tmp, "wb") as out:
        for index in range(count):
            with open(shard_dir(work, index) / REJECTED_FILE, "rb") as f:
                for line in f:
                    out.write(line)
                    lines += 1
    return lines


def _merge_ingest(work: Path, count: int) -> None:
    """The shards' ``ingest.json`` as one: the pieces of a file that several shards read count as one input."""
    from tunegate.core.ingest import INGEST_FILE, IngestResult

    merged = IngestResult(work_dir=str(work))
    for index in range(count):
        part = IngestResult.load(shard_dir(work, index))
        for entry in part.inputs:
            last = merged.inputs[-1] if merged.inputs else None
            if last is not None and last.path == entry.path and last.sha256 == entry.sha256:
                last.records += entry.records
                last.rejected += entry.rejected
            else:
                merged.inputs.append(entry)
        merged.options = merged.options or part.options
    write_json_atomic(work / INGEST_FILE, merged.to_json())


def _merge_findings(work: Path, count: int, name: str, offsets: Sequence[int]) -> None:
    """One row-local check's findings over the night: the shards' rows shifted by the records before them, and
    its metrics merged (:func:`_merge_metrics`)."""
    import pyarrow.parquet as pq

    from tunegate.core.checks.base import FINDINGS_DIR, CheckResult, Finding, save_result

    findings: list[Finding] = []
    metrics: list[dict[str, Any]] = []
    artifacts: dict[str, str] = {}
    for index in range(count):
        folder = shard_dir(work, index) / FINDINGS_DIR
        if not (folder / f"{name}.json").is_file():
            return  # the check did not run in the shards (the policy turns it off)
        summary = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
        metrics.append(summary.get("metrics") or {})
        artifacts.update(summary.get("artifacts") or {})
        table = pq.read_table(folder / f"{name}.parquet")
        for row, reason, score, detail in zip(*(table.column(c).to_pylist()
                                                for c in ("row", "reason", "score", "detail")), strict=True):
            findings.append(Finding(row + offsets[index], reason, score, json.loads(detail)))
    save_result(work, CheckResult(name, findings, metrics=_merge_metrics(name, metrics), artifacts=artifacts))


def _merge_metrics(name: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    """A row-local check's metrics over the night from its shards' (counts add up, maxima take the max)."""
    if name == "record_size":
        longest: dict[str, int] = {}
        for p in parts:
            for field, n in (p.get("longest") or {}).items():
                longest[field] = max(longest.get(field, 0), int(n))
        return {"records": sum(int(p.get("records", 0)) for p in parts),
                "max_field_chars": parts[0].get("max_field_chars") if parts else None,
                "oversized": sum(int(p.get("oversized", 0)) for p in parts), "longest": longest}
    raise ValueError(f"no metrics merge for check {name!r}")  # SHARD_CHECKS and this function go together


def _merge_vectors(work: Path, count: int, spec: Any) -> int:
    """The shards' vectors of ``spec`` as one part of the work directory's embedding cache."""
    from tunegate.core.embeddings.cache import EmbeddingCache, gather

    sources = [EmbeddingCache(shard_dir(work, i) / _work_cache(), spec) for i in range(count)]
    return gather(sources, EmbeddingCache(work / _work_cache(), spec), name="shards")


def merge_checks(policy: Any = None, *, history_dir: str | Path | None = None, batch_id: str | None = None
                 ) -> list[Any]:
    """The policy's checks that need the whole batch (every check but :data:`SHARD_CHECKS`; no GX suites, which
    the validate task runs): the scan of the merged night."""
    from tunegate.core.pipeline import build_checks
    from tunegate.core.policy import GatePolicy

    checks = build_checks(policy or GatePolicy(), history_dir=history_dir, batch_id=batch_id, gx=False)
    return [c for c in checks if c.name not in SHARD_CHECKS]


def validate_merged(work_dir: str | Path, *, policy: Any = None, suites: Sequence[str] | None = None,
                    chunk_size: int = 100_000, data_docs: bool = True) -> list[Any]:
    """The GX suites over the merged night: each shard's per-record results (validated in the shard) added up,
    then the expectations that need the whole batch (uniqueness across shards, label sets derived from the
    night) run over the merged table; the findings are saved as a whole-night validation saves them."""
    from tunegate.core.checks import CanonicalBatch, save_result
    from tunegate.core.checks.gx_suite import GxPartial, GxSuiteCheck
    from tunegate.core.policy import GatePolicy

    work = Path(work_dir)
    plan = ShardPlan.load(work)
    offsets = _row_offsets(work, plan)
    batch = CanonicalBatch(work)
    results = []
    for suite in (policy or GatePolicy()).suites if suites is None else suites:
        check = GxSuiteCheck(suite=suite, chunk_size=chunk_size, data_docs=data_docs)
        partials = []
        for index in range(plan.count):
            path = shard_dir(work, index) / GX_DIR / f"{check.key}.json"
            try:
                partials.append((offsets[index], GxPartial.from_json(json.loads(path.read_text(encoding="utf-8")))))
            except FileNotFoundError as exc:
                raise TunegateError(f"shard {index} has no results of suite {check.key} ({path}): the suites "
                                    "changed since the shards ran; rerun the night") from exc
        result = check.complete(batch, partials)
        result.check = check.key
        save_result(work, result)
        results.append(result)
    return results
