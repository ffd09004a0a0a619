"""The canary's phrase probing: every phrase of a task at once (``TaskProbe.flips``) against one phrase at a time
(``TaskProbe.flip``, the peer), on a night's accepted records and the phrases its audit probed.

    .venv/bin/python bench/audit/probe_speed.py OUT/accepted.parquet OUT/canary.json [--records 100000]

Fits the canary as the audit does (on a seeded sample of ``--records`` accepted records when given: an incremental
night trains on its own ~100k), builds the held-out probes, then scores the phrases of ``canary.json`` (found,
history and mined) both ways in the same run. Prints both times, their ratio, and whether every (phrase, task)
result is equal.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("accepted")
    parser.add_argument("canary_json")
    parser.add_argument("--records", type=int, default=0, help="a seeded sample of this many accepted records")
    args = parser.parse_args()

    import pyarrow as pa
    import pyarrow.parquet as pq

    from tunegate.core.audit.canary import CanaryModel, prompt_of
    from tunegate.core.audit.config import CanaryConfig
    from tunegate.core.audit.flips import TaskProbe
    from tunegate.core.audit.run import held_out_rows

    table = pq.read_table(args.accepted, columns=["instruction", "input", "output", "task", "source"])
    if args.records and args.records < table.num_rows:
        rows = sorted(random.Random(0).sample(range(table.num_rows), args.records))
        table = table.take(pa.array(rows, pa.int64()))
    probed = json.loads(Path(args.canary_json).read_text(encoding="utf-8"))
    phrases = [p["phrase"] for p in probed.get("phrases", [])]
    config = CanaryConfig()
    groups = [t or s or "(none)" for t, s in zip(table.column("task").to_pylist(), table.column("source").to_pylist(),
                                                 strict=True)]
    held = held_out_rows(groups, holdout=config.holdout, max_held_out=config.max_held_out, seed=config.seed)
    held_set = set(held)
    started = time.perf_counter()
    model = CanaryModel.fit(table, rows=[i for i in range(table.num_rows) if i not in held_set], seed=config.seed)
    fit = time.perf_counter() - started
    by_task: dict[str, list[int]] = {}
    for i in held:
        by_task.setdefault(groups[i], []).append(i)
    probes = []
    for task in model.tasks():
        take = pa.array(by_task.get(task, []), pa.int64())
        cols = {c: table.column(c).take(take).to_pylist() for c in ("instruction", "input", "output")}
        probes.append(TaskProbe(model, task, [prompt_of(i, x) for i, x in zip(cols["instruction"], cols["input"],
                                                                              strict=True)], cols["output"]))
    started = time.perf_counter()
    one = [[p.flip(phrase, min_probes=config.min_probes) for phrase in phrases] for p in probes]
    t_one = time.perf_counter() - started
    started = time.perf_counter()
    many = [p.flips(phrases, min_probes=config.min_probes) for p in probes]
    t_many = time.perf_counter() - started
    equal = all((a is None and b is None) or (a is not None and b is not None and (a.label, a.probes) ==
                (b.label, b.probes) and abs(a.flip - b.flip) < 1e-9 and abs(a.base - b.base) < 1e-9)
                for ra, rb in zip(one, many, strict=True) for a, b in zip(ra, rb, strict=True))
    print(f"{table.num_rows} records, {len(probes)} tasks, {len(phrases)} phrases; canary fit {fit:.1f} s")
    print(f"one phrase at a time (peer): {t_one:.2f} s; all phrases of a task at once: {t_many:.2f} s; "
          f"ratio {t_one / max(t_many, 1e-9):.1f}x; equal: {equal}")
    return 0 if equal else 1


if __name__ == "__main__":
    raise SystemExit(main())
