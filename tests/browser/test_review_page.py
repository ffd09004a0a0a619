"""The review page of the plugin in a real headless browser (Debian's chromium; CI installs it, a machine without
it skips): the page a reviewer with edit permission gets for a real quarantined night (served by the plugin's app
through TestClient, authenticated by Airflow's SimpleAuthManager), opened with the network blocked. No console
message at all (the page has no script and loads nothing), the form and every row laid out, record text escaped.
A screenshot goes to build/artifacts/review.png.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.airflow.conftest import airflow_db  # noqa: F401 (Airflow's test home and DB: the auth manager reads it)
from tests.browser.test_report_page import ARTIFACTS, CHROMIUM, _chromium

pytestmark = [pytest.mark.slow, pytest.mark.airflow,
              pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (CI installs it: .ci/run)")]

PROBE = """<script>
(function () {
  var rows = document.querySelectorAll('tbody tr').length;
  var form = document.querySelector('form[method=post]');
  var why = document.querySelector('textarea[name=why]');
  var out = document.createElement('pre'); out.id = 'probe';
  out.textContent = JSON.stringify({rows: rows, form: !!form, why: why ? why.getBoundingClientRect().height : 0,
    scripts: document.scripts.length, overflow: document.documentElement.scrollWidth -
    document.documentElement.clientWidth});
  document.body.appendChild(out);
  console.error('tunegate-probe-ran');
})();
</script>"""


@pytest.fixture(scope="module")
def review_page(tmp_path_factory: pytest.TempPathFactory) -> str:
    import os

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from tests.airflow.test_plugin import DAG, DATE, build_night
    from tunegate.plugins.plugin import TunegatePlugin

    night = build_night(tmp_path_factory.mktemp("review_night"))
    root = tmp_path_factory.mktemp("review_root")
    shutil.copytree(night, root / DAG / DATE)
    from airflow.api_fastapi.app import create_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    token = create_auth_manager().generate_jwt(SimpleAuthManagerUser(username="alice", role="user"))
    (entry,) = TunegatePlugin().fastapi_apps
    server = FastAPI()
    server.mount(entry["url_prefix"], entry["app"])
    previous = os.environ.get("TUNEGATE_DATA_ROOT")
    os.environ["TUNEGATE_DATA_ROOT"] = str(root)
    try:
        with TestClient(server) as client:
            r = client.get(f"/tunegate/{DAG}/{DATE}/review", headers={"Authorization": f"Bearer {token}"})
    finally:
        if previous is None:
            os.environ.pop("TUNEGATE_DATA_ROOT")
        else:
            os.environ["TUNEGATE_DATA_ROOT"] = previous
    assert r.status_code == 200
    return r.text


def test_review_page_in_a_browser(review_page: str, tmp_path: Path) -> None:
    import html
    import json

    page = tmp_path / "review.html"
    page.write_text(review_page, encoding="utf-8")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = _chromium(f"--screenshot={ARTIFACTS / 'review.png'}", page.as_uri())
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert [line for line in shot.stderr.splitlines() if "CONSOLE" in line] == []

    probe = tmp_path / "probe.html"
    probe.write_text(review_page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    run = _chromium("--dump-dom", probe.as_uri())
    found = re.search(r'<pre id="probe">(.*?)</pre>', run.stdout, re.S)
    assert found, run.stdout[-2000:]
    measured = json.loads(html.unescape(found.group(1)))
    console = [line for line in run.stderr.splitlines() if "CONSOLE" in line]
    assert len(console) == 1 and "tunegate-probe-ran" in console[0], console  # only the probe speaks
    assert measured["form"] and measured["why"] > 0 and measured["rows"] >= 10
    assert measured["scripts"] == 1 and measured["overflow"] <= 0  # the probe is the only script
