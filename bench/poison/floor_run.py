"""The detection-floor benchmark (issue 11): harder attacks in ~40k-record batches, plus clean batches.

    .venv/bin/python bench/poison/floor_run.py                    # held-out split (seeds 400-402)
    .venv/bin/python bench/poison/floor_run.py --split dev        # the split the method was tuned on
    .venv/bin/python bench/poison/floor_run.py --only thin_clean --seeds 10
    .venv/bin/python bench/poison/floor_run.py --history 3       # each batch follows 3 clean nights in a history
    .venv/bin/python bench/poison/floor_run.py --history 3 --disjoint-history   # ... none of them with its records
    .venv/bin/python bench/poison/floor_run.py --history 14 --disjoint-history --distinct-history  # ... and no record
                                                                                 # in two nights (as a pipeline's)
    .venv/bin/python bench/poison/floor_run.py --history 14 --reserve-history 0.4  # 40% of every task kept for 14
                                                # distinct nights, tonight from the rest: every task known, no repeats
    .venv/bin/python bench/poison/floor_run.py --only low_dose_injection --checks poison_content  # one scan alone

Per seed: the clean ``mixed`` batch, then every attack of ``floor.py`` planted in it; then the clean
``classification`` and ``open_ended`` batches. Reported per attack: recall of the poison records, share
of the batch's clean records quarantined for a poison reason, whether a campaign/refusal alert fired,
time of the poison scans; mean and worst over seeds. Exits 77 when the corpora are absent.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from attacks import DEFAULT_CORPORA, Corpora
from floor import ATTACKS, SEEDS, build_batch, plant
from run import CHECKS, scan_batch

SKIP = 77


def _pct(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{100 * v:.{digits}f}%"


SOURCES = ("superni", "alpaca", "self_instruct_gpt3", "gpteacher", "llamafactory_alpaca_en_demo", "oasst_en100",
           "self_instruct", "codealpaca", "p3_t0", "instruction_induction")  # what a mixed batch samples


def _groups(corpora: Corpora, exclude: frozenset[str]) -> dict[str, list[dict[str, Any]]]:
    """The mixed batch's records outside ``exclude``, per SuperNI task and per other source."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for source in SOURCES:
        for r in corpora.records.get(source, []):
            if r["id"] not in exclude:
                groups.setdefault(r.get("task") or source if source == "superni" else source, []).append(r)
    return groups


def reserved_ids(corpora: Corpora, seed: int, share: float) -> frozenset[str]:
    """``--reserve-history``: a random ``share`` of every SuperNI task's and every other source's records, kept for the
    history; tonight's batches never hold them (so every task is known to the history, with distinct records)."""
    import random

    rng = random.Random(f"reserve:{seed}")
    out: set[str] = set()
    for _key, rows in sorted(_groups(corpora, frozenset()).items()):
        out.update(r["id"] for r in rng.sample(rows, round(share * len(rows))))
    return frozenset(out)


def _distinct_nights(corpora: Corpora, seed: int, nights: int, exclude: frozenset[str]) -> list[list[dict[str, Any]]]:
    """``nights`` nights that share no record with each other nor with ``exclude``: every record of the mixed
    batch's sources dealt out once, round robin per SuperNI task and per other source."""
    import random

    rng = random.Random(f"distinct-history:{seed}")
    groups = _groups(corpora, exclude)
    out: list[list[dict[str, Any]]] = [[] for _ in range(nights)]
    for key in sorted(groups):
        rows = groups[key]
        rng.shuffle(rows)
        for i, r in enumerate(rows):
            out[i % nights].append(dict(r))
    for night in out:
        rng.shuffle(night)
    return out


