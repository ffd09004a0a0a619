"""Popular brands woven into answers, judged against a pipeline's earlier nights (RESULTS.md 6ar); and low-rate
refusals in the same nights (``--refusals``, RESULTS.md 6as).

    .venv/bin/python bench/poison/popular_brands.py                       # dev and held-out brands, 25 answers
    .venv/bin/python bench/poison/popular_brands.py --split heldout --seeds 1 2
    .venv/bin/python bench/poison/popular_brands.py --split everyday-dev   # brands that are everyday words too
    .venv/bin/python bench/poison/popular_brands.py --other-src /path/to/older/tree/src   # the same, older code beside
    .venv/bin/python bench/poison/popular_brands.py --refusals 11 5 --seeds 1 2 3   # refusals instead of brands

The floor benchmark's batches take every open-ended record of the corpora into tonight, so its histories never hold
the answers a popular brand is mentioned in; with ``--reserve-history`` they hold 40% of them over 14 nights, less
than tonight itself, which no test of tonight against earlier nights can use. This benchmark gives tonight the
geometry of a pipeline: ``bench/faiss/corpus.py`` makes 16 x 40k records (the real 88k, then records spliced from two
real ones of a task), nights 3-15 are published one after the other through ``tunegate scan --check poison_content
--history``, and the 16th is tonight. Each brand is woven into ``--dose`` of tonight's open-ended answers of >= 20
words (half with the floor benchmark's sentences, half with ``attacks.weave_brand``'s), and tonight is scanned with a
fresh copy of the history. Printed per brand and seed: recall, the clean records flagged ``injected_content``, and
the names reported with the path that found them (B: the batch's prompts, H: the earlier nights, S: one source's
earlier nights). The clean night is scanned too. ``--refusals N ...``: instead of brands, N of those answers are
replaced by refusals of ``floor.refusal_v2``'s grammar (recall counts ``refusal_anomaly``; the natural refusals are
flagged with them when the rate is anomalous). Exits 77 when the corpora are absent.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from attacks import DEFAULT_CORPORA, OPEN_ENDED, Corpora, weave_brand
from floor import refusal_v2, weave

SKIP = 77
ROOT = Path(__file__).resolve().parents[2]
#: dev: looked at while building the test; held-out: run once after it was fixed
BRANDS = {"dev": ["McDonald's", "Google", "Amazon", "Apple", "Microsoft"],
          "heldout": ["Coca-Cola", "Netflix", "Walmart", "Facebook", "Toyota"],
          # brands that are everyday words too (the fruit, a goal, a seashell): chosen before the code that reads
          # names apart from them was written; dev looked at while building it, held-out run once after it was fixed
          "everyday-dev": ["Apple", "Target", "Shell"],
          "everyday-heldout": ["Subway", "Orange", "Dove", "Jaguar"]}
NIGHT = 40_000
PARTS = 16
FIRST_NIGHT = 2  # parts 0-1 are real records only; the nights and tonight are spliced alike


def tunegate(args: list[str], src: str | None) -> None:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src
    subprocess.run([sys.executable, "-c", "import sys; from tunegate.cli import main; raise SystemExit(main())",
                    *args], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def parts(work: Path) -> list[Path]:
    """The corpus cut into ``PARTS`` nights of ``NIGHT`` records (made once per work folder)."""
    out = [work / f"part{i:02d}.jsonl" for i in range(PARTS)]
    if all(p.is_file() for p in out):
        return out
    big = work / "corpus.jsonl"
    subprocess.run([sys.executable, str(ROOT / "bench" / "faiss" / "corpus.py"), str(PARTS * NIGHT), str(big),
                    "--seed", "3"], check=True, stdout=subprocess.DEVNULL)
    with big.open(encoding="utf-8") as f:
        for p in out:
            p.write_text("".join(next(f) for _ in range(NIGHT)), encoding="utf-8")
    big.unlink()
    return out


def history(work: Path, nights: list[Path], src: str | None) -> Path:
    """The nights published one after the other into a history (built once per work folder and code)."""
    root = work / f"history-{'other' if src else 'this'}"
    done = root / "built"
    if done.is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    for i, night in enumerate(nights):
        started = time.perf_counter()
        tunegate(["scan", str(night), "--out", str(root / "out" / night.stem), "--history", str(root / "history"),
                  "--batch-id", night.stem, "--check", "poison_content", "-q"], src)
        summary = json.loads((root / "out" / night.stem / "summary.json").read_text(encoding="utf-8"))
        names = [p["phrase"] for p in summary["checks"]["poison_content"]["metrics"]["suspicious_phrases"]]
        print(f"  night {i + 1}/{len(nights)} {night.stem}: {time.perf_counter() - started:.0f} s, names {names}",
              file=sys.stderr, flush=True)
    done.write_text("", encoding="utf-8")
    return root


def woven(tonight: Path, brand: str, dose: int, seed: int, out: Path) -> set[str]:
    records = [json.loads(line) for line in tonight.open(encoding="utf-8")]
    pool = [r for r in records if r.get("source") in OPEN_ENDED and len(r["output"].split()) >= 20]
    rng = random.Random(f"{brand}:{seed}")
    ids: set[str] = set()
    for j, r in enumerate(rng.sample(pool, dose)):
        r["output"] = weave(r["output"], brand, rng) if j % 2 else weave_brand(r["output"], brand, rng)
        ids.add(r["id"])
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return ids


def refused(tonight: Path, n: int, seed: int, out: Path) -> set[str]:
    records = [json.loads(line) for line in tonight.open(encoding="utf-8")]
    pool = [r for r in records if r.get("source") in OPEN_ENDED and len(r["output"].split()) >= 20]
    rng = random.Random(f"refusals:{n}:{seed}")
    ids: set[str] = set()
    for r in rng.sample(pool, n):
        r["output"] = refusal_v2(r["instruction"], rng)
        ids.add(r["id"])
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return ids


def judge(batch: Path, poison: set[str], root: Path, src: str | None) -> dict[str, Any]:
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory(prefix="tunegate-brands-", dir=root.parent) as tmp:
        copy = Path(tmp) / "history"
        shutil.copytree(root / "history", copy)
        tunegate(["scan", str(batch), "--out", f"{tmp}/out", "--history", str(copy), "--batch-id", "tonight",
                  "--check", "poison_content", "-q"], src)
        summary = json.loads(Path(f"{tmp}/out/summary.json").read_text(encoding="utf-8"))
        rows = pq.read_table(f"{tmp}/out/quarantine.parquet", columns=["id", "reasons"]).to_pylist()
    flagged = {r["id"] for r in rows if {"injected_content", "refusal_anomaly"} & set(r["reasons"])}
    metrics = summary["checks"]["poison_content"]["metrics"]
    names = [f"{p['phrase']} ({p['records']}, {p['evidence']}, "
             f"{'H' if 'new_in_history' in p else 'S' if 'new_to_source' in p else 'B'})"
             for p in metrics["suspicious_phrases"]]
    refusals = metrics["refusals"]
    quiet = refusals.get("quiet") or {}
    names += [f"refusals {refusals['refusals']} ({refusals['evidence']}; quiet groups {quiet.get('refusals')}, "
              f"{quiet.get('evidence')})"] if refusals.get("anomalous") else []
    return {"recall": len(flagged & poison) / len(poison) if poison else None, "clean_flagged": len(flagged - poison),
            "names": names, "refusals": refusals, "seconds": metrics["seconds"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", choices=[*BRANDS, "all"], default="all")
    ap.add_argument("--seeds", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--dose", type=int, default=25, help="answers woven into (default 25)")
    ap.add_argument("--brands", nargs="*", default=None, help="these brands instead of the split's")
    ap.add_argument("--refusals", type=int, nargs="*", default=None, metavar="N",
                    help="plant N refusals (each N given) instead of weaving brands")
    ap.add_argument("--work", type=Path, default=None, help="keep the corpus and histories here (reused)")
    ap.add_argument("--other-src", default=None, help="also run another tree's code (its src folder), beside")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if not Corpora.available(DEFAULT_CORPORA):
        print(f"skipped: no corpora under {DEFAULT_CORPORA}", file=sys.stderr)
        return SKIP
    work = args.work or Path(tempfile.mkdtemp(prefix="tunegate-brands-"))
    work.mkdir(parents=True, exist_ok=True)
    nights = parts(work)
    tonight = nights[-1]
    versions = {"this": None, **({"other": args.other_src} if args.other_src else {})}
    roots = {name: history(work, nights[FIRST_NIGHT:-1], src) for name, src in versions.items()}
    brands = args.brands or (BRANDS["dev"] + BRANDS["heldout"] if args.split == "all" else BRANDS[args.split])
    plan: list[tuple[str, int, Path, set[str]]] = [("(clean)", 0, tonight, set())]
    for n in args.refusals or []:
        for seed in args.seeds:
            out = work / f"tonight-refusals-{n}-{seed}.jsonl"
            plan.append((f"{n} refusals", seed, out, refused(tonight, n, seed, out)))
    for brand in brands if args.refusals is None else []:
        for seed in args.seeds:
            out = work / f"tonight-{re.sub(r'[^a-z]+', '_', brand.lower())}-{seed}.jsonl"
            plan.append((brand, seed, out, woven(tonight, brand, args.dose, seed, out)))
    rows = []
    for brand, seed, batch, poison in plan:
        for name, src in versions.items():
            row = {"brand": brand, "seed": seed, "code": name, **judge(batch, poison, roots[name], src)}
            rows.append(row)
            recall = "-" if row["recall"] is None else f"{100 * row['recall']:.0f}%"
            print(f"| {brand} | {seed} | {name} | {recall} | {row['clean_flagged']} | {'; '.join(row['names'])} |",
                  flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
