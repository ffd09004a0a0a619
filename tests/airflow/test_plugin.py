"""The tunegate plugin in the API server: a real quarantined night (the gate on the bundled SuperNI slice, with the
quality suite's page) served through FastAPI's TestClient, authenticated by Airflow's own SimpleAuthManager (JWTs it
signs, as Airflow's API tests do): the report and its suite pages; nothing outside the night; unauthenticated and
unauthorized requests refused; a release through the review form recorded as the authenticated user, once; the JSON
API; the app mounted by Airflow's own ``create_app``; the entry point; the gate's extra link and the alert's link.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from html import unescape
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.airflow.conftest import REPO
from tests.conftest import write_jsonl
from tests.core.test_review import MAX_CHARS, small_records

pytestmark = pytest.mark.airflow

DAG = "tunegate_nightly"
DATE = "2026-01-02"
NIGHT = f"/tunegate/{DAG}/{DATE}"
#: Planted in one oversized (so quarantined) real record: its id and its text must reach no page unescaped.
HOSTILE_ID = 'task-x"><script>alert(1)</script>'
HOSTILE_TEXT = "\u202e<img src=x onerror=alert(2)>"


def build_night(base: Path) -> Path:
    """One night gated as the operators lay it out: ``{base}/{dag_id}/{date}`` (also the browser test's)."""
    from tunegate.core.checks import build_check
    from tunegate.core.pipeline import scan

    records = small_records()
    long = next(r for r in records if max(len(str(r.get(k) or "")) for k in ("instruction", "input", "output"))
                > MAX_CHARS)
    long["id"], long["input"] = HOSTILE_ID, f"{long['input']} {HOSTILE_TEXT}"
    checks = [build_check("exact_duplicate"), build_check("record_size", max_field_chars=MAX_CHARS),
              build_check("gx_suite", suite="instruction_quality")]
    out = base / DAG / DATE
    summary = scan([str(write_jsonl(base / "batch.jsonl", records))], out, checks=checks)
    assert summary["verdict"] == "quarantine" and summary["reasons"]["oversized_field"] >= 10
    assert list((out / "data_docs").glob("*.html"))
    return out


@pytest.fixture(scope="module")
def built_night(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_night(tmp_path_factory.mktemp("plugin_night"))


@pytest.fixture
def root(built_night: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh copy of the night under a data root of its own (decisions change a night)."""
    data = tmp_path / "data"
    shutil.copytree(built_night, data / DAG / DATE)
    monkeypatch.setenv("TUNEGATE_DATA_ROOT", str(data))
    return data


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def audit(night: Path) -> list[dict[str, Any]]:
    path = night / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def form_token(page: str) -> str:
    found = re.search(r'name=csrf_token value="([0-9a-f]{64})"', page)
    assert found, page[:2000]
    return found.group(1)


# ---------------------------------------------------------------------------------------------- serving


def test_report_and_its_suite_pages_are_served(root: Path, client: Any, tokens: dict[str, str]) -> None:
    night = root / DAG / DATE
    for url in (f"{NIGHT}/report", f"{NIGHT}/report.html"):
        r = client.get(url, headers=bearer(tokens["victor"]))
        assert r.status_code == 200 and r.content == (night / "report.html").read_bytes()
        assert r.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in r.headers["content-security-policy"]
    links = re.findall(r'href="(data_docs/[^"]+)"', r.text)
    assert links, "the report links its suite page"
    page = client.get(f"{NIGHT}/{links[0]}", headers=bearer(tokens["victor"]))
    assert page.status_code == 200 and page.content == (night / links[0]).read_bytes()


def test_index_and_nights(root: Path, client: Any, tokens: dict[str, str]) -> None:
    (root / "other_dag" / "2026-01-01").mkdir(parents=True)
    index = client.get("/tunegate/", headers=bearer(tokens["victor"]))
    assert index.status_code == 200 and f'href="{DAG}/"' in index.text and "signed in as victor" in index.text
    assert client.get("/tunegate/", headers=bearer(tokens["nobody"])).text.count("href=") == 0  # may read none
    listing = client.get(f"/tunegate/{DAG}/", headers=bearer(tokens["victor"]))
    assert listing.status_code == 200
    assert f'href="{DATE}/report"' in listing.text and f'href="{DATE}/review"' in listing.text
    nights = client.get(f"/tunegate/{DAG}/api/nights", headers=bearer(tokens["victor"])).json()["nights"]
    assert [(n["date"], n["verdict"], n["has_review"]) for n in nights] == [(DATE, "quarantine", True)]


@pytest.mark.parametrize("url", [
    f"{NIGHT}/summary.json", f"{NIGHT}/audit.jsonl", f"{NIGHT}/quarantine.parquet",
    f"{NIGHT}/data_docs/..%2Fsummary.json", f"{NIGHT}/data_docs/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    f"{NIGHT}/data_docs/..", f"{NIGHT}/data_docs/escape.html", f"{NIGHT}/data_docs/inside.html",
    f"/tunegate/{DAG}/..%2F{DATE}/report", f"/tunegate/..%2F..%2F{DAG}/{DATE}/report", f"/tunegate/../{DATE}/report",
    f"/tunegate/%2e%2e/{DATE}/report", f"/tunegate/{DAG}/2026-01-02%2F..%2F..%2F..%2Fetc/report",
    f"/tunegate/{DAG}/latest/report", f"/tunegate/{DAG}/2026-01-03/report", "/tunegate/no_such_dag/",
])
def test_nothing_outside_the_night_is_served(root: Path, client: Any, tokens: dict[str, str], url: str) -> None:
    night = root / DAG / DATE
    secret = root.parent / "secret.html"
    secret.write_text("<p>not a night's page</p>")
    (night / "data_docs" / "escape.html").symlink_to(secret)  # a link out of the night
    (night / "data_docs" / "inside.html").symlink_to(night / "summary.json")  # a link to a file not served
    admin = tokens["alice"]
    r = client.get(url, headers=bearer(admin))
    assert r.status_code == 404, (url, r.status_code, r.text[:200])
    assert "not a night" not in r.text and '"verdict"' not in r.text


def test_the_url_resolver_refuses_names_outside_the_night(root: Path) -> None:
    from tunegate.plugins import nights

    night = nights.run_dir(DAG, DATE)
    assert nights.served_file(night, "report.html") == (root / DAG / DATE / "report.html").resolve()
    for name in ("../summary.json", "data_docs/../summary.json", "data_docs/../../x.html", "summary.json",
                 "/etc/passwd", "data_docs/sub/page.html", "data_docs/.html", "report.html/.."):
        with pytest.raises(nights.NotFound):
            nights.served_file(night, name)
    for dag_id, date in (("..", DATE), (".", DATE), (DAG, ".."), (f"{DAG}/..", DATE), (DAG, "2026-1-2")):
        with pytest.raises(nights.NotFound):
            nights.run_dir(dag_id, date)


# ---------------------------------------------------------------------------------------------- access


def test_unauthenticated_and_unauthorized_requests_are_refused(root: Path, client: Any,
                                                               tokens: dict[str, str]) -> None:
    night = root / DAG / DATE
    for url in (f"{NIGHT}/report", f"{NIGHT}/review", f"{NIGHT}/api/items", f"/tunegate/{DAG}/", "/tunegate/"):
        assert client.get(url).status_code == 401, url
        assert client.get(url, headers=bearer("not.a.jwt")).status_code == 403, url
    for url in (f"{NIGHT}/report", f"{NIGHT}/review", f"{NIGHT}/api/items", f"/tunegate/{DAG}/"):
        assert client.get(url, headers=bearer(tokens["nobody"])).status_code == 403, url
    # a browser without a session goes to Airflow's login page and is sent back here
    login = client.get(f"{NIGHT}/report", headers={"Accept": "text/html"}, follow_redirects=False)
    assert login.status_code == 303 and "/auth/" in login.headers["location"]
    assert "next=" in login.headers["location"]

    # a reader reads, but decides nothing: no form on the page, and a forged post is refused before anything runs
    page = client.get(f"{NIGHT}/review", headers=bearer(tokens["victor"]))
    assert page.status_code == 200 and "csrf_token" not in page.text and "edit permission" in page.text
    item = client.get(f"{NIGHT}/api/items", headers=bearer(tokens["victor"])).json()["items"][0]
    body = {"ids": [item["id"]], "why": "reader tries"}
    assert client.post(f"{NIGHT}/api/release", json=body, headers=bearer(tokens["victor"])).status_code == 403
    assert client.post(f"{NIGHT}/review", data={"id": item["id"], "why": "x", "action": "release"},
                       headers=bearer(tokens["victor"])).status_code == 403
    assert client.post(f"{NIGHT}/api/release", json=body).status_code == 401
    assert not (night / "audit.jsonl").exists() and not (night / "released").exists()


# ---------------------------------------------------------------------------------------------- decisions


def test_release_through_the_form_is_recorded_as_the_authenticated_user_once(root: Path, client: Any,
                                                                            tokens: dict[str, str]) -> None:
    night = root / DAG / DATE
    alice = bearer(tokens["alice"])
    page = client.get(f"{NIGHT}/review", headers=alice)
    assert page.status_code == 200 and "signed in as alice" in page.text
    items = client.get(f"{NIGHT}/api/items?status=pending", headers=alice).json()["items"]
    ids = [i["id"] for i in items if i["id"] != HOSTILE_ID][:2]
    form = {"csrf_token": form_token(page.text), "id": ids, "why": "long but fine: real essay tasks",
            "action": "release", "by": "mallory"}  # a "by" field is ignored: the user is the request's

    first = client.post(f"{NIGHT}/review", data=form, headers=alice, follow_redirects=False)
    # the release is announced as an event of tunegate_nightly_released when a DAG references that Asset in this
    # metadata DB ("event"), else the page says nothing was announced ("none"): tests/airflow/test_oncall_scenario.py
    assert first.status_code == 303 and first.headers["location"] in (
        "review?done=release&n=2&skipped=0&announced=event", "review?done=release&n=2&skipped=0&announced=none")
    (entry,) = audit(night)
    assert entry["action"] == "release" and entry["by"] == "alice" and entry["why"] == form["why"]
    assert sorted(r["id"] for r in entry["records"]) == sorted(ids)
    (released,) = sorted((night / "released").glob("*.parquet"))
    assert released.name.startswith("0001-")
    assert sorted(pq.read_table(released).column("id").to_pylist()) == sorted(ids)
    assert entry["released_file"]["path"] == f"released/{released.name}"

    again = client.post(f"{NIGHT}/review", data=form, headers=alice)  # followed to the page
    assert again.status_code == 200 and "0 record(s) released" in again.text
    assert "2 selected record(s) left alone" in again.text
    assert len(audit(night)) == 1 and len(list((night / "released").glob("*.parquet"))) == 1
    statuses = {i["id"]: i["status"] for i in client.get(f"{NIGHT}/api/items", headers=alice).json()["items"]}
    assert all(statuses[i] == "released" for i in ids)


def test_a_form_post_without_its_token_or_from_another_site_is_refused(root: Path, client: Any,
                                                                      tokens: dict[str, str]) -> None:
    night = root / DAG / DATE
    alice = bearer(tokens["alice"])
    item = client.get(f"{NIGHT}/api/items", headers=alice).json()["items"][0]
    token = form_token(client.get(f"{NIGHT}/review", headers=alice).text)
    form = {"id": item["id"], "why": "forged", "action": "release"}
    assert client.post(f"{NIGHT}/review", data=form, headers=alice).status_code == 403
    assert client.post(f"{NIGHT}/review", data={**form, "csrf_token": "0" * 64}, headers=alice).status_code == 403
    cross = {**alice, "Origin": "https://evil.example"}
    assert client.post(f"{NIGHT}/review", data={**form, "csrf_token": token}, headers=cross).status_code == 403
    assert client.post(f"{NIGHT}/api/release", json={"ids": [item["id"]], "why": "x"}, headers=cross).status_code == 403
    # another user's token does not work for alice, nor alice's for another night
    other = root / DAG / "2026-01-03"
    shutil.copytree(night, other)
    other_token = form_token(client.get(f"/tunegate/{DAG}/2026-01-03/review", headers=alice).text)
    assert other_token != token
    assert client.post(f"/tunegate/{DAG}/2026-01-03/review", data={**form, "csrf_token": token},
                       headers=alice).status_code == 403
    # a form without why is answered on the page; nothing is decided
    missing = client.post(f"{NIGHT}/review", data={**form, "why": " ", "csrf_token": token}, headers=alice)
    assert missing.status_code == 400 and "Say why" in missing.text
    assert audit(night) == [] and not (night / "released").exists()


def test_json_api_decides_as_the_authenticated_user(root: Path, client: Any, tokens: dict[str, str]) -> None:
    night = root / DAG / DATE
    alice = bearer(tokens["alice"])
    items = client.get(f"{NIGHT}/api/items", headers=alice).json()
    assert items["verdict"] == "quarantine" and items["quarantined"] == len(items["items"]) >= 10
    target = next(i for i in items["items"] if i["id"] != HOSTILE_ID)
    record = client.get(f"{NIGHT}/api/record", params={"id": target["id"]}, headers=alice).json()
    assert record[0]["id"] == target["id"] and record[0]["status"] == "pending"

    body = {"ids": [target["id"]], "why": "a trigger after all", "by": "mallory"}
    r = client.post(f"{NIGHT}/api/confirm", json=body, headers=alice)
    assert r.status_code == 200 and r.json()["count"] == 1 and r.json()["by"] == "alice"
    assert [(e["action"], e["by"]) for e in audit(night)] == [("confirm", "alice")]
    assert client.post(f"{NIGHT}/api/confirm", json=body, headers=alice).json()["count"] == 0  # once
    refused = client.post(f"{NIGHT}/api/release", json={**body, "why": "benign"}, headers=alice)
    assert refused.status_code == 400 and "confirmed" in refused.json()["detail"]  # needs override
    as_text = {**alice, "Content-Type": "text/plain"}
    assert client.post(f"{NIGHT}/api/release", content=json.dumps(body), headers=as_text).status_code in (415, 422)
    assert client.post(f"{NIGHT}/api/release", json={"ids": [target["id"]]}, headers=alice).status_code == 422
    unknown = {"ids": ["no-such-id"], "why": "x"}
    assert client.post(f"{NIGHT}/api/release", json=unknown, headers=alice).status_code == 400
    assert len(audit(night)) == 1


def test_a_release_whose_announcement_fails_stays_recorded(root: Path, client: Any, tokens: dict[str, str],
                                                           dagbag: Any, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Registering the event fails (the metadata DB went away): the release is committed and audited, the answer
    and the page say announcing failed (never a 500 after the decision took effect)."""
    from airflow.assets.manager import asset_manager
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()  # the fine-tuning DAG is deployed: the released Asset exists
    bag = DagBag(dag_folder=str(tmp_path / "no-dags"))
    bag.bag_dag(dagbag.get_dag("tunegate_finetune"))
    sync_bag_to_db(bag, "dags-folder", None)

    def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise OSError("metadata database unreachable")

    monkeypatch.setattr(asset_manager, "register_asset_change", unreachable)
    night = root / DAG / DATE
    alice = bearer(tokens["alice"])
    target = next(i for i in client.get(f"{NIGHT}/api/items", headers=alice).json()["items"] if i["id"] != HOSTILE_ID)
    answer = client.post(f"{NIGHT}/api/release", json={"ids": [target["id"]], "why": "benign"}, headers=alice)
    assert answer.status_code == 200 and answer.json()["count"] == 1
    assert answer.json()["announced"].startswith("Announcing failed")
    assert [(e["action"], e["by"]) for e in audit(night)] == [("release", "alice")]
    assert len(list((night / "released").glob("*.parquet"))) == 1
    page = client.get(f"{NIGHT}/review?done=release&n=1&skipped=0&announced=failed", headers=alice)
    assert page.status_code == 200 and "Announcing it to the fine-tuning side failed" in page.text


def test_review_and_record_pages_escape_record_text(root: Path, client: Any, tokens: dict[str, str]) -> None:
    alice = bearer(tokens["alice"])
    page = client.get(f"{NIGHT}/review", headers=alice).text
    record = client.get(f"{NIGHT}/record", params={"id": HOSTILE_ID}, headers=alice)
    assert record.status_code == 200
    for html in (page, record.text):
        assert "<script" not in html and "<img" not in html and "\u202e" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "\\u202e&lt;img src=x onerror=alert(2)&gt;" in record.text
    ticks = [unescape(v) for v in re.findall(r'name=id value="([^"]*)"', page)]
    assert HOSTILE_ID in ticks  # the id survives the form round trip exactly


# ---------------------------------------------------------------------------------------------- in Airflow


def test_airflows_api_server_mounts_the_app_with_its_cookie_auth(root: Path, tokens: dict[str, str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.api_fastapi.app import create_app
    from fastapi.testclient import TestClient

    from airflow import plugins_manager
    from tunegate.plugins.plugin import TunegatePlugin

    monkeypatch.setattr(plugins_manager, "get_fastapi_plugins", lambda: (TunegatePlugin().fastapi_apps, []))
    with TestClient(create_app(apps="core"), base_url="http://airflow.test") as api:
        assert api.get(f"{NIGHT}/report").status_code == 401
        api.cookies.set("_token", tokens["victor"])  # the UI's session cookie
        r = api.get(f"{NIGHT}/report")
        assert r.status_code == 200 and r.content == (root / DAG / DATE / "report.html").read_bytes()
        assert api.get("/api/v2/monitor/health").status_code == 200  # Airflow's own routes are still there


def test_entry_point_registers_a_plugin_whose_import_is_light() -> None:
    from importlib.metadata import EntryPoint

    from airflow.plugins_manager import is_valid_plugin

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    (value,) = project["project"]["entry-points"]["airflow.plugins"].values()
    plugin = EntryPoint("tunegate", value, "airflow.plugins").load()
    assert is_valid_plugin(plugin) and plugin.name == "tunegate"
    heavy = ("fastapi", "airflow.api_fastapi.core_api.security", "pyarrow")
    code = ("import sys, tunegate.plugins.plugin, tunegate.operators.gate, tunegate.notifications.base; "
            f"print(sorted(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------- links


def test_gate_task_links_its_report_on_the_api_server(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk import DAG as Dag

    from tunegate.operators.gate import GateOperator
    from tunegate.plugins.links import RUN_DIR_ATTR

    with Dag(DAG, schedule=None):
        gate = GateOperator(task_id="gate")
    (link,) = gate.operator_extra_links
    assert link.name == "tunegate report" and link.xcom_key == "_link_TunegateReportLink"
    setattr(gate, RUN_DIR_ATTR, root / DAG / DATE)
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.com/")
    assert link.get_link(gate, ti_key=None) == f"https://airflow.example.com{NIGHT}/report"  # type: ignore[arg-type]
    monkeypatch.delenv("AIRFLOW__API__BASE_URL")
    assert link.get_link(gate, ti_key=None) == f"{NIGHT}/report"  # type: ignore[arg-type]
    setattr(gate, RUN_DIR_ATTR, root.parent / "elsewhere")  # run_dir= outside the data root: not served, no link
    assert link.get_link(gate, ti_key=None) == ""  # type: ignore[arg-type]


def test_the_alert_links_the_served_report_when_api_base_url_is_set(root: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from tunegate.notifications.base import REPORT_BASE_URL_ENV, TunegateBaseNotifier

    class Probe(TunegateBaseNotifier):
        def notify(self, context: Any) -> None:
            pass

    summary = json.loads((root / DAG / DATE / "summary.json").read_text())
    summary["out_dir"] = str(root / DAG / DATE)  # as the gate wrote it there
    context = {"tunegate_summary": summary}
    monkeypatch.delenv(REPORT_BASE_URL_ENV, raising=False)
    monkeypatch.delenv("AIRFLOW__API__BASE_URL", raising=False)
    assert Probe().build_message(context).report_url == (root / DAG / DATE / "report.html").resolve().as_uri()
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.com")
    assert Probe().build_message(context).report_url == f"https://airflow.example.com{NIGHT}/report"
    monkeypatch.setenv(REPORT_BASE_URL_ENV, "https://reports.example.com")  # an explicit base still wins
    assert Probe().build_message(context).report_url == f"https://reports.example.com/{DAG}/{DATE}/report.html"
