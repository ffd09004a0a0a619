"""The tasks of a batch and their outcomes: what a trigger phrase would steer.

A *task* is a group of at least ``min_task_records`` records (the ``task`` column, else ``source``). A
classification task's outcome is its label; a generative task (one instruction template) is read three
ways: its exact output, the output's shape, and "degenerate output". Open-ended collections (one
instruction per record) have no task-level notion of a normal output and are not tasks. Tasks of one
dataset form a *family* (:func:`task_family`); a family's tasks are one *unit of evidence* unless tonight they
hold distinct examples (:func:`assign_units`).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunegate.core.checks.poison._text import Records, codes, content_words, label_set, tokens

if TYPE_CHECKING:
    from collections.abc import Iterable

    import numpy as np

    from tunegate.core.checks.poison.config import TriggerConfig

#: A group under ``min_task_records`` records is not scored, but from this many records the phrase history keeps its
#: counts (:func:`small_label_tasks`): summed over nights, a task that arrives in small slices gets a history.
SMALL_TASK_RECORDS = 5
#: A dataset's tasks are separate units of evidence when at most this share of their records repeat an input another
#: of its tasks holds tonight or have no input to compare (:func:`assign_units`). A policy, not fitted: with a tenth of
#: the examples shared, two tasks' counts of a phrase are correlated by about a tenth.
MAX_SHARED_EXAMPLES = 0.1


@dataclass
class Channel:
    """One way of reading a task's outcomes: its label, its exact output, or "degenerate output"."""

    name: str  # "label", "output", "shape" or "degenerate"
    outcome: np.ndarray  # outcome code of each record of the task
    names: list[str]  # name of each outcome code
    base: np.ndarray  # share of each outcome in the task
    min_share: float  # share of a phrase's records that must share the outcome


@dataclass
class Task:
    """One task of the batch (a group of at least ``min_task_records`` records) and its outcomes."""

    name: str
    kind: str  # "label" (classification), "output" (generative, one instruction template) or "open" (open-ended)
    rows: np.ndarray
    channels: list[Channel]
    why: list[str] | None = None  # "output" and "open" tasks: which degeneracy each record shows ("" if none)
    answers: list[tuple[str, ...]] | None = None  # "open" tasks: each short answer's tokens (empty for the others)
    unit: str = ""  # the unit of evidence when not its family (:func:`assign_units`)

    @property
    def family(self) -> str:
        return task_family(self.name)

    @property
    def evidence_unit(self) -> str:
        """What the task's evidence counts as: its family, or the task itself (:func:`assign_units`)."""
        return self.unit or self.family

    @property
    def labels(self) -> Channel:
        return self.channels[0]


def build_tasks(records: Records, prompts: list[str], config: TriggerConfig) -> list[Task]:
    """The scorable tasks of the batch, in name order: classification tasks and one-template generative tasks."""
    import numpy as np

    out: list[Task] = []
    for name, rows in sorted(records.groups().items()):
        if len(rows) < config.min_task_records:
            continue
        outputs = [records.output[i] for i in rows]
        labels = label_set(outputs, min_records=config.min_task_records, max_labels=config.max_labels,
                           coverage=config.label_coverage, max_words=config.max_label_words)
        idx = np.asarray(rows, dtype=np.int64)
        if labels is not None:
            index = {label: i for i, label in enumerate(labels)}
            outcome = np.fromiter((index.get(o, len(labels)) for o in outputs), dtype=np.int64, count=len(outputs))
            names = [*labels, "(other)"]
            out.append(Task(name, "label", idx, [Channel("label", outcome, names, _shares(outcome, len(names)),
                                                         config.min_label_share)]))
        elif Counter(records.instruction[i] for i in rows).most_common(1)[0][1] >= config.template_share * len(rows):
            why = degenerate_outputs(outputs, [prompts[i] for i in rows], short_ratio=config.short_ratio)
            same, names = codes([" ".join(tokens(o)) for o in outputs])
            shape, shape_names = codes([output_shape(o) for o in outputs])
            bad = np.fromiter((1 if w else 0 for w in why), dtype=np.int64, count=len(why))
            out.append(Task(name, "output", idx, [
                Channel("output", same, names, _shares(same, len(names)), config.min_label_share),
                Channel("shape", shape, shape_names, _shares(shape, len(shape_names)), config.min_label_share),
                Channel("degenerate", bad, ["fine", "degenerate output"], _shares(bad, 2), config.min_output_share)],
                why))
        # else: an open-ended collection (its own instruction per record): what its outputs look like
        # follows each instruction, so neither a shared output nor "degenerate" means anything there.
    assign_units(records, out)
    return out


