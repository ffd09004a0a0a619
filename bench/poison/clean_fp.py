"""False positives of the poison scans on clean public corpora: nothing is planted, so everything flagged is wrong.

    .venv/bin/python bench/poison/clean_fp.py                    # every corpus alone, samples and mixes
    .venv/bin/python bench/poison/clean_fp.py --half dev         # only records with an even sha256(id)
    .venv/bin/python bench/poison/clean_fp.py --half heldout     # only the odd half (evaluation)
    .venv/bin/python bench/poison/clean_fp.py --corpus p3_t0 --sizes 1000

For each clean corpus in ../shared/corpora (or ``$TUNEGATE_CORPORA``), for random samples of it of
several sizes, and for mixes of all corpora, it ingests the batch and runs ``poison_trigger`` and
``poison_content`` through ``tunegate.core`` (``ingest`` + ``build_check``), then prints per batch:
records, the share flagged per poison reason, the number of warning/critical batch issues (campaign
alerts), and each check's ``metrics["status"]``. Exits 1 when a reason flags more than ``--max-share``
(0.1%) of a batch or any alert is raised, 77 (skipped) when the corpora are absent.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

SKIP = 77
DEFAULT_CORPORA = Path(os.environ.get("TUNEGATE_CORPORA", Path(__file__).resolve().parents[3] / "shared" / "corpora"))
CHECKS = ("poison_trigger", "poison_content")
REASONS = ("trigger_phrase", "label_inconsistent", "degenerate_output", "injected_content", "refusal_anomaly")
CORPORA = ("p3_t0", "instruction_induction", "alpaca", "llamafactory_alpaca_en_demo", "codealpaca", "gpteacher",
           "oasst_en100", "self_instruct", "self_instruct_gpt3", "superni")
SIZES = (200, 1000, 5000, 20000)


def half_of(record_id: str) -> str:
    """``dev`` when sha256(id) is even, else ``heldout``: tuning never looks at the held-out half."""
    return "dev" if hashlib.sha256(record_id.encode("utf-8")).digest()[-1] % 2 == 0 else "heldout"


def load(root: Path, name: str, half: str) -> list[dict[str, Any]]:
    with gzip.open(root / f"{name}.jsonl.gz", "rt", encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    return records if half == "all" else [r for r in records if half_of(str(r["id"])) == half]


def scan_records(records: list[dict[str, Any]], checks: list[Any]) -> dict[str, Any]:
    from tunegate.core.checks import CanonicalBatch
    from tunegate.core.ingest import ingest

    with tempfile.TemporaryDirectory(prefix="tunegate-cleanfp-") as tmp:
        src = Path(tmp) / "batch.jsonl"
        src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        ingest([str(src)], Path(tmp) / "work")
        batch = CanonicalBatch(Path(tmp) / "work")
        out: dict[str, Any] = {"records": batch.num_rows, "reasons": {}, "alerts": [], "status": {}, "seconds": {},
                               "phrases": []}
        for check in checks:
            started = time.perf_counter()
            result = check.run(batch)
            out["seconds"][check.name] = round(time.perf_counter() - started, 1)
            for reason, n in result.counts().items():
                out["reasons"][reason] = out["reasons"].get(reason, 0) + n
            out["alerts"] += [f"{check.name}:{i.reason}: {i.message[:160]}" for i in result.issues
                              if i.severity != "info"]
            out["status"][check.name] = result.metrics.get("status", "-")
            out["phrases"] += [p["phrase"] for p in result.metrics.get("suspicious_phrases", [])]
    return out


def batches(root: Path, names: list[str], sizes: list[int], half: str, seed: int, mix: bool
            ) -> list[tuple[str, list[dict[str, Any]]]]:
    rng = random.Random(seed)
    out: list[tuple[str, list[dict[str, Any]]]] = []
    loaded = {name: load(root, name, half) for name in names if (root / f"{name}.jsonl.gz").is_file()}
    for name, records in loaded.items():
        for size in sizes:
            if size < len(records):
                out.append((f"{name} [{size}]", rng.sample(records, size)))
        out.append((name, records))
    if mix and len(loaded) > 1:
        pool = [r for name, rs in loaded.items() if name != "superni" for r in rs]
        for size in sizes:
            if size < len(pool):
                out.append((f"mix without superni [{size}]", rng.sample(pool, size)))
        out.append(("mix without superni", pool))
        if "superni" in loaded:
            everything = [r for rs in loaded.values() for r in rs]
            out.append(("mix of all [20000]", rng.sample(everything, min(20000, len(everything)))))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpora", type=Path, default=DEFAULT_CORPORA)
    ap.add_argument("--corpus", nargs="*", default=list(CORPORA), help="corpora to scan (file stems)")
    ap.add_argument("--sizes", nargs="*", type=int, default=list(SIZES), help="sample sizes besides the whole corpus")
    ap.add_argument("--half", choices=("all", "dev", "heldout"), default="all",
                    help="records by sha256(id) parity: dev (even) for tuning, heldout (odd) for evaluation")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-mix", action="store_true", help="skip the mixes of all corpora")
    ap.add_argument("--max-share", type=float, default=0.001, help="largest acceptable share per reason")
    ap.add_argument("--json", type=Path, default=None, help="also write every row as JSON here")
    args = ap.parse_args()
    if not (args.corpora / "superni.jsonl.gz").is_file():
        print(f"skipped: no clean corpora under {args.corpora}", file=sys.stderr)
        return SKIP
    import logging

    logging.basicConfig(level=logging.WARNING)
    from tunegate.core.checks import build_check

    checks = [build_check(name) for name in CHECKS]
    rows = []
    print("| batch | records | " + " | ".join(REASONS) + " | alerts | status (trigger / content) | time |")
    print("|---|---|" + "---|" * len(REASONS) + "---|---|---|")
    failed = False
    for label, records in batches(args.corpora, args.corpus, args.sizes, args.half, args.seed, not args.no_mix):
        res = scan_records(records, checks)
        res["batch"] = label
        rows.append(res)
        n = res["records"]
        shares = [res["reasons"].get(r, 0) / n for r in REASONS]
        bad = any(s > args.max_share for s in shares) or bool(res["alerts"])
        failed |= bad
        print(f"| {label} | {n} | " + " | ".join(f"{100 * s:.2f}%" for s in shares)
              + f" | {len(res['alerts'])} | {res['status'].get('poison_trigger')} / "
              f"{res['status'].get('poison_content')} | {sum(res['seconds'].values()):.1f} s |", flush=True)
        for alert in res["alerts"]:
            print(f"    ALERT {alert}", file=sys.stderr, flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
