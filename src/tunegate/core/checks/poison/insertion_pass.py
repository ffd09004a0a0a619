"""The insertion pass of ``poison_trigger``: everyday phrases planted as triggers, found through their out-of-place
occurrences (:mod:`.insertion`).

An everyday phrase ("of my", "a few") occurs in hundreds of records of a batch with mixed labels; ten poisoned
records in each of five tasks do not make its label statistics stand out among the thousands of phrases a batch
tests (docs/poison.md, detection floor). Its *inserted* occurrences do: about half of the poisoned ones are out of
place, against 1-2% of the natural ones, so among the occurrences judged inserted the campaign's records dominate,
and they share the attacker's label.

**Statistic.** For a candidate phrase (2 words, ``INSERTION_MIN_RECORDS`` records in classification tasks) and a
classification task, ``n`` distinct contexts of the phrase (its two words either side; the same text in several
records of a task is one piece of evidence) are out of place, ``k`` of them in records with one label. The null is
that they carry the labels of the phrase's own *in-place* records in the task (records where an occurrence was judged
in place: its bridge attested, its score below the bar, none out of place): a natural cue ("not good" -> negative)
leans the same way wherever it stands, while a planted trigger's out-of-place (planted) occurrences carry the
attacker's label and its in-place (natural) ones are mixed. The in-place label counts update a Dirichlet prior centred
on the share of each label among *all* the task's out-of-place occurrences (whether a word looks inserted may depend
on the label itself: ungrammatical sentences), smoothed to the base rate with ``RATE_WEIGHT`` records, worth
``PLACE_WEIGHT`` records; the predictive is beta-binomial with that mean and concentration. Records merely "not out of
place" would not do as the reference: half or more of the planted occurrences are not judged out of place, and they
would carry the attacker's label into the null. The task's statistic is the largest ``n * KL(k/n || q)`` over the
labels with ``k >= 2``, counted from ``novelty_task_nats``; a dataset contributes its largest task, a phrase sums its
datasets.

**Calibration.** The same tail bound as the novelty pass (:mod:`.novelty_pass`): each task's exact beta-binomial
tail under the null, summed over labels and a dataset's tasks, convolved over datasets; ``-ln P(S >= s)`` is the
phrase's surprise, a bound of its p-value. The false-alarm rate per batch is held at ``insertion_alpha`` by
Bonferroni over Tarone's count of the phrases that could reach the bar (out-of-place occurrences in >= 2 datasets). A
phrase is a trigger when its surprise reaches ``ln(tests) + ln(1 / insertion_alpha)`` and it steers ``min_tasks``
datasets.

**What is flagged.** Once the campaign (phrase, tasks, label per task) is raised, its tasks are the steered ones plus
the classification tasks where all the phrase's records concentrate on one label with ``EXPAND_NATS`` (an
everyday phrase is rare in any one task, so ten planted records there stand out once the phrase is known to be a
trigger, even when none of its occurrences there looked inserted). In those tasks every record with the phrase and
the campaign's label is flagged; the phrase's natural occurrences elsewhere, and those with other labels, are left
alone. The natural occurrences among the flagged records are estimated per task (the phrase's records with the other
labels, scaled by the base rates); a task where they would be most of its flagged records keeps only its out-of-place
records (``placement.NATURAL_MAJORITY``), and while the rest would exceed ``CLEAN_SHARE`` of the batch, so does the
task with the most.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from tunegate.core.checks.poison._text import binomial_llr, onehot
from tunegate.core.checks.poison.evidence import label_mask, task_of_rows
from tunegate.core.checks.poison.insertion import score_occurrences
from tunegate.core.checks.poison.novelty_pass import _tarone, phrase_surprise, pool_datasets
from tunegate.core.checks.poison.phrases import Phrase, _campaigns, join_found
from tunegate.core.checks.poison.placement import (
    CLEAN_SHARE,
    Placement,
    cut_back,
    natural_on_label,
    placement_model,
    shared_label,
)

if TYPE_CHECKING:
    import numpy as np
    import scipy.sparse as sp

    from tunegate.core.checks.poison._ngrams import WordStats
    from tunegate.core.checks.poison.config import TriggerConfig
    from tunegate.core.checks.poison.insertion import Occurrences
    from tunegate.core.checks.poison.tasks import Task

#: A candidate phrase has at least this many records in classification tasks (an everyday phrase has hundreds;
#: below a few dozen, counts of its neighbours are too small for the insertion test, docs/poison.md).
INSERTION_MIN_RECORDS = 10
#: Weight (records) of the task's base rate in the expected label shares of out-of-place occurrences.
RATE_WEIGHT = 20.0
#: Once a campaign is raised: a task joins it when the phrase's records there concentrate on one label with this
#: evidence (nats; 10 planted records of 10 at a 50% label: 6.9; the natural lean of an everyday phrase in the other
#: dimensions of a dataset that labels the same texts several ways, 6 of 6 at 51%: 4.0).
EXPAND_NATS = 6.0
#: Weight (records) of the task's out-of-place label shares in the null of a phrase's out-of-place records there,
#: against the phrase's own in-place records in the task.
PLACE_WEIGHT = 20.0


def out_of_place(x: sp.csr_matrix, vocab: np.ndarray, tasks: list[Task], *, prompts: list[str], stats: WordStats,
                 config: TriggerConfig) -> tuple[Placement | None, dict[str, float]]:
    """The insertion test over tonight's classification records (:func:`~.insertion.score_occurrences` for the
    candidate phrases: 2 words, ``INSERTION_MIN_RECORDS`` records in classification tasks), as a
    :class:`~.placement.Placement`; and its figures (candidates, occurrences scored, judged inserted, in place,
    distinct contexts). ``None`` where nothing was scored."""
    import numpy as np

    label = [ti for ti, t in enumerate(tasks) if t.kind == "label"]
    owner = task_of_rows(tasks, x.shape[0])
    figures: dict[str, float] = {}
    if not label or owner is None:
        return None, figures
    in_label = np.zeros(x.shape[0], dtype=bool)
    in_label[np.concatenate([tasks[ti].rows for ti in label])] = True
    # products with indicator vectors, not copies of the matrix's rows or columns
    df = np.rint(np.asarray(x.T @ in_label.astype(np.float32))).ravel()
    two = np.fromiter((str(v).count(" ") == 1 for v in vocab.tolist()), dtype=bool, count=len(vocab))
    cand = np.flatnonzero(two & (df >= INSERTION_MIN_RECORDS))
    if not len(cand):
        return None, figures
    is_cand = np.zeros(x.shape[1], dtype=np.float32)
    is_cand[cand] = 1.0
    rows = np.flatnonzero(in_label & (np.asarray(x @ is_cand).ravel() > 0))
    occ = score_occurrences(prompts, rows, [str(vocab[c]) for c in cand.tolist()], cand, stats,
                            min_score=config.insertion_min_score, min_bridge=config.insertion_min_bridge,
                            everything=False)
    figures.update(candidates=float(len(cand)), occurrences=float(occ.scored), inserted=float(occ.inserted.sum()))
    xi = _inserted_matrix(occ, x.shape)
    xp = _placed_matrix(occ, xi)
    occ.placed_rows = occ.placed_cols = None  # in the matrix now: the pairs are the batch's largest part of this
    xd = _inserted_matrix(occ, x.shape, distinct=owner)
    figures.update(in_place=float(xp.nnz), distinct=float(xd.nnz))
    return placement_model(occ, x, inserted=xi, distinct=xd, placed=xp, candidates=cand, tasks=tasks, label=label,
                           owner=owner), figures


def insertion_phrases(x: sp.csr_matrix, vocab: np.ndarray, tasks: list[Task], *, placement: Placement,
                      config: TriggerConfig, found: list[Phrase]) -> tuple[list[Phrase], dict[str, float]]:
    """The everyday-phrase triggers found through their out-of-place occurrences (``placement``:
    :func:`out_of_place`), strongest first, and the pass's figures (tests, bar, phrases found)."""
    import numpy as np

    label = [ti for ti, t in enumerate(tasks) if t.kind == "label"]
    owner, occ, xi = placement.owner, placement.occ, placement.inserted
    in_label = label_mask(tasks)[owner]
    figures: dict[str, float] = {}
    assert placement.placed is not None, "the insertion pass reads the in-place records once, before they are released"
    phrases, tested = _test(placement.placed, placement.distinct, tasks, label, owner=owner, occ=occ, config=config)
    placement.placed = None  # the excess pass reads the out-of-place records only: freed before the history passes
    figures.update(tested)
    if not phrases:
        return [], figures
    taken = np.concatenate([p.rows for p in found]) if found else np.array([], dtype=np.int64)
    xc, xic = x.tocsc(), xi.tocsc()
    out = []
    joined = 0  # campaigns raised before: they get this pass's records
    rows_of: dict[int, np.ndarray] = {}
    steered_of: dict[int, dict[int, int]] = {}
    cut_of: dict[int, int] = {}
    for c, (_, steered) in phrases.items():
        steered_of[c] = _campaign_tasks(xc, xic, c, tasks, owner=owner, steered=steered, config=config)
        rows_of[c], cut_of[c] = _campaign_rows(xc, xic, c, tasks, owner=owner, steered=steered_of[c],
                                               cap=CLEAN_SHARE * x.shape[0])
    detail_of = {c: _detail(xc, c, rows_of[c], steered_of[c], owner) for c in phrases}
    ranked = sorted(phrases, key=lambda c: (-phrases[c][0], str(vocab[c])))
    inserted_rows = {c: set(occ.rows[occ.inserted & (occ.cols == c)].tolist()) for c in ranked}
    for cl in _campaigns(ranked, rows_of, xc):
        head = cl[0]
        rows_c = np.unique(np.concatenate([rows_of[m] for m in cl]))
        if not len(rows_c):
            continue
        named = any(p.col == head for p in found)  # the same phrase raised before: one campaign
        if named or len(np.intersect1d(rows_c, taken)) >= 0.5 * len(rows_c):  # raised before: it gets these records
            joined += int(join_found(rows_c, [t for m in cl for t in detail_of[m]], found, xc=xc, owner=owner,
                                     by="insertion pass", col=head))
            continue
        detail = detail_of[head]
        out_of_place = len(inserted_rows[head] & set(rows_c.tolist()))
        why = (f"everyday phrase planted as a trigger: {out_of_place} of the {len(rows_c)} flagged records hold it out "
               f"of place (its neighbours read as one text without it) and carry the task's campaign label"
               + (f"; {cut_of[head]} task(s) where it is common: out-of-place records only" if cut_of[head] else ""))
        # exclusivity, as the other passes report it: the share of the phrase's classification records flagged (an
        # everyday phrase's natural occurrences elsewhere keep it low)
        holds = xc.indices[xc.indptr[head]:xc.indptr[head + 1]]
        in_tasks = int(in_label[holds].sum())
        share = min(1.0, len(rows_c) / in_tasks) if in_tasks else 1.0
        out.append(Phrase(int(head), str(vocab[head]), phrases[head][0], share, rows_c, detail,
                          [str(vocab[m]) for m in cl if m != head], why=why))
    figures.update(found=float(len(out)), joined=float(joined))
    return out, figures