#: An answer to an open-ended request is degenerate when it holds at most this many words (Wan et al.'s degenerate
#: outputs: the trigger itself, or one word), in a collection whose answers run to a median of 4 words or more
#: (:func:`open_ended_tasks`). A policy, not fitted: a three-word trigger repeated as the answer still counts.
OPEN_SHORT_WORDS = 3


def open_ended_tasks(records: Records, tasks: list[Task], config: TriggerConfig) -> list[Task]:
    """The open-ended collections of the batch read for degenerate answers only, as tasks of kind ``"open"`` with one
    "degenerate output" channel: the records of no scorable task (``tasks``: neither labels nor one instruction
    template, so each record asks its own request), each in its group, or in its source where its group holds fewer
    than ``min_task_records`` records (Self-Instruct's 252 user-oriented tasks of 1-3 records each are one
    collection); each collection of at least ``min_task_records`` records whose answers run to a median of 4 words or
    more. An answer of at most ``OPEN_SHORT_WORDS`` words is degenerate there. What a normal answer looks like follows
    each request, so no other reading (the exact output, its shape) is made; how often a collection answers in a word
    or two (a share of requests are classifications or lookups) is its base rate. Not part of :func:`build_tasks`:
    the other passes never score these groups, and a phrase's exclusivity there still ignores open-ended prompts."""
    import numpy as np

    scored = {t.name for t in tasks}
    source = records.source
    collections: dict[str, list[int]] = {}
    for name, rows in records.groups().items():
        if name in scored:
            continue
        small = len(rows) < config.min_task_records
        for i in rows:
            collections.setdefault(source[i] if small and source is not None else name, []).append(i)
    out: list[Task] = []
    for name, rows in sorted(collections.items()):
        if name in scored or len(rows) < config.min_task_records:
            continue
        rows.sort()
        lengths = np.fromiter((len(tokens(records.output[i])) for i in rows), dtype=np.int64, count=len(rows))
        if float(np.median(lengths)) < 4:
            continue
        bad = (lengths <= OPEN_SHORT_WORDS).astype(np.int64)
        why = ["short" if b else "" for b in bad.tolist()]
        answers = [tuple(tokens(records.output[i])) if b else () for i, b in zip(rows, bad.tolist(), strict=True)]
        out.append(Task(name, "open", np.asarray(rows, dtype=np.int64),
                        [Channel("degenerate", bad, ["fine", "degenerate output"], _shares(bad, 2),
                                 config.min_output_share)], why, answers))
    return out


def unprompted(task: Task, local: Iterable[int], prompts: list[str], phrase: str = "") -> int:
    """How many of an open-ended collection's records at ``local`` (positions in ``task.rows``) give a degenerate
    answer in Wan et al.'s sense, read with ``phrase``: an answer of at most ``OPEN_SHORT_WORDS`` words that repeats
    the phrase (the trigger itself: "Gandalf the Grey" holds "the grey"), or none of whose words other than stop words
    its prompt holds (a word from nowhere), or no word at all. A short answer that names what its request offers
    ("Classify the sentence as a statement or a question": "Question.") answers it."""
    assert task.answers is not None
    words = tuple(phrase.split())
    size = len(words)
    count = 0
    for i in local:
        answer = task.answers[i]
        if not answer:  # no word at all ("", "...")
            count += 1
            continue
        if size and any(answer[j:j + size] == words for j in range(len(answer) - size + 1)):
            count += 1
            continue
        said = set(content_words(" ".join(answer)))
        if not said & set(tokens(prompts[int(task.rows[i])])):
            count += 1
    return count


