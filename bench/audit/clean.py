"""False alarms of the canary audit on the clean public corpora (nothing planted: every alarm is wrong).

    .venv/bin/python bench/audit/clean.py                  # the held-out half of every corpus (odd sha256(id))
    .venv/bin/python bench/audit/clean.py --half dev       # the half the thresholds may look at

The batches of bench/poison/clean_fp.py (each corpus alone, random samples of 5,000 and 20,000, the mixes),
each audited as the gate would audit a night that accepted all of it (:func:`tunegate.core.audit.run.canary_audit`
on the whole batch, no phrases found). Prints per batch: records, classification tasks, status, failing
phrases, the strongest phrase and the time. Exits 1 when any batch alarms, 77 when the corpora are absent.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1] / "poison"))
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parents[2] / "src"))

from clean_fp import CORPORA, DEFAULT_CORPORA, SKIP, batches  # noqa: E402
from run import table  # noqa: E402  (bench/audit/run.py)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--half", choices=("dev", "heldout", "all"), default="heldout")
    ap.add_argument("--corpora", type=Path, default=DEFAULT_CORPORA)
    ap.add_argument("--sizes", type=int, nargs="*", default=[5000, 20000])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not (args.corpora / "superni.jsonl.gz").is_file():
        print(f"skipped: no corpora under {args.corpora}", file=sys.stderr)
        return SKIP
    from tunegate.core.audit.run import canary_audit

    alarms = 0
    print("| batch | records | classification tasks | status | failing | strongest phrase (lift, datasets) | time |")
    print("|---|---|---|---|---|---|---|")
    for name, records in batches(args.corpora, list(CORPORA), args.sizes, args.half, args.seed, mix=True):
        started = time.perf_counter()
        result = canary_audit(table(records))
        seconds = time.perf_counter() - started
        top = (result.get("phrases") or [{}])[0]
        datasets = ", ".join(top.get("datasets_failing", []))
        strongest = f"{top.get('phrase', '-')} ({top.get('max_lift', 0):.2f}, {datasets})"
        alarms += result["status"] == "fail"
        print(f"| {name} | {len(records)} | {len(result.get('tasks', []))} | {result['status']} | "
              f"{', '.join(result.get('failing', [])) or '-'} | "
              f"{strongest} | {seconds:.1f} s |", flush=True)
    print(f"\n{alarms} alarm(s)")
    return 1 if alarms else 0


if __name__ == "__main__":
    raise SystemExit(main())
