"""Phrase statistics of published nights: what ``poison_trigger`` compares tonight's label skews with.

A natural label cue ("very disappointed" -> negative, "stupid" -> toxic) steers the same label night after night; a
planted trigger is new, or its skew is (an everyday phrase with mixed labels in every earlier night that is suddenly
one label in several datasets). Within one batch both look alike; against the pipeline's earlier accepted nights they
do not. So each published night keeps, for the 1-2 word phrases of its classification tasks' prompts (the phrases and
prompts the trigger scan reads: :meth:`Records.prompts`, :func:`ngram_matrix`), how many accepted records with the
phrase got each label, per task; classification groups too small to score tonight count too
(:func:`~.tasks.small_label_tasks`: a task arriving in small slices is known once its nights add up):

``HISTORY_DIR/phrases/nights/<batch id, URL-quoted>.parquet``: one row per (``task``, ``label``, ``phrase``) with
``records`` > 0, for the phrases in at least ``MIN_RECORDS`` records of the night's classification prompts (bounded: a
night of 35k records is ~1 MB); ``phrase`` is a 64-bit hash of the phrase (:func:`phrase_keys`); ``phrase == 0`` rows
are the task's label totals. Since format 2 a phrase kept for the night has its exact count in every task (format 1
kept a phrase of a task only from 2 records there): a phrase missing from a night's file was in at most one of its
records (:meth:`PhraseHistory.hidden`, what the excess pass allows for). The file's metadata says which night it is,
when it was first published and whether the night was *anomalous* (the trigger scan raised a campaign that night: what
it held must not become the norm). Since format 3 a task's rows with a null ``label`` are its *record sketch*: the
1,024 (``sketch.SKETCH_SIZE``) smallest 64-bit content keys of its records (``phrase``: the first 8 bytes of each
record's ``content_sha256``; ``records``: 1), from which :func:`load_phrase_history` estimates how many *distinct*
records the summed nights hold (:mod:`tunegate.core.sketch`; exact below 1,024 records). Since format 4 a pictographic
symbol is a token (:data:`~._text.SYMBOLS`): an older night never counted a phrase with one, so where the summed nights
include such a night the history cannot say that a phrase with a symbol is new (:meth:`PhraseHistory.blind`; the
history passes leave such phrases out until the window holds format-4 nights only). Publish writes it from the
accepted records (:func:`record_phrase_night`), under the history's writer lock, through a temporary sibling and a
rename; a rerun of the night replaces it. Halted nights are never published, so never written.

:func:`load_phrase_history` sums the last ``max_nights`` nights, leaving out tonight's own file (a rerun) and
anomalous nights, and keeps only the phrases tonight has. A record counted on several nights is one record's evidence,
not several: where a task's nights hold fewer distinct records than records (a pipeline that republishes what it saw,
a history whose near-duplicate check is off), the task's summed counts are scaled down to its distinct records
(:attr:`PhraseHistory.weights`), so the predictives the history passes draw from it are as wide as what the history
knows. Repetition under ``MIN_REPEAT`` is left alone (within the sketch's error).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from tunegate.core.sketch import MIN_REPEAT, bottom_k, content_keys, distinct_count

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa
    import scipy.sparse as sp

    from tunegate.core.checks.poison._text import Records
    from tunegate.core.checks.poison.config import TriggerConfig
    from tunegate.core.checks.poison.tasks import Task

log = logging.getLogger(__name__)

PHRASES_DIR = "phrases"
NIGHTS_DIR = "nights"
FORMAT = 4
#: The first format whose nights count phrases with a pictographic symbol in them.
SYMBOLS_FORMAT = 4
#: A phrase is kept when at least this many of the night's classification records hold it (bounds the file's size),
#: with its exact count in every task where it occurs (format 1: only in tasks where 2 records held it).
MIN_RECORDS = 2
TOTALS = 0  # the ``phrase`` key of a task's label totals (:func:`phrase_keys` never returns it)
_META_KEY = b"tunegate.phrases"


def night_file(history_dir: str | Path, batch_id: str) -> Path:
    return Path(history_dir) / PHRASES_DIR / NIGHTS_DIR / f"{quote(batch_id, safe='')}.parquet"


def phrase_keys(phrases: Any) -> np.ndarray:
    """A stable 64-bit key per phrase (blake2b; never ``TOTALS``)."""
    import hashlib

    import numpy as np

    keys = np.fromiter((int.from_bytes(hashlib.blake2b(str(p).encode(), digest_size=8).digest(), "little",
                                       signed=True) for p in phrases), dtype=np.int64, count=len(phrases))
    keys[keys == TOTALS] = 1
    return keys


def _schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema([("task", pa.string()), ("label", pa.string()), ("phrase", pa.int64()),
                      ("records", pa.int32())])


def phrase_counts(records: Records, config: TriggerConfig, content: np.ndarray | None = None) -> pa.Table:
    """Per classification task, label and phrase: the records of the batch with that phrase and label; with
    ``content`` (each row's content key, :func:`content_keys`), each task's record sketch too (format 3)."""
    import numpy as np
    import pyarrow as pa

    from tunegate.core.checks.poison._text import ngram_matrix, onehot
    from tunegate.core.checks.poison.tasks import build_tasks, small_label_tasks

    prompts = records.prompts(config.max_chars)
    tasks = [t for t in build_tasks(records, prompts, config) if t.kind == "label"] + small_label_tasks(records,
                                                                                                         config)
    cols: dict[str, list[Any]] = {"task": [], "label": [], "phrase": [], "records": []}
    if tasks:
        rows = np.concatenate([t.rows for t in tasks])
        x, vocab = ngram_matrix([prompts[i] for i in rows.tolist()], ngram_max=config.ngram_max, min_df=MIN_RECORDS)
        keys = phrase_keys(vocab)
        start = 0
        for task in tasks:
            ch = task.labels
            xt = x[start:start + len(task.rows)]
            start += len(task.rows)
            totals = np.bincount(ch.outcome, minlength=len(ch.names))
            for lab in np.flatnonzero(totals).tolist():
                _extend(cols, task.name, ch.names[lab], np.array([TOTALS]), totals[[lab]])
            if content is not None:
                sketch = bottom_k(content[task.rows])
                _extend(cols, task.name, None, sketch, np.ones(len(sketch)))
            present = np.flatnonzero(np.asarray(xt.sum(axis=0)).ravel() >= 1)
            if not len(present):
                continue
            counts = (onehot(ch.outcome, len(ch.names)).T @ xt[:, present]).tocoo()  # label x phrase
            for lab in np.unique(counts.row).tolist():
                sel = counts.row == lab
                _extend(cols, task.name, ch.names[lab], keys[present[counts.col[sel]]], counts.data[sel])
    return pa.table({"task": cols["task"], "label": cols["label"],
                     "phrase": np.concatenate(cols["phrase"]) if cols["phrase"] else np.array([], np.int64),
                     "records": np.concatenate(cols["records"]) if cols["records"] else np.array([], np.int32)},
                    schema=_schema())


def _extend(cols: dict[str, list[Any]], task: str, label: str | None, keys: np.ndarray, counts: np.ndarray) -> None:
    import numpy as np

    cols["task"] += [task] * len(keys)
    cols["label"] += [label] * len(keys)
    cols["phrase"].append(np.asarray(keys, dtype=np.int64))
    cols["records"].append(np.rint(counts).astype(np.int32))


def write_phrase_night(history_dir: str | Path, batch_id: str, table: pa.Table, *, anomalous: bool,
                       out_dir: str | Path | None = None) -> dict[str, Any]:
    """Write (a rerun: replace) the night's phrase statistics, atomically, under the history's writer lock."""
    return write_night_table(night_file(history_dir, batch_id), history_dir, batch_id, table, anomalous=anomalous,
                             out_dir=out_dir, fmt=FORMAT, meta_key=_META_KEY)


def write_night_table(path: Path, history_dir: str | Path, batch_id: str, table: pa.Table, *, anomalous: bool,
                      out_dir: str | Path | None, fmt: int, meta_key: bytes) -> dict[str, Any]:
    """Write (a rerun: replace) one night's statistics file of the history (``path``), atomically (a temporary
    sibling and a rename), under the history's writer lock; its metadata (under ``meta_key``) says which night it
    is, when it was first published and whether it was *anomalous* (left out of baselines). A damaged file there is
    replaced (a rerun of the night is how the error that reports it says to recover)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tunegate.core.history.writing import writer_lock
    from tunegate.core.io import atomic_write

    now = datetime.now(UTC).isoformat(timespec="seconds")
    with writer_lock(Path(history_dir)):
        previous = None
        if path.is_file():
            try:
                previous = _meta(path, meta_key)
            except (OSError, pa.ArrowException) as exc:  # a damaged file: the rerun's publish replaces it
                log.warning("history: %s is unreadable (%s); this night's publish replaces it", path, exc)
                previous = {}
        meta = {"format": fmt, "batch_id": batch_id, "published": now, "anomalous": bool(anomalous),
                "first_published": (previous or {}).get("first_published") or now,
                **({"out_dir": str(out_dir)} if out_dir is not None else {})}
        table = table.replace_schema_metadata({meta_key: json.dumps(meta, sort_keys=True).encode()})
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as tmp:
            pq.write_table(table, tmp, compression="zstd")
    return {"file": str(path), "rows": table.num_rows, "anomalous": bool(anomalous), "replaced": previous is not None}