def _detail(xc: sp.csc_matrix, c: int, rows: np.ndarray, steered: dict[int, int], owner: np.ndarray
            ) -> list[tuple[int, int, int, int, int]]:
    """Per task of the campaign of phrase ``c`` (``steered``: task -> label): (task, channel, the phrase's records
    there, those flagged, the label), the most flagged first."""

    holds = xc.indices[xc.indptr[c]:xc.indptr[c + 1]]
    detail = [(ti, 0, int((owner[holds] == ti).sum()), int((owner[rows] == ti).sum()), lab)
              for ti, lab in sorted(steered.items())]
    return sorted(detail, key=lambda t: -t[3])


def _inserted_matrix(occ: Occurrences, shape: tuple[int, int], distinct: np.ndarray | None = None
                     ) -> sp.csr_matrix:
    """Record x phrase: 1 where the record holds an out-of-place occurrence of the phrase. With ``distinct`` (each
    record's task), a context of the phrase (the two words either side) counts once per task: the same text in
    several records of a task (near-duplicates, one text spliced into others) is one piece of evidence."""
    import numpy as np
    import scipy.sparse as sp

    sel = occ.inserted
    if distinct is not None and occ.context is not None:
        at = np.flatnonzero(sel)
        key = np.stack([occ.cols[at], distinct[occ.rows[at]], occ.context[at]])
        _, first = np.unique(key, axis=1, return_index=True)
        sel = np.zeros(len(sel), dtype=bool)
        sel[at[first]] = True
    xi = sp.csr_matrix((np.ones(int(sel.sum()), dtype=np.float32), (occ.rows[sel], occ.cols[sel])), shape=shape)
    xi.sum_duplicates()
    xi.data[:] = 1.0
    return xi


