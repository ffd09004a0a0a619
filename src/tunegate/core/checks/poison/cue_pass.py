"""The pooled pass's label cues whose records contradict their labels (``poison_trigger``, without a history): a
dirty-label campaign whose trigger also occurs naturally.

The pooled pass (:meth:`~.trigger.TriggerPhraseCheck._pooled`) raises a phrase whose records concentrate on one label
in each of many datasets *and* sit almost only there (exclusivity 0.97): that is how it tells a planted trigger from a
natural label cue ("rude", "a must"), whose records lean to a label wherever they are. A trigger that is also a word
of the batch (an abbreviation, a rare word, a symbol some tweets hold: "cf", "sang", "⚡") brings its natural records
into other tasks, its exclusivity falls to a cue's, and without a history nothing else reads it (docs/poison.md,
*Without a history*). A dirty-label campaign leaves one more mark a cue does not: its records carry a label their own
text contradicts, since it took records of the other class and relabelled them. A cue's records carry their label
*because* of what their text says.

**Which phrases are tested** (the *candidates*): every phrase that meets the pooled pass's evidence over its datasets
(``pooled_min_evidence`` over ``pooled_min_datasets``, each example and dataset counted once: the pass's own bars) and
that it did not raise, whatever its exclusivity: 240-430 phrases on a dev batch of 32-35k records, nearly all of them
natural cues; at most ``MAX_CANDIDATES``, the strongest (a batch of a million records holds tens of thousands).

**Statistic.** The contradiction pass's (:meth:`~.contradiction_pass.Entries.contradiction`), over the candidate's
records in the tasks where it concentrates (at least the pooled pass's per-task nat): per task, the records on the label
most of them carry give ``sum(-ln u)`` (``u``: the record's rank among its label's records by an out-of-fold model that
does not read the phrase, :meth:`~.contradiction_pass.Entries.ranks`), a Gamma tail; a dataset gives its smallest
p-value times its tasks; the datasets are combined by Fisher's method. Under the null (the phrase's records are like
the other records of their label) the ranks are uniform *given* the labels, so choosing the candidates and their tasks
by their labels leaves the test valid. A candidate is a campaign when its surprise reaches ``ln(m) + ln(1 /
contradiction_alpha)`` over the ``m`` candidates (Bonferroni; several campaigns at once by the contradiction pass's
Benjamini-Hochberg step-down, :func:`~.contradiction_pass._step_down`).

**What is flagged:** in each task where the phrase concentrates, its records on the label most of them carry there. Its
natural records elsewhere, which took it under the exclusivity bar, are left alone.

**When it runs:** without a history (a first night, ``tunegate scan`` without ``--history``), after every other pass
(:meth:`~.trigger.TriggerPhraseCheck._cues`), raising only what none of them did: a campaign another pass raised keeps
that pass's flags. With a history the contradiction pass reads the dirty-label campaigns of new and bursting
vocabulary (and the excess and breadth passes the words the history holds); there this step found nothing more (dev
19-20, held-out 1032-1034) and raised a natural phrase on one held-out clean batch, so it does not run. Flagging only
the tasks whose own contradiction is significant (the adaptive step-up the other passes use for a campaign's weaker
tasks) was tried on dev and dropped: a relabelled record reads as its new label about half the time, and the
rare-word campaigns lost a third to half of their records. Clean-label campaigns (records already of the target label)
give no contradiction, and stay the detection floor without a history.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from tunegate.core.checks.poison._text import counted
from tunegate.core.checks.poison.contradiction_pass import MAX_CAMPAIGNS, Entries, _campaign, _step_down
from tunegate.core.checks.poison.evidence import distinct_evidence, task_of_rows
from tunegate.core.checks.poison.phrases import Phrase, named_campaigns

if TYPE_CHECKING:
    import numpy as np
    import scipy.sparse as sp

    from tunegate.core.checks.poison.config import TriggerConfig
    from tunegate.core.checks.poison.evidence import Evidence
    from tunegate.core.checks.poison.tasks import Task


#: At most this many candidates are tested, the strongest by their label evidence (each example and dataset once); the
#: family's bar counts those tested. Chosen by their labels, as every candidate is, so the test stays valid. A 40k night
#: has ~800 candidates and a dev batch 240-430; a million records of the scale corpus ~43,000, which cost ~290 s.
MAX_CANDIDATES = 2000


def contradicted_cues(x: sp.csr_matrix, vocab: np.ndarray, ev: Evidence, tasks: list[Task], *, prompts: list[str],
                      config: TriggerConfig, alpha: float, min_datasets: int, found: list[Phrase]
                      ) -> tuple[list[Phrase], dict[str, float]]:
    """The candidates (module docstring) whose records in the tasks where they concentrate carry labels their text
    contradicts, strongest first; and the figures (candidates tested, bar, campaigns). ``ev``: the pooled pass's
    concentration over ``tasks`` (classification tasks) under ``config`` (its relaxed thresholds); ``found``: the
    campaigns raised so far (a candidate mostly made of their records is theirs); ``min_datasets``: the datasets a
    campaign's flagged tasks must span. The tasks' models read tonight's records only (the step runs without a
    history)."""
    import numpy as np

    owner = task_of_rows(tasks, x.shape[0])
    figures: dict[str, float] = {}
    if owner is None:
        return [], figures
    xc = x.tocsc()
    raised = np.asarray(sorted({p.col for p in found}), dtype=np.int64)
    pool = np.flatnonzero((ev.evidence >= config.min_evidence) & (ev.n_tasks >= config.min_tasks))
    pool = pool[~np.isin(pool, raised)]
    pool = pool[np.argsort(-ev.evidence[pool], kind="stable")][:2 * MAX_CANDIDATES]  # the strongest, recounted below
    evidence = {}
    for c in pool.tolist():
        e, t = distinct_evidence(c, ev, tasks, xc, prompts=prompts, config=config, phrase=str(vocab[c]), owner=owner)
        if e >= config.min_evidence and t >= config.min_tasks:
            evidence[c] = e
    candidates = sorted(evidence, key=lambda c: (-evidence[c], c))[:MAX_CANDIDATES]
    figures["tests"] = float(len(candidates))
    if not candidates:
        return [], figures
    cols = np.asarray(candidates, dtype=np.int64)
    bar = math.log(len(cols)) + math.log(1.0 / alpha)
    figures["bar"] = round(bar, 2)
    # each candidate's tasks: those where it concentrates informatively (the pooled pass's per-task nat)
    steered: dict[int, list[int]] = {}
    for j, c in enumerate(cols.tolist()):
        at = ev.positions(c)
        steered[j] = ev.tix[at][ev.llr[at] >= config.min_task_evidence].tolist()
    n_tasks = len(tasks)
    allowed = np.asarray(sorted(j * n_tasks + t for j, ts in steered.items() for t in ts), dtype=np.int64)
    rows = np.concatenate([t.rows for t in tasks])
    every = Entries.of(x[rows][:, cols].tocoo(), rows, owner, tasks)
    keep = np.isin(every.phrase * n_tasks + every.task, allowed)
    entries = Entries(every.phrase[keep], every.row[keep], every.task[keep], every.family[keep], every.label[keep])
    tested = np.arange(len(cols))
    ranks = entries.ranks(tested, x, vocab=vocab, novel=cols, tasks=tasks, history=[None] * n_tasks)
    distinct = entries.distinct(tested, x, tasks)
    b = entries.contradiction(tested, ranks, distinct=distinct)
    scored = {int(cols[j]): (float(b[j]), 0.0, float(b[j])) for j in range(len(cols))
              if b[j] >= bar - math.log(min(MAX_CAMPAIGNS, len(cols)))}
    if not scored:
        return [], figures
    up = _step_down(scored, dict.fromkeys(scored, bar), xc, len(cols))
    figures["campaigns"] = float(len({up[c][3] for c in up}))
    position = {int(c): j for j, c in enumerate(cols.tolist())}
    rows_of, detail_of = {}, {}
    for c in up:
        mine = xc.indices[xc.indptr[c]:xc.indptr[c + 1]]
        per_task = {ti: mine[owner[mine] == ti] for ti in steered[position[c]]}
        rows_of[c], detail_of[c] = _campaign(tasks, per_task)
    out: list[Phrase] = []
    for head, cl, held in named_campaigns({c: up[c][0] for c in up}, rows_of, xc, vocab, found, owner=owner):
        detail = detail_of[head]
        datasets = len({tasks[t[0]].family for t in detail})
        if datasets < min_datasets:
            continue
        why = (f"a label cue of {counted(datasets, 'dataset')} (evidence {evidence[head]:.0f} nats, "
               f"exclusivity {float(ev.exclusivity[head]):.2f}) whose records there carry labels their own text "
               f"contradicts: {counted(len(held), 'record')} rank among the least likely of their label (out-of-fold "
               f"model without the phrase; contradiction {up[head][2]:.1f} nats against {bar:.1f} over "
               f"{counted(len(cols), 'candidate')}); its records elsewhere are left alone")
        out.append(Phrase(int(head), str(vocab[head]), up[head][0], float(ev.exclusivity[head]), held, detail,
                          [str(vocab[m]) for m in cl if m != head], why=why))
    figures["found"] = float(len(out))
    return out, figures


__all__ = ["MAX_CANDIDATES", "contradicted_cues"]
