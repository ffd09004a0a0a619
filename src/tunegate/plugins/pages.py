"""The plugin's HTML: the DAG index, a DAG's nights, a night's review and one record.

Every value is escaped (an autoescaping jinja2 environment; record text, ids, reasons and phrases come from the
data, possibly from an attacker), and control, bidi and other invisible characters of record text are shown as
``\\uXXXX`` so that a record cannot disguise itself. The pages have no script and load nothing: inline CSS, plain
links and one plain form; the app's Content-Security-Policy forbids anything else.
"""

from __future__ import annotations

import json
from collections import Counter
from functools import cache
from typing import TYPE_CHECKING, Any

from tunegate.core.schema import visible
from tunegate.plugins.nights import Night

if TYPE_CHECKING:
    import jinja2

    from tunegate.core.review import Item, Review



@cache
def environment() -> jinja2.Environment:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("tunegate.plugins", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["visible"] = visible
    env.filters["pretty"] = lambda v: visible(json.dumps(v, indent=2, ensure_ascii=False, sort_keys=True,
                                                         default=str))
    return env


def _render(name: str, **context: Any) -> str:
    return environment().get_template(name).render(**context)


def render_error(title: str, message: str) -> str:
    return _render("error.html.j2", title=title, message=message)


def render_index(dags: list[str], *, user: str) -> str:
    return _render("index.html.j2", dags=dags, user=user)


def render_nights(dag_id: str, nights: list[Night], *, user: str) -> str:
    return _render("nights.html.j2", dag_id=dag_id, nights=nights, user=user)


def decision_notice(action: str, count: int, skipped: int, announced: str | None = None) -> str:
    done = "released" if action == "release" else "confirmed as poison"
    notice = f"{count} record(s) {done}."
    if announced == "event":
        notice += " The release was announced to the fine-tuning side (an event of the released Asset)."
    elif announced == "none":
        notice += " No DAG consumes this pipeline's released Asset: nothing was announced."
    elif announced == "failed":
        notice += (" Announcing it to the fine-tuning side failed (the API server's log says why); the release is "
                   "recorded in the audit log.")
    if skipped:
        notice += f" {skipped} selected record(s) left alone (already decided, or their content is already published)."
    return notice


def render_review(review: Review, *, dag_id: str, date: str, items: list[Item], max_rows: int, user: str,
                  filters: dict[str, str], csrf_token: str | None, notice: str | None, error: str | None) -> str:
    statuses = Counter(i.status for i in review.items)
    reasons = sorted({r for i in review.items for r in i.reasons})
    return _render("review.html.j2", dag_id=dag_id, date=date, verdict=review.verdict, total=len(review.items),
                   statuses=statuses, reasons=reasons, items=items[:max_rows], shown=min(len(items), max_rows),
                   matched=len(items), user=user, filters=filters, csrf_token=csrf_token, notice=notice,
                   error=error, halted=review.verdict == "halt")


def render_record(records: list[dict[str, Any]], *, dag_id: str, date: str, user: str) -> str:
    return _render("record.html.j2", records=records, dag_id=dag_id, date=date, user=user)
