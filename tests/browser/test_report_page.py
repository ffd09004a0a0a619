"""report.html in a real headless browser (Debian's chromium; CI installs it, a machine without it skips).

The page of an attacked night (tests/browser/nights.py) is opened with the network blocked: no console
message at all (the page has no script; a blocked fetch or a broken SVG would log one), every chart an SVG
with a nonzero size and drawn marks, ids on one line, the policy unclipped once opened. A screenshot goes to
build/artifacts/report.png, which CI keeps.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.browser.nights import Nights, build_nights
from tests.conftest import REPO

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
ARTIFACTS = REPO / "build" / "artifacts"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (CI installs it: .ci/run)")]

#: Injected into a copy of the page only (the report itself has no script): measures the laid-out page and
#: writes the numbers into the DOM that --dump-dom prints; its console.error proves the console is captured.
PROBE = """<script>
(function () {
  document.querySelectorAll('details').forEach(function (d) { d.open = true; });
  var r = {};
  r.svgs = Array.from(document.querySelectorAll('.chart > svg')).map(function (s) {
    var b = s.getBoundingClientRect();
    return {w: b.width, h: b.height, marks: s.querySelectorAll('path').length};
  });
  r.ids = Array.from(document.querySelectorAll('td.id > code')).map(function (c) {
    var b = c.getBoundingClientRect();
    return {h: b.height, w: b.width, chars: c.textContent.length, line: parseFloat(getComputedStyle(c).lineHeight)};
  });
  var p = document.querySelector('pre.policy');
  r.policy = {scroll: p.scrollHeight, client: p.clientHeight, visible: p.getBoundingClientRect().height};
  r.marks = document.querySelectorAll('mark').length;
  r.overflow = document.documentElement.scrollWidth - document.documentElement.clientWidth;
  var out = document.createElement('pre'); out.id = 'probe'; out.textContent = JSON.stringify(r);
  document.body.appendChild(out);
  console.error('tunegate-probe-ran');
})();
</script>"""


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--no-first-run", "--host-resolver-rules=MAP * ~NOTFOUND", "--enable-logging=stderr",
                           "--v=0", "--window-size=1280,2400", *args],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def nights(tmp_path_factory: pytest.TempPathFactory) -> Nights:
    return build_nights(tmp_path_factory.getbasetemp() / "report_nights")


@pytest.fixture(scope="module")
def measured(nights: Nights, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], list[str]]:
    probe = tmp_path_factory.mktemp("probe") / "report.html"
    probe.write_text(nights.page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    run = _chromium("--dump-dom", probe.as_uri())
    assert run.returncode == 0, run.stderr[-2000:]
    found = re.search(r'<pre id="probe">(.*?)</pre>', run.stdout, re.S)
    assert found, run.stdout[-2000:]
    console = [line for line in run.stderr.splitlines() if "CONSOLE" in line]
    return json.loads(html.unescape(found.group(1))), console


def test_no_console_message_but_the_probe(measured: tuple[dict[str, Any], list[str]]) -> None:
    _, console = measured
    assert any("tunegate-probe-ran" in line for line in console), "the console is not captured"
    assert [line for line in console if "tunegate-probe-ran" not in line] == []


def test_charts_render_as_svg_with_a_size_and_marks(measured: tuple[dict[str, Any], list[str]]) -> None:
    result, _ = measured
    # records per reason, near-duplicate similarity, the trend (volume and rate)
    assert len(result["svgs"]) >= 3, result["svgs"]
    for svg in result["svgs"]:
        assert svg["w"] > 100 and svg["h"] > 50 and svg["marks"] > 0, svg


def test_ids_stay_on_one_line_and_the_page_fits(measured: tuple[dict[str, Any], list[str]]) -> None:
    result, _ = measured
    assert result["ids"]
    for cell in result["ids"]:
        assert cell["h"] < 1.5 * cell["line"], cell  # one line, never a column of letters
        assert cell["w"] > 4 * cell["chars"], cell
    assert result["overflow"] <= 0  # nothing wider than the window: no table pushed off the page


def test_policy_is_whole_once_opened_and_phrases_are_marked(measured: tuple[dict[str, Any], list[str]]) -> None:
    result, _ = measured
    assert result["policy"]["scroll"] <= result["policy"]["client"] + 1  # no inner scroll box, nothing cut
    assert result["policy"]["visible"] > 200
    assert result["marks"] >= 10


def test_screenshot_for_ci(nights: Nights) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    run = _chromium(f"--screenshot={shot}", (nights.night2 / "report.html").as_uri())
    assert run.returncode == 0, run.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_page_is_offline_and_bounded(nights: Nights) -> None:
    page = nights.page
    assert "<script" not in page and re.search(r"(src|href)=\"https?:", page) is None
    assert Path(nights.night2 / "report.html").stat().st_size < 2_000_000
