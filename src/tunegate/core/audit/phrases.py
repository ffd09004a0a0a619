"""The phrases a canary audit probes, and where each comes from.

* ``found``: phrases tonight's poison checks quarantined records for (``trigger_phrase``,
  ``label_inconsistent``, ``degenerate_output`` findings): the gate took their records out, so they should no
  longer steer a model trained on what it let through;
* ``history``: phrases found on recent nights (read from those nights' ``canary.json``, beside the accepted
  file the history lists): a campaign that comes back in smaller doses;
* ``mined``: phrases the canary itself leans on most: per task and label, the n-grams with the largest
  weight margin over the other labels, ranked by in how many datasets they are among the top. A trigger the
  checks missed is one of them, because a handful of consistently labelled records is all a classifier needs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunegate.core.checks.poison.tasks import task_family

if TYPE_CHECKING:
    from tunegate.core.audit.canary import CanaryModel

log = logging.getLogger(__name__)

#: Findings whose ``phrase`` is a trigger the poison checks found.
PHRASE_REASONS = ("trigger_phrase", "label_inconsistent", "degenerate_output")
#: n-grams per task and label the mining keeps.
TOP_PER_LABEL = 10
#: An n-gram in more than this share of a task's held-out records is common, never mined.
MAX_COMMON = 0.05


def found_phrases(findings: Mapping[int, Iterable[Mapping[str, Any]]]) -> list[str]:
    """Phrases of tonight's trigger findings, most records first."""
    counts: dict[str, int] = {}
    for row_findings in findings.values():
        for f in row_findings:
            if f.get("reason") not in PHRASE_REASONS:
                continue
            detail = f.get("detail")
            try:
                phrase = (json.loads(detail) if isinstance(detail, str) else detail or {}).get("phrase")
            except (ValueError, AttributeError):
                continue
            if isinstance(phrase, str) and phrase.strip():
                counts[phrase] = counts.get(phrase, 0) + 1
    return [p for p, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def history_phrases(history_dir: str | Path | None, *, nights: int, exclude: str | None = None,
                    canary_file: str = "canary.json") -> dict[str, list[str]]:
    """Phrases found on the history's last ``nights`` nights: ``{phrase: [nights]}``. A night whose result set
    is gone or has no canary file is skipped; a damaged history never costs tonight its audit."""
    if not history_dir or nights <= 0:
        return {}
    manifest = Path(history_dir) / "manifest.json"
    out: dict[str, list[str]] = {}
    try:
        batches = json.loads(manifest.read_text(encoding="utf-8")).get("batches", []) if manifest.is_file() else []
    except (OSError, ValueError, AttributeError) as exc:
        log.warning("canary: history %s unreadable (%s): no phrases of earlier nights", history_dir, exc)
        return {}
    named = [b for b in batches if isinstance(b, dict) and b.get("batch_id") != exclude
             and "+released-" not in str(b.get("batch_id"))]
    for b in sorted(named, key=lambda b: str(b.get("batch_id")))[-nights:]:
        try:
            data = json.loads((Path(str(b.get("source"))).parent / canary_file).read_text(encoding="utf-8"))
            phrases = data.get("found", [])
        except (OSError, ValueError, AttributeError):
            continue
        for p in phrases if isinstance(phrases, list) else []:
            if isinstance(p, str):
                out.setdefault(p, []).append(str(b.get("batch_id")))
    return out


def mined_phrases(model: CanaryModel, *, limit: int, common: Mapping[str, set[str]] | None = None) -> list[str]:
    """The n-grams the canary leans on most across datasets (see the module docstring), at most ``limit``.

    ``common``: per task, n-grams not mined there (the audit passes those in more than ``MAX_COMMON`` of the
    task's held-out records: a trigger is rare, and a common word is only probed on the few records that lack
    it, short ones that any word moves)."""
    import numpy as np

    families: dict[str, set[str]] = {}
    margin: dict[str, float] = {}
    for task in model.tasks():
        skip = (common or {}).get(task, set())
        w, _ = model.weights(task)
        vocab = model.vocabulary(task)
        if w.shape[1] == 0:
            continue
        for j in range(w.shape[0]):
            others = np.delete(w, j, axis=0)
            m = w[j] - others.max(axis=0)
            taken = 0
            for c in np.argsort(-m).tolist():
                if m[c] <= 0 or taken >= TOP_PER_LABEL:
                    break
                if vocab[c] in skip:
                    continue
                taken += 1
                families.setdefault(vocab[c], set()).add(task_family(task))
                margin[vocab[c]] = max(margin.get(vocab[c], 0.0), float(m[c]))
    ranked = sorted(families, key=lambda p: (-len(families[p]), -margin[p], p))
    return ranked[:limit]
