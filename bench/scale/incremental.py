"""The incremental night (issue 13): a batch of new records gated against a large history.

    # the history: a night's accepted records (e.g. the 1M full-gate run's), embeddings reused from its work
    .venv/bin/tunegate history update HIST OUT1M/accepted.parquet --cache-dir OUT1M/work/embeddings
    # tonight: 100k records that are not in the history (spliced from the real ones with another seed, 1% light
    # edits of the history's records): the last 100k of a 188k corpus (its first 88k are the real records)
    .venv/bin/python bench/faiss/corpus.py 188000 N.jsonl --seed 2 --history-of C1M.jsonl
    tail -100000 N.jsonl > new.jsonl
    .venv/bin/python bench/scale/incremental.py new.jsonl HIST OUT

Runs ``tunegate scan new.jsonl --history HIST --out OUT --keep-work`` (every default check, both suites) under
``/usr/bin/time -v`` and prints the wall time, the peak memory, each check's time (``OUT/work/timings.json``) and
the history's share: loading its index, searching it, verifying the matches on the history's text.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    batch, history, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    shutil.rmtree(out, ignore_errors=True)
    tunegate = str(Path(sys.executable).with_name("tunegate"))
    command = ["/usr/bin/time", "-v", tunegate, "scan", batch, "--history", history, "--out", str(out), "--keep-work"]
    started = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    wall = time.perf_counter() - started
    log = run.stderr + run.stdout
    (out.parent / f"{out.name}.log").write_text(log, encoding="utf-8")
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", log)
    print(f"exit {run.returncode}; wall {wall:.1f} s; peak RSS {int(peak.group(1)) / 1e6:.2f} GB" if peak else
          f"exit {run.returncode}; wall {wall:.1f} s")
    for pattern in (r"history: loaded .*", r"history search: .*", r"vector index: self kNN .*",
                    r"near_duplicate: \d+ of .*", r"embeddings: .*", r"checks over .* took .*",
                    r"ingest: .*"):
        for line in re.findall(pattern, log):
            print("  " + line)
    timings = out / "work" / "timings.json"
    if timings.is_file():
        costs = json.loads(timings.read_text(encoding="utf-8"))
        total = sum(c["seconds"] for c in costs.values())
        print(f"checks: {total:.1f} s of the {wall:.1f} s")
        for name, c in sorted(costs.items(), key=lambda kv: -kv[1]["seconds"]):
            print(f"  {name:28s} {c['seconds']:8.1f} s  {100 * c['seconds'] / wall:5.1f}%  peak {c['peak_rss_mb']} MB")
    return run.returncode


if __name__ == "__main__":
    raise SystemExit(main())
