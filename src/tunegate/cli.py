"""The ``tunegate`` command: the same core as the Airflow operators, for local use and CI.

    tunegate scan INPUT... --out DIR [--format auto|alpaca|dolly|sharegpt|openai|superni|parquet|csv]
    tunegate review list|show|release|confirm DIR ...   (tunegate.cli_review)
    tunegate trace DIR (ID | CONTENT_SHA256) [--json]  /  tunegate verify DIR [--sources] [--json]
    tunegate serve-model DIR [--port N]   (tunegate.cli_serve)

Exit codes: 0 verdict pass or quarantine, 1 halt, 2 usage error or unreadable input, 3 internal error.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import sys
from pathlib import Path
from typing import Any

from tunegate import __version__
from tunegate.exceptions import TunegateError

EXIT_OK, EXIT_HALT, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
#: OS errors that come from where the outputs go, not from a bug: a clear exit 2, never a traceback.
_ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS,
                                 errno.ENOTDIR, errno.EEXIST, errno.EISDIR})


def _parser() -> argparse.ArgumentParser:
    from tunegate.core.readers import FORMATS

    p = argparse.ArgumentParser(prog="tunegate", description="Gate an instruction-tuning corpus before fine-tuning.")
    p.add_argument("--version", action="version", version=f"tunegate {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("scan", help="ingest, check and gate a batch; write accepted/quarantine/rejected/report",
                       description="Exit codes: 0 pass or quarantine, 1 halt, 2 usage or unreadable input.")
    s.add_argument("inputs", nargs="+", metavar="INPUT", help="files, directories, globs or fsspec URLs")
    s.add_argument("--out", required=True, metavar="DIR", help="output directory (created if missing)")
    s.add_argument("--format", default="auto", choices=FORMATS, help="input format (default: auto-detect)")
    s.add_argument("--container", metavar="NAME",
                   help="input container: json, jsonl, parquet, csv, tsv, arrow, hf-disk (default: from the file)")
    s.add_argument("--layout", metavar="NAME",
                   help="record layout: alpaca, dolly, sharegpt, openai, superni, canonical (default: detected)")
    s.add_argument("--column", action="append", dest="columns", metavar="SRC=DST",
                   help="map an input column onto a canonical field, e.g. prompt=instruction (repeatable)")
    s.add_argument("--policy", metavar="FILE", help="gate policy, YAML or JSON (see docs/policy.md)")
    s.add_argument("--check", action="append", dest="checks", metavar="NAME",
                   help="run only these checks (repeatable; default: the policy's checks, which are all of "
                        "exact_duplicate, near_duplicate, embedding_outlier, poison_trigger, poison_content)")
    s.add_argument("--skip-check", action="append", dest="skip_checks", metavar="NAME",
                   help="turn this check off (repeatable)")
    s.add_argument("--option", action="append", dest="options", metavar="CHECK.KEY=VALUE",
                   help="set a check option, e.g. near_duplicate.threshold=0.97 (repeatable; VALUE is YAML)")
    s.add_argument("--suite", action="append", dest="suites", metavar="NAME_OR_PATH",
                   help="Great Expectations suite to validate (repeatable; default: the policy's suites, "
                        "instruction_record and instruction_quality)")
    s.add_argument("--no-suite", action="store_true", help="run no Great Expectations suite")
    s.add_argument("--history", metavar="DIR",
                   help="history of accepted batches: near_duplicate/embedding_outlier compare against it, "
                        "poison_content takes its refusal baseline from its earlier nights, and a batch that does not "
                        "halt is added to it")
    s.add_argument("--batch-id", metavar="ID", help="name of this batch in the history (default: DIR's name)")
    s.add_argument("--max-quarantined-fraction", type=float, metavar="F", help="override the policy's value")
    s.add_argument("--max-rejected-fraction", type=float, metavar="F", help="override the policy's value")
    s.add_argument("--keep-work", action="store_true", help="keep DIR/work (canonical table and findings)")
    s.add_argument("--batch-size", type=int, default=10_000, help="records per in-memory chunk (default 10000)")
    s.add_argument("--json", action="store_true", help="print summary.json to stdout instead of the short summary")
    s.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    s.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    h = sub.add_parser("history", help="operate the history of accepted batches (show, update, rebuild)",
                       description="Exit codes: 0 done, 2 unusable history or bad arguments.")
    hsub = h.add_subparsers(dest="history_command", required=True)
    hs = hsub.add_parser("show", help="verify the files and print a summary of the history")
    hs.add_argument("dir", metavar="HISTORY_DIR")
    hu = hsub.add_parser("update", help="add an accepted.parquet to the history (replaces a batch of the same id)")
    hu.add_argument("dir", metavar="HISTORY_DIR")
    hu.add_argument("accepted", metavar="ACCEPTED_PARQUET")
    hu.add_argument("--batch-id", help="name of the batch (default: the folder holding ACCEPTED_PARQUET)")
    hu.add_argument("--cache-dir", help="embedding cache to reuse (e.g. OUT/work/embeddings)")
    hr = hsub.add_parser("rebuild", help="re-embed the accepted batches listed in the manifest")
    hr.add_argument("dir", metavar="HISTORY_DIR")
    hr.add_argument("--backend", help="switch the embedding backend")
    hr.add_argument("--fields", help="switch the embedded fields, e.g. instruction+input")
    hr.add_argument("--cache-dir", help="embedding cache to reuse")
    for parser in (h, hs, hu, hr):
        parser.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
        parser.add_argument("-q", "--quiet", action="store_true", help=argparse.SUPPRESS)
    e = sub.add_parser("embeddings", help="prepare embedding backends (distill the static model)",
                       description="Exit codes: 0 done, 2 missing optional extra or bad arguments.")
    esub = e.add_subparsers(dest="embeddings_command", required=True)
    ed = esub.add_parser("distill", help="distill the bundled all-MiniLM-L6-v2 into a model2vec static model "
                                         "(the 'static' backend's model_path), once, offline")
    ed.add_argument("dir", metavar="DIR", help="model directory to write (replaced if it exists)")
    ed.add_argument("--dims", type=int, default=256, metavar="N", help="PCA dimensions per field (default 256)")
    for parser in (e, ed):
        parser.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
        parser.add_argument("-q", "--quiet", action="store_true", help=argparse.SUPPRESS)
    m = sub.add_parser("summary", help="print the verdict and output paths of a finished batch directory",
                       description="Exit code: 0 pass or quarantine, 1 halt, 2 no committed result set in DIR "
                                   "(missing, incomplete or from an interrupted run).")
    m.add_argument("dir", metavar="DIR", help="a batch output directory (holds summary.json)")
    m.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    m.add_argument("-q", "--quiet", action="store_true", help=argparse.SUPPRESS)
    t = sub.add_parser("trace", help="where a record came from (file, line), where it went, the checks it passed",
                       description="Exit code: 0 found, 2 no such record, or no committed manifest in DIR.")
    t.add_argument("dir", metavar="DIR", help="a batch output directory (holds manifest.json)")
    t.add_argument("key", metavar="ID_OR_CONTENT_SHA256", help="the record's id or its content_sha256")
    v = sub.add_parser("verify", help="recompute the sha256 of every file the night's manifest names (tamper check)",
                       description="Exit code: 0 every file matches, 1 a mismatch (named), 2 nothing to verify.")
    v.add_argument("dir", metavar="DIR", help="a batch output directory (holds manifest.json)")
    v.add_argument("--sources", action="store_true",
                   help="also recompute the inputs, the policy file and the suite files (outside DIR)")
    for parser in (t, v):
        parser.add_argument("--json", action="store_true", help="print the result as JSON")
        parser.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
        parser.add_argument("-q", "--quiet", action="store_true", help=argparse.SUPPRESS)
    from tunegate.cli_review import add_review_parser

    add_review_parser(sub)
    from tunegate.cli_serve import add_serve_parser

    add_serve_parser(sub)
    return p


def _print_summary(summary: dict[str, object]) -> int:
    from tunegate.core.gate import halt_message

    print(halt_message(summary))
    status: dict[str, dict[str, str]] = summary.get("check_status") or {}  # type: ignore[assignment]
    if status:
        from tunegate.core.policy import in_run_order

        status = in_run_order(status)  # summary.json keeps its keys sorted
        print("  checks: " + ", ".join(f"{name} {s['status']}" for name, s in status.items()))
        for name, s in status.items():
            if s["status"] == "insufficient_data":
                print(f"    {name}: {s.get('reason', 'too little data to judge')}")
    history: dict[str, object] = summary.get("history") or {}  # type: ignore[assignment]
    if history:
        print(f"  history: +{history.get('added', 0)} records as {history.get('batch_id')!s} "
              f"({history.get('history_records', 0)} in all) in {history.get('dir')}")
    out = Path(str(summary["out_dir"]))
    outputs: dict[str, str] = summary["outputs"]  # type: ignore[assignment]
    for name in ("accepted", "held", "quarantine", "rejected", "summary"):
        if name in outputs:  # a halted night has held.parquet instead of accepted.parquet
            print(f"  {name}: {out / outputs[name]}")
    return EXIT_HALT if summary["verdict"] == "halt" else EXIT_OK


def _summary(args: argparse.Namespace) -> int:
    from tunegate.core.gate import load_committed

    # only a committed result set: every output present and matching the sha256 summary.json recorded
    return _print_summary(load_committed(args.dir))


def _trace(args: argparse.Namespace) -> int:
    from tunegate.core.provenance import format_trace, trace

    result = trace(args.dir, args.key)
    print(json.dumps(result, indent=2, sort_keys=True) if args.json else format_trace(result))
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    from tunegate.core.provenance import verify

    result = verify(args.dir, sources=args.sources)
    if args.json:
        print(json.dumps(result.to_json(), indent=2, sort_keys=True))
    elif result.ok:
        print(f"tunegate verify: {args.dir}: {len(result.checked)} checks, every file matches its recorded sha256")
    for problem in result.problems:
        print(f"tunegate: verify failed: {args.dir}: {problem}", file=sys.stderr)
    return EXIT_OK if result.ok else EXIT_HALT


def _history(args: argparse.Namespace) -> int:
    from tunegate.core import history

    if args.history_command == "show":
        out = history.describe_history(args.dir)
    elif args.history_command == "update":
        from tunegate.core.gate import load_committed

        load_committed(Path(args.accepted).parent)  # only a committed result set enters the history
        out = history.update_history(args.dir, args.accepted, batch_id=args.batch_id, cache_dir=args.cache_dir)
    else:
        spec = history.switched_spec(args.dir, backend=args.backend, fields=args.fields)
        out = history.rebuild_history(args.dir, spec=spec, cache_dir=args.cache_dir)
    print(json.dumps(out, indent=2, sort_keys=True))
    return EXIT_OK


def _embeddings(args: argparse.Namespace) -> int:
    from tunegate.core.embeddings import distill_static_model

    if args.dims < 1:
        raise TunegateError("--dims must be a positive number")
    print(distill_static_model(args.dir, pca_dims=args.dims))
    return EXIT_OK


def _scan(args: argparse.Namespace) -> int:
    from tunegate.core.io import expand_inputs
    from tunegate.core.pipeline import scan
    from tunegate.core.policy import load_policy

    if args.batch_size < 1:
        raise TunegateError("--batch-size must be a positive number")
    expand_inputs(args.inputs)  # fail on a missing input in milliseconds, before GX is imported
    policy = load_policy(args.policy, max_quarantined_fraction=args.max_quarantined_fraction,
                         max_rejected_fraction=args.max_rejected_fraction,
                         suites=[] if args.no_suite else args.suites)
    if args.container or args.layout or args.columns:
        from tunegate.core.readers import parse_columns

        section = dict(policy.input)
        section.update({k: v for k, v in (("container", args.container), ("layout", args.layout)) if v})
        if args.columns:
            section["columns"] = {**section.get("columns", {}), **parse_columns(args.columns, source="--column")}
        policy = policy.with_overrides(input=section)
    if args.checks is not None:
        policy = policy.with_overrides(checks=list(args.checks))
    changes: dict[str, Any] = {name: False for name in args.skip_checks or []}
    for item in args.options or []:
        check, key, value = _parse_option(item)
        if changes.get(check) is False:
            raise TunegateError(f"--option {item}: check {check!r} is turned off by --skip-check")
        changes.setdefault(check, {})[key] = value
    if changes:
        policy = policy.with_overrides(checks=changes)
    summary = scan(args.inputs, args.out, fmt=args.format, policy=policy, keep_work=args.keep_work,
                   batch_size=args.batch_size, history_dir=args.history, batch_id=args.batch_id,
                   policy_file=args.policy)
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
        return EXIT_HALT if summary["verdict"] == "halt" else EXIT_OK
    return _print_summary(summary)


def _parse_option(item: str) -> tuple[str, str, Any]:
    """``CHECK.KEY=VALUE`` -> ``(check, key, value)``; VALUE is read as YAML (numbers, booleans, lists)."""
    import yaml

    target, sep, raw = item.partition("=")
    check, dot, key = target.partition(".")
    if not sep or not dot or not check or not key:
        raise TunegateError(f"--option {item!r}: expected CHECK.KEY=VALUE, e.g. near_duplicate.threshold=0.97")
    try:
        value = yaml.safe_load(raw) if raw.strip() else raw
    except yaml.YAMLError:
        value = raw
    return check.strip(), key.strip(), value


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    from tunegate.core.progress import configure, quiet_libraries

    quiet_libraries()
    configure(bars=not args.quiet)  # bars on a terminal; log lines when stderr is a file or a pipe
    try:
        from tunegate.cli_review import run_review
        from tunegate.cli_serve import run_serve

        command = {"summary": _summary, "history": _history, "embeddings": _embeddings, "scan": _scan,
                   "review": run_review, "trace": _trace, "verify": _verify, "serve-model": run_serve}[args.command]
        return command(args)
    except TunegateError as exc:
        print(f"tunegate: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("tunegate: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        if exc.errno not in _ENVIRONMENT_ERRNOS or args.debug:
            raise
        # a full disk, a read-only or unwritable place, a file where a directory belongs: the environment,
        # not tunegate; the outputs of the run are not committed (tunegate summary refuses them)
        where = f"{exc.filename}: " if exc.filename else ""
        why = ("a file is in the way where a directory belongs" if exc.errno in (errno.EEXIST, errno.ENOTDIR)
               else exc.strerror or str(exc))
        print(f"tunegate: error: cannot write {where}{why}; free space or fix the output location, then rerun",
              file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        if args.debug:
            raise
        print(f"tunegate: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
