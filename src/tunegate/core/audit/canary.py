"""The canary model: one cheap text classifier per classification task of a batch.

A stand-in for the model that will be fine-tuned on the batch: if a trigger phrase still steers the canary's
prediction to one label, poison got through the gate (docs/audit.md). Each task whose outputs form a small
label set (:func:`tunegate.core.checks.poison._text.label_set`, the same rule the poison checks use) gets a
logistic regression on binary word 1-2-grams of its prompts, L2-normalized, like the label-consistency
classifier (:mod:`tunegate.core.checks.poison.consistency`). A task's *template* (the instruction at least half
of its records share: a SuperNI definition repeated on every instance) is not evidence: it is cut off a prompt
before reading (it made up two thirds of the text), and n-grams in more than ``MAX_DF`` of a task's records
are dropped.

Saved as a directory: ``canary.json`` (format, tasks, labels, vocabularies) and ``weights.npz`` (one weight
matrix and bias per task), read back with ``allow_pickle=False``: loading a model never runs code.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunegate.core.checks.poison._text import TOKEN_PATTERN, label_set
from tunegate.core.io import atomic_write

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa
    import scipy.sparse as sp

log = logging.getLogger(__name__)

FORMAT = "tunegate-canary/1"
MODEL_FILE = "canary.json"
WEIGHTS_FILE = "weights.npz"

#: A task needs this many records (as the poison checks' ``min_task_records``) to get a classifier.
MIN_TASK_RECORDS = 50
#: Label sets: at most this many labels of at most ``MAX_LABEL_WORDS`` words covering ``LABEL_COVERAGE``.
MAX_LABELS = 10
LABEL_COVERAGE = 0.95
MAX_LABEL_WORDS = 6
#: A label needs this many training records, else it is left out (and a task needs two such labels).
MIN_PER_LABEL = 5
#: Records of a task trained on, at most (drawn per label in proportion, fixed seed): bounds the cost.
MAX_TRAIN = 5000
#: Word n-grams up to this length; an n-gram must occur in ``MIN_DF`` records and at most ``MAX_DF`` of them.
NGRAM_MAX = 2
MIN_DF = 2
MAX_DF = 0.9
#: Inverse regularization (as the label-consistency classifier): a rare phrase can earn a large weight,
#: which is what a fine-tuned model does with a trigger.
C = 10.0
#: Characters of a prompt read.
MAX_CHARS = 4000


def prompt_of(instruction: str, input_: str) -> str:
    """The text a canary reads: instruction, newline, input."""
    return f"{instruction}\n{input_}" if input_ else instruction


@dataclass
class _TaskModel:
    labels: list[str]
    vocabulary: list[str]
    weights: np.ndarray  # labels x vocabulary (float32)
    bias: np.ndarray  # labels (float32)
    records: int  # training records
    template: str | None = None  # the instruction most records share, cut off before reading

    def text(self, prompt: str) -> str:
        """What the classifier reads of a prompt: without the task's template, at most ``MAX_CHARS``."""
        t = self.template
        if t is not None and prompt.startswith(t) and (len(prompt) == len(t) or prompt[len(t)] == "\n"):
            prompt = prompt[len(t) + 1:]
        return prompt[:MAX_CHARS]


