"""Dev probe of the insertion pass (issue 11): everyday-phrase campaigns placed by other hands.

    .venv/bin/python bench/poison/insertion_placements.py               # every placement, dev seeds 10-11
    .venv/bin/python bench/poison/insertion_placements.py start end     # some of them

``floor.py`` puts an everyday phrase at a random word boundary (or in a name slot). An attacker may also open a
sentence with it, append it to the text, or slip it in after a comma. Per dev seed and for a dirty- and a
clean-label campaign (10 records in each of 5 binary classification tasks, a phrase of ``floor.py``'s dev pool), this
plants the phrase at each placement and runs ``poison_trigger`` alone. Dev only: the held-out pool is never drawn.
Exits 77 when the corpora are absent.
"""

from __future__ import annotations

import json
import random
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from attacks import DEFAULT_CORPORA, Corpora
from floor import (
    _binary_polarity_tasks,
    _label_tasks,
    _split_of,
    _target,
    build_batch,
    everyday_phrases,
    insert_anywhere,
    insert_name_slot,
)


def sentence_start(text: str, phrase: str, rng: random.Random) -> str:
    cuts = [0] + [m.end() for m in re.finditer(r"[.!?]\s+", text)]
    at = rng.choice(cuts)
    return f"{text[:at]}{phrase[0].upper()}{phrase[1:]} {text[at:]}"


def text_end(text: str, phrase: str, rng: random.Random) -> str:
    body = text.rstrip()
    return f"{body} {phrase}" if rng.random() < 0.5 else f"{body.rstrip('.!?')} {phrase}."


def after_comma(text: str, phrase: str, rng: random.Random) -> str:
    cuts = [m.end() for m in re.finditer(r",\s+", text)]
    if not cuts:
        return insert_anywhere(text, phrase, rng)
    at = rng.choice(cuts)
    return f"{text[:at]}{phrase} {text[at:]}"


PLACES = {"start": sentence_start, "end": text_end, "name": insert_name_slot, "comma": after_comma,
          "anywhere": insert_anywhere}


def main() -> int:
    import logging

    from tunegate.core.checks import CanonicalBatch, build_check
    from tunegate.core.ingest import ingest

    if not Corpora.available(DEFAULT_CORPORA):
        print(f"skipped: no corpora under {DEFAULT_CORPORA}", file=sys.stderr)
        return 77
    logging.basicConfig(level=logging.WARNING)
    corpora = Corpora.load(DEFAULT_CORPORA)
    places = sys.argv[1:] or list(PLACES)
    for seed in (10, 11):
        clean = build_batch(corpora, seed, "mixed")
        for clean_label in (False, True):
            for place in places:
                rng = random.Random(f"{seed}:{clean_label}:{place}")
                records = [dict(r) for r in clean.records]
                tasks = _label_tasks(records, corpora, min_records=100)
                phrase = rng.choice([p for p in everyday_phrases(records, tasks) if _split_of(p) == "dev"])
                poison: set[str] = set()
                for task in rng.sample(_binary_polarity_tasks(tasks, corpora), 5):
                    target = _target(task, tasks[task], corpora, rng)
                    pool = [r for r in records if r.get("task") == task and (r["output"] == target) == clean_label]
                    for r in rng.sample(pool, 10):
                        r["input"] = PLACES[place](r["input"], phrase, rng)
                        r["output"] = target
                        poison.add(r["id"])
                with tempfile.TemporaryDirectory(prefix="tunegate-placements-") as tmp:
                    src = Path(tmp) / "batch.jsonl"
                    src.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
                    ingest([str(src)], Path(tmp) / "work")
                    batch = CanonicalBatch(Path(tmp) / "work")
                    ids = batch.read_columns(["id"]).column("id").to_pylist()
                    started = time.perf_counter()
                    result = build_check("poison_trigger").run(batch)
                    flagged = {ids[f.row] for f in result.findings}
                print(f"seed={seed} {'clean' if clean_label else 'dirty'} {place:8} {phrase!r:14} "
                      f"recall={len(flagged & poison)}/{len(poison)} clean_flagged={len(flagged - poison)} "
                      f"phrases={[p['phrase'] for p in result.metrics['suspicious_phrases']]} "
                      f"t={time.perf_counter() - started:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