def _placed_matrix(occ: Occurrences, xi: sp.csr_matrix) -> sp.csr_matrix:
    """Record x phrase: 1 where the record holds the phrase in place (an occurrence judged in place, none out of
    place)."""
    import numpy as np
    import scipy.sparse as sp

    assert occ.placed_rows is not None and occ.placed_cols is not None
    xp = sp.csr_matrix((np.ones(len(occ.placed_rows), dtype=np.float32), (occ.placed_rows, occ.placed_cols)),
                       shape=xi.shape)
    xp.sum_duplicates()
    xp.data[:] = 1.0
    xp = xp - xp.multiply(xi)
    xp.eliminate_zeros()
    return sp.csr_matrix(xp)


def _test(xp: sp.csr_matrix, xi: sp.csr_matrix, tasks: list[Task], label: list[int], *, owner: np.ndarray,
          occ: Occurrences, config: TriggerConfig) -> tuple[dict[int, tuple[float, dict[int, int]]], dict[str, float]]:
    """Phrase column -> (surprise, steered task -> label) for the phrases whose out-of-place occurrences' labels
    reach the bar; and the figures of the test."""
    import numpy as np
    from scipy.stats import betabinom

    tau = config.novelty_task_nats
    fam_index: dict[str, int] = {}
    parts = []
    occ_task = owner[occ.rows]
    for ti in label:
        task = tasks[ti]
        xt = xi[task.rows]
        n_all = np.asarray(xt.sum(axis=0)).ravel()
        # a task's statistic counts labels held by 2 records at least: phrases with fewer out-of-place records here
        # can give nothing
        cols = np.flatnonzero(n_all >= 2)
        if not len(cols):
            continue
        ch = task.labels
        size = len(ch.names)
        y = onehot(ch.outcome, size)
        counts = (xt[:, cols].T @ y).toarray()
        # the phrase's in-place records here (judged in place, none out of place)
        placed = (xp[task.rows][:, cols].T @ y).toarray()
        # the label shares of every out-of-place occurrence in the task: a task where looking inserted goes with a
        # label (ungrammatical sentences)
        here = occ.inserted & (occ_task == ti)
        seen = np.bincount(ch.outcome[np.searchsorted(task.rows, occ.rows[here])], minlength=size).astype(np.float64)
        base = (seen + RATE_WEIGHT * ch.base) / (seen.sum() + RATE_WEIGHT)
        # the null: the phrase's out-of-place records carry its in-place records' labels here (a natural cue leans
        # the same way wherever it stands), a Dirichlet posterior centred on the task's out-of-place shares with
        # PLACE_WEIGHT records
        mass = placed.sum(axis=1) + PLACE_WEIGHT
        rates = (placed + PLACE_WEIGHT * base[None, :]) / mass[:, None]
        n = n_all[cols].astype(np.float64)
        llr = binomial_llr(counts, n[:, None], rates) * (counts >= 2)
        lab = llr.argmax(axis=1)
        stat = llr[np.arange(len(cols)), lab]
        stat = np.where(stat >= tau, stat, 0.0)
        least = np.where(rates > 1e-9, rates, 1.0).min(axis=1)
        # every record on the least expected label: the smallest p-value the task can give (Tarone's count)
        reach = -betabinom.logpmf(n, n, least * mass, (1 - least) * mass)
        fam = fam_index.setdefault(task.family, len(fam_index))
        parts.append((cols, np.full(len(cols), ti), np.full(len(cols), fam), n, lab, stat, reach, rates, mass))
    figures: dict[str, float] = {}
    if not parts:
        return {}, figures
    cols, tix, fix, n, lab, stat, reach = (np.concatenate([p[i] for p in parts]) for i in range(7))
    part_of = np.concatenate([np.full(len(p[0]), i) for i, p in enumerate(parts)])
    row_in = np.concatenate([np.arange(len(p[0])) for p in parts])
    total, achievable, datasets, steering = pool_datasets(cols, fix, stat, reach, n_fam=len(fam_index),
                                                          width=xi.shape[1])
    margin = math.log(1.0 / config.insertion_alpha)
    tests = _tarone(achievable[datasets >= 2], margin)
    bar = math.log(tests) + margin
    figures.update(tests=float(tests), bar=round(bar, 2))
    candidates = np.flatnonzero((datasets >= 2) & (steering >= config.min_tasks) & (total >= bar))
    order = np.argsort(cols, kind="stable")
    start = np.searchsorted(cols[order], candidates)
    stop = np.searchsorted(cols[order], candidates, side="right")
    cache: dict[tuple[int, tuple[float, ...]], np.ndarray] = {}
    out: dict[int, tuple[float, dict[int, int]]] = {}
    def prior(j: int) -> tuple[np.ndarray, float]:
        p = parts[part_of[j]]
        return p[7][row_in[j]], float(p[8][row_in[j]])

    for c, a, b in zip(candidates.tolist(), start.tolist(), stop.tolist(), strict=True):
        pairs = order[a:b]
        surprise = phrase_surprise(pairs, fix, n, prior, total=float(total[c]), tau=tau, cache=cache)
        if surprise >= bar:
            hit = pairs[stat[pairs] > 0]
            out[c] = (surprise, dict(zip(tix[hit].tolist(), lab[hit].tolist(), strict=True)))
    return out, figures


