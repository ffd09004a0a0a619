"""Response phrases of published nights, per source: what ``poison_content`` asks before it takes a name that sits in
one source's answers for that source's vocabulary.

The injection scan (:mod:`.injection`) drops a name whose responses sit in one task or source beyond that group's share
of the answers: within one night, "System.out" in code answers and an essay source's "In conclusion" look exactly like a
brand woven into that source's answers only. Against the source's earlier nights they do not: a source's vocabulary is
in its answers night after night, at about tonight's rate; a name an attacker weaves into one feed is not, or far more
often tonight than ever before. So each published night keeps, per group (task or source) and 1-2 word phrase of the
responses the scan reads (:func:`~.content.scanned_responses`), how many of them hold the phrase, and in how many of
them it is written as a name where their own prompt does not hold it (*named*: unexplained, as the scan counts them,
and capitalised where a capital says something, :func:`~.injection.name_form`; a popular brand's natural mentions are
mostly answers to prompts that name it, and a woven one never is; the fruit "apple" is no mention of "Apple"):

``HISTORY_DIR/responses/nights/<batch id, URL-quoted>.parquet``: one row per (``group``, ``phrase``) with ``responses``
> 0 and ``named`` <= ``responses``, every phrase of the night's scanned responses (exact counts: a phrase missing
from a night's file was in none of its responses there); ``phrase`` is the 64-bit hash of
:func:`~.phrase_history.phrase_keys`; ``phrase == 0`` rows are the group's responses (both columns). About 0.2 million
rows (1.5 MB) for a night of 38k records (the 40k benchmark's). Files of formats 1 and 2 (before ``named``; format 2
counted unexplained responses in any case) count for :meth:`SourceHistory.of` and not for
:meth:`SourceHistory.named_of`. The file's
metadata says which night it is, when it was first published and whether it was *anomalous* (``poison_content``
reported an injection that night: what it held must not become the norm). Publish writes it from the accepted records
(:func:`record_response_night`) under the history's writer lock, through a temporary sibling and a rename; a rerun of
the night replaces it; halted nights are never published, so never written.

:func:`load_response_history` sums the last ``max_nights`` nights, leaving out tonight's own file (a rerun) and
anomalous nights, for the phrases asked about (:class:`SourceHistory`). The tests that read it are
:func:`~.injection.new_to_source` and :func:`~.injection.new_in_history`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from tunegate.core.checks.poison.phrase_history import (
    accepted_night,
    baseline_nights,
    logged_night,
    phrase_keys,
    write_night_table,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from tunegate.core.checks.poison._text import Records
    from tunegate.core.checks.poison.config import ContentConfig

RESPONSES_DIR = "responses"
NIGHTS_DIR = "nights"
FORMAT = 3
TOTALS = 0  # the ``phrase`` key of a group's count of responses (``phrase_keys`` never returns it)
_META_KEY = b"tunegate.responses"


def night_file(history_dir: str | Path, batch_id: str) -> Path:
    return Path(history_dir) / RESPONSES_DIR / NIGHTS_DIR / f"{quote(batch_id, safe='')}.parquet"


def response_counts(records: Records, config: ContentConfig) -> pa.Table:
    """Per group and 1-``ngram_max`` word phrase, the scanned responses (:func:`~.content.scanned_responses`) of the
    batch that hold it, and those of them that write it as a name (:func:`~.injection.named_occurrences`) where their
    prompt does not hold it (:func:`~.injection.unexplained_occurrences`); per group, its scanned responses
    (``phrase`` ``TOTALS``, both columns)."""
    import numpy as np
    import pyarrow as pa

    from tunegate.core.checks.poison._text import ngram_matrix, onehot
    from tunegate.core.checks.poison.content import scanned_responses
    from tunegate.core.checks.poison.injection import named_occurrences, unexplained_occurrences

    responses, _, _ = scanned_responses(records, config)
    schema = pa.schema([("group", pa.string()), ("phrase", pa.int64()), ("responses", pa.int32()),
                        ("named", pa.int32())])
    if not responses:
        return schema.empty_table()
    names, group = np.unique(np.asarray([records.group[i] for i in responses], dtype=object), return_inverse=True)
    outputs = [records.output[i][: config.max_chars] for i in responses]
    x, vocab = ngram_matrix(outputs, ngram_max=config.ngram_max, min_df=1)
    member = onehot(group, len(names)).T  # group x response
    unexplained = unexplained_occurrences(records, responses, x, vocab, ngram_max=config.ngram_max,
                                          max_chars=config.max_chars)
    named = unexplained.tocsr().multiply(named_occurrences(outputs, vocab, ngram_max=config.ngram_max)).tocsr()
    # one product for both counts: each entry is responses * k + named (both < k, exact in float64 for any night that
    # fits in memory); the named occurrences are some of the occurrences, so the structure is x's
    k = float(len(responses) + 1)
    both = (member @ (x.astype(np.float64) * k + named)).tocoo()  # group x phrase
    held = np.floor(both.data / k)
    alone = both.data - held * k
    totals = np.bincount(group, minlength=len(names))
    keys = phrase_keys(vocab)
    return pa.table({"group": np.concatenate([names[both.row], names]).tolist(),
                     "phrase": np.concatenate([keys[both.col], np.full(len(names), TOTALS, dtype=np.int64)]),
                     "responses": np.concatenate([held, totals]).astype(np.int32),
                     "named": np.concatenate([np.rint(alone), totals]).astype(np.int32)}, schema=schema)


def record_response_night(history_dir: str | Path, out_dir: str | Path, summary: dict[str, Any], *, batch_id: str,
                          config: ContentConfig, records: Records | None = None) -> dict[str, Any] | None:
    """The publish step's part: the night's per-source response phrases from its accepted records (``records``: read
    already). ``None`` (nothing written) when the night did not run ``poison_content`` or has no accepted file."""
    started = time.perf_counter()
    night = accepted_night(out_dir, summary, "poison_content", records=records)
    if night is None:
        return None
    _, records, anomalous = night
    result = write_night_table(night_file(history_dir, batch_id), history_dir, batch_id,
                               response_counts(records, config), anomalous=anomalous, out_dir=out_dir, fmt=FORMAT,
                               meta_key=_META_KEY)
    return logged_night(result, "response history", batch_id, started)


@dataclass
class SourceHistory:
    """The earlier nights' scanned responses per group, and for the phrases asked about, how many held each (and how
    many of those wrote it as a name their prompt did not explain, from the nights that count it: format 3)."""

    nights: list[str] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)  # group -> responses
    counts: dict[tuple[str, str], int] = field(default_factory=dict)  # (group, phrase) -> responses with it
    named_totals: dict[str, int] = field(default_factory=dict)  # group -> responses of the nights counting names
    named: dict[tuple[str, str], int] = field(default_factory=dict)  # (group, phrase) -> ... named, unexplained

    def of(self, group: str, phrase: str) -> tuple[int, int]:
        """The group's earlier responses holding ``phrase``, and its earlier responses."""
        return self.counts.get((group, phrase), 0), self.totals.get(group, 0)

    def named_of(self, group: str, phrase: str) -> tuple[int, int]:
        """The group's earlier responses writing ``phrase`` as a name unexplained by their prompt, and its earlier
        responses, over the nights that count them."""
        return self.named.get((group, phrase), 0), self.named_totals.get(group, 0)


