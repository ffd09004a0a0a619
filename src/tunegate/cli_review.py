"""``tunegate review``: list, show, release and confirm the quarantined records of a night (core:
:mod:`tunegate.core.review`). Exit codes: 0 done (a decision with nothing left to do included), 2 no committed
result set, an unknown id, a refused decision, bad arguments."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tunegate.core.schema import visible

_SELECTOR_HELP = "one of --id (repeatable), --reason or --phrase says which quarantined records"


def add_review_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``review`` subcommand and its four commands, on the ``tunegate`` parser's subparsers."""
    r = sub.add_parser("review", help="review a quarantined night: list, show, release, confirm as poison",
                       description="Exit codes: 0 done, 2 no committed result set, unknown record or refused "
                                   "decision. Every decision is appended to DIR/audit.jsonl (docs/review.md).")
    rsub = r.add_subparsers(dest="review_command", required=True)
    ls = rsub.add_parser("list", help="the quarantined records: id, task, reasons, score, status")
    ls.add_argument("dir", metavar="DIR", help="a batch output directory (holds summary.json)")
    ls.add_argument("--reason", help="only records quarantined for this reason code")
    ls.add_argument("--phrase", help="only records whose evidence names this poison phrase")
    ls.add_argument("--status", choices=("pending", "released", "confirmed"), help="only records in this state")
    ls.add_argument("--json", action="store_true", help="one JSON object per record instead of the table")
    sh = rsub.add_parser("show", help="one quarantined record in full: fields, reasons, evidence, decisions")
    sh.add_argument("dir", metavar="DIR")
    sh.add_argument("id", metavar="ID")
    sh.add_argument("--json", action="store_true", help="print the record as JSON")
    for name, what in (("release", "publish records to the fine-tuning side as a follow-up file DIR/released/..."),
                       ("confirm", "confirm records as poison; with a history, later nights quarantine their copies")):
        d = rsub.add_parser(name, help=what, description=f"{what}. {_SELECTOR_HELP}.")
        d.add_argument("dir", metavar="DIR")
        group = d.add_mutually_exclusive_group(required=True)
        group.add_argument("--id", action="append", dest="ids", metavar="ID", help="a record id (repeatable)")
        group.add_argument("--reason", help="every quarantined record with this reason code")
        group.add_argument("--phrase", help="every quarantined record whose evidence names this poison phrase")
        d.add_argument("--by", required=True, metavar="WHO", help="who decides (kept in the audit log)")
        d.add_argument("--why", required=True, metavar="TEXT", help="why (kept in the audit log)")
        d.add_argument("--override", action="store_true",
                       help="decide against an earlier decision (release a confirmed record, confirm a released one)")
        d.add_argument("--history", metavar="HDIR",
                       help="history whose known poison changes (default: the history the night was added to)")
        d.add_argument("--json", action="store_true", help="print the result as JSON")
    for parser in (r, ls, sh, *(rsub.choices[n] for n in ("release", "confirm"))):
        parser.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
        parser.add_argument("-q", "--quiet", action="store_true", help=argparse.SUPPRESS)
    return r  # type: ignore[no-any-return]


def run_review(args: argparse.Namespace) -> int:
    from tunegate.core.review import Review, Selector

    review = Review.open(args.dir)
    for warning in review.warnings:  # on stderr: --json output stays parseable
        print(f"tunegate: warning: {warning}", file=sys.stderr)
    if args.review_command == "list":
        return _list(review, Selector(reason=args.reason, phrase=args.phrase, status=args.status), as_json=args.json)
    if args.review_command == "show":
        return _show(review, args.id, as_json=args.json)
    selector = Selector(ids=tuple(args.ids or ()), reason=args.reason, phrase=args.phrase)
    decide = review.release if args.review_command == "release" else review.confirm
    result = decide(selector, by=args.by, why=args.why, override=args.override, history_dir=args.history)
    print(json.dumps(result.to_json(), indent=2, ensure_ascii=False) if args.json else visible(result.message()))
    return 0


def _list(review: Any, selector: Any, *, as_json: bool) -> int:
    items = review.list(selector)
    if as_json:
        for item in items:
            print(json.dumps(item.to_json(), ensure_ascii=False, sort_keys=True))
        return 0
    print(f"{review.dir}: verdict {review.verdict}, {len(review.items)} quarantined, {len(items)} shown")
    rows = [("ID", "TASK", "REASONS", "SCORE", "STATUS")]
    rows += [(_cut(i.id, 40), _cut(i.task or "-", 40), _cut(",".join(i.reasons), 60), f"{i.score:.3g}", i.status)
             for i in items]
    widths = [max(len(r[c]) for r in rows) for c in range(5)]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    return 0


def _show(review: Any, record_id: str, *, as_json: bool) -> int:
    records = review.show(record_id)
    if as_json:
        print(json.dumps(records, indent=2, ensure_ascii=False, sort_keys=True, default=str))
        return 0
    for rec in records:
        print(visible(f"record {rec['id']}  status: {rec['status']}  reasons: {', '.join(rec['reasons'])}"))
        for name in ("task", "source", "contributor", "content_sha256"):
            print(visible(f"  {name}: {rec.get(name)}"))
        print(visible(f"  from: {rec.get('source_file')}:{rec.get('source_line')}"))
        for name in ("instruction", "input", "output"):
            print(f"  {name}:")
            print(_indent(rec.get(name) or "", 4))
        for message in rec.get("messages") or ():
            print(visible(f"  [{message.get('role')}]"))
            print(_indent(message.get("content") or "", 4))
        print("  evidence:")
        for f in rec["findings"]:
            print(visible(f"    - {f['check']} / {f['reason']} (score {f['score']})"))
            print(_indent(json.dumps(f["detail"], indent=2, ensure_ascii=False, sort_keys=True), 8))
        print("  decisions:" + ("" if rec["decisions"] else " none (pending)"))
        for d in rec["decisions"]:
            print(visible(f"    - {d}"))
    return 0


def _cut(text: str, width: int) -> str:
    text = visible(" ".join(text.split()))
    return text if len(text) <= width else text[:width - 1] + "…"


def _indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "\n".join(pad + visible(line) for line in text.split("\n"))


