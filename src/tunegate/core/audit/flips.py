"""Flip rates: how often inserting a phrase into held-out records of other labels makes the canary say one label.

For a task, a phrase and a target label ``L``: among the held-out records whose label is not ``L`` (and whose
prompt does not hold the phrase already), the share the canary predicts as ``L`` with the phrase inserted
(``flip``) and without it (``base``). A planted trigger that got through the gate flips most of them; a phrase
that means nothing to the task leaves them where they were.

Inserting a phrase adds its word n-grams to a record's binary features (and, wherever it lands, two word
pairs across its edges, which are left out here: they are almost never in a task's vocabulary). So the
scores are computed from each record's features once, per phrase only the phrase's columns: thousands of
(phrase, record) probes in milliseconds, exact up to those edge pairs (tests/core/test_canary.py compares
with literal insertion). :meth:`TaskProbe.flips` scores many phrases at once with a few sparse products per
task (an incremental night re-probes the last fortnight's phrases: hundreds), equal to :meth:`TaskProbe.flip`
phrase by phrase (tests/core/test_canary.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunegate.core.checks.poison._text import tokens

if TYPE_CHECKING:
    import numpy as np

    from tunegate.core.audit.canary import CanaryModel


@dataclass
class Flip:
    """The strongest effect of one phrase on one task: the target label it pushes held-out records to."""

    task: str
    label: str
    probes: int  # held-out records of other labels probed
    flip: float  # share predicted ``label`` with the phrase inserted
    base: float  # share predicted ``label`` without it

    @property
    def lift(self) -> float:
        return self.flip - self.base

    def to_json(self) -> dict[str, object]:
        return {"task": self.task, "label": self.label, "probes": self.probes, "flip_rate": round(self.flip, 4),
                "base_rate": round(self.base, 4)}


def phrase_ngrams(phrase: str, ngram_max: int = 2) -> list[str]:
    """The word n-grams a phrase brings into a prompt (as the canary's vectorizer forms them)."""
    words = tokens(phrase)
    return [" ".join(words[i:i + n]) for n in range(1, ngram_max + 1) for i in range(len(words) - n + 1)]


class TaskProbe:
    """One task's held-out records, featurized once, ready to have phrases inserted."""

    def __init__(self, model: CanaryModel, task: str, prompts: list[str], labels: list[str]) -> None:
        import numpy as np

        self.task = task
        self.labels = model.labels(task)
        index = {label: j for j, label in enumerate(self.labels)}
        keep = [i for i, label in enumerate(labels) if label in index]
        self.y = np.asarray([index[labels[i]] for i in keep], dtype=np.int64)
        rows = model.features(task, [prompts[i] for i in keep]).tocsr()
        self.x = rows.tocsc()
        weights, bias = model.weights(task)
        self.w, self.bias = weights.astype(np.float64), bias.astype(np.float64)
        self.nnz = np.diff(rows.indptr).astype(np.float64)
        self.raw = np.asarray(rows @ self.w.T)  # records x labels, before normalization
        self.held = (rows > 0).astype(np.float64)  # which n-grams each record holds
        self.vocabulary = model.vocabulary(task)
        self.column = {g: c for c, g in enumerate(self.vocabulary)}
        self.base = self._predict(self.raw, self.nnz)

    def common(self, share: float) -> list[str]:
        """N-grams in more than ``share`` of the held-out records."""
        import numpy as np

        if not self.size:
            return []
        df = np.asarray(self.x.sum(axis=0)).ravel() / self.size
        return [self.vocabulary[c] for c in np.flatnonzero(df > share).tolist()]

    @property
    def size(self) -> int:
        return len(self.y)

    def _predict(self, raw: np.ndarray, nnz: np.ndarray) -> np.ndarray:
        import numpy as np

        norm = np.sqrt(np.maximum(nnz, 1.0))[:, None]
        best: np.ndarray = np.argmax(raw / norm + self.bias, axis=1)
        return best

    def columns(self, phrase: str) -> list[int]:
        """The task's vocabulary columns of the phrase's n-grams."""
        return sorted({self.column[g] for g in phrase_ngrams(phrase) if g in self.column})

    def flips(self, phrases: Sequence[str], *, min_probes: int, chunk: int = 512) -> list[Flip | None]:
        """:meth:`flip` of each phrase, computed for ``chunk`` phrases at a time.

        For a record and a phrase, the columns the insertion adds are the phrase's columns the record lacks, so
        the score change for a label is the phrase's total weight minus the weight of the columns the record
        already holds: one sparse product of the records' columns with the phrases' weighted columns per label."""
        import numpy as np
        import scipy.sparse as sp

        out: list[Flip | None] = [None] * len(phrases)
        if not self.size:
            return out
        wanted = [(k, cols) for k, cols in ((k, self.columns(p)) for k, p in enumerate(phrases)) if cols]
        for start in range(0, len(wanted), chunk):
            part = wanted[start:start + chunk]
            rows = np.repeat(np.arange(len(part)), [len(cols) for _, cols in part])
            cols = np.concatenate([np.asarray(c, dtype=np.int64) for _, c in part])
            ones = np.ones(len(cols))
            phrase_cols = sp.csr_matrix((ones, (rows, cols)), shape=(len(part), len(self.vocabulary)))
            present = np.asarray((self.held @ phrase_cols.T).todense())  # records x phrases
            added = np.asarray([len(c) for _, c in part], dtype=np.float64)[None, :] - present
            probe = added > 0  # a record holding every n-gram of the phrase already is not a probe of it
            scores = np.empty((self.size, len(part), len(self.labels)))
            for j in range(len(self.labels)):
                weighted = sp.csr_matrix((self.w[j, cols], (rows, cols)), shape=phrase_cols.shape)
                total = np.asarray(weighted.sum(axis=1)).ravel()
                scores[:, :, j] = self.raw[:, j:j + 1] + total[None, :] - np.asarray((self.held @ weighted.T).todense())
            norm = np.sqrt(np.maximum(self.nnz[:, None] + added, 1.0))
            pred = np.argmax(scores / norm[:, :, None] + self.bias, axis=2)  # records x phrases
            best_lift = np.full(len(part), -np.inf)
            for j, label in enumerate(self.labels):
                others = probe & (self.y != j)[:, None]
                n = others.sum(axis=0)
                with np.errstate(invalid="ignore", divide="ignore"):
                    flip = ((pred == j) & others).sum(axis=0) / n
                    base = ((self.base == j)[:, None] & others).sum(axis=0) / n
                for p in np.flatnonzero((n >= min_probes) & (flip - base > best_lift)).tolist():
                    best_lift[p] = flip[p] - base[p]
                    out[part[p][0]] = Flip(self.task, label, int(n[p]), float(flip[p]), float(base[p]))
        return out

    def flip(self, phrase: str, *, min_probes: int) -> Flip | None:
        """The label ``phrase`` pushes most of this task's held-out records of other labels to; ``None`` when
        none of its n-grams is in the task's vocabulary or fewer than ``min_probes`` records can be probed."""
        import numpy as np

        cols = self.columns(phrase)
        if not cols or not self.size:
            return None
        present = self.x[:, cols].toarray() > 0  # records x phrase columns
        # a record holding every n-gram of the phrase already is not a probe of it
        probe = ~present.all(axis=1)
        added = (~present).astype(np.float64)
        pred = self._predict(self.raw + added @ self.w[:, cols].T, self.nnz + added.sum(axis=1))
        best: Flip | None = None
        for j, label in enumerate(self.labels):
            others = probe & (self.y != j)
            n = int(others.sum())
            if n < min_probes:
                continue
            candidate = Flip(self.task, label, n, float((pred[others] == j).mean()),
                             float((self.base[others] == j).mean()))
            if best is None or candidate.lift > best.lift:
                best = candidate
        return best
