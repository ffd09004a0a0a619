"""What near_duplicate and embedding_outlier flag on clean corpora, laid out for a person to hand-check.

    python bench/faiss/clean_review.py [--corpora DIR] [--work DIR] [--out bench/faiss/review] [--seed 0]
                                       [--sample 50] [--only NAME ...]

For every ``*.jsonl.gz`` corpus in ``../shared/corpora`` (exit 77 with a message when absent): ingest it,
run both checks through :mod:`tunegate.core` with their defaults, print the share of records flagged per
reason, and write a fixed-seed random sample of up to ``--sample`` flagged records per reason to
``OUT/<corpus>.<reason>.md``: each near-duplicate side by side with its representative, each outlier with
three unflagged records of its group drawn at random (what the group usually looks like).
``OUT/summary.json`` holds the shares, the check metrics and the files written.

Hand-checking: read each numbered item and mark it in the file's checklist line (``[x]`` = a careful
reviewer would also set this record aside); RESULTS.md reports the counts.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import random
import sys
import time
from pathlib import Path
from typing import Any

from tunegate.core.checks import CanonicalBatch, build_check
from tunegate.core.ingest import CANONICAL_FILE, ingest

FIELDS = ("instruction", "input", "output")
SHOW_CHARS = 1200


def main() -> int:
    repo = Path(__file__).resolve().parents[2]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpora", type=Path, default=repo.parent / "shared" / "corpora")
    ap.add_argument("--work", type=Path, default=Path("/tmp/tunegate-clean-review"))
    ap.add_argument("--out", type=Path, default=repo / "bench" / "faiss" / "review")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sample", type=int, default=50)
    ap.add_argument("--only", nargs="*", help="corpus names (file names without .jsonl.gz)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    corpora = sorted(args.corpora.glob("*.jsonl.gz")) if args.corpora.is_dir() else []
    if not corpora:
        print(f"skipped: no corpora (*.jsonl.gz) in {args.corpora}", file=sys.stderr)
        return 77
    if args.only:
        corpora = [c for c in corpora if c.name.removesuffix(".jsonl.gz") in args.only]
    args.out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {}
    print(f"{'corpus':32} {'records':>8} {'near_duplicate':>15} {'embedding_outlier':>18} {'seconds':>8}")
    for path in corpora:
        name = path.name.removesuffix(".jsonl.gz")
        summary[name] = review(path, name, args)
        s = summary[name]
        shares = [f"{s['flagged'].get(r, 0):>6} {s['share'].get(r, 0.0):>7.2%}"
                  for r in ("near_duplicate", "embedding_outlier")]
        print(f"{name:32} {s['records']:>8} {shares[0]:>15} {shares[1]:>18} {s['seconds']:>8.1f}")
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return 0


def review(path: Path, name: str, args: argparse.Namespace) -> dict[str, Any]:
    import pyarrow.parquet as pq

    work = args.work / name
    if not (work / CANONICAL_FILE).exists():
        ingest([str(path)], work)
    batch = CanonicalBatch(work)
    started = time.perf_counter()
    results = {c: build_check(c).run(batch) for c in ("near_duplicate", "embedding_outlier")}
    seconds = time.perf_counter() - started
    table = pq.read_table(work / CANONICAL_FILE, columns=["id", "task", "source", *FIELDS]).to_pylist()
    n = len(table)
    out: dict[str, Any] = {"records": n, "seconds": round(seconds, 1), "flagged": {}, "share": {}, "files": {},
                           "metrics": {c: _small(r.metrics) for c, r in results.items()},
                           "issues": {c: [i.to_json() for i in r.issues] for c, r in results.items()}}
    for check, result in results.items():
        by_reason: dict[str, list[Any]] = {}
        for f in result.findings:
            by_reason.setdefault(f.reason, []).append(f)
        for reason, findings in sorted(by_reason.items()):
            rows = {f.row for f in findings}
            out["flagged"][reason] = len(rows)
            out["share"][reason] = round(len(rows) / n, 4) if n else 0.0
            rng = random.Random(f"{args.seed}-{name}-{reason}")
            sample = sorted(rng.sample(findings, min(args.sample, len(findings))), key=lambda f: f.row)
            target = args.out / f"{name}.{reason}.md"
            if check == "near_duplicate":
                text = _near_duplicate_page(name, reason, sample, table, len(rows), n)
            else:
                text = _outlier_page(name, reason, sample, table, result, len(rows), n)
            target.write_text(text, encoding="utf-8")
            out["files"][reason] = str(target.relative_to(args.out.parent.parent.parent)
                                       if target.is_relative_to(args.out.parent.parent.parent) else target)
    return out


def _small(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k not in ("embedding",)}


def _fenced(text: str) -> str:
    # escaped and fenced: the page is read as Markdown or HTML, and record text must never render as markup
    return "```text\n" + html.escape(text, quote=False).replace("```", "` ` `") + "\n```"


def _fields(record: dict[str, Any]) -> list[str]:
    lines = []
    for f in FIELDS:
        value = record.get(f) or ""
        cut = len(value) - SHOW_CHARS
        shown = value if cut <= 0 else f"{value[:SHOW_CHARS]} [... {cut} more chars]"
        lines.append(f"- **{f}** ({len(value)} chars):\n\n{_fenced(shown)}")
    return lines


def _differences(a: dict[str, Any], b: dict[str, Any], limit: int = 12) -> list[str]:
    """Word-level differences over the whole fields (the shown text is cut at SHOW_CHARS)."""
    from difflib import SequenceMatcher

    out = []
    for f in FIELDS:
        wa, wb = (a.get(f) or "").split(), (b.get(f) or "").split()
        if wa == wb:
            out.append(f"{f}: same words" + (" (both empty)" if not wa else ""))
            continue
        ops = [op for op in SequenceMatcher(None, wa, wb, autojunk=False).get_opcodes() if op[0] != "equal"]
        shown = [f"{' '.join(wa[i1:i2])[:150]!r} -> {' '.join(wb[j1:j2])[:150]!r}" for _, i1, i2, j1, j2 in ops[:limit]]
        out.append(f"{f}: " + " | ".join(shown) + (f" | ... {len(ops) - limit} more" if len(ops) > limit else ""))
    return ["**differences (flagged -> representative, whole fields)**", "", _fenced("\n".join(out))]


def _header(name: str, reason: str, flagged: int, n: int, shown: int) -> list[str]:
    return [f"# {name}: `{reason}` ({flagged} of {n} records, {flagged / max(n, 1):.2%}); {shown} sampled",
            "", "Mark each item: `[x]` a careful reviewer would also set the record aside, `[ ]` not.", ""]


def _near_duplicate_page(name: str, reason: str, sample: list[Any], table: list[dict[str, Any]],
                         flagged: int, n: int) -> str:
    lines = _header(name, reason, flagged, n, len(sample))
    for k, f in enumerate(sample, 1):
        rec = table[f.row]
        d = f.detail
        lines += [f"## {k}. [ ] `{rec['id']}` (task {rec.get('task') or rec.get('source')}) score {f.score}",
                  "", f"detail: `{json.dumps(d, sort_keys=True)}`", "", "**flagged record**", ""]
        lines += _fields(rec)
        rep_row = d.get("representative_row")
        lines += ["", f"**representative** `{d.get('representative')}`"
                  + (f" (task {table[rep_row].get('task')})" if rep_row is not None else f" (in {d.get('in')})"), ""]
        if rep_row is not None:
            lines += _fields(table[rep_row])
            lines += ["", *_differences(rec, table[rep_row])]
        elif reason == "contributor_flood":
            lines.append(f"(contributor flood: {d.get('contributor')})")
        else:
            lines.append("(a history record: see the history's accepted batches)")
        lines.append("")
    return "\n".join(lines) + "\n"


def _outlier_page(name: str, reason: str, sample: list[Any], table: list[dict[str, Any]], result: Any,
                  flagged: int, n: int) -> str:
    lines = _header(name, reason, flagged, n, len(sample))
    groups: dict[str, list[int]] = {}
    for i, rec in enumerate(table):
        groups.setdefault(rec.get("task") or rec.get("source") or "(none)", []).append(i)
    flagged_rows = {f.row for f in result.findings}
    for k, f in enumerate(sample, 1):
        rec = table[f.row]
        d = f.detail
        lines += [f"## {k}. [ ] `{rec['id']}` (group {d.get('group')}) score {f.score}", "",
                  f"detail: `{json.dumps(d, sort_keys=True)}`", "", "**flagged record**", ""]
        lines += _fields(rec)
        members = [i for i in groups.get(d.get("group"), []) if i not in flagged_rows and i != f.row]
        rng = random.Random(f.row)
        typical = rng.sample(members, min(3, len(members)))
        lines += ["", f"**typical records of its group** ({len(groups.get(d.get('group'), []))} records; "
                  "3 unflagged ones at random)", ""]
        for i in typical:
            lines += [f"*`{table[i]['id']}`*", ""]
            lines += _fields(table[i])
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