def _meta(path: Path, meta_key: bytes = _META_KEY) -> dict[str, Any]:
    import pyarrow.parquet as pq

    raw = (pq.read_schema(path).metadata or {}).get(meta_key)
    meta: dict[str, Any] = json.loads(raw) if raw else {}
    return meta


def baseline_nights(folder: Path, *, exclude: str | None, max_nights: int, meta_key: bytes, what: str
                    ) -> list[tuple[dict[str, Any], Path]]:
    """The night files of ``folder`` a baseline reads: the last ``max_nights`` by first publication, without
    ``exclude`` (tonight, on a rerun) and without anomalous nights; each with its metadata. An unreadable file is a
    :class:`~tunegate.exceptions.HistoryError` that says how to recover (``what``: the statistics it holds)."""
    import pyarrow as pa

    from tunegate.exceptions import HistoryError

    if not folder.is_dir():
        return []
    nights: list[tuple[str, str, dict[str, Any], Path]] = []
    for path in folder.glob("*.parquet"):
        try:
            meta = _meta(path, meta_key)
        except (OSError, pa.ArrowException) as exc:
            raise HistoryError(f"{what} {path} are unreadable ({exc}): remove the file and rerun that night's publish "
                               "(it writes them again from the night's accepted records)") from exc
        if meta.get("batch_id") and meta["batch_id"] != exclude and not meta.get("anomalous"):
            nights.append((str(meta.get("first_published", "")), str(meta["batch_id"]), meta, path))
    nights.sort(key=lambda n: n[:2])
    return [(meta, path) for _, _, meta, path in (nights[-max_nights:] if max_nights else [])]


