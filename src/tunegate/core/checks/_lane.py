"""A lane's process: ``python -m tunegate.core.checks._lane IN OUT`` (started by :mod:`._parallel`, not by people).

Reads the pickled lane (the parent's ``sys.path`` first, then the work directory, the checks, the log level, the
progress interval, the shared checks and the folder of their claims) from ``IN``, runs the checks in order, then the
shared checks it claims before any other process does (from the end backwards, :mod:`._parallel`), and writes their
results and costs, or the error that stopped them, to ``OUT`` (atomically: a missing ``OUT`` means the process died).
Log records go to stderr as one JSON object a line (``name``, ``level``, ``message``) for the parent to hand to its own
handlers. It exits when its parent dies.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import sys
import threading
import time
from pathlib import Path
from typing import Any


class _JsonLines(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            sys.stderr.write(json.dumps({"name": record.name, "level": record.levelno, "message": message}) + "\n")
            sys.stderr.flush()
        except Exception:  # a log line must never stop a check
            self.handleError(record)


def _watch_parent() -> None:
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:  # re-parented: the night's process is gone, nobody will read our results
                os._exit(3)

    threading.Thread(target=watch, name="tunegate-lane-parent", daemon=True).start()


def _portable(exc: BaseException) -> BaseException:
    """The error itself when it survives pickling, else a RuntimeError that says what it was."""
    try:
        pickle.loads(pickle.dumps(exc))  # our own bytes
    except Exception:  # any failure to round-trip
        import traceback

        return RuntimeError("".join(traceback.format_exception(exc)).rstrip())
    return exc


def main(argv: list[str]) -> int:
    source, target = Path(argv[0]), Path(argv[1])
    _watch_parent()
    with source.open("rb") as f:
        for entry in pickle.load(f):  # written by the parent into its own work directory
            if entry not in sys.path:
                sys.path.append(entry)
        spec: dict[str, Any] = pickle.load(f)
    root = logging.getLogger()
    root.handlers[:] = [_JsonLines()]
    root.setLevel(int(spec["level"]))

    from tunegate.core.checks._parallel import claim, run_in_order
    from tunegate.core.progress import configure, quiet_libraries

    configure(bars=False, interval=float(spec["interval"]))
    quiet_libraries()
    payload: Any
    try:
        results, costs = run_in_order(str(spec["work_dir"]), spec["checks"], None)
        claims = Path(spec["claims"]) if spec.get("claims") else None
        for index, check in reversed(spec.get("shared", [])):  # then the shared checks, from the end backwards
            if not claim(claims, index):
                break  # another process has it: the ones before it are left to the others
            logging.getLogger("tunegate.core.checks").info("check %s runs beside the others, in the process of "
                                                           "lane %s", check.key, spec["checks"][0].lane)
            done, spent = run_in_order(str(spec["work_dir"]), [check], None)
            results += done
            costs.update(spent)
        payload = (results, costs)
    except BaseException as exc:  # every error goes back to the parent, which raises it
        from tunegate.exceptions import TunegateError

        if not isinstance(exc, TunegateError):  # a bug: its traceback reaches the task log from here
            logging.getLogger("tunegate.core.checks").exception("a check of this lane failed")
        payload = _portable(exc)
    partial = target.with_name(target.name + ".partial")
    with partial.open("wb") as f:
        pickle.dump(payload, f)
    partial.replace(target)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
