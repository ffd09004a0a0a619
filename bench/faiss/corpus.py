"""Benchmark corpora for the FAISS checks, built from the real records in ../shared/corpora.

    python bench/faiss/corpus.py N OUT.jsonl [--seed S] [--history-of HIST.jsonl] [--planted-rate R]

How records are made (deterministic for a seed):
- The first records are the 88k real records, shuffled.
- Past them, each new record is *spliced* from two real records of the same task: the first half of
  the words of one record's varying field (the input, or the instruction where the input is empty, and
  the output where it is longer than 3 words) joined to the second half of the other's. The result keeps
  the vocabulary, lengths and task templates of the real data but is not a near-duplicate of anything
  (cosine to its parents ~0.5-0.8), so the duplicate rate stays that of real data.
- ``--planted-rate`` of the records (default 1%) are light edits of an earlier record (a typo, a changed
  case, a dropped or added word, doubled spaces, changed punctuation): the ground-truth near-duplicates;
  their pairs go to OUT.pairs.tsv. With ``--history-of``, the edited originals come from that earlier
  corpus instead: yesterday's accepted records are today's near-duplicates.
- ``contributor`` is one of 500 names (Zipf-distributed), so contributor checks have something to do.

Exits 77 (skipped) when ../shared/corpora is absent.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

CORPORA = Path(__file__).resolve().parents[3] / "shared" / "corpora"
SKIP = 77
FIELDS = ("instruction", "input", "output")


def load(corpora: Path) -> list[dict]:
    recs = []
    for path in sorted(corpora.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                recs.append({k: r.get(k) or "" for k in (*FIELDS, "task", "source", "id")})
    return recs


def light_edit(text: str, rng: random.Random) -> str:
    """One realistic small edit of the kind that near-duplicate floods and re-submissions show."""
    words = text.split(" ")
    op = rng.randrange(6)
    if op == 0 and len(text) > 8:
        i = rng.randrange(len(text))
        return text[:i] + text[i + 1:]
    if op == 1:
        return text.lower() if text != text.lower() else text.capitalize()
    if op == 2:
        return text.rstrip(".!?") + rng.choice(["!", ".", " ?", "..."])
    if op == 3:
        words.insert(rng.randrange(len(words) + 1), rng.choice(["really", "the", "very", "just", "also", "please"]))
        return " ".join(words)
    if op == 4:
        return "  ".join(words)
    if len(words) > 3:
        del words[rng.randrange(len(words))]
        return " ".join(words)
    return text + " "


def edited(rec: dict, rng: random.Random) -> dict:
    out = dict(rec)
    candidates = [f for f in FIELDS if len(rec[f]) >= 20] or ["instruction"]
    f = rng.choice(candidates)
    out[f] = light_edit(rec[f], rng)
    return out


def splice(a: str, b: str) -> str:
    wa, wb = a.split(), b.split()
    if len(wa) < 2 or len(wb) < 2:
        return a
    return " ".join(wa[: len(wa) // 2] + wb[len(wb) // 2:])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n", type=int)
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--planted-rate", type=float, default=0.01)
    ap.add_argument("--history-of", type=Path, help="plant edits of this corpus's records instead of earlier ones")
    ap.add_argument("--corpora", type=Path, default=CORPORA)
    args = ap.parse_args()
    if not list(args.corpora.glob("*.jsonl.gz")):
        print(f"skipped: no corpora under {args.corpora}", file=sys.stderr)
        return SKIP
    rng = random.Random(args.seed)
    real = load(args.corpora)
    rng.shuffle(real)
    by_task: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(real):
        by_task[r["task"] or r["source"]].append(i)
    history: list[dict] = []
    if args.history_of:
        with open(args.history_of, encoding="utf-8") as f:
            history = [json.loads(line) for line in f]
    cum_weights = list(itertools.accumulate(1 / (i + 1) for i in range(500)))
    contributors = [f"contributor-{i:03d}" for i in range(500)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    emitted: list[dict] = []
    pairs = []
    with open(args.out, "w", encoding="utf-8") as f:
        for i in range(args.n):
            pool = history or emitted
            if pool and rng.random() < args.planted_rate:
                orig = pool[rng.randrange(len(pool))]
                rec = edited(orig, rng)
                pairs.append((orig["id"], f"{args.seed}-{i}"))
            elif i < len(real) and not history:
                rec = dict(real[i])
            else:
                a = real[rng.randrange(len(real))]
                group = by_task[a["task"] or a["source"]]
                b = real[group[rng.randrange(len(group))]]
                rec = dict(a)
                field = "input" if a["input"] else "instruction"
                rec[field] = splice(a[field], b[field])
                if len(a["output"].split()) > 3:
                    rec["output"] = splice(a["output"], b["output"])
            rec["id"] = f"{args.seed}-{i}"
            rec["contributor"] = rng.choices(contributors, cum_weights=cum_weights)[0]
            line = json.dumps(rec, ensure_ascii=False)
            f.write(line + "\n")
            if not history and len(emitted) < 200_000:
                emitted.append(rec)
    with open(args.out.with_suffix(".pairs.tsv"), "w", encoding="utf-8") as f:
        f.writelines(f"{a}\t{b}\n" for a, b in pairs)
    print(f"wrote {args.n} records ({len(pairs)} planted near-duplicates) to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