class _AcceptedFile:
    """``Records.read`` over a result set's accepted (or held) Parquet file."""

    def __init__(self, path: Path) -> None:
        import pyarrow.parquet as pq

        self._file = pq.ParquetFile(path)

    def iter_batches(self, columns: list[str] | None = None, batch_size: int = 50_000) -> Any:
        start = 0
        for batch in self._file.iter_batches(batch_size=batch_size, columns=columns):
            yield start, batch
            start += batch.num_rows


def accepted_file(out_dir: str | Path, summary: dict[str, Any]) -> Path:
    """A result set's accepted (or held) Parquet file, as its summary names it."""
    outputs = summary.get("outputs") or {}
    return Path(out_dir) / str(outputs.get("accepted") or outputs.get("held") or "accepted.parquet")


def read_accepted(path: Path) -> Records:
    """The text columns of a result set's accepted file (what the publish step's statistics are counted from)."""
    from tunegate.core.checks.poison._text import Records

    return Records.read(_AcceptedFile(path))  # type: ignore[arg-type]


def accepted_night(out_dir: str | Path, summary: dict[str, Any], check: str, *, records: Records | None = None
                   ) -> tuple[Path, Records, bool] | None:
    """What a publish step's statistics are written from: the night's accepted file, its records (``records`` when
    the caller read them already: :func:`read_accepted`), and whether ``check`` raised a campaign that night (an
    anomalous night, left out of baselines). ``None`` when the night did not run ``check`` or has no accepted file."""
    from tunegate.core.reasons import CAMPAIGN

    result = (summary.get("checks") or {}).get(check)
    accepted = accepted_file(out_dir, summary)
    if result is None or not accepted.is_file():
        return None
    return (accepted, records if records is not None else read_accepted(accepted),
            any(i.get("reason") == CAMPAIGN for i in result.get("issues") or []))


def record_phrase_night(history_dir: str | Path, out_dir: str | Path, summary: dict[str, Any], *, batch_id: str,
                        config: TriggerConfig, records: Records | None = None) -> dict[str, Any] | None:
    """The publish step's part: the night's phrase statistics from its accepted records (``records``: read already).
    ``None`` (nothing written) when the night did not run ``poison_trigger`` or has no accepted file."""
    import pyarrow.parquet as pq

    started = time.perf_counter()
    night = accepted_night(out_dir, summary, "poison_trigger", records=records)
    if night is None:
        return None
    accepted, records, anomalous = night
    content = content_keys(pq.read_table(accepted, columns=["content_sha256"]).column(0).to_pylist())
    result = write_phrase_night(history_dir, batch_id, phrase_counts(records, config, content), anomalous=anomalous,
                                out_dir=out_dir)
    return logged_night(result, "phrase history", batch_id, started)


