"""Which files a URL of the plugin may reach: run directories ``{TUNEGATE_DATA_ROOT}/{dag_id}/{YYYY-MM-DD}`` and,
inside one, the report and the suite pages it links to. Airflow-free, so it is tested without a server.

A URL names a DAG, a date and a page, never a path: the DAG id and the date are checked against their shapes,
the run directory must resolve inside the data root (a symlink out of it is refused), and the only files served
are ``report.html`` and the ``data_docs/*.html`` pages the gate copied next to it (also resolved, also inside).
Anything else is :class:`NotFound`, the same answer as a night that does not exist.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunegate.exceptions import TunegateError

DATA_ROOT_ENV = "TUNEGATE_DATA_ROOT"  # tunegate._airflow.DATA_ROOT_ENV (not imported: that module loads the SDK)
REPORT_FILE = "report.html"  # tunegate.core.outputs names, not imported: that module loads the gate's I/O
DATA_DOCS_DIR = "data_docs"
SUMMARY_FILE = "summary.json"

#: Airflow's dag_id shape (``airflow.sdk.definitions._internal.node.KEY_REGEX``); all dots is refused as well.
_DAG_ID = re.compile(r"^[\w.-]{1,250}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_PAGE = re.compile(r"^[\w.-]{1,200}\.html$")


class NotFound(TunegateError):
    """No such night or page (or one the URL may not reach): the app answers 404."""


def is_dag_id(value: str) -> bool:
    return bool(_DAG_ID.match(value)) and value.strip(".") != ""


def is_date(value: str) -> bool:
    return bool(_DATE.match(value))


def data_root() -> Path:
    root = os.environ.get(DATA_ROOT_ENV)
    if not root:
        raise NotFound(f"{DATA_ROOT_ENV} is not set in the API server's environment")
    return Path(root).resolve()


def _inside(path: Path, parent: Path) -> Path:
    resolved = path.resolve()
    if not resolved.is_relative_to(parent):
        raise NotFound("outside the data root")
    return resolved


def dag_dir(dag_id: str, root: Path | None = None) -> Path:
    root = root or data_root()
    if not is_dag_id(dag_id):
        raise NotFound(f"not a DAG id: {dag_id!r}")
    path = _inside(root / dag_id, root)
    if not path.is_dir():
        raise NotFound(f"no nights of {dag_id!r}")
    return path


def run_dir(dag_id: str, date: str, root: Path | None = None) -> Path:
    """The night's directory; :class:`NotFound` unless it exists, has the layout's shape and lies inside the root."""
    root = root or data_root()
    if not is_dag_id(dag_id) or not is_date(date):
        raise NotFound(f"no night {dag_id!r} {date!r}")
    path = _inside(root / dag_id / date, root)
    if not path.is_dir():
        raise NotFound(f"no night {dag_id!r} {date!r}")
    return path


def served_file(night: Path, page: str) -> Path:
    """``report.html`` or ``data_docs/<page>.html`` of ``night``; :class:`NotFound` for any other name."""
    if page == REPORT_FILE:
        path, parent = night / REPORT_FILE, night
    elif page.startswith(DATA_DOCS_DIR + "/") and _PAGE.match(page[len(DATA_DOCS_DIR) + 1:]):
        path, parent = night / page, (night / DATA_DOCS_DIR).resolve()
    else:
        raise NotFound(f"not a page of the night: {page!r}")
    resolved = _inside(path, parent)  # a symlink may not lead out of its folder, nor to another kind of file
    if resolved.parent != parent or resolved.suffix != ".html" or not resolved.is_file():
        raise NotFound(f"no {page} in this night")
    return resolved


@dataclass(frozen=True)
class Night:
    """One night of a DAG as the index shows it (from its summary.json; ``None`` when it has none yet)."""

    date: str
    verdict: str | None
    counts: dict[str, int]
    has_report: bool
    has_review: bool  # a committed result set with a quarantine file

    def to_json(self) -> dict[str, Any]:
        return {"date": self.date, "verdict": self.verdict, "counts": self.counts, "has_report": self.has_report,
                "has_review": self.has_review}


def list_dags(root: Path | None = None) -> list[str]:
    root = root or data_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if is_dag_id(p.name) and p.is_dir() and _has_nights(p))


def _has_nights(path: Path) -> bool:
    return any(is_date(p.name) and p.is_dir() for p in path.iterdir())


def list_nights(dag_id: str, root: Path | None = None) -> list[Night]:
    """The DAG's nights, newest first."""
    base = dag_dir(dag_id, root)
    nights = []
    for path in sorted((p for p in base.iterdir() if is_date(p.name) and p.is_dir()), reverse=True):
        summary = _summary(path / SUMMARY_FILE)
        counts = {k: int(summary[k]) for k in ("total", "accepted", "quarantined", "rejected")
                  if isinstance(summary.get(k), int)}
        verdict = summary.get("verdict")
        nights.append(Night(path.name, str(verdict) if verdict else None, counts, (path / REPORT_FILE).is_file(),
                            bool(summary) and bool(counts.get("quarantined"))))
    return nights


def _summary(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
