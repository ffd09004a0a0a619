"""Known poison (near_duplicate): a record that repeats one an engineer confirmed as poison is quarantined.

Confirmed poison lives beside the history (:mod:`tunegate.core.history.poison`). With a history, the
near-duplicate check embeds those records with its own embedding, compares every record of the batch with them
(cosine at the check's ``threshold``, the same candidates rule as for accepted records) and verifies each
candidate pair on its words (:func:`pair_difference`, the edit rule of near-duplicates: case, punctuation,
typos, a word or two). An exact copy (same ``content_sha256``) needs no embedding.

Reason ``known_poison``; detail: ``known_poison`` (the confirmed record's id), ``similarity``, ``exact_copy``,
``confirmed_batch``, ``confirmed_by``. A confirmed set is small (hundreds, not millions), so the comparison is a
matrix product in chunks of the batch, no index.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunegate.core.checks._edits import VERIFY_CHARS, field_words
from tunegate.core.checks._verify import pair_difference
from tunegate.core.checks.base import CanonicalBatch, Finding
from tunegate.core.reasons import KNOWN_POISON

if TYPE_CHECKING:
    import numpy as np

    from tunegate.core.embeddings import EmbeddingSpec

log = logging.getLogger(__name__)

_CHUNK = 8192  # batch rows per matrix product with the confirmed records


def known_poison_findings(batch: CanonicalBatch, vectors: np.ndarray, digests: list[str], history_dir: str | Path,
                          *, spec: EmbeddingSpec, threshold: float) -> tuple[list[Finding], dict[str, Any]]:
    """Findings ``known_poison`` for the batch rows that repeat a confirmed poison record of the history, and
    the metrics ``known_poison_records`` (the confirmed set's size) and ``known_poison_matches``."""
    import numpy as np

    from tunegate.core.embeddings import embed_table
    from tunegate.core.history.poison import KNOWN_POISON as POISON_FILE
    from tunegate.core.history.poison import load_known_poison

    poison = load_known_poison(history_dir)
    if poison is None:
        return [], {"known_poison_records": 0, "known_poison_matches": 0}
    poison_digests = poison.column("content_sha256").to_pylist()
    by_digest = {d: j for j, d in enumerate(poison_digests)}
    best = np.full(len(digests), -1, dtype=np.int64)
    best_sim = np.zeros(len(digests), dtype=np.float32)
    for row, digest in enumerate(digests):
        if digest in by_digest:
            best[row], best_sim[row] = by_digest[digest], 1.0
    pvec = embed_table(Path(history_dir) / POISON_FILE, spec)
    candidates: dict[int, list[tuple[float, int]]] = {}
    for start in range(0, len(vectors), _CHUNK):
        sims = vectors[start:start + _CHUNK] @ pvec.T
        for r, j in zip(*np.nonzero(sims >= threshold), strict=True):
            row = start + int(r)
            if best[row] < 0:
                candidates.setdefault(row, []).append((float(sims[r, j]), int(j)))
    if candidates:
        fields = spec.fields
        poison_words = [tuple(field_words(rec.get(f), VERIFY_CHARS) for f in fields)
                        for rec in poison.select(list(fields)).to_pylist()]
        for row, words in _batch_words(batch, sorted(candidates), fields).items():
            for sim, j in sorted(candidates[row], reverse=True)[:8]:
                if pair_difference(words, poison_words[j], fields) is None:
                    best[row], best_sim[row] = j, sim
                    break
    findings = []
    meta = poison.select(["id", "confirmed_batch", "confirmed_by"]).to_pylist()
    for row in np.flatnonzero(best >= 0).tolist():
        j = int(best[row])
        sim = round(float(best_sim[row]), 4)
        findings.append(Finding(row, KNOWN_POISON, sim, {
            "known_poison": meta[j]["id"], "similarity": sim, "exact_copy": digests[row] == poison_digests[j],
            "confirmed_batch": meta[j]["confirmed_batch"], "confirmed_by": meta[j]["confirmed_by"]}))
    log.info("near_duplicate: %d record(s) repeat one of the %d confirmed poison records of %s", len(findings),
             poison.num_rows, history_dir)
    return findings, {"known_poison_records": poison.num_rows, "known_poison_matches": len(findings)}


def _batch_words(batch: CanonicalBatch, rows: list[int], fields: tuple[str, ...]
                 ) -> dict[int, tuple[tuple[str, ...], ...]]:
    import numpy as np

    wanted = np.asarray(rows, dtype=np.int64)
    out: dict[int, tuple[tuple[str, ...], ...]] = {}
    for first, chunk in batch.iter_batches(list(fields), batch_size=20_000):
        inside = wanted[(wanted >= first) & (wanted < first + chunk.num_rows)]
        if len(inside):
            for row, rec in zip(inside.tolist(), chunk.take(inside - first).to_pylist(), strict=True):
                out[row] = tuple(field_words(rec.get(f), VERIFY_CHARS) for f in fields)
    return out