def logged_night(result: dict[str, Any], what: str, batch_id: str, started: float) -> dict[str, Any]:
    """A written night's ``result`` with the seconds since ``started``, logged."""
    result["seconds"] = round(time.perf_counter() - started, 2)
    log.info("%s: night %s: %d rows%s%s, %.1f s", what, batch_id, result["rows"],
             " (anomalous: left out of baselines)" if result["anomalous"] else "",
             " (rerun: replaced)" if result["replaced"] else "", result["seconds"])
    return result


@dataclass
class PhraseHistory:
    """The summed phrase statistics of earlier nights, restricted to the phrases of tonight's batch."""

    nights: list[str] = field(default_factory=list)
    table: pa.Table | None = None  # task, label, phrase, records (summed over the nights)
    truncated: int = 0  # nights of format 1 (a task's count of a phrase kept only from 2 records)
    kept_keys: np.ndarray | None = None  # phrase keys kept by format-2 nights (sorted) ...
    kept_nights: np.ndarray | None = None  # ... and how many of those nights kept each
    #: per task whose nights repeat records: its distinct records over its records (< ``MIN_REPEAT``); its counts
    #: are scaled by it (the others: 1)
    weights: dict[str, float] = field(default_factory=dict)
    #: whether every summed night counted phrases with a pictographic symbol (format >= ``SYMBOLS_FORMAT``)
    symbols: bool = True

    def blind(self, vocab: np.ndarray) -> np.ndarray:
        """Per phrase of ``vocab``: ``True`` where the history cannot speak to it, a phrase with a pictographic
        symbol while some summed night predates ``SYMBOLS_FORMAT`` (that night did not count it, so its absence there
        says nothing: an emoji common in tweets would read as new vocabulary on the nights after an upgrade)."""
        import numpy as np

        from tunegate.core.checks.poison._text import has_symbol

        if self.symbols or not len(vocab):
            return np.zeros(len(vocab), dtype=bool)
        return np.fromiter((has_symbol(str(v)) for v in vocab), dtype=bool, count=len(vocab))

    def hidden(self, vocab: np.ndarray) -> np.ndarray:
        """Per phrase of ``vocab``: the format-2 nights that did not keep it (it was in at most one of their records,
        in any task). Format-1 nights (:attr:`truncated`) may lack one record of every phrase in every task."""
        import numpy as np

        hidden = np.full(len(vocab), float(len(self.nights) - self.truncated))
        if self.kept_keys is None or self.kept_nights is None or not len(self.kept_keys) or not len(vocab):
            return hidden
        keys = phrase_keys(vocab)
        at = np.minimum(np.searchsorted(self.kept_keys, keys), len(self.kept_keys) - 1)
        found = self.kept_keys[at] == keys
        hidden[found] -= self.kept_nights[at[found]]
        return hidden

    def for_tasks(self, tasks: list[Task], vocab: np.ndarray) -> list[tuple[sp.csr_matrix, np.ndarray] | None]:
        """Per task of tonight: (phrase column x label counts of the history, the task's label totals there), with
        tonight's label codes (a label the history has but tonight lacks counts as tonight's last outcome,
        ``(other)``); ``None`` for a task the history has never seen."""
        import numpy as np
        import pyarrow.compute as pc
        import scipy.sparse as sp

        out: list[tuple[sp.csr_matrix, np.ndarray] | None] = [None] * len(tasks)
        if self.table is None or not self.table.num_rows:
            return out
        keys = phrase_keys(vocab)
        order = np.argsort(keys)
        task_col = self.table.column("task")
        for ti, task in enumerate(tasks):
            part = self.table.filter(pc.equal(task_col, task.name))
            if not part.num_rows:
                continue
            names = task.labels.names
            index = {n: i for i, n in enumerate(names)}
            labs = np.fromiter((index.get(v, len(names) - 1) for v in part.column("label").to_pylist()),
                               dtype=np.int64, count=part.num_rows)
            phrase = part.column("phrase").to_numpy()
            n = part.column("records").to_numpy().astype(np.float64) * self.weights.get(task.name, 1.0)
            is_total = phrase == TOTALS
            totals = np.bincount(labs[is_total], weights=n[is_total], minlength=len(names))
            pos = np.searchsorted(keys[order], phrase[~is_total])
            pos = np.clip(pos, 0, len(keys) - 1)
            found = keys[order][pos] == phrase[~is_total]
            col = order[pos[found]]
            counts = sp.csr_matrix((n[~is_total][found], (col, labs[~is_total][found])), shape=(len(vocab), len(names)))
            out[ti] = (counts, totals)
        return out


