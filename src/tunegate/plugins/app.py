"""The plugin's FastAPI app, mounted by the API server under ``/tunegate`` (see :mod:`tunegate.plugins.plugin`).

Airflow does not authenticate a plugin's app (a mounted app inherits none of the core API's dependencies), so
every route here declares Airflow's own dependencies from ``airflow.api_fastapi.core_api.security``:
``get_user`` (the JWT of the ``Authorization: Bearer`` header, else the UI's ``_token`` cookie, verified by the
configured auth manager) and ``requires_access_dag(method)``, which asks the auth manager's ``is_authorized_dag``
about the ``dag_id`` of the path. Reading a night needs ``GET`` on its DAG, a decision ``PUT`` (edit). A decision
is recorded with ``by`` = the authenticated user's name, never a value of the request.

Routes (relative to ``/tunegate``)::

    GET  /                                   the DAGs with nights that the user may read
    GET  /{dag_id}/                          the DAG's nights: verdict, counts, report and review links
    GET  /{dag_id}/{date}/report             report.html (also /report.html), and its suite pages
    GET  /{dag_id}/{date}/data_docs/{page}     under data_docs/ (nothing else of the run directory)
    GET  /{dag_id}/{date}/review             the quarantined records, their status and the decision form
    POST /{dag_id}/{date}/review             release or confirm the ticked records (form; CSRF token)
    GET  /{dag_id}/{date}/record?id=ID       one quarantined record in full
    GET  /{dag_id}/api/nights                JSON: the nights
    GET  /{dag_id}/{date}/api/items          JSON: the quarantined records (?reason= &status= &phrase=)
    GET  /{dag_id}/{date}/api/record?id=ID   JSON: one record in full
    POST /{dag_id}/{date}/api/release        JSON: {"ids": [...] | "reason" | "phrase", "why", "override"}
    POST /{dag_id}/{date}/api/confirm        JSON: the same
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Annotated, Any, Literal
from urllib.parse import urlencode, urlsplit

from airflow.api_fastapi.app import get_auth_manager  # noqa: TID251 (the plugin runs inside the API server)
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag  # noqa: TID251
from airflow.configuration import conf  # noqa: TID251
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunegate.exceptions import ReviewError, TunegateError
from tunegate.plugins import nights, pages

#: Headers of every page: no script, nothing from the network, no framing by another site. The reports are
#: static pages with inline CSS and SVG only; this makes the browser enforce it as well.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                               "form-action 'self'; frame-ancestors 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
#: At most this many records are listed on the review page (filters narrow it; the JSON lists them all).
MAX_ROWS = 1000
#: The form field that carries the review form's CSRF token.
CSRF_FIELD = "csrf_token"

CanRead = Depends(requires_access_dag("GET"))
CanEdit = Depends(requires_access_dag("PUT"))
router = APIRouter()


def create_app() -> FastAPI:
    """The app the plugin mounts. No OpenAPI page: its routes are documented in docs/serving.md."""
    app = FastAPI(title="tunegate", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(router)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(nights.NotFound, _not_found)
    return app


# ---------------------------------------------------------------------------------------------------- errors


async def _http_error(request: Request, exc: Exception) -> Response:
    """A browser that is not logged in goes to Airflow's login page and comes back; API callers get the 401."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 401 and request.method == "GET" and not _is_api(request) and _wants_html(request):
        login = get_auth_manager().get_url_login(next_url=str(request.url))
        return RedirectResponse(login, status_code=303)
    return await http_exception_handler(request, exc)


async def _not_found(request: Request, exc: Exception) -> Response:
    # The same answer for a night that does not exist and for a name the URL may not reach.
    if _is_api(request) or not _wants_html(request):
        return JSONResponse({"detail": "Not Found"}, status_code=404)
    return _page(pages.render_error("Not found", "No such night or page."), status_code=404)


def _is_api(request: Request) -> bool:
    return "/api/" in request.url.path


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def _page(body: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status_code, headers=PAGE_HEADERS)


def _user_name(user: Any) -> str:
    name = user.get_name()
    if not name:  # an auth manager whose user has no name: the audit log needs one
        raise HTTPException(403, "the authenticated user has no name to record in the audit log")
    return str(name)


# ---------------------------------------------------------------------------------------------------- pages


@router.get("/", response_class=HTMLResponse)
def index(user: GetUserDep) -> HTMLResponse:
    try:
        dags = nights.list_dags()
    except nights.NotFound as exc:
        return _page(pages.render_error("Not configured", str(exc)), status_code=503)
    allowed = get_auth_manager().filter_authorized_dag_ids(dag_ids=set(dags), user=user, method="GET")
    return _page(pages.render_index([d for d in dags if d in allowed], user=_user_name(user)))


@router.get("/{dag_id}/", response_class=HTMLResponse, dependencies=[CanRead])
def dag_nights(dag_id: str, user: GetUserDep) -> HTMLResponse:
    return _page(pages.render_nights(dag_id, nights.list_nights(dag_id), user=_user_name(user)))


