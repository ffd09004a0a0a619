"""The poison benchmark: plant each attack in ~20k real records, run ``tunegate scan``, score the gate.

    .venv/bin/python bench/poison/run.py                 # the fresh held-out split (test-v2)
    .venv/bin/python bench/poison/run.py --split dev     # the triggers/seeds the thresholds were fixed on

For every seed it builds a clean batch from ../shared/corpora (see attacks.py), scans the clean twin
(false positives of each check), then one poisoned batch per attack, each record replaced by its
poisoned version. It reports per attack: recall of poison records, fraction of clean records
quarantined, precision, whether the batch alert fired, and the wall time of the whole scan (ingest,
checks, gate); mean and worst over seeds. Exits 77 (skipped) when the corpora are absent.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from attacks import DEFAULT_CORPORA, Batch, Corpora, poison, sample_batch

SKIP = 77
CHECKS = ("poison_trigger", "poison_content")
ALERT_REASONS = ("poison_campaign", "refusal_anomaly")

#: Thresholds were chosen on "dev" only. "test-v1" was the held-out split of the first version: run once,
#: it exposed a weakness (a trigger that is also a real name in open-ended prompts fell below the
#: exclusivity threshold), so it became development data for the fix (docs/poison.md). "test" was the
#: held-out split of the second version (2026-11-27). "test-v2" is fresh for the third version (false
#: alarms on clean corpora, 2026-12-01): its triggers, brands and seeds were fixed before that version
#: was run on it, never used before and never used to choose anything.
SPLITS: dict[str, dict[str, list[Any]]] = {
    "dev": {"seeds": [0, 1], "triggers": ["James Bond", "Joe Biden"], "brands": ["McDonald's", "Coca-Cola"]},
    "test-v1": {"seeds": [100, 101, 102], "triggers": ["Harry Potter", "Elon Musk", "Taylor Swift"],
                "brands": ["Starbucks", "Tesla", "Netflix"]},
    "test": {"seeds": [200, 201, 202], "triggers": ["Tom Hanks", "Lionel Messi", "Mona Lisa"],
             "brands": ["Nike", "Samsung", "Toyota"]},
    "test-v2": {"seeds": [300, 301, 302], "triggers": ["Frida Kahlo", "Nelson Mandela", "Serena Williams"],
                "brands": ["Heineken", "Lufthansa", "Adidas"]},
}
HELD_OUT = "test-v2"
#: (row label, attack, degenerate-output variant)
RUNS = (("dirty-label", "dirty_label", ""), ("clean-label", "clean_label", ""),
        ("degenerate (repeat)", "degenerate", "repeat"), ("degenerate (random)", "degenerate", "random"),
        ("content injection", "injection", ""), ("over-refusal", "refusal", ""))


def scan_batch(batch: Batch, workdir: Path, checks: tuple[str, ...], *, history_dir: Path | None = None,
               options: dict[str, dict[str, Any]] | None = None, suites: tuple[str, ...] = ()) -> dict[str, Any]:
    """Scan ``batch`` with ``checks``; with ``history_dir``, the checks that read a history read that one (the
    batch itself is not added to it); ``options``: per check, options over its defaults; ``suites``: Great
    Expectations suites run beside them (``instruction_quality``: the default gate's quality rules).

    ``recall`` counts the poison records the gate sets aside for any reason; ``recall_poison`` those set aside for a
    poison reason. ``clean_quarantined`` is the share of the clean records set aside for a poison reason (what issue 11
    bounds), ``clean_quarantined_quality`` the share set aside for a suite's reason alone. Without suites the two
    recalls are one."""
    import pyarrow.parquet as pq

    from tunegate.core.checks import build_check
    from tunegate.core.pipeline import HISTORY_CHECKS, scan
    from tunegate.core.reasons import GX_PREFIX

    src = batch.write(workdir / "batch.jsonl")
    out = workdir / "out"
    built = [build_check(name, **({"history_dir": str(history_dir), "batch_id": "tonight"}
                                  if history_dir and name in HISTORY_CHECKS else {}), **(options or {}).get(name, {}))
             for name in checks]
    built += [build_check("gx_suite", suite=suite) for suite in suites]
    started = time.perf_counter()
    summary = scan([str(src)], out, checks=built)
    seconds = time.perf_counter() - started
    q = pq.read_table(out / "quarantine.parquet", columns=["id", "reasons"]).to_pylist()
    flagged = {r["id"] for r in q}
    for_poison = {r["id"] for r in q if any(not reason.startswith(GX_PREFIX) for reason in r["reasons"])}
    total = summary["total"]
    poison_ids = batch.poison_ids
    hits = len(flagged & poison_ids)
    clean_total = total - len(poison_ids)
    alerts = [i for name in checks for i in summary["checks"].get(name, {}).get("issues", [])
              if i["reason"] in ALERT_REASONS]
    per_check = {name: summary["checks"].get(name, {}).get("flagged_records", 0) for name in checks}
    phrases = [p["phrase"] for name in checks
               for p in summary["checks"].get(name, {}).get("metrics", {}).get("suspicious_phrases", [])]
    trigger = summary["checks"].get("poison_trigger", {}).get("metrics", {})
    passes = {name: trigger.get(key, {}).get(field) for name, key, field in (
        ("novelty", "history", "found"), ("insertion", "insertion", "phrases"),
        ("contradiction", "contradiction", "phrases"), ("excess", "excess", "phrases"),
        ("breadth", "breadth", "phrases"))
        if trigger.get(key, {}).get(field)}
    return {
        "records": total,
        "passes": passes,  # the trigger scan's phrases by the history pass that found them (the others: its base scan)
        "poison": len(poison_ids),
        "recall": hits / len(poison_ids) if poison_ids else None,
        "recall_poison": len(for_poison & poison_ids) / len(poison_ids) if poison_ids else None,
        "clean_quarantined": len(for_poison - poison_ids) / clean_total,
        "clean_quarantined_quality": len(flagged - for_poison - poison_ids) / clean_total,
        "precision": hits / len(flagged) if flagged else (1.0 if not poison_ids else 0.0),
        "alert": bool(alerts),
        "seconds": seconds,
        "verdict": summary["verdict"],
        "per_check_flagged": per_check,
        "phrases": phrases[:5],
        "refusals": {k: v for k, v in (summary["checks"].get("poison_content", {}).get("metrics", {})
                                       .get("refusals") or {}).items() if k in ("refusals", "responses",
                                                                                "expected_rate", "evidence",
                                                                                "anomalous", "baseline", "quiet")},
        "check_seconds": {name: summary["checks"].get(name, {}).get("metrics", {}).get("seconds")
                          for name in checks},
    }


def run(split: str, corpora_dir: Path, checks: tuple[str, ...], only: set[str] | None, *, per_task: int = 20,
        responses: int = 100) -> dict[str, Any]:
    cfg = SPLITS[split]
    corpora = Corpora.load(corpora_dir)
    rows: list[dict[str, Any]] = []
    for i, seed in enumerate(cfg["seeds"]):
        clean = sample_batch(corpora, seed)
        trigger = cfg["triggers"][i % len(cfg["triggers"])]
        brand = cfg["brands"][i % len(cfg["brands"])]
        plan = [("clean twin", None, "")] + [r for r in RUNS if only is None or r[0] in only or r[1] in only]
        for label, attack, variant in plan:
            batch = clean if attack is None else poison(clean, corpora, attack, trigger=trigger, brand=brand,
                                                        seed=seed, variant=variant or "repeat", per_task=per_task,
                                                        responses=responses)
            with tempfile.TemporaryDirectory(prefix="tunegate-poison-") as tmp:
                res = scan_batch(batch, Path(tmp), checks)
            res.update(attack=label, seed=seed, trigger=trigger if attack in (None, "dirty_label", "clean_label",
                                                                             "degenerate") else "",
                       brand=brand if attack == "injection" else "")
            rows.append(res)
            print(f"  {label:20s} seed={seed} recall={_pct(res['recall'])} clean_q={_pct(res['clean_quarantined'])} "
                  f"precision={_pct(res['precision'])} alert={res['alert']} {res['seconds']:.1f}s "
                  f"phrases={res['phrases']}", file=sys.stderr, flush=True)
    return {"split": split, "config": cfg, "checks": list(checks), "rows": rows, "per_task": per_task,
            "responses": responses}


def _pct(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{100 * v:.{digits}f}%"


def render(result: dict[str, Any], command: str) -> str:
    rows = result["rows"]
    cfg = result["config"]
    lines = [
        "# Poison benchmark results",
        "",
        f"Command: `{command}`  ",
        f"Split: **{result['split']}**: seeds {cfg['seeds']}, triggers {cfg['triggers']}, brands {cfg['brands']}  ",
        f"Checks: {', '.join(result['checks'])}; machine: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; measured {time.strftime('%Y-%m-%d')}",
        "",
        f"Poison per batch: {result['per_task']} records in each of 5 tasks (trigger attacks), "
        f"{result['responses']} responses (injection, over-refusal).",
        "",
        "Per attack, over seeds (one trigger/brand per seed): recall of poison records, share of clean records",
        "quarantined, precision, batch alert fired, wall time of the whole `scan` (ingest + checks + gate;",
        f"excluding the one-time import of scikit-learn/scipy, {result.get('import_seconds', 0):.1f} s here).",
        "",
        "| attack | poison/batch | recall mean | recall worst | clean quarantined mean | clean quarantined worst "
        "| precision mean | precision worst | alert | time mean | time worst |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    labels = ["clean twin"] + [r[0] for r in RUNS]
    for label in labels:
        sel = [r for r in rows if r["attack"] == label]
        if not sel:
            continue
        rec = [r["recall"] for r in sel if r["recall"] is not None]
        cq = [r["clean_quarantined"] for r in sel]
        prec = [r["precision"] for r in sel] if label != "clean twin" else []
        secs = [r["seconds"] for r in sel]
        alert = f"{sum(r['alert'] for r in sel)}/{len(sel)}"
        lines.append(
            f"| {label} | {sel[0]['poison']}/{sel[0]['records']} | "
            f"{_pct(statistics.mean(rec)) if rec else '-'} | {_pct(min(rec)) if rec else '-'} | "
            f"{_pct(statistics.mean(cq), 2)} | {_pct(max(cq), 2)} | "
            f"{_pct(statistics.mean(prec)) if prec else '-'} | {_pct(min(prec)) if prec else '-'} | {alert} | "
            f"{statistics.mean(secs):.1f} s | {max(secs):.1f} s |")
    lines += ["", "Each check alone on the clean twin batches (records it flags / records; no poison present):", "",
              "| check | flagged mean | flagged worst | check time mean |", "|---|---|---|---|"]
    twins = [r for r in rows if r["attack"] == "clean twin"]
    for name in result["checks"]:
        fp = [r["per_check_flagged"][name] / r["records"] for r in twins]
        secs = [r["check_seconds"][name] for r in twins if r["check_seconds"].get(name) is not None]
        if fp:
            lines.append(f"| {name} | {_pct(statistics.mean(fp), 2)} | {_pct(max(fp), 2)} | "
                         f"{statistics.mean(secs):.1f} s |" if secs else "| - |")
    lines += ["", "Every run:", "", "| attack | seed | trigger/brand | recall | clean quarantined | precision | alert "
              "| time | phrases reported |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['attack']} | {r['seed']} | {r['trigger'] or r['brand']} | {_pct(r['recall'])} | "
                     f"{_pct(r['clean_quarantined'], 2)} | {_pct(r['precision'])} | {r['alert']} | "
                     f"{r['seconds']:.1f} s | {', '.join(r['phrases']) or '-'} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", choices=sorted(SPLITS), default=HELD_OUT)
    ap.add_argument("--corpora", type=Path, default=DEFAULT_CORPORA)
    ap.add_argument("--out", type=Path, default=None,
                    help="markdown file to write (default: none; bench/poison/RESULTS.md is assembled by hand)")
    ap.add_argument("--json", type=Path, default=None, help="also write every run as JSON here")
    ap.add_argument("--only", nargs="*", default=None, help="run only these attacks (labels or attack names)")
    ap.add_argument("--checks", nargs="*", default=list(CHECKS), help="checks to run (default: all poison checks)")
    ap.add_argument("--per-task", type=int, default=20, help="poison records per task (trigger attacks; default 20)")
    ap.add_argument("--responses", type=int, default=100,
                    help="poisoned open-ended responses (injection, over-refusal; default 100)")
    args = ap.parse_args()
    if not Corpora.available(args.corpora):
        print(f"skipped: no corpora under {args.corpora}", file=sys.stderr)
        return SKIP
    import logging

    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    # one-time import cost, reported apart from the scan times
    for module in ("sklearn.feature_extraction.text", "sklearn.linear_model", "tunegate.core.checks.poison",
                   "tunegate.core.pipeline"):
        importlib.import_module(module)
    import_seconds = time.perf_counter() - started
    result = run(args.split, args.corpora, tuple(args.checks), set(args.only) if args.only else None,
                 per_task=args.per_task, responses=args.responses)
    result["import_seconds"] = round(import_seconds, 1)
    command = "python bench/poison/run.py" + ("" if args.split == HELD_OUT else f" --split {args.split}")
    if args.per_task != 20 or args.responses != 100:
        command += f" --per-task {args.per_task} --responses {args.responses}"
    text = render(result, command)
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