def load_phrase_history(history_dir: str | Path | None, *, exclude: str | None = None, max_nights: int = 14,
                        vocab: np.ndarray | None = None) -> PhraseHistory:
    """The last ``max_nights`` published nights (first published order) summed per (task, label, phrase), without
    ``exclude`` (tonight, on a rerun) and without anomalous nights; only tonight's phrases when ``vocab`` is given.
    An unreadable night file is a :class:`HistoryError` that says how to recover."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if history_dir is None:
        return PhraseHistory()
    found = baseline_nights(Path(history_dir) / PHRASES_DIR / NIGHTS_DIR, exclude=exclude, max_nights=max_nights,
                            meta_key=_META_KEY, what="phrase statistics")
    if not found:
        return PhraseHistory()
    nights = [(str(meta["batch_id"]), path) for meta, path in found]
    exact = {path: int(meta.get("format", 1)) >= 2 for meta, path in found}
    wanted = None
    if vocab is not None:
        wanted = pa.array(sorted({0, *phrase_keys(vocab).tolist()}), pa.int64())
    tables = []
    kept = []
    sketches: dict[str, list[np.ndarray]] = {}
    unsketched: dict[str, float] = {}  # per task: records of nights written without a sketch (counted as distinct)
    for _, path in nights:
        table = pq.read_table(path).replace_schema_metadata(None)
        is_sketch = pc.is_null(table.column("label"))
        totals = table.filter(pc.and_(pc.equal(table.column("phrase"), TOTALS), pc.invert(is_sketch)))
        _collect_sketches(table.filter(is_sketch), totals, sketches, unsketched)
        table = table.filter(pc.invert(is_sketch))
        if wanted is not None:
            table = table.filter(pc.is_in(table.column("phrase"), value_set=wanted))
        if exact[path]:
            kept.append(pc.unique(table.column("phrase")).to_numpy())
        tables.append(table)
    summed = pa.concat_tables(tables).group_by(["task", "label", "phrase"]).aggregate([("records", "sum")])
    summed = summed.select(["task", "label", "phrase", "records_sum"]).rename_columns(["task", "label", "phrase",
                                                                                        "records"])
    keys, times = np.unique(np.concatenate(kept), return_counts=True) if kept else (None, None)
    return PhraseHistory([b for b, _ in nights], summed, sum(not exact[p] for _, p in nights), keys, times,
                         _weights(sketches, unsketched, summed),
                         symbols=all(int(meta.get("format", 1)) >= SYMBOLS_FORMAT for meta, _ in found))


def _collect_sketches(sketch: pa.Table, totals: pa.Table, sketches: dict[str, list[np.ndarray]],
                      unsketched: dict[str, float]) -> None:
    """One night's part of :func:`_weights`: its tasks' sketches, and the records of its tasks that have none."""
    import numpy as np
    import pyarrow.compute as pc

    phrase = sketch.column("phrase").to_numpy()
    encoded = pc.dictionary_encode(sketch.column("task")).combine_chunks()
    codes = encoded.indices.to_numpy()
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(encoded.dictionary) + 1))
    names = encoded.dictionary.to_pylist()
    for i, name in enumerate(names):
        if bounds[i + 1] > bounds[i]:
            sketches.setdefault(name, []).append(phrase[order[bounds[i]:bounds[i + 1]]])
    sketched = set(names)
    for name, n in zip(totals.column("task").to_pylist(), totals.column("records").to_pylist(), strict=True):
        if name not in sketched:
            unsketched[name] = unsketched.get(name, 0.0) + float(n)


def _weights(sketches: dict[str, list[np.ndarray]], unsketched: dict[str, float], summed: pa.Table
             ) -> dict[str, float]:
    """Per task whose summed nights hold materially fewer distinct records than records: distinct / records."""
    import pyarrow.compute as pc

    totals = summed.filter(pc.equal(summed.column("phrase"), TOTALS))
    records: dict[str, float] = {}
    for name, n in zip(totals.column("task").to_pylist(), totals.column("records").to_pylist(), strict=True):
        records[name] = records.get(name, 0.0) + float(n)
    out = {}
    for name, parts in sketches.items():
        n = records.get(name, 0.0)
        distinct = distinct_count(parts) + unsketched.get(name, 0.0)
        if n > 0 and distinct < MIN_REPEAT * n:
            out[name] = max(distinct, 1.0) / n
    return out