def _report(dag_id: str, date: str) -> FileResponse:
    path = nights.served_file(nights.run_dir(dag_id, date), nights.REPORT_FILE)
    return FileResponse(path, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


@router.get("/{dag_id}/{date}/report", response_class=FileResponse, dependencies=[CanRead])
def report(dag_id: str, date: str) -> FileResponse:
    return _report(dag_id, date)


@router.get("/{dag_id}/{date}/report.html", response_class=FileResponse, dependencies=[CanRead])
def report_html(dag_id: str, date: str) -> FileResponse:
    return _report(dag_id, date)


@router.get("/{dag_id}/{date}/data_docs/{page}", response_class=FileResponse, dependencies=[CanRead])
def data_docs(dag_id: str, date: str, page: str) -> FileResponse:
    path = nights.served_file(nights.run_dir(dag_id, date), f"{nights.DATA_DOCS_DIR}/{page}")
    return FileResponse(path, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


def _open(dag_id: str, date: str) -> Any:
    from tunegate.core.review import Review

    night = nights.run_dir(dag_id, date)
    try:
        return Review.open(night)
    except TunegateError as exc:  # no committed result set (a night still running, or killed half-way)
        raise nights.NotFound(str(exc)) from exc


def _selector(*, ids: tuple[str, ...] = (), reason: str | None = None, phrase: str | None = None,
              status: str | None = None) -> Any:
    from tunegate.core.review import Selector

    try:
        return Selector(ids=ids, reason=reason or None, phrase=phrase or None, status=status or None)
    except ReviewError as exc:
        raise HTTPException(400, str(exc)) from exc


@router.get("/{dag_id}/{date}/review", response_class=HTMLResponse, dependencies=[CanRead])
def review_page(*, dag_id: str, date: str, request: Request, user: GetUserDep,
                reason: str | None = None, status: str | None = None, phrase: str | None = None,
                done: Literal["release", "confirm"] | None = None, n: int = 0, skipped: int = 0,
                announced: Literal["event", "none", "failed"] | None = None) -> HTMLResponse:
    return _review_page(dag_id, date, request, user, reason=reason, status=status, phrase=phrase,
                        notice=pages.decision_notice(done, n, skipped, announced) if done else None)


def _review_page(dag_id: str, date: str, request: Request, user: Any, *, reason: str | None = None,
                 status: str | None = None, phrase: str | None = None, notice: str | None = None,
                 error: str | None = None, status_code: int = 200) -> HTMLResponse:
    review = _open(dag_id, date)
    selector = _selector(reason=reason, phrase=phrase, status=status)
    name = _user_name(user)
    can_edit = get_auth_manager().is_authorized_dag(method="PUT", details=_dag_details(dag_id), user=user)
    body = pages.render_review(
        review, dag_id=dag_id, date=date, items=review.list(selector), max_rows=MAX_ROWS, user=name,
        filters={"reason": reason or "", "status": status or "", "phrase": phrase or ""},
        csrf_token=_csrf_token(name, dag_id, date) if can_edit else None, notice=notice, error=error)
    return _page(body, status_code=status_code)


@router.post("/{dag_id}/{date}/review", response_class=HTMLResponse, dependencies=[CanEdit])
async def review_decide(dag_id: str, date: str, request: Request, user: GetUserDep) -> Response:
    _require_same_origin(request)
    form = await request.form()
    name = _user_name(user)
    token = form.get(CSRF_FIELD)
    if not isinstance(token, str) or not hmac.compare_digest(token, _csrf_token(name, dag_id, date)):
        raise HTTPException(403, "the form is stale or was not sent by this page: reload the review page")
    action = form.get("action")
    ids = tuple(v for v in form.getlist("id") if isinstance(v, str) and v)
    why = form.get("why")
    override = form.get("override") == "on"
    if action not in ("release", "confirm"):
        raise HTTPException(400, "action must be release or confirm")
    error = None
    if not ids:
        error = "Tick at least one record."
    elif not isinstance(why, str) or not why.strip():
        error = "Say why: the reason is kept in the audit log."
    if error is None:
        try:
            result = await run_in_threadpool(_decide, dag_id, date, str(action), _selector(ids=ids), by=name,
                                             why=str(why).strip(), override=override)
        except ReviewError as exc:
            error = str(exc)
    if error is not None:
        return await run_in_threadpool(_review_page, dag_id, date, request, user, error=error, status_code=400)
    announced = await run_in_threadpool(_announce, dag_id, date, result)
    query = urlencode({"done": action, "n": result.count, "skipped": len(result.skipped),
                       **({"announced": _announcement_state(announced)} if announced else {})})
    return RedirectResponse(f"review?{query}", status_code=303)  # relative: /tunegate/{dag_id}/{date}/review


@router.get("/{dag_id}/{date}/record", response_class=HTMLResponse, dependencies=[CanRead])
def record_page(dag_id: str, date: str, user: GetUserDep, record_id: Annotated[str, Query(alias="id")]
                ) -> HTMLResponse:
    review = _open(dag_id, date)
    try:
        records = review.show(record_id)
    except ReviewError as exc:
        raise nights.NotFound(str(exc)) from exc
    return _page(pages.render_record(records, dag_id=dag_id, date=date, user=_user_name(user)))


# ---------------------------------------------------------------------------------------------------- JSON


class DecisionBody(BaseModel):
    """A decision through the JSON API: which records (one of ``ids``, ``reason``, ``phrase``) and why."""

    ids: list[str] = Field(default_factory=list)
    reason: str | None = None
    phrase: str | None = None
    why: str
    override: bool = False


@router.get("/{dag_id}/api/nights", dependencies=[CanRead])
def api_nights(dag_id: str) -> dict[str, Any]:
    return {"dag_id": dag_id, "nights": [n.to_json() for n in nights.list_nights(dag_id)]}


@router.get("/{dag_id}/{date}/api/items", dependencies=[CanRead])
def api_items(dag_id: str, date: str, reason: str | None = None, status: str | None = None,
              phrase: str | None = None) -> dict[str, Any]:
    review = _open(dag_id, date)
    items = review.list(_selector(reason=reason, phrase=phrase, status=status))
    return {"dag_id": dag_id, "date": date, "verdict": review.verdict, "quarantined": len(review.items),
            "items": [i.to_json() for i in items]}


@router.get("/{dag_id}/{date}/api/record", dependencies=[CanRead])
def api_record(dag_id: str, date: str, record_id: Annotated[str, Query(alias="id")]) -> JSONResponse:
    review = _open(dag_id, date)
    try:
        records = review.show(record_id)
    except ReviewError as exc:
        raise nights.NotFound(str(exc)) from exc
    return JSONResponse(json.loads(json.dumps(records, default=str)))


@router.post("/{dag_id}/{date}/api/{action}", dependencies=[CanEdit])
def api_decide(*, dag_id: str, date: str, action: Literal["release", "confirm"], body: DecisionBody,
               request: Request, user: GetUserDep) -> dict[str, Any]:
    _require_same_origin(request)
    if not request.headers.get("content-type", "").startswith("application/json"):
        raise HTTPException(415, "send the decision as application/json")
    selector = _selector(ids=tuple(body.ids), reason=body.reason, phrase=body.phrase)
    try:
        result = _decide(dag_id, date, action, selector, by=_user_name(user), why=body.why, override=body.override)
    except ReviewError as exc:
        raise HTTPException(400, str(exc)) from exc
    out: dict[str, Any] = result.to_json()
    out["by"] = _user_name(user)
    out["announced"] = _announce(dag_id, date, result) or None
    return out


def _announce(dag_id: str, date: str, result: Any) -> str:
    """A release made here is announced like the review DAG's (:mod:`tunegate.plugins.events`); '' for none."""
    from tunegate.plugins.events import announce_release

    if result.action != "release" or result.entry is None:
        return ""
    return announce_release(result.entry, nights.run_dir(dag_id, date), dag_id=dag_id, date=date)


def _announcement_state(message: str) -> str:
    """The review page's ``announced`` parameter for :func:`tunegate.plugins.events.announce_release`'s line."""
    return "event" if message.startswith("Announced") else "failed" if message.startswith("Announcing failed") \
        else "none"


def _decide(dag_id: str, date: str, action: str, selector: Any, *, by: str, why: str, override: bool) -> Any:
    """Release or confirm through the core review (its lock, its audit line); ``by`` is the request's user."""
    review = _open(dag_id, date)
    decide = review.release if action == "release" else review.confirm
    try:
        return decide(selector, by=by, why=why, override=override)
    except ReviewError:
        raise
    except TunegateError as exc:  # the night's lock is held (a scan of it is running), or the set changed
        raise HTTPException(409, str(exc)) from exc


# ---------------------------------------------------------------------------------------------------- security


def _dag_details(dag_id: str) -> Any:
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails  # noqa: TID251
    from airflow.models.dag import DagModel  # noqa: TID251

    return DagDetails(id=dag_id, team_name=DagModel.get_team_name(dag_id))


def _csrf_token(user: str, dag_id: str, date: str) -> str:
    """The review form's token: an HMAC of the user, DAG and night under the API server's ``[api] secret_key``.

    A page of another site cannot read it (the review page is same-origin only), so it cannot post a form that
    the UI's cookie would authenticate; a token of one user or night does not work for another."""
    secret = conf.get("api", "secret_key", fallback="")
    if not secret:
        raise HTTPException(403, "[api] secret_key is not set: the review form needs it (docs/serving.md)")
    message = "\0".join(("tunegate-review", user, dag_id, date)).encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _require_same_origin(request: Request) -> None:
    """A POST that names an origin (every browser sends ``Origin`` on a POST) must come from this server."""
    origin = request.headers.get("origin") or _origin_of(request.headers.get("referer"))
    if origin is None:
        return  # not a browser (a script with a bearer token): nothing to forge
    allowed = {f"{request.url.scheme}://{request.url.netloc}"}
    base = conf.get("api", "base_url", fallback="")
    if base:
        allowed.add(_origin_of(base) or "")
    if origin.rstrip("/") not in allowed:
        raise HTTPException(403, "cross-origin request refused")


def _origin_of(url: str | None) -> str | None:
    if not url:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None


__all__ = ["PAGE_HEADERS", "DecisionBody", "create_app"]
