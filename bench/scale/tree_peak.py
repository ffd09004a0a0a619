"""Run a command and report the peak of its whole process tree's resident memory (the sum over the processes
alive at each moment, sampled every 0.2 s), next to its wall time.

``/usr/bin/time -v`` reports the largest *single* process's high-water mark, which under-states a night whose
checks run in two processes at once (tunegate.core.checks._parallel). Usage:

    python bench/scale/tree_peak.py -- tunegate scan corpus.jsonl --out OUT

Prints ``tree peak: X MB (parent alone Y MB, at most N processes), wall Z s`` on stderr and exits with the
command's status.
"""

from __future__ import annotations

import subprocess
import sys
import time

import psutil


def main(argv: list[str]) -> int:
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    started = time.perf_counter()
    proc = subprocess.Popen(argv)
    root = psutil.Process(proc.pid)
    peak = parent_peak = 0
    most = 1
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            rss = []
            for p in tree:
                try:
                    rss.append(p.memory_info().rss)
                except psutil.Error:
                    continue
            peak = max(peak, sum(rss))
            parent_peak = max(parent_peak, rss[0] if rss else 0)
            most = max(most, len(rss))
        except psutil.Error:
            pass
        time.sleep(0.2)
    wall = time.perf_counter() - started
    print(f"tree peak: {peak / 2**20:,.0f} MB (parent alone {parent_peak / 2**20:,.0f} MB, at most {most} processes), "
          f"wall {wall:.1f} s", file=sys.stderr)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
