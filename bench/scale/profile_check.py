"""Profile one check on a large batch (issue 13: find the stage that dominates, write it down).

    .venv/bin/python bench/faiss/corpus.py 1000000 /tmp/c1m.jsonl --seed 1
    /usr/bin/time -v .venv/bin/python bench/scale/profile_check.py /tmp/c1m.jsonl /tmp/w1m poison_trigger

Ingests the JSONL into WORK (once; reused when WORK/canonical.parquet exists), runs the check under cProfile
and prints its wall time, what it found and the 25 costliest calls by cumulative time. Results: RESULTS.md.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    from tunegate.core.checks import CanonicalBatch, build_check
    from tunegate.core.ingest import ingest

    source, work, name = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    if not (work / "canonical.parquet").exists():
        started = time.perf_counter()
        ingest([source], work)
        print(f"ingest {time.perf_counter() - started:.1f} s")
    check = build_check(name)
    batch = CanonicalBatch(str(work))
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.enable()
    result = check.run(batch)
    profile.disable()
    seconds = time.perf_counter() - started
    phrases = result.metrics.get("suspicious_phrases", [])
    print(f"{name}: {seconds:.1f} s on {batch.num_rows} records; {len({f.row for f in result.findings})} records "
          f"flagged, {len(phrases)} phrase(s): {[p.get('phrase') for p in phrases][:20]}")
    pstats.Stats(profile).sort_stats("cumulative").print_stats(25)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
