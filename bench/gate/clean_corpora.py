"""The full default gate on each clean public corpus: what it quarantines, per reason, and samples to hand-check.

    python bench/gate/clean_corpora.py [--corpora ../shared/corpora] [--out bench/results/clean] [--sample 50]

For every corpus in ``--corpora`` (gzip JSONL; exit 77 with a message when absent), runs ``tunegate scan`` with
no options (every check, both suites, no history: each corpus is its own first night) and prints, per corpus,
the records, the verdict, the share quarantined per reason and every check's status. Then, per reason, draws a
random sample (fixed seed) of up to ``--sample`` quarantined records pooled across corpora and writes them to
``bench/gate/review/<reason>.md``, each with its evidence (and, for near-duplicates, the record it duplicates),
so a person can judge whether a careful reviewer would also set it aside. The judgements live in
``bench/gate/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CORPORA = ROOT.parent / "shared" / "corpora"
POISON_REASONS = ("trigger_phrase", "label_inconsistent", "degenerate_output", "injected_content")
SKIP = 77


def _clip(text: Any, n: int = 700) -> str:
    s = "" if text is None else str(text)
    s = s if len(s) <= n else s[:n] + " …[clipped]"
    return s.replace("\n", "⏎ ")


def _record_md(rec: dict[str, Any]) -> list[str]:
    return [f"  - instruction: {_clip(rec.get('instruction'))}",
            f"  - input: {_clip(rec.get('input'))}",
            f"  - output: {_clip(rec.get('output'), 400)}"]


def run_corpus(path: Path, out: Path) -> dict[str, Any]:
    from tunegate.core.pipeline import scan

    started = time.perf_counter()
    summary = scan([str(path)], out)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    return summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpora", type=Path, default=DEFAULT_CORPORA)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "clean")
    ap.add_argument("--review", type=Path, default=ROOT / "bench" / "gate" / "review")
    ap.add_argument("--sample", type=int, default=50)
    ap.add_argument("--only", nargs="*", help="corpus names (file stems without .jsonl.gz)")
    args = ap.parse_args()
    files = sorted(args.corpora.glob("*.jsonl.gz"))
    if args.only:
        files = [f for f in files if f.name.removesuffix(".jsonl.gz") in args.only]
    if not files:
        print(f"skipped: no corpora under {args.corpora}", file=sys.stderr)
        return SKIP
    import logging

    import pyarrow.parquet as pq

    from tunegate.core.progress import quiet_libraries

    logging.basicConfig(level=logging.WARNING)
    quiet_libraries()
    flagged: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    kept: dict[str, dict[str, dict[str, Any]]] = {}
    print("| corpus | records | verdict | quarantined | per reason (share of records) | checks not ok | s |")
    print("|---|---|---|---|---|---|---|")
    totals: Counter[str] = Counter()
    for path in files:
        name = path.name.removesuffix(".jsonl.gz")
        out = args.out / name
        s = run_corpus(path, out)
        records = s["total"] - s["rejected"]
        shares = ", ".join(f"{r} {n / records:.2%}" for r, n in s["reasons"].items()) or "none"
        not_ok = ", ".join(f"{k}: {v['status']}" for k, v in s["check_status"].items() if v["status"] != "ok") or "-"
        print(f"| {name} | {records:,} | {s['verdict']} | {s['quarantined'] / records:.2%} | {shares} | {not_ok} "
              f"| {s['seconds']} |", flush=True)
        totals.update({"records": records, **s["reasons"]})
        for rec in pq.read_table(out / "quarantine.parquet").to_pylist():
            for reason in rec["reasons"]:
                flagged[reason].append((name, rec))
        kept[name] = {r["id"]: r for r in pq.read_table(out / "accepted.parquet",
                                                        columns=["id", "instruction", "input", "output"]).to_pylist()}
    n = totals.pop("records")
    print(f"\nall corpora ({n:,} records): " + ", ".join(f"{r} {c / n:.2%}" for r, c in totals.most_common()))
    over = [r for r in POISON_REASONS if totals.get(r, 0) / n > 0.001]
    print("poison reasons above 0.1% of the records:", over or "none")
    args.review.mkdir(parents=True, exist_ok=True)
    rng = random.Random(2026)
    for reason, items in sorted(flagged.items()):
        sample = rng.sample(items, min(args.sample, len(items)))
        lines = [f"# `{reason}`: {len(sample)} of {len(items)} quarantined records (random, seed 2026)", "",
                 "Judge each: would a careful reviewer also set it aside? Write the verdicts in bench/gate/RESULTS.md.",
                 ""]
        for i, (corpus, rec) in enumerate(sample, 1):
            evidence = [f for f in rec["findings"] if f["reason"] == reason][:1]
            detail = evidence[0]["detail"] if evidence else "{}"
            lines.append(f"## {i}. {corpus} `{rec['id']}` (task {rec.get('task')})")
            lines += _record_md(rec)
            lines.append(f"  - evidence: {_clip(detail, 600)}")
            try:
                rep_id = json.loads(detail).get("representative")
            except (TypeError, ValueError):
                rep_id = None
            if reason == "near_duplicate" and rep_id:
                rep = kept.get(corpus, {}).get(rep_id)
                if rep is not None:
                    lines.append(f"  - **duplicates** `{rep_id}`:")
                    lines += ["  " + x for x in _record_md(rep)]
            lines.append("")
        (args.review / f"{reason}.md").write_text("\n".join(lines), encoding="utf-8")
    print(f"review samples: {args.review}/<reason>.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