def clean_history(corpora: Corpora, seed: int, nights: int, root: Path, exclude: frozenset[str] = frozenset(),
                  *, distinct: bool = False) -> Path:
    """A history of ``nights`` clean nights before the batch of ``seed``: each a random 70% of a clean mixed batch
    of another seed (so nights differ as real ones do), scanned by the poison checks and published. ``exclude``:
    record ids the nights never hold (``--disjoint-history``: tonight's records, as in a pipeline whose nights
    bring new records of the same sources). ``distinct``: no record in two nights (a pipeline's history, whose
    nights are accepted records and never repeat one: a record seen before is a near-duplicate of the history);
    the corpora's records outside ``exclude`` dealt out over the nights, so nights are smaller."""
    import random

    from tunegate.core.checks import build_check
    from tunegate.core.pipeline import HISTORY_CHECKS, scan

    history = root / "history"
    dealt = _distinct_nights(corpora, seed, nights, exclude) if distinct else None
    for night in range(nights):
        name = f"night-{night + 1}"
        if dealt is not None:
            records = dealt[night]
        else:
            base = build_batch(corpora, 10_000 + seed * 10 + night, "mixed")
            rng = random.Random(f"history:{seed}:{night}")
            pool = [r for r in base.records if r["id"] not in exclude]
            records = rng.sample(pool, int(0.7 * len(pool)))
        src = root / f"{name}.jsonl"
        src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        checks = [build_check(c, **({"history_dir": str(history), "batch_id": name} if c in HISTORY_CHECKS else {}))
                  for c in CHECKS]
        summary = scan([str(src)], root / name, checks=checks, history_dir=str(history), batch_id=name)
        refusals = summary["checks"]["poison_content"]["metrics"]["refusals"]
        print(f"  history {name}: {summary['total']} records, refusals {refusals['refusals']}/{refusals['responses']}"
              f" anomalous={refusals['anomalous']}", file=sys.stderr, flush=True)
    return history


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", choices=sorted(SEEDS), default="heldout")
    ap.add_argument("--seeds", type=int, nargs="*", default=None)
    ap.add_argument("--first-index", type=int, default=0, metavar="I",
                    help="position of the first seed in the run it belongs to (a seed's position picks the low-dose, "
                         "thin and multi triggers): run a split's seeds in parallel parts and get the same batches")
    ap.add_argument("--only", nargs="*", default=None, help="attacks to run (default: all, plus clean batches)")
    ap.add_argument("--no-clean", action="store_true", help="skip the clean batches")
    ap.add_argument("--corpora", type=Path, default=DEFAULT_CORPORA)
    ap.add_argument("--trigger", default=None,
                    help="the low-dose, thin and rare attacks' trigger instead of the split's (e.g. a word with "
                         "natural occurrences)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--history", type=int, default=0, metavar="NIGHTS",
                    help="scan each batch after NIGHTS clean nights were published into a history (what the "
                         "nightly DAG has after its first nights); default 0: no history")
    ap.add_argument("--disjoint-history", action="store_true",
                    help="history nights never hold a record of tonight's batch (new records of the same sources)")
    ap.add_argument("--distinct-history", action="store_true",
                    help="no record in two history nights (as a pipeline's history); with --disjoint-history: "
                         "the corpora's other records dealt out over the nights")
    ap.add_argument("--reserve-history", type=float, default=0.0, metavar="SHARE",
                    help="keep SHARE of every task's and source's records for the history: tonight's batches never "
                         "hold them, and the history's nights are those records dealt out (distinct, every task known)")
    ap.add_argument("--insertion", choices=("on", "off"), default=None,
                    help="poison_trigger's insertion pass on or off (default: the check's default)")
    ap.add_argument("--checks", nargs="*", choices=CHECKS, default=list(CHECKS), metavar="CHECK",
                    help=f"the checks that scan each batch (default: all of {', '.join(CHECKS)}); e.g. poison_content "
                         "alone with --only low_dose_injection to judge the injection scan without the history's cost")
    ap.add_argument("--suites", nargs="*", default=[], choices=("instruction_quality", "instruction_record"),
                    metavar="SUITE", help="Great Expectations suites run beside the checks (instruction_quality: the "
                    "default gate's quality rules, which set aside every refusal); recall then counts a poison record "
                    "set aside for any reason, and the clean records set aside for a suite's reason alone are "
                    "reported apart")
    args = ap.parse_args()
    options = {"poison_trigger": {"insertion": args.insertion == "on"}} if args.insertion else {}
    checks = tuple(args.checks)
    if not Corpora.available(args.corpora):
        print(f"skipped: no corpora under {args.corpora}", file=sys.stderr)
        return SKIP
    import logging

    logging.basicConfig(level=logging.WARNING)
    corpora = Corpora.load(args.corpora)
    seeds = args.seeds or SEEDS[args.split]
    attacks = args.only or list(ATTACKS)
    rows: list[dict[str, Any]] = []
    stack = contextlib.ExitStack()
    for i, seed in enumerate(seeds, start=args.first_index):
        reserved = reserved_ids(corpora, seed, args.reserve_history) if args.reserve_history else frozenset()
        clean = build_batch(corpora, seed, "mixed", reserved)
        exclude = frozenset(r["id"] for r in clean.records) if args.disjoint_history else frozenset()
        if reserved:
            every = frozenset(r["id"] for rows in _groups(corpora, frozenset()).values() for r in rows)
            exclude = every - reserved
        history = clean_history(corpora, seed, args.history, Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="tunegate-floor-history-"))), exclude,
            distinct=args.distinct_history or bool(reserved)) if args.history else None
        plan: list[tuple[str, Any]] = [] if args.no_clean else [("clean mixed", clean)]
        plan += [(a, None) for a in attacks if a in ATTACKS]
        if not args.no_clean:
            plan += [("clean classification", build_batch(corpora, seed, "classification", reserved)),
                     ("clean open_ended", build_batch(corpora, seed, "open_ended", reserved))]
        for label, batch in plan:
            if batch is None:
                batch = plant(clean, corpora, label, split=args.split, seed=seed, index=i, trigger=args.trigger)
            with tempfile.TemporaryDirectory(prefix="tunegate-floor-") as tmp:
                res = scan_batch(batch, Path(tmp), checks, history_dir=history, options=options,
                                 suites=tuple(args.suites))
            info = {k: v for k, v in batch.info.items() if k in ("trigger", "brand", "source", "tasks", "campaigns")}
            res.update(attack=label, seed=seed, info=info)
            rows.append(res)
            print(f"  {label:22s} seed={seed} n={res['records']} poison={res['poison']} recall={_pct(res['recall'])} "
                  f"clean_q={_pct(res['clean_quarantined'], 3)} alert={res['alert']} "
                  + (f"recall_poison={_pct(res['recall_poison'])} clean_q_quality="
                     f"{_pct(res['clean_quarantined_quality'], 3)} " if args.suites else "") +
                  f"t={sum(v or 0 for v in res['check_seconds'].values()):.1f}s phrases={res['phrases']} "
                  f"{info.get('trigger') or info.get('brand') or ''} {info.get('source') or ''} "
                  f"refusals={res['refusals']} passes={res['passes']}",
                  file=sys.stderr, flush=True)
    stack.close()
    quality = bool(args.suites)
    print("| batch / attack | poison | recall mean | recall worst | clean quarantined mean | worst | alert | "
          "poison scans s |" + (" for a poison reason: recall mean / worst | clean set aside by the suites, worst |"
                                if quality else ""))
    print("|---|---|---|---|---|---|---|---|" + ("---|---|" if quality else ""))
    for label in dict.fromkeys(r["attack"] for r in rows):
        sel = [r for r in rows if r["attack"] == label]
        rec = [r["recall"] for r in sel if r["recall"] is not None]
        cq = [r["clean_quarantined"] for r in sel]
        secs = [sum(v or 0 for v in r["check_seconds"].values()) for r in sel]
        print(f"| {label} | {sel[0]['poison']}/{sel[0]['records']} | "
              f"{_pct(statistics.mean(rec)) if rec else '-'} | {_pct(min(rec)) if rec else '-'} | "
              f"{_pct(statistics.mean(cq), 3)} | {_pct(max(cq), 3)} | {sum(r['alert'] for r in sel)}/{len(sel)} | "
              f"{statistics.mean(secs):.1f} |", end="")
        if quality:
            rp = [r["recall_poison"] for r in sel if r["recall_poison"] is not None]
            cqq = [r["clean_quarantined_quality"] for r in sel]
            print(f" {_pct(statistics.mean(rp)) if rp else '-'} / {_pct(min(rp)) if rp else '-'} | "
                  f"{_pct(max(cqq), 3)} |", end="")
        print()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    started = time.perf_counter()
    rc = main()
    print(f"({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    raise SystemExit(rc)