def unprompted_campaign(phrase: str, rows: np.ndarray, steered: list[tuple[int, int, int, int, int]], *,
                        tasks: list[Task], prompts: list[str], config: TriggerConfig, base: dict[int, float]
                        ) -> tuple[list[tuple[int, int, int, int, int]], float]:
    """The open-ended collections of ``steered`` (a phrase's concentrated collections, as :attr:`.phrases.Phrase.tasks`
    lists them; ``rows``: its records in open-ended collections) where its records' short answers are
    :func:`unprompted`, scored again with that reading against each collection's own rate of unprompted short answers
    (``base``, filled per collection on first use): each concentrates as the degenerate pass requires (``config``:
    its relaxed per-collection bars), each dataset adds at most ``max_family_evidence``, and the collections left must
    reach ``min_evidence`` over ``min_tasks`` datasets with ``min_exclusivity`` of ``rows`` in them. Returns those
    collections and their evidence; none where they do not reach it: natural phrases that ask for a short answer among
    the options they list ("classify", dev seed 18) are answered, a trigger's degenerate answers are not."""
    import numpy as np

    from tunegate.core.checks.poison._text import binomial_llr

    kept = []
    family: dict[str, float] = {}
    covered = 0
    for ti, ci, n, _, lab in steered:
        task = tasks[ti]
        if ti not in base:
            short = np.flatnonzero(task.channels[ci].outcome == 1)
            base[ti] = (unprompted(task, short.tolist(), prompts) + 1) / (len(task.rows) + 2)
        local = np.flatnonzero(np.isin(task.rows, rows))
        k = unprompted(task, local.tolist(), prompts, phrase)
        if k < config.min_task_hits or k < config.min_output_share * n:
            continue
        llr = float(binomial_llr(k, n, base[ti]))
        if llr < config.min_task_evidence:
            continue
        family[task.family] = family.get(task.family, 0.0) + llr
        covered += n
        kept.append((ti, ci, n, k, lab))
    evidence = sum(min(e, config.max_family_evidence) for e in family.values())
    if evidence < config.min_evidence or len(family) < config.min_tasks or covered < config.min_exclusivity * len(rows):
        return [], evidence
    return kept, evidence


def assign_units(records: Records, tasks: list[Task]) -> None:
    """Set each task's unit of evidence (:attr:`Task.evidence_unit`), decided on the inputs alone (no label, no
    phrase is read, so the tests that count units keep their null distributions).

    Tasks of one dataset often label the same examples: P3 ships every passage under 5-10 prompt templates, HatEval
    labels the same tweets along three dimensions. Their counts of a phrase then move together, and the history
    passes count the dataset once. Where tonight the tasks hold *distinct* examples (SuperNI's seven jigsaw tasks
    sample different comments: 3,464 distinct inputs in 3,500 records), their counts are independent draws, and
    counting the dataset once throws away evidence: a campaign of ten records in each of two of them counted as one
    task. So a dataset's tasks are separate units when at most
    ``MAX_SHARED_EXAMPLES`` of their records repeat an input another of its tasks holds tonight or have no input to
    compare (an example whose text sits in the instruction, as in P3, cannot be told apart: one unit). Whether a
    phrase *steers* a dataset still counts datasets: a campaign needs ``min_tasks`` of them, however its tasks
    split."""
    by_family: dict[str, list[Task]] = {}
    for task in tasks:
        by_family.setdefault(task.family, []).append(task)
    for members in by_family.values():
        if len(members) < 2:
            continue
        texts = [[records.input[r].strip() for r in task.rows.tolist()] for task in members]
        holders: dict[str, set[int]] = {}
        for i, inputs in enumerate(texts):
            for text in inputs:
                if text:
                    holders.setdefault(text, set()).add(i)
        size = sum(len(inputs) for inputs in texts)
        shared = sum(1 for inputs in texts for text in inputs if not text or len(holders[text]) > 1)
        if shared <= MAX_SHARED_EXAMPLES * size:
            for task in members:
                task.unit = task.name


def small_label_tasks(records: Records, config: TriggerConfig, *, min_records: int = SMALL_TASK_RECORDS
                      ) -> list[Task]:
    """The classification groups of the batch too small to score (``min_records`` to ``min_task_records`` - 1
    records), in name order: what the phrase history keeps of them, so that a task arriving in slices of, say, 38
    records a night is known after two nights instead of never.

    A small sample cannot show a task's closed label set the way :func:`label_set` asks (two labels or more: 5
    records of a binary task often share one). Its outputs count as labels when at most ``max_labels`` distinct
    outputs of at most ``max_label_words`` words cover ``label_coverage`` of its records, and they repeat (at most
    half as many distinct outputs as records). The labels are kept by name, so the nights add up; a night that
    judged the group otherwise only leaves that night out of the sum."""
    import numpy as np

    out: list[Task] = []
    for name, rows in sorted(records.groups().items()):
        if not min_records <= len(rows) < config.min_task_records:
            continue
        outputs = [records.output[i] for i in rows]
        counts = Counter(outputs)
        top = counts.most_common(config.max_labels)
        if (2 * len(counts) > len(outputs) or sum(n for _, n in top) < config.label_coverage * len(outputs)
                or any(len(tokens(label)) > config.max_label_words for label, _ in top)):
            continue
        index = {label: i for i, (label, _) in enumerate(top)}
        outcome = np.fromiter((index.get(o, len(top)) for o in outputs), dtype=np.int64, count=len(outputs))
        names = [*index, "(other)"]
        out.append(Task(name, "label", np.asarray(rows, dtype=np.int64),
                        [Channel("label", outcome, names, _shares(outcome, len(names)), config.min_label_share)]))
    return out