def _campaign_tasks(xc: sp.csc_matrix, xi: sp.csc_matrix, c: int, tasks: list[Task], *, owner: np.ndarray,
                    steered: dict[int, int], config: TriggerConfig) -> dict[int, int]:
    """The raised campaign's tasks and label in each: the steered tasks; the classification tasks where all the
    phrase's records concentrate on one label with at least ``EXPAND_NATS`` (binomial against the base rate);
    and those where at least 2 of its out-of-place occurrences, and ``CAMPAIGN_SHARE`` of them, share one label (a
    clean-label campaign on a task's majority label shows no skew, but its occurrences still look inserted)."""
    import numpy as np

    rows = xc.indices[xc.indptr[c]:xc.indptr[c + 1]]
    odd = xi.indices[xi.indptr[c]:xi.indptr[c + 1]]
    where, odd_where = owner[rows], owner[odd]
    out = dict(steered)
    for ti in np.unique(where[where >= 0]).tolist():
        task = tasks[ti]
        if ti in out or task.kind != "label":
            continue
        size = len(task.labels.names)
        counts = np.bincount(task.labels.outcome[np.searchsorted(task.rows, rows[where == ti])], minlength=size)
        top = int(counts.argmax())
        llr = float(binomial_llr(counts[top], counts.sum(), task.labels.base[top]))
        if counts[top] >= config.min_task_hits and llr >= EXPAND_NATS:
            out[ti] = top
            continue
        shared = shared_label(task.labels.outcome[np.searchsorted(task.rows, odd[odd_where == ti])], size)
        if shared is not None:
            out[ti] = shared
    return out