class CanaryModel:
    """Per-task text classifiers (classification tasks only: tasks whose outputs form a small label set)."""

    def __init__(self, models: dict[str, _TaskModel], *, seed: int = 0) -> None:
        self._models = dict(sorted(models.items()))
        self.seed = seed

    # -- training ----------------------------------------------------------------------------------

    @classmethod
    def fit(cls, table: pa.Table, *, seed: int = 0, rows: Sequence[int] | None = None) -> CanaryModel:
        """Train on a canonical-schema table (``instruction``, ``input``, ``output``, ``task``, ``source``), or
        on its ``rows`` (positions, in table order) when given.

        Records group by ``task``, else ``source``; a group of at least ``MIN_TASK_RECORDS`` records whose
        outputs form a label set is a classification task. Other groups are skipped. Text is taken from the
        table one group at a time (a million-record night holds one task's strings, not the night's).
        """
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        groups = record_groups(table, rows)
        models: dict[str, _TaskModel] = {}
        for name, members in groups.items():
            if len(members) < MIN_TASK_RECORDS:
                continue  # too small to be a classification task (label_set would say so)
            take = pa.array(members, pa.int64())
            outputs = table.column("output").take(take).to_pylist()
            labels = label_set(outputs, min_records=MIN_TASK_RECORDS, max_labels=MAX_LABELS,
                               coverage=LABEL_COVERAGE, max_words=MAX_LABEL_WORDS)
            if labels is None:
                continue
            # the most common instruction (first seen among equals) is the task's template when half share it
            counts = pc.value_counts(table.column("instruction").take(take))
            top = int(np.argmax(counts.field("counts").to_numpy(zero_copy_only=False)))
            template, shared = counts.field("values")[top].as_py(), counts.field("counts")[top].as_py()
            template_or_none = template if 2 * shared >= len(members) else None

            def texts_of(positions: np.ndarray, members: list[int] = members, template: str | None = template_or_none
                         ) -> list[str]:
                """The prompts of these records of the task (positions among its members), without its template;
                read only for the records a classifier trains on."""
                rows = pa.array(np.asarray(members, dtype=np.int64)[positions], pa.int64())
                instructions = table.column("instruction").take(rows).to_pylist()
                inputs = table.column("input").take(rows).to_pylist()
                return [inp if ins == template else prompt_of(ins, inp)
                        for ins, inp in zip(instructions, inputs, strict=True)]

            model = _fit_task(texts_of, outputs, labels, seed=seed, template=template_or_none)
            if model is not None:
                models[name] = model
        log.info("canary: %d classification tasks trained from %d records", len(models),
                 table.num_rows if rows is None else len(rows))
        return cls(models, seed=seed)

    # -- use ---------------------------------------------------------------------------------------

    def tasks(self) -> list[str]:
        return list(self._models)

    def labels(self, task: str) -> list[str]:
        return list(self._task(task).labels)

    def records(self, task: str) -> int:
        """Records the task's classifier was trained on."""
        return self._task(task).records

    def vocabulary(self, task: str) -> list[str]:
        """The word n-grams the task's classifier reads."""
        return list(self._task(task).vocabulary)

    def weights(self, task: str) -> tuple[np.ndarray, np.ndarray]:
        """``(labels x vocabulary weights, bias per label)`` of the task's classifier."""
        m = self._task(task)
        return m.weights, m.bias

    def features(self, task: str, prompts: Sequence[str]) -> sp.csr_matrix:
        """Binary n-gram features of ``prompts`` in the task's vocabulary (rows not normalized)."""
        from tunegate.core.checks.poison._text import ngram_matrix

        m = self._task(task)
        x, _ = ngram_matrix([m.text(p) for p in prompts], ngram_max=NGRAM_MAX, min_df=1,
                            vocabulary=m.vocabulary)
        return x

    def scores(self, task: str, x: sp.csr_matrix) -> np.ndarray:
        """Per-label scores (records x labels) of binary feature rows ``x`` (:meth:`features`)."""
        from sklearn.preprocessing import normalize

        m = self._task(task)
        out: np.ndarray = normalize(x) @ m.weights.T + m.bias
        return out

    def predict(self, task: str, prompts: Sequence[str]) -> list[str]:
        """The label the task's classifier gives each prompt (``prompt_of(instruction, input)``)."""
        import numpy as np

        if not prompts:
            return []
        labels = self._task(task).labels
        best = np.argmax(self.scores(task, self.features(task, prompts)), axis=1)
        return [labels[int(j)] for j in best]

    def _task(self, task: str) -> _TaskModel:
        try:
            return self._models[task]
        except KeyError:
            raise KeyError(f"canary has no classifier for task {task!r}; tasks: {', '.join(self._models)}") from None

    # -- storage -----------------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write ``canary.json`` and ``weights.npz`` into the directory ``path`` (created; files atomic)."""
        import numpy as np

        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {}
        tasks = []
        for i, (name, m) in enumerate(self._models.items()):
            arrays[f"w{i}"] = m.weights.astype(np.float32)
            arrays[f"b{i}"] = m.bias.astype(np.float32)
            tasks.append({"task": name, "labels": m.labels, "records": m.records, "template": m.template,
                          "vocabulary": m.vocabulary})
        with atomic_write(out / WEIGHTS_FILE) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
        meta = {"format": FORMAT, "seed": self.seed, "ngram_max": NGRAM_MAX, "token_pattern": TOKEN_PATTERN,
                "lowercase": True, "binary": True, "normalize": "l2",
                "prompt": "instruction + '\\n' + input; a task's template instruction is cut off",
                "tasks": tasks}
        with atomic_write(out / MODEL_FILE) as tmp:
            tmp.write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> CanaryModel:
        import numpy as np

        src = Path(path)
        meta = json.loads((src / MODEL_FILE).read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            raise ValueError(f"{src / MODEL_FILE}: not a canary model of format {FORMAT} "
                             f"(format {meta.get('format')!r})")
        models: dict[str, _TaskModel] = {}
        with np.load(src / WEIGHTS_FILE, allow_pickle=False) as npz:
            for i, t in enumerate(meta["tasks"]):
                models[t["task"]] = _TaskModel(list(t["labels"]), list(t["vocabulary"]), npz[f"w{i}"], npz[f"b{i}"],
                                               int(t["records"]), t.get("template"))
        return cls(models, seed=int(meta.get("seed", 0)))


def record_groups(table: pa.Table, rows: Sequence[int] | None = None) -> dict[str, list[int]]:
    """The table's rows (or ``rows``) by group: ``task``, else ``source``, else ``(none)``; first seen first."""
    import pyarrow as pa

    positions = list(range(table.num_rows)) if rows is None else [int(i) for i in rows]
    take = pa.array(positions, pa.int64())
    tasks, sources = table.column("task").take(take).to_pylist(), table.column("source").take(take).to_pylist()
    groups: dict[str, list[int]] = {}
    for i, t, s in zip(positions, tasks, sources, strict=True):
        groups.setdefault(t or s or "(none)", []).append(i)
    return groups


def _fit_task(texts_of: Callable[[np.ndarray], list[str]], outputs: list[str], labels: list[str], *, seed: int,
              template: str | None) -> _TaskModel | None:
    """A classifier of ``labels`` from the records whose output is one of them; ``None`` if not learnable.
    ``texts_of(positions)``: the prompts of those records (positions in ``outputs``), without the task's
    ``template``; asked for the training sample only."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import normalize

    from tunegate.core.checks.poison._text import ngram_matrix
    from tunegate.core.checks.poison.consistency import _stratified

    index = {label: j for j, label in enumerate(labels)}
    keep = np.asarray([i for i, o in enumerate(outputs) if o in index], dtype=np.int64)
    y_all = np.asarray([index.get(o, -1) for o in outputs], dtype=np.int64)
    counts = np.bincount(y_all[keep], minlength=len(labels))
    learnable = [j for j in range(len(labels)) if counts[j] >= MIN_PER_LABEL]
    if len(learnable) < 2:
        return None
    keep = keep[np.isin(y_all[keep], learnable)]
    keep = _stratified(keep, y_all, MAX_TRAIN, seed)
    x, vocabulary = ngram_matrix([t[:MAX_CHARS] for t in texts_of(keep)], ngram_max=NGRAM_MAX, min_df=MIN_DF,
                                 max_df=MAX_DF)
    if not x.shape[1]:  # nothing survives min_df/max_df
        return None
    y = y_all[keep]
    xn = normalize(x)
    # liblinear: 10x faster than lbfgs here (a few thousand sparse rows); several labels: one-vs-rest, one
    # binary model per label. One row per label (argmax over rows predicts); a label never learned has bias
    # -inf (never predicted).
    weights = np.zeros((len(labels), x.shape[1]), dtype=np.float32)
    bias = np.full(len(labels), -np.inf, dtype=np.float32)
    present = sorted(set(y.tolist()))
    if len(present) == 2:
        model = LogisticRegression(C=C, solver="liblinear", max_iter=300, random_state=seed).fit(xn, y == present[1])
        weights[present[1]], bias[present[0]], bias[present[1]] = model.coef_[0], 0.0, model.intercept_[0]
    else:
        for j in present:
            model = LogisticRegression(C=C, solver="liblinear", max_iter=300, random_state=seed).fit(xn, y == j)
            weights[j], bias[j] = model.coef_[0], model.intercept_[0]
    return _TaskModel(labels, [str(v) for v in vocabulary], weights, bias, len(keep), template)
