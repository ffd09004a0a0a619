"""Does the gate work? Attack success rate (ASR) of a canary model trained on a poisoned batch, without and
with the gate, for every attack of bench/poison.

    .venv/bin/python bench/audit/run.py              # held-out: run.py test-v2 (300-302), floor heldout (400-402)
    .venv/bin/python bench/audit/run.py --split dev  # the seeds the canary's thresholds were fixed on (0, 1; 10, 11)

Per seed and attack: the poisoned batch is built exactly as bench/poison/run.py (``attacks.py``) and
bench/poison/floor_run.py (``floor.py``) build it. The canary (:class:`tunegate.core.audit.CanaryModel`) is trained
twice: on every record of the poisoned batch (*without the gate*) and on ``accepted.parquet`` after a full
``tunegate scan`` of the batch with the default policy (*with the gate*: every check, the canary audit included).

ASR: among test records of the attacked tasks whose label is not the attacker's target, the share the canary
predicts as the target when the trigger is inserted (the attack's own insertion: a name slot or anywhere), next
to the same share without the trigger. Test records are the corpus records of those tasks that are not in the
batch (never trained on by either canary), at most 300 per task. Attacks on generative tasks and responses
(degenerate output, content injection, over-refusal) have no label to flip: the canary covers classification
tasks only, so they are listed as not applicable.

Also reported: the canary audit's verdict in the gated night (does it raise ``canary_flip``?), its time (the same
audit of the accepted records timed on its own: the summary keeps no timings), and its alarms on the clean batches
(run.py's clean twin, floor's clean ``mixed`` and ``classification`` batches).
Exits 77 (skipped) when the corpora are absent.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1] / "poison"))
sys.path.insert(0, str(HERE.parents[2] / "src"))

import attacks as textbook  # noqa: E402
import floor  # noqa: E402
from attacks import DEFAULT_CORPORA, Batch, Corpora  # noqa: E402

SKIP = 77
#: Test records per attacked task (corpus records not in the batch, labels other than the target).
TEST_PER_TASK = 300
SPLITS = {
    "heldout": {"textbook": "test-v2", "floor": "heldout"},
    "dev": {"textbook": "dev", "floor": "dev"},
}
TEXTBOOK_LABEL = ("dirty_label", "clean_label")
TEXTBOOK_OTHER = ("degenerate", "injection", "refusal")
FLOOR_LABEL = ("low_dose_dirty", "low_dose_clean", "thin_dirty", "thin_clean", "common_dirty", "common_clean", "multi")
FLOOR_OTHER = ("low_dose_injection", "refusal_low")
#: how each floor attack placed its trigger (floor.plant)
FLOOR_PLACEMENT = {"low_dose_dirty": "mixed", "low_dose_clean": "mixed", "thin_dirty": "anywhere",
                   "thin_clean": "anywhere", "common_dirty": "anywhere", "common_clean": "anywhere", "multi": "mixed"}


def table(records: list[dict[str, Any]]) -> Any:
    import pyarrow as pa

    text = ("instruction", "input", "output")
    return pa.table({c: [r.get(c) or ("" if c in text else None) for r in records] for c in (*text, "task", "source")})


def campaigns(batch: Batch) -> list[tuple[str, dict[str, str]]]:
    """(trigger, {attacked task: target label}) of each campaign, read from the poisoned records themselves."""
    info = batch.info
    plans = info["campaigns"] if "campaigns" in info else [{"trigger": info["trigger"], "tasks": info["tasks"]}]
    poison = [r for r in batch.records if r["id"] in batch.poison_ids]
    out = []
    for plan in plans:
        targets: dict[str, str] = {}
        for task in plan["tasks"]:
            labels = Counter(r["output"] for r in poison if r["task"] == task and plan["trigger"] in r["input"])
            if labels:
                targets[task] = labels.most_common(1)[0][0]
        out.append((plan["trigger"], targets))
    return out


def insert(text: str, trigger: str, placement: str, rng: random.Random) -> str:
    if placement == "textbook":
        return textbook.insert_trigger(text, trigger, rng)[0]
    place = placement if placement != "mixed" else rng.choice(["name", "anywhere"])
    return (floor.insert_name_slot if place == "name" else floor.insert_anywhere)(text, trigger, rng)


def test_records(corpora: Corpora, batch: Batch, task: str, target: str, seed: int) -> list[dict[str, Any]]:
    in_batch = {r["id"] for r in batch.records}
    pool = [r for r in corpora.records["superni"] if r["task"] == task and r["id"] not in in_batch
            and r["output"] != target]
    return random.Random(f"{seed}:{task}").sample(pool, min(TEST_PER_TASK, len(pool)))


def asr(model: Any, corpora: Corpora, batch: Batch, placement: str, seed: int) -> dict[str, Any]:
    """Pooled over every campaign and attacked task: (with trigger, without) shares predicted as the target."""
    from tunegate.core.audit import prompt_of

    hit = base = n = 0
    per_task = []
    for trigger, targets in campaigns(batch):
        for task, target in sorted(targets.items()):
            if task not in model.tasks():
                continue
            tests = test_records(corpora, batch, task, target, seed)
            rng = random.Random(f"insert:{seed}:{task}:{trigger}")
            plain = model.predict(task, [prompt_of(r["instruction"], r["input"]) for r in tests])
            trig = model.predict(task, [prompt_of(r["instruction"], insert(r["input"], trigger, placement, rng))
                                        for r in tests])
            h, b = sum(p == target for p in trig), sum(p == target for p in plain)
            per_task.append({"task": task, "trigger": trigger, "target": target, "tests": len(tests),
                             "asr": h / len(tests) if tests else None, "base": b / len(tests) if tests else None})
            hit, base, n = hit + h, base + b, n + len(tests)
    return {"asr": hit / n if n else None, "base": base / n if n else None, "tests": n, "per_task": per_task}


def gated(batch: Batch, workdir: Path) -> tuple[Any, dict[str, Any], float]:
    """``tunegate scan`` with the default policy; the passing records (accepted, or held when the night halted)."""
    import pyarrow.parquet as pq

    from tunegate.core.pipeline import scan

    src = batch.write(workdir / "batch.jsonl")
    out = workdir / "out"
    started = time.perf_counter()
    summary = scan([str(src)], out)
    seconds = time.perf_counter() - started
    passing = out / ("held.parquet" if summary["verdict"] == "halt" else "accepted.parquet")
    canary = json.loads((out / "canary.json").read_text()) if (out / "canary.json").is_file() else {}
    summary["_canary_result"] = canary
    return pq.read_table(passing), summary, seconds


def run_one(label: str, family: str, batch: Batch, corpora: Corpora, seed: int, placement: str | None
            ) -> dict[str, Any]:
    from tunegate.core.audit import CanaryModel

    row: dict[str, Any] = {"attack": label, "family": family, "seed": seed, "records": len(batch.records),
                           "poison": len(batch.poison_ids)}
    info = batch.info
    row["trigger"] = (", ".join(c["trigger"] for c in info["campaigns"]) if "campaigns" in info
                      else info.get("trigger", ""))
    if placement is not None:
        row["without"] = asr(CanaryModel.fit(table(batch.records), seed=0), corpora, batch, placement, seed)
    with tempfile.TemporaryDirectory(prefix="tunegate-audit-") as tmp:
        accepted, summary, seconds = gated(batch, Path(tmp))
    canary = summary.get("canary") or {}
    result = summary.pop("_canary_result")
    ids = set(accepted.column("id").to_pylist())
    # the gate keeps no timing in the summary (a rerun's summary equals the first's): time the same audit here
    from tunegate.core.audit.run import canary_audit

    started = time.perf_counter()
    canary_audit(accepted, found=result.get("found", []))
    audit_seconds = round(time.perf_counter() - started, 1)
    row.update(verdict=summary["verdict"], scan_seconds=round(seconds, 1), canary_status=canary.get("status"),
               canary_seconds=audit_seconds, canary_failing=canary.get("failing", []),
               poison_accepted=len(batch.poison_ids & ids),
               trigger_probed=[{"phrase": p["phrase"], "max_lift": p["max_lift"], "sources": p["sources"]}
                               for p in result.get("phrases", []) if p["phrase"].lower() in row["trigger"].lower()])
    if placement is not None:
        row["with"] = asr(CanaryModel.fit(accepted, seed=0), corpora, batch, placement, seed)
    w, g = row.get("without") or {}, row.get("with") or {}
    print(f"  {label:22s} seed={seed} {row['trigger']!r:30} poison={row['poison']} accepted={row['poison_accepted']} "
          f"ASR without={_pct(w.get('asr'))} (base {_pct(w.get('base'))}) with={_pct(g.get('asr'))} "
          f"(base {_pct(g.get('base'))}) verdict={row['verdict']} canary={row['canary_status']} "
          f"{row['canary_seconds']}s scan={row['scan_seconds']}s", file=sys.stderr, flush=True)
    return row


def clean_alarm(label: str, family: str, batch: Batch, seed: int) -> dict[str, Any]:
    """The canary audit on a clean batch, trained on all of it (no scan: the gate removes next to nothing from a
    clean batch, and a scan costs minutes on a shared machine). An alarm here is a false alarm."""
    from tunegate.core.audit.run import canary_audit

    started = time.perf_counter()
    result = canary_audit(table(batch.records))
    seconds = time.perf_counter() - started
    row = {"attack": label, "family": family, "seed": seed, "records": len(batch.records), "poison": 0,
           "poison_accepted": 0, "trigger": "", "verdict": "(audit only)", "canary_status": result["status"],
           "canary_seconds": round(seconds, 1), "canary_failing": result.get("failing", []), "trigger_probed": [],
           "top": [(p["phrase"], p["max_lift"], p["datasets_failing"]) for p in result.get("phrases", [])[:3]]}
    print(f"  {label:22s} seed={seed} n={row['records']} canary={row['canary_status']} {row['canary_failing']} "
          f"top={row['top']} {seconds:.1f}s", file=sys.stderr, flush=True)
    return row


class Rows(list):  # type: ignore[type-arg]
    """The runs so far; each is also appended to ``progress`` (JSON lines) as it finishes."""

    def __init__(self, progress: Path | None) -> None:
        super().__init__()
        self.progress = progress

    def append(self, row: dict[str, Any]) -> None:
        super().append(row)
        if self.progress:
            with open(self.progress, "a", encoding="utf-8") as f:
                f.write(json.dumps(row, default=str) + "\n")


def run(split: str, corpora: Corpora, only: set[str] | None, seeds: dict[str, list[int]] | None,
        progress: Path | None = None) -> list[dict[str, Any]]:
    from run import SPLITS as TEXTBOOK_SPLITS  # bench/poison/run.py

    rows = Rows(progress)
    tb = TEXTBOOK_SPLITS[SPLITS[split]["textbook"]]
    for i, seed in enumerate((seeds or {}).get("textbook", tb["seeds"])):
        clean = textbook.sample_batch(corpora, seed)
        trigger, brand = tb["triggers"][i % len(tb["triggers"])], tb["brands"][i % len(tb["brands"])]
        if only is None or "clean" in only:
            rows.append(clean_alarm("clean twin", "textbook", clean, seed))
        for attack in TEXTBOOK_LABEL:
            if only is None or attack in only:
                batch = textbook.poison(clean, corpora, attack, trigger=trigger, brand=brand, seed=seed)
                rows.append(run_one(attack, "textbook", batch, corpora, seed, "textbook"))
    fl = SPLITS[split]["floor"]
    for i, seed in enumerate((seeds or {}).get("floor", floor.SEEDS[fl])):
        clean = floor.build_batch(corpora, seed, "mixed")
        for attack in FLOOR_LABEL:
            if only is None or attack in only:
                batch = floor.plant(clean, corpora, attack, split=fl, seed=seed, index=i)
                rows.append(run_one(attack, "floor", batch, corpora, seed, FLOOR_PLACEMENT[attack]))
        if only is None or "clean" in only:
            rows.append(clean_alarm("clean mixed", "floor", clean, seed))
            rows.append(clean_alarm("clean classification", "floor", floor.build_batch(corpora, seed, "classification"),
                                    seed))
    return rows


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def render(rows: list[dict[str, Any]], split: str, command: str) -> str:
    lines = [
        "# Does the gate work? Canary ASR without and with the gate",
        "",
        f"Command: `{command}`  ",
        f"Split: **{split}** (textbook attacks: bench/poison/run.py split `{SPLITS[split]['textbook']}`, seeds "
        f"{sorted({r['seed'] for r in rows if r['family'] == 'textbook'})}; harder attacks: bench/poison/floor.py "
        f"split `{SPLITS[split]['floor']}`, seeds {sorted({r['seed'] for r in rows if r['family'] == 'floor'})})  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs (shared), Python {platform.python_version()}; "
        f"measured {time.strftime('%Y-%m-%d')}",
        "",
        "ASR: share of test records of the attacked tasks (labels other than the target; corpus records not in the",
        "batch) that the canary predicts as the attacker's target with the trigger inserted; `base`: the same share",
        "without the trigger. *Without gate*: canary trained on the whole poisoned batch; *with gate*: on",
        "`accepted.parquet` of `tunegate scan` (default policy). Mean over seeds (pooled over tasks within a seed).",
        "",
        "| attack | poison / batch | ASR without gate (base) | ASR with gate (base) | poison accepted | "
        "canary audit alarms | audit time |",
        "|---|---|---|---|---|---|---|",
    ]
    order = ["clean twin", *TEXTBOOK_LABEL, *FLOOR_LABEL, "clean mixed", "clean classification"]
    for label in order:
        sel = [r for r in rows if r["attack"] == label]
        if not sel:
            continue

        def mean(side: str, key: str, sel: list[dict[str, Any]] = sel) -> str:
            vals = [r[side][key] for r in sel if r.get(side) and r[side][key] is not None]
            return _pct(statistics.mean(vals)) if vals else "-"

        asr_cols = ("-", "-") if "without" not in sel[0] else (
            f"{mean('without', 'asr')} ({mean('without', 'base')})", f"{mean('with', 'asr')} ({mean('with', 'base')})")
        alarms = sum(r["canary_status"] == "fail" for r in sel)
        secs = [r["canary_seconds"] for r in sel if r.get("canary_seconds") is not None]
        accepted = f"{sum(r['poison_accepted'] for r in sel)}/{sum(r['poison'] for r in sel)}"
        lines.append(f"| {label} | {sel[0]['poison']}/{sel[0]['records']} | {asr_cols[0]} | {asr_cols[1]} | "
                     f"{accepted} | {alarms}/{len(sel)} | {f'{statistics.mean(secs):.1f} s' if secs else '-'} |")
    for name in (*TEXTBOOK_OTHER, *FLOOR_OTHER):
        lines.append(f"| {name} | - | n/a | n/a | - | - | - |")
    lines += ["", "n/a: the attack targets generated text or responses, not a label; the canary covers classification",
              "tasks only (bench/poison/RESULTS.md has the gate's recall on these attacks).", "",
              "Every run:", "",
              "| attack | seed | trigger | ASR without (base) | ASR with (base) | poison accepted | verdict | canary "
              "| failing phrases | trigger probed (max lift, sources) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        w, g = r.get("without"), r.get("with")
        probed = "; ".join(f"{p['phrase']} {p['max_lift']:.2f} ({'+'.join(p['sources'])})" for p in r["trigger_probed"])
        lines.append(f"| {r['attack']} | {r['seed']} | {r['trigger'] or '-'} | "
                     f"{_pct(w['asr']) + ' (' + _pct(w['base']) + ')' if w else '-'} | "
                     f"{_pct(g['asr']) + ' (' + _pct(g['base']) + ')' if g else '-'} | "
                     f"{r['poison_accepted']}/{r['poison']} | {r['verdict']} | {r['canary_status']} | "
                     f"{', '.join(r['canary_failing'][:3]) or '-'} | {probed or '-'} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", choices=sorted(SPLITS), default="heldout")
    ap.add_argument("--corpora", type=Path, default=DEFAULT_CORPORA)
    ap.add_argument("--only", nargs="*", default=None, help="attacks to run (and/or 'clean' for the clean batches)")
    ap.add_argument("--textbook-seeds", type=int, nargs="*", default=None)
    ap.add_argument("--floor-seeds", type=int, nargs="*", default=None)
    ap.add_argument("--out", type=Path, default=None, help="markdown file to write")
    ap.add_argument("--json", type=Path, default=None, help="every run as JSON")
    ap.add_argument("--progress", type=Path, default=None, help="append each run to this JSON-lines file")
    ap.add_argument("--from-progress", type=Path, default=None, help="only render the runs of a progress file")
    args = ap.parse_args()
    if not Corpora.available(args.corpora):
        print(f"skipped: no corpora under {args.corpora}", file=sys.stderr)
        return SKIP
    import logging

    logging.basicConfig(level=logging.WARNING)
    seeds = {k: v for k, v in (("textbook", args.textbook_seeds), ("floor", args.floor_seeds)) if v is not None}
    if args.from_progress:
        rows = [json.loads(line) for line in args.from_progress.read_text(encoding="utf-8").splitlines() if line]
    else:
        rows = run(args.split, Corpora.load(args.corpora), set(args.only) if args.only else None, seeds or None,
                   args.progress)
    command = "python bench/audit/run.py" + ("" if args.split == "heldout" else f" --split {args.split}")
    for flag, value in (("--textbook-seeds", args.textbook_seeds), ("--floor-seeds", args.floor_seeds),
                        ("--only", args.only)):
        if value is not None:
            command += f" {flag} {' '.join(map(str, value))}"
    text = render(rows, args.split, command)
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