def load_response_history(history_dir: str | Path | None, *, exclude: str | None = None, max_nights: int = 14,
                          phrases: list[str]) -> SourceHistory:
    """The last ``max_nights`` published nights (first published order) summed per group for ``phrases``, without
    ``exclude`` (tonight, on a rerun) and without anomalous nights. An unreadable night file is a
    :class:`~tunegate.exceptions.HistoryError` that says how to recover."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from tunegate.exceptions import HistoryError

    if history_dir is None:
        return SourceHistory()
    found = baseline_nights(Path(history_dir) / RESPONSES_DIR / NIGHTS_DIR, exclude=exclude, max_nights=max_nights,
                            meta_key=_META_KEY, what="response statistics")
    if not found:
        return SourceHistory()
    keys = phrase_keys(phrases)
    phrase_of = dict(zip(keys.tolist(), phrases, strict=True))
    wanted = pa.array(sorted({TOTALS, *phrase_of}), pa.int64())
    tables = []
    for _, path in found:
        try:
            table = pq.read_table(path, filters=pc.is_in(pc.field("phrase"), value_set=wanted))
        except (OSError, pa.ArrowException) as exc:  # a readable footer over damaged pages
            raise HistoryError(f"response statistics {path} are unreadable ({exc}): remove the file and rerun that "
                               "night's publish (it writes them again from the night's accepted records)") from exc
        if "named" not in table.column_names:  # formats 1 and 2: not counted (null), so not summed
            table = table.append_column("named", pa.nulls(table.num_rows, pa.int32()))
        tables.append(table.select(["group", "phrase", "responses", "named"]))
    summed = pa.concat_tables(tables).group_by(["group", "phrase"]).aggregate(
        [("responses", "sum"), ("named", "sum")])
    out = SourceHistory([str(meta["batch_id"]) for meta, _ in found])
    for group, key, n, u in zip(*(summed.column(c).to_pylist()
                                  for c in ("group", "phrase", "responses_sum", "named_sum")), strict=True):
        if key == TOTALS:
            out.totals[group] = int(n)
            if u is not None:
                out.named_totals[group] = int(u)
        else:
            out.counts[(group, phrase_of[key])] = int(n)
            if u:
                out.named[(group, phrase_of[key])] = int(u)
    return out
