"""Build an N-record benchmark corpus from ../shared/corpora (shared by every benchmark under bench/).

    python bench/corpus.py N OUT.jsonl [--corpora DIR]

Takes every record of every corpus (88k), then cycles through them again with a deterministic
variation (a numbered suffix on the instruction) until N records, so recycled records are not exact
duplicates. Exits 77 (the conventional 'skipped') when the corpora are absent.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from collections.abc import Iterator
from pathlib import Path

DEFAULT_CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"
SKIP = 77


def corpus_files(corpora: Path) -> list[Path]:
    return sorted(corpora.glob("*.jsonl.gz"))


def iter_records(corpora: Path, n: int) -> Iterator[dict]:
    files = corpus_files(corpora)
    emitted, cycle = 0, 0
    while emitted < n:
        for path in files:
            with gzip.open(path, "rt", encoding="utf-8") as f:
                for line in f:
                    rec = json.loads(line)
                    if cycle:
                        rec["instruction"] = f"{rec['instruction']} (variant {cycle})"
                        rec["id"] = f"{rec['id']}~{cycle}"
                    yield rec
                    emitted += 1
                    if emitted >= n:
                        return
        cycle += 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n", type=int)
    ap.add_argument("out", type=Path)
    ap.add_argument("--corpora", type=Path, default=DEFAULT_CORPORA)
    args = ap.parse_args()
    if not corpus_files(args.corpora):
        print(f"skipped: no corpora under {args.corpora}", file=sys.stderr)
        return SKIP
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        for rec in iter_records(args.corpora, args.n):
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    print(f"wrote {args.n} records to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