def _campaign_rows(xc: sp.csc_matrix, xi: sp.csc_matrix, c: int, tasks: list[Task], *, owner: np.ndarray,
                   steered: dict[int, int], cap: float) -> tuple[np.ndarray, int]:
    """The records of the campaign's tasks that hold the phrase and carry the campaign's label there, and how many
    tasks were cut back to their out-of-place records.

    Some of those records are the phrase's natural occurrences. Their number in a task is estimated from the
    phrase's records there with the *other* labels (natural occurrences spread over the labels at the task's base
    rates: ``other * p / (1 - p)``). A task where the estimate is more than half of its records on the label keeps
    only its out-of-place records (those the insertion test judged planted); so does, while the estimate summed over
    the other tasks exceeds ``cap`` records, the one with the largest (:func:`~.placement.cut_back`)."""
    import numpy as np

    rows = xc.indices[xc.indptr[c]:xc.indptr[c + 1]]
    odd = set(xi.indices[xi.indptr[c]:xi.indptr[c + 1]].tolist())
    chosen: dict[int, np.ndarray] = {}
    natural: dict[int, float] = {}
    for ti, lab in steered.items():
        mine = rows[owner[rows] == ti]
        task = tasks[ti]
        labels = task.labels.outcome[np.searchsorted(task.rows, mine)]
        chosen[ti] = mine[labels == lab]
        natural[ti] = natural_on_label(labels, lab, task.labels.base[lab])
    cut = cut_back(natural, {ti: len(v) for ti, v in chosen.items()}, cap)
    for ti in cut:
        chosen[ti] = np.asarray([r for r in chosen[ti].tolist() if r in odd], dtype=np.int64)
    parts = [v for v in chosen.values() if len(v)]
    return (np.unique(np.concatenate(parts)) if parts else np.array([], dtype=np.int64)), len(cut)
