"""Dev probe: the novelty pass's surprise for planted triggers and the strongest other phrases (dev seeds only)."""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from novelty_probe import probe_batches, records_of


def main() -> int:
    from tunegate.core.checks.poison._text import ngram_matrix
    from tunegate.core.checks.poison.config import TriggerConfig
    from tunegate.core.checks.poison.novelty_pass import novelty_phrases
    from tunegate.core.checks.poison.phrase_history import load_phrase_history
    from tunegate.core.checks.poison.tasks import build_tasks

    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="*", default=[10, 11])
    ap.add_argument("--nights", type=int, default=3)
    ap.add_argument("--disjoint", action="store_true")
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--weight", type=float, default=4.0)
    ap.add_argument("--tau", type=float, default=2.0)
    args = ap.parse_args()
    for seed, label, batch, history in probe_batches(args):
        started = time.perf_counter()
        rec = records_of(batch.records)
        cfg = TriggerConfig(history_weight=args.weight, novelty_task_nats=args.tau)
        prompts = rec.prompts(cfg.max_chars)
        x, vocab = ngram_matrix(prompts, ngram_max=2, min_df=cfg.min_records, max_df=cfg.max_phrase_df)
        tasks = build_tasks(rec, prompts, cfg)
        hist = load_phrase_history(history, vocab=vocab).for_tasks(tasks, vocab)
        loose = dataclasses.replace(cfg, novelty_alpha=0.999)
        found, fig = novelty_phrases(x, vocab, tasks, hist, loose, found=[])
        info = batch.info
        triggers = [c["trigger"] for c in info.get("campaigns", [])] or (
            [info["trigger"]] if "trigger" in info else [])
        words = {w for t in triggers for w in t.lower().split()}
        poison = batch.poison_ids
        ids = [r["id"] for r in batch.records]
        print(f"== seed {seed} {label} ({time.perf_counter() - started:.1f}s) triggers={triggers} "
              f"tests {[fig[f'tests_{g}'] for g in ('unseen', 'burst', 'known')]} "
              f"bars(loose) {[fig[f'bar_{g}'] for g in ('unseen', 'burst', 'known')]}")
        real, _ = novelty_phrases(x, vocab, tasks, hist, cfg, found=[])
        for p in real:
            hits = sum(ids[r] in poison for r in p.rows.tolist())
            print(f"   FOUND {p.phrase!r:24s} surprise {p.evidence:6.1f} rows {len(p.rows)} "
                  f"poison {hits}/{len(poison)} clean {len(p.rows) - hits}")
        for p in found[:6]:
            hits = sum(ids[r] in poison for r in p.rows.tolist())
            mark = "TRIGGER" if set(p.phrase.split()) & words else "other  "
            print(f"   {mark} {p.phrase!r:24s} surprise {p.evidence:6.1f} steered {len(p.tasks)} rows "
                  f"{len(p.rows)} poison {hits}/{len(poison)} aliases {p.aliases[:3]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
