"""Probe for the history-novelty lever (issue 11): per phrase, the pooled pass's evidence with and without a history.

    .venv/bin/python bench/poison/novelty_probe.py --seeds 10 --nights 3 [--disjoint]

For each dev batch (clean mixed, the label attacks, clean classification): the planted triggers' evidence,
exclusivity and datasets without and with the history's phrase statistics, and the strongest other phrases.
A development tool: dev seeds only (held-out discipline).
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from attacks import Corpora
from floor import build_batch, plant

LABEL_ATTACKS = ("low_dose_dirty", "low_dose_clean", "thin_dirty", "thin_clean", "common_dirty", "common_clean",
                 "multi")


def records_of(rows: list[dict[str, Any]]) -> Any:
    from tunegate.core.checks.poison._text import Records

    return Records([r.get("instruction") or "" for r in rows], [r.get("input") or "" for r in rows],
                   [r.get("output") or "" for r in rows], [r.get("task") or r.get("source") or "(none)" for r in rows],
                   [r.get("contributor") for r in rows])


def history_of(corpora: Corpora, seed: int, nights: int, root: Path, exclude: set[str]) -> Any:
    from tunegate.core.checks.poison.config import TriggerConfig
    from tunegate.core.checks.poison.phrase_history import phrase_counts, write_phrase_night

    for night in range(nights):
        base = build_batch(corpora, 10_000 + seed * 10 + night, "mixed")
        rng = random.Random(f"history:{seed}:{night}")
        pool = [r for r in base.records if r["id"] not in exclude]
        rows = rng.sample(pool, int(0.7 * len(pool)))
        write_phrase_night(root, f"night-{night + 1}", phrase_counts(records_of(rows), TriggerConfig()),
                           anomalous=False)
    return root


def score(rows: list[dict[str, Any]], history_dir: Path | None, weight: float) -> dict[str, Any]:
    import numpy as np

    from tunegate.core.checks.poison._text import ngram_matrix
    from tunegate.core.checks.poison.config import TriggerConfig
    from tunegate.core.checks.poison.evidence import concentration, distinct_evidence, task_of_rows
    from tunegate.core.checks.poison.phrase_history import load_phrase_history
    from tunegate.core.checks.poison.tasks import build_tasks

    cfg = TriggerConfig(history_weight=weight)
    records = records_of(rows)
    prompts = records.prompts(cfg.max_chars)
    x, vocab = ngram_matrix(prompts, ngram_max=2, min_df=cfg.min_records, max_df=cfg.max_phrase_df)
    tasks = [t for t in build_tasks(records, prompts, cfg) if t.kind == "label"]
    scored = np.concatenate([t.rows for t in tasks])
    df = np.asarray(x[scored].sum(axis=0)).ravel()
    hist = None
    if history_dir is not None:
        hist = load_phrase_history(history_dir, vocab=vocab).for_tasks(tasks, vocab)
    relaxed = dataclasses.replace(cfg, min_task_hits=2, min_label_share=0.8, min_task_evidence=1.0)
    ev = concentration(x, df, tasks, relaxed, history=hist)
    out: dict[str, Any] = {}
    if ev is None:
        return out
    xc = x.tocsc()
    owner = task_of_rows(tasks, x.shape[0])
    for c in np.flatnonzero((ev.evidence >= 4) & (ev.n_tasks >= 2)).tolist():
        e, t = distinct_evidence(c, ev, tasks, xc, prompts=prompts, config=relaxed, phrase=str(vocab[c]), owner=owner)
        out[str(vocab[c])] = (round(e, 1), round(float(ev.exclusivity[c]), 2), t, int(df[c]))
    return out


def probe_batches(args: argparse.Namespace) -> Iterator[tuple[int, str, Any, Path]]:
    """``(seed, label, batch, history)`` for each dev seed: the clean mixed batch, each attack planted in it and the
    clean classification batch, after ``args.nights`` clean nights (``args.disjoint``: never tonight's records)."""
    corpora = Corpora.load()
    for i, seed in enumerate(args.seeds):
        clean = build_batch(corpora, seed, "mixed")
        with tempfile.TemporaryDirectory() as tmp:
            exclude = {r["id"] for r in clean.records} if args.disjoint else set()
            history = history_of(corpora, seed, args.nights, Path(tmp), exclude)
            plan = [("clean mixed", clean)] + [(a, None) for a in (args.only or LABEL_ATTACKS)]
            plan.append(("clean classification", build_batch(corpora, seed, "classification")))
            for label, batch in plan:
                yield seed, label, batch if batch is not None else plant(clean, corpora, label, split="dev",
                                                                          seed=seed, index=i), history


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="*", default=[10, 11])
    ap.add_argument("--nights", type=int, default=3)
    ap.add_argument("--disjoint", action="store_true", help="history nights never hold tonight's records")
    ap.add_argument("--weight", type=float, default=4.0)
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args()
    for seed, label, batch, history in probe_batches(args):
        started = time.perf_counter()
        before = score(batch.records, None, args.weight)
        after = score(batch.records, history, args.weight)
        info = batch.info
        triggers = [c["trigger"] for c in info.get("campaigns", [])] or ([info["trigger"]]
                                                                          if "trigger" in info else [])
        keys = {" ".join(t.lower().split()[-2:]) for t in triggers}
        print(f"== seed {seed} {label} ({time.perf_counter() - started:.1f}s) triggers={triggers}")
        for k in sorted(keys):
            print(f"   TRIGGER {k!r}: before {before.get(k)} after {after.get(k)}")
        others = sorted(((v, k) for k, v in after.items() if k not in keys
                         and not any(w in k.split() for t in keys for w in t.split())),
                        key=lambda t: -t[0][0] * t[0][1])[:8]
        for v, k in others:
            print(f"   other {k!r}: after {v} before {before.get(k)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
