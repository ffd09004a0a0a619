"""Trigger phrases: the phrases that pass the thresholds, clustered into campaigns and named.

A phrase with ``evidence >= min_evidence`` and ``exclusivity >= min_exclusivity``, concentrated in at
least ``min_tasks`` datasets (each example and dataset counted once), is a trigger. Phrases sharing its
records (its words, its variants) join its campaign, which is named by the member that explains most of
it exclusively.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunegate.core.checks.poison.evidence import concentration, distinct_evidence, task_of_rows

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    import numpy as np
    import scipy.sparse as sp

    from tunegate.core.checks.poison.config import TriggerConfig
    from tunegate.core.checks.poison.evidence import Evidence
    from tunegate.core.checks.poison.novelty import TaskHistory
    from tunegate.core.checks.poison.tasks import Task


@dataclass
class Phrase:
    """One campaign: its name, evidence and exclusivity, the records to flag and the tasks it steers."""

    col: int
    phrase: str
    evidence: float
    exclusivity: float
    rows: np.ndarray  # every record whose prompt contains the phrase
    tasks: list[tuple[int, int, int, int, int]]  # (task, channel, records with the phrase, concentrated, outcome)
    aliases: list[str]
    why: str = ""  # how the pass that found it reads it, for the findings' detail (empty: outcome concentration)


def find_phrases(x: sp.csr_matrix, vocab: np.ndarray, df: np.ndarray, tasks: list[Task], *, prompts: list[str],
                 config: TriggerConfig, history: list[TaskHistory | None] | None = None,
                 evidence: Evidence | None = None) -> list[Phrase]:
    """The trigger phrases, strongest first, each with the phrases that share its records (``history``: label
    rates expected from earlier nights, :func:`~tunegate.core.checks.poison.evidence.concentration`; ``evidence``: that
    concentration, where the caller computed it, whose raised phrases' evidence is then recounted in place)."""
    import numpy as np

    ev = evidence if evidence is not None else concentration(x, df, tasks, config, history)
    if ev is None:
        return []
    xc = x.tocsc()
    hits = np.flatnonzero((ev.evidence >= config.min_evidence) & (ev.exclusivity >= config.min_exclusivity)
                          & (ev.n_tasks >= config.min_tasks))
    kept = []
    owner = task_of_rows(tasks, x.shape[0])
    for c in hits.tolist():  # count each distinct text once (tasks built on the same texts)
        e, t = distinct_evidence(c, ev, tasks, xc, prompts=prompts, config=config, phrase=str(vocab[c]), owner=owner)
        ev.evidence[c], ev.n_tasks[c] = e, t
        if e >= config.min_evidence and t >= config.min_tasks:
            kept.append(c)
    order = sorted(kept, key=lambda c: (-ev.evidence[c], -len(str(vocab[c]).split()), str(vocab[c])))
    rows_of = {c: xc.indices[xc.indptr[c]:xc.indptr[c + 1]] for c in order}
    phrases = [_name(cl, ev, vocab, rows_of, tasks, owner=owner) for cl in _campaigns(order, rows_of, xc)]
    phrases.sort(key=lambda p: -p.evidence)
    return phrases


#: Up to this many candidates, their pairwise record overlaps are one sparse product (a dense n x n table);
#: beyond it, each pair is intersected when asked.
MAX_OVERLAP_TABLE = 4000


def _campaigns(order: list[int], rows_of: dict[int, np.ndarray], xc: sp.csc_matrix) -> list[list[int]]:
    """Phrases whose records overlap (half of the smaller one's): one campaign (its words, its variants)."""
    import numpy as np

    table = None
    if 0 < len(order) <= MAX_OVERLAP_TABLE:
        sub = xc[:, order].astype(np.float64)
        sub.data[:] = 1.0
        table = np.rint((sub.T @ sub).toarray()).astype(np.int64)  # records shared by each pair
    pos = {c: i for i, c in enumerate(order)}

    def shared(c: int, m: int) -> int:
        return int(table[pos[c], pos[m]]) if table is not None else len(np.intersect1d(rows_of[c], rows_of[m]))

    clusters: list[list[int]] = []
    for c in order:
        home = next((cl for cl in clusters if any(
            shared(c, m) >= 0.5 * min(len(rows_of[c]), len(rows_of[m])) for m in cl)), None)
        if home is None:
            clusters.append([c])
        else:
            home.append(c)
    return clusters


def named_campaigns(strength: Mapping[int, float], rows_of: dict[int, np.ndarray], xc: sp.csc_matrix,
                    vocab: np.ndarray, found: list[Phrase], *,
                    detail_of: Mapping[int, list[tuple[int, int, int, int, int]]] | None = None,
                    owner: np.ndarray | None = None, by: str = "", joined: list[int] | None = None
                    ) -> Iterator[tuple[int, list[int], np.ndarray]]:
    """The campaigns of the phrases of ``rows_of`` (:func:`_campaigns`, strongest first by ``strength``), each as (the
    phrase that names it, its members, the records of all its members), without a campaign whose records are mostly
    those of campaigns already ``found``: where ``detail_of`` lists its name (per phrase, its tasks as
    :attr:`Phrase.tasks` lists them) such a campaign joins the one found (:func:`join_found`; ``by``: the pass; its name
    is appended to ``joined``), else it is dropped.
    The name is the longest member within 90% of the strongest: the whole trigger rather than one of its words. A
    member's records count only inside a longer member at least as strong that contains it (:func:`_inside_longer`)."""
    import numpy as np

    taken = np.concatenate([p.rows for p in found]) if found else np.array([], dtype=np.int64)
    ranked = sorted(rows_of, key=lambda c: (-strength[c], -len(str(vocab[c]).split()), str(vocab[c])))
    for cl in _campaigns(ranked, rows_of, xc):
        head = max(cl, key=lambda c: (strength[c] >= 0.9 * strength[cl[0]], len(str(vocab[c]).split()), strength[c]))
        held = np.unique(np.concatenate([_inside_longer(m, cl, strength, rows_of, xc=xc, vocab=vocab) for m in cl]))
        if not len(held):
            continue
        named = any(p.col == head for p in found)  # the same phrase raised before: one campaign, whatever it flags
        if named or len(np.intersect1d(held, taken)) >= 0.5 * len(held):
            listed = detail_of is not None and head in detail_of
            members = [head, *(m for m in cl if m != head)]  # the name's tasks first
            detail = [t for m in members for t in detail_of.get(m, [])] if detail_of is not None and listed else []
            if (listed or named) and join_found(held, detail, found, xc=xc, owner=owner, by=by, col=head) \
                    and joined is not None:
                joined.append(head)
            continue
        yield head, cl, held


def join_found(rows: np.ndarray, detail: list[tuple[int, int, int, int, int]], found: list[Phrase], *,
               xc: sp.csc_matrix, owner: np.ndarray | None, by: str, col: int | None = None) -> bool:
    """Whether a campaign this pass raised (the records it flags, ``rows``, and its tasks, ``detail``) is one another
    pass (or an earlier step) already raised: the ``found`` phrase holding at least half of ``rows``, or the one of the
    same phrase (``col``, the campaign's name: since 2026-12-05 a phrase two passes raise is one campaign even where
    their flags overlap less; spent held-out seed 947 reported "used to" twice, raised by the insertion and the novelty
    passes, the second flagging a task the first did not). That phrase then
    gets added, of ``rows``, those holding its own phrase, and the tasks they sit in: the union of what the passes flag,
    under the first one's name and evidence. Each pass flags by its own reading (the excess pass a campaign's weaker
    tasks by their counts, the insertion pass the tasks where the phrase reads inserted), so the union keeps what each
    found; a word of the name ("snow" of "Jon Snow") raised with it adds only its records that hold the name, its
    others are natural ones. ``owner``: each record's task; ``by``: the pass, named in the campaign's ``why`` with the
    records and tasks it added. ``found`` is updated in place."""
    import numpy as np

    same = next((ph for ph in found if col is not None and ph.col == col), None)
    best = same or max(found, key=lambda ph: len(np.intersect1d(ph.rows, rows)), default=None)
    if best is None or not len(rows) or (same is None and 2 * len(np.intersect1d(best.rows, rows)) < len(rows)):
        return False
    rows = np.intersect1d(rows, xc.indices[xc.indptr[best.col]:xc.indptr[best.col + 1]])
    added = len(np.setdiff1d(rows, best.rows))
    best.rows = np.union1d(best.rows, rows)
    present = {t[0] for t in best.tasks}
    holding = set(owner[rows].tolist()) if owner is not None else set()
    tasks = 0
    for t in detail:
        if t[0] not in present and t[0] in holding:
            best.tasks = [*best.tasks, t]
            present.add(t[0])
            tasks += 1
    if added:
        note = f"also raised by the {by}, which added {added} record{'s' if added > 1 else ''}"
        if tasks:
            note += f" in {tasks} more task{'s' if tasks > 1 else ''}"
        best.why = f"{best.why}; {note}" if best.why else note
    return True


def _inside_longer(m: int, cl: list[int], strength: Mapping[int, float], rows_of: dict[int, np.ndarray], *,
                   xc: sp.csc_matrix, vocab: np.ndarray) -> np.ndarray:
    """Member ``m``'s records of a campaign: all of them, or, where a longer member at least as strong contains ``m``
    (the words of "their" inside "in their"), only those that hold the longer one. The campaign's evidence is the
    longer phrase's; ``m``'s other records are the shorter phrase's natural occurrences (dev seed 23, with a history
    that knew more tasks: the everyday "in their" raised with "their", whose 34 natural records on the campaign's
    label in its tasks were flagged with it; bench/poison/RESULTS.md 6q). A shorter member that is stronger keeps its
    records: the longer one is then a context of some of them ("cf" and "cf and")."""
    import numpy as np

    words = f" {vocab[m]} "
    for big in cl:
        if big != m and strength[big] >= strength[m] and words in f" {vocab[big]} ":
            return rows_of[m][np.isin(rows_of[m], xc.indices[xc.indptr[big]:xc.indptr[big + 1]])]
    return rows_of[m]


def _name(cl: list[int], ev: Evidence, vocab: np.ndarray, rows_of: dict[int, np.ndarray], tasks: list[Task], *,
          owner: np.ndarray | None = None) -> Phrase:
    """A campaign named by the member that explains most of it exclusively (covered records x exclusivity):
    the whole trigger rather than one of its words (which also occurs naturally) or a context bigram of a
    few poison records. Flagged: every record with that phrase, and the records of the other members inside
    the tasks the campaign concentrates in."""
    import numpy as np

    score = {m: float(ev.covered[m] * ev.exclusivity[m]) for m in cl}
    top = max(score.values())
    head = max((m for m in cl if score[m] >= 0.9 * top), key=lambda m: (len(str(vocab[m]).split()), score[m]))
    sel = ev.positions(head)
    detail = sorted(zip(ev.tix[sel].tolist(), ev.chx[sel].tolist(), ev.n[sel].astype(int).tolist(),
                        ev.k[sel].astype(int).tolist(), ev.lab[sel].tolist(), strict=True), key=lambda t: -t[2])
    if owner is not None:  # each record's task is known: keep the members' records of the campaign's tasks
        steered = np.asarray(sorted({t for t, *_ in detail}), dtype=np.int64)
        inside = [rows_of[m][np.isin(owner[rows_of[m]], steered)] for m in cl]
    else:
        in_tasks = np.unique(np.concatenate([tasks[t].rows for t, *_ in detail]))
        inside = [np.intersect1d(rows_of[m], in_tasks) for m in cl]
    rows = np.unique(np.concatenate([rows_of[head], *inside]))
    return Phrase(int(head), str(vocab[head]), float(ev.evidence[cl].max()), float(ev.exclusivity[head]),
                  rows, detail, [str(vocab[m]) for m in cl if m != head])