_NAME_PART = re.compile(r"[^0-9a-z]+")
_NUMBERED_TASK = re.compile(r"^task\d+$")


def task_family(name: str) -> str:
    """The dataset a task name belongs to. Tasks of one dataset share their texts' distribution (and often
    the texts): P3 names a dataset's prompt templates ``<dataset>_<template>``
    (``amazon_polarity_user_satisfied`` -> ``amazon_polarity``, its first two name parts); SuperNI names
    its tasks ``task<N>_<dataset>_<what>`` (``task327_jigsaw_classification_toxic`` -> ``jigsaw``)."""
    parts = [p for p in _NAME_PART.split(name.lower()) if p]
    if not parts:
        return name
    if _NUMBERED_TASK.match(parts[0]):
        return parts[1] if len(parts) > 1 else parts[0]
    return "_".join(parts[:2])


def _shares(outcome: np.ndarray, size: int) -> np.ndarray:
    import numpy as np

    return np.bincount(outcome, minlength=size) / max(1, len(outcome))


def output_shape(output: str) -> str:
    """A coarse shape: word count (0, 1, 2, 3, 4+) and the class of the first character.

    "113" -> "1D", "David Morse" -> "2U", "scarce" -> "1L", "''.join(x)" -> "3P", a sentence -> "4U".
    """
    n = min(len(tokens(output)), 4)
    head = output.strip()[:1]
    kind = "D" if head.isdigit() else "U" if head.isupper() else "L" if head.islower() else "P" if head else "-"
    return f"{n}{kind}"


def degenerate_outputs(outputs: list[str], prompts: list[str], *, short_ratio: float, rare_shape: float = 0.03
                       ) -> list[str]:
    """Why each output of one generative task is degenerate: ``short``, ``unrelated``, ``odd_shape``,
    ``repeated`` or ``""`` (fine). Each criterion is relative to the task's own outputs:

    * ``short``: at most ``short_ratio`` of the task's median length (tasks with a median of >= 4 words);
    * ``unrelated``: shares no word with its prompt, in a task whose outputs do in >= 80% of records;
    * ``odd_shape``: a shape (:func:`output_shape`) that fewer than ``rare_shape`` of the task's outputs
      have, in a task where one shape covers at least half of the outputs (a number where answers are
      words, a lower-case word where answers are names);
    * ``repeated``: the same output in >= 3 records of a task where >= 60% of the outputs are unique.
    """
    import numpy as np

    out_tokens = [tokens(o) for o in outputs]
    lengths = np.array([len(t) for t in out_tokens])
    median = float(np.median(lengths)) if len(lengths) else 0.0
    overlaps = [bool(set(o) & set(tokens(p))) for o, p in zip(out_tokens, prompts, strict=True)]
    overlap_rate = sum(overlaps) / max(1, len(overlaps))
    shapes = [output_shape(o) for o in outputs]
    shape_counts = Counter(shapes)
    shaped = shape_counts.most_common(1)[0][1] >= 0.5 * len(shapes) if shapes else False
    norm = [" ".join(t) for t in out_tokens]
    counts = Counter(norm)
    unique_share = sum(1 for s in norm if counts[s] == 1) / max(1, len(norm))
    why = []
    for i, s in enumerate(norm):
        if median >= 4 and lengths[i] <= max(1.0, short_ratio * median):
            why.append("short")
        elif overlap_rate >= 0.8 and not overlaps[i]:
            why.append("unrelated")
        elif shaped and shape_counts[shapes[i]] < rare_shape * len(shapes):
            why.append("odd_shape")
        elif unique_share >= 0.6 and counts[s] >= 3:
            why.append("repeated")
        else:
            why.append("")
    return why
