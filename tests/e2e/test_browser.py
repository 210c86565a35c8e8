"""The HTML report in a real browser (headless Chromium, 1400 px wide): the contents bar and the
ranking's links lead somewhere, a replay command is whole on screen however long (it wraps between
words, it never scrolls), a failure rate's interval stays on one line, and a run of threads only draws no
``--delay`` chart. Layout is measured by the browser itself, not read off the DOM.

Skipped where no Chromium is installed."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import stress

BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no Chromium on this machine")

#: Measures the page once it has loaded, and leaves the figures on <body data-check="...">.
PROBE = """<script>
window.addEventListener("load", () => {
  const lines = e => { const r = document.createRange(); r.selectNodeContents(e);
    return new Set([...r.getClientRects()].map(x => Math.round(x.top))).size; };
  // Where each line of ``e`` after the first starts, as an index into its text.
  const breaks = e => { const out = []; let at = 0, top = null;
    const walk = document.createTreeWalker(e, NodeFilter.SHOW_TEXT);
    for (let node = walk.nextNode(); node; node = walk.nextNode()) {
      for (let i = 0; i < node.length; i++, at++) {
        const r = document.createRange(); r.setStart(node, i); r.setEnd(node, i + 1);
        const rect = r.getBoundingClientRect(); if (!rect.height) continue;
        if (top !== null && rect.top > top + 2) out.push(at);
        top = rect.top; } }
    return out; };
  const links = [...document.querySelectorAll("nav.contents a, a.jump")].map(a => a.getAttribute("href"));
  const width = document.documentElement.clientWidth;
  // Whatever reaches past the content column's right edge (outside a block that scrolls on purpose).
  const scrolls = e => e.closest("pre, .wide");
  const column = document.querySelector("main") || document.body;
  const padding = parseFloat(getComputedStyle(column).paddingRight);
  const edge = Math.min(width, column.getBoundingClientRect().right - padding);
  const overflow = [...column.querySelectorAll("*")].filter(e => !scrolls(e))
    .filter(e => e.getBoundingClientRect().right > edge + 1)
    .map(e => e.tagName + "." + (e.dataset.chart || e.getAttribute("class") || ""));
  document.body.setAttribute("data-check", JSON.stringify({
    overflow, page_scrolls: document.documentElement.scrollWidth > width,
    links, missing: links.filter(h => !document.querySelector(h)),
    replays: [...document.querySelectorAll(".replay")].map(e => ({scrolls: e.scrollWidth > e.clientWidth + 1,
      right: e.getBoundingClientRect().right, chars: e.textContent.length,
      text: e.textContent, breaks: breaks(e)})),
    width, rate_lines: [...document.querySelectorAll("td.rate")].map(lines),
    delay_chart: !!document.querySelector("[data-chart=knob-delay]"),
    charts: [...document.querySelectorAll("[data-chart^=knob-]")].map(e => e.dataset.chart)}));
});
</script>"""


def _measure(report: Path, width: int = 1400) -> dict[str, Any]:
    probed = report.with_name("probed.html")
    probed.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
    assert BROWSER is not None
    done = subprocess.run(
        [BROWSER, "--headless=new", "--no-sandbox", "--disable-gpu", f"--window-size={width},900",
         "--virtual-time-budget=3000", "--dump-dom", probed.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    found = re.search(r'data-check="([^"]*)"', done.stdout)
    assert found, done.stderr[-2000:]
    data: dict[str, Any] = json.loads(html.unescape(found.group(1)))
    return data


def test_the_report_in_a_browser_links_fits_and_shows_only_knobs_that_acted(tmp_path: Path) -> None:
    # A scenario file deep in long folders: its replay command is far wider than the page.
    deep = tmp_path / ("a-folder-with-a-rather-long-name-" * 3) / ("and-another-one-nested-below-it-" * 3)
    deep.mkdir(parents=True)
    source = Path(__file__).parents[2] / "scenarios" / "counter.py"
    (deep / "counter_with_a_long_file_name.py").write_text(source.read_text())
    out = stress(
        "run", str(deep / "counter_with_a_long_file_name.py"), "-n", "120", "--seed", "1", "--out", "run",
        cwd=tmp_path,
    )  # fmt: skip
    assert out.code == 0, out.stdout + out.stderr
    page = _measure(tmp_path / "run" / "report.html")
    assert len(page["links"]) >= 6, page["links"]  # the contents bar, and each failing variant's links
    assert page["missing"] == []
    assert page["replays"], page
    assert max(r["chars"] for r in page["replays"]) > 200  # long enough to have scrolled before
    for replay in page["replays"]:
        assert not replay["scrolls"], replay
        assert replay["right"] <= page["width"], replay
        # It wraps between words, never inside one that fits on a line ("--variant", a variant's
        # name); only a path wider than the page is cut, wherever it must be.
        text, starts = replay["text"], replay["breaks"]
        assert starts, replay
        widest = max(b - a for a, b in zip([0, *starts], [*starts, len(text)], strict=True))
        for at in starts:
            if text[at - 1] != " ":
                word = text[:at].rsplit(" ", 1)[-1] + text[at:].split(" ", 1)[0]
                assert len(word) > widest, (word, replay)
    assert page["rate_lines"]
    assert all(lines == 1 for lines in page["rate_lines"]), page["rate_lines"]
    assert "knob-preempt" in page["charts"]
    assert not page["delay_chart"]  # threads only: --delay acted on nothing
    # Nothing is wider than the content column, at 1400 px or on a narrow window (the ranking's
    # interval bars shrink: it overflowed an 800 px window by 18 px; the knob charts of the right
    # column reached 9 px past it at 1400 px).
    for shown in (page, _measure(tmp_path / "run" / "report.html", 800)):
        assert shown["overflow"] == [], shown["overflow"]
        assert not shown["page_scrolls"]
