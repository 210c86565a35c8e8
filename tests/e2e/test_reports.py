"""The reports a user reads and passes around: HTML (in a real browser), JUnit, Markdown, `stress
report` on an interrupted or killed run, `stress compare`, sweeps."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import FIXTURES, results, stress, stress_command, summary

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _open_in_chromium(report: Path, screenshot: Path) -> dict[str, Any]:
    """Load the report in headless Chromium; what it fetched, logged, and shows."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed here (.ci/run installs it, so CI runs this test)")
    seen: dict[str, Any] = {"requests": [], "console": [], "errors": [], "dialogs": []}
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--disable-sync"],
        )  # fmt: skip
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda request: seen["requests"].append(request.url))
            page.on("console", lambda message: seen["console"].append((message.type, message.text)))
            page.on("pageerror", lambda error: seen["errors"].append(str(error)))
            page.on("dialog", lambda dialog: (seen["dialogs"].append(dialog.message), dialog.dismiss()))
            page.goto(report.as_uri())
            page.wait_for_load_state("load")
            seen["charts"] = page.eval_on_selector_all("svg.chart", "els => els.map(e => e.dataset.chart)")
            seen["ranking_rows"] = page.locator("#ranking tbody tr").count()
            seen["ranking_variants"] = page.eval_on_selector_all(
                "#ranking tbody tr", "rows => rows.map(r => r.dataset.variant)"
            )
            seen["messages"] = page.eval_on_selector_all(".message", "els => els.map(e => e.textContent)")
            seen["blocks"] = page.eval_on_selector_all("details pre", "els => els.map(e => e.textContent)")
            seen["scripts"] = page.locator("script").count()
            seen["status"] = page.locator("#status").text_content()
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return seen


def test_html_report_in_a_browser(tmp_path: Path) -> None:
    out = stress(
        "run", "deadlock", str(FIXTURES / "misbehaving.py::misbehaving"), "--variant", "opposite-order",
        "--variant", "global-order", "--variant", "raises", "--variant", "fine", "-n", "60", "--seed", "4",
        "--out", "run", cwd=tmp_path,
    )  # fmt: skip
    assert out.code == 1, out.stdout + out.stderr  # misbehaving/raises is expected safe
    report = tmp_path / "run" / "report.html"
    assert report.is_file()
    screenshot = tmp_path / "report.png"
    seen = _open_in_chromium(report, screenshot)
    # Self-contained: the file itself is the only thing loaded; nothing runs; nothing complains.
    assert seen["requests"] == [report.as_uri()]
    assert seen["console"] == []
    assert seen["errors"] == []
    assert seen["dialogs"] == []
    assert seen["scripts"] == 0
    # The ranking table, and every chart: per variant an interval bar, outcome bar and duration
    # histogram, plus a chart per knob that varied, for the variants that failed.
    variants = ["deadlock/opposite-order", "deadlock/global-order", "misbehaving/raises", "misbehaving/fine"]
    assert seen["ranking_rows"] == 4
    assert set(seen["ranking_variants"]) == set(variants)
    charts = seen["charts"]
    assert charts.count("ci") == 4
    assert charts.count("kinds") == 4
    assert charts.count("durations") == 4
    for knob in ("knob-preempt", "knob-sync", "knob-switch-interval", "knob-jitter"):
        assert knob in charts
    assert "complete" in seen["status"]
    # Text from the code under test is text: the exception message shows, literally, and no alert ran.
    assert any("ValueError: boom <script>alert(1)</script>" in block for block in seen["blocks"])
    assert "<script>alert(1)</script>" not in report.read_text()
    assert screenshot.stat().st_size > 10_000


def test_exception_message_is_escaped_in_the_dom(tmp_path: Path) -> None:
    out = stress("run", str(FIXTURES / "misbehaving.py"), "--variant", "raises", "-n", "2", "--seed", "1",
                 "--out", "run", cwd=tmp_path)  # fmt: skip
    assert out.code == 1
    seen = _open_in_chromium(tmp_path / "run" / "report.html", tmp_path / "shot.png")
    assert seen["dialogs"] == []
    assert seen["scripts"] == 0
    assert any("boom <script>alert(1)</script>" in block for block in seen["blocks"])
    text = (tmp_path / "run" / "report.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_report_of_a_run_killed_halfway(tmp_path: Path) -> None:
    env = {**os.environ, "TERM": "dumb", "NO_COLOR": "1"}
    process = subprocess.Popen(
        [*stress_command(), "run", "counter", "-n", "100000", "--seed", "1", "--out", "run", "-q"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    lines = tmp_path / "run" / "results.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not lines.exists() or lines.stat().st_size < 200_000):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    time.sleep(0.2)  # the workers die with their parent
    finished = len(results(tmp_path / "run"))
    assert finished > 100
    assert not (tmp_path / "run" / "summary.json").exists()
    out = stress("report", "run", cwd=tmp_path)
    assert out.code == 0, out.stdout + out.stderr
    assert f"incomplete: {finished} of 400,000 trials reached the disk" in out.stdout
    data = summary(tmp_path / "run")
    assert data["complete"] is False
    assert data["trials"] == finished
    assert sum(v["trials"] for v in data["variants"]) == finished
    html = (tmp_path / "run" / "report.html").read_text()
    assert "incomplete" in html


def test_report_of_an_interrupted_run_says_so(tmp_path: Path) -> None:
    env = {**os.environ, "TERM": "dumb", "NO_COLOR": "1"}
    process = subprocess.Popen(
        [*stress_command(), "run", "counter", "-n", "100000", "--seed", "1", "--out", "run", "-q"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines = tmp_path / "run" / "results.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not lines.exists() or lines.stat().st_size < 50_000):
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    stdout, _ = process.communicate(timeout=30)
    assert process.returncode == 130
    assert "interrupted" in stdout
    out = stress("report", "run", "-q", cwd=tmp_path)
    assert out.code == 0
    assert summary(tmp_path / "run")["interrupted"] is True
    assert "interrupted" in (tmp_path / "run" / "report.html").read_text()


APP = """
import threading
from harness import Scenario

scenario = Scenario("app", "Two threads increment a shared counter", size=30)


@scenario.variant(expect="safe")
def increment(trial):
    box = [0]
    lock = threading.Lock()

    def add():
        for _ in range(trial.size):
            {body}

    trial.run_threads(add, count=4)
    trial.check(box[0] == 4 * trial.size, "lost updates")
"""


def test_compare_refuses_runs_that_measure_different_things_and_names_differing_knobs(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP.format(body="box[0] += 1"))
    (tmp_path / "other.py").write_text(APP.format(body="box[0] += 1").replace('"app"', '"other"'))
    runs = {
        "stress": ("app.py", "-n", "20"),
        "controlled": ("app.py", "-n", "20", "--mode", "controlled"),
        "knobs": ("app.py", "-n", "20", "--preempt", "0.05"),
        "work": ("app.py", "-n", "20", "--size", "1", "--timeout", "1"),
        "replay": ("app.py", "-n", "20", "--trial", "1"),
        "other": ("other.py", "-n", "20"),
    }
    for name, args in runs.items():
        assert stress("run", *args, "--seed", "1", "--out", name, "-q", cwd=tmp_path).code in (0, 1)
    modes = stress("compare", "stress", "controlled", cwd=tmp_path)
    assert modes.code == 2, modes.stdout + modes.stderr
    assert "cannot compare" in modes.stderr
    assert "stress mode" in modes.stderr
    assert "controlled mode" in modes.stderr
    disjoint = stress("compare", "stress", "other", cwd=tmp_path)
    assert disjoint.code == 2, disjoint.stdout + disjoint.stderr
    assert "no variant in common" in disjoint.stderr
    assert "app/increment" in disjoint.stderr
    assert "other/increment" in disjoint.stderr
    knobs = stress("compare", "stress", "knobs", cwd=tmp_path)
    assert knobs.code in (0, 1), knobs.stdout + knobs.stderr
    assert "settings differ (preempt 0.001:0.02 → 0.05)" in knobs.stdout
    # The work of a trial, its deadline and a replay of one plan change a rate as a knob does.
    work = stress("compare", "stress", "work", cwd=tmp_path)
    assert "size default → 1; timeout default → 1.0" in work.stdout, work.stdout
    replay = stress("compare", "stress", "replay", cwd=tmp_path)
    assert "trial every trial its own plan → trial 1's plan only" in replay.stdout, replay.stdout
    same = stress("compare", "stress", "stress", cwd=tmp_path)
    assert "differ" not in same.stdout


def test_compare_reports_a_fixed_bug_as_a_significant_drop(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(APP.format(body="box[0] += 1"))
    assert stress("run", "app.py", "-n", "150", "--seed", "1", "--out", "before", "-q", cwd=tmp_path).code == 1
    app.write_text(APP.format(body="with lock:\n                box[0] += 1"))
    assert stress("run", "app.py", "-n", "150", "--seed", "1", "--out", "after", "-q", cwd=tmp_path).code == 0
    better = stress("compare", "before", "after", cwd=tmp_path)
    assert better.code == 0, better.stdout + better.stderr
    assert "app/increment" in better.stdout
    assert "improved" in better.stdout
    worse = stress("compare", "after", "before", cwd=tmp_path)
    assert worse.code == 1
    assert "REGRESSION" in worse.stdout


def test_junit_and_markdown(tmp_path: Path) -> None:
    out = stress(
        "run", str(FIXTURES / "misbehaving.py"), "--variant", "raises", "--variant", "never-fails",
        "--variant", "fine", "-n", "3", "--seed", "1", "--out", "run",
        "--junit-xml", "junit.xml", "--markdown", "summary.md", cwd=tmp_path,
    )  # fmt: skip
    assert out.code == 1
    suite = ET.parse(tmp_path / "junit.xml").getroot()
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert set(cases) == {"raises", "never-fails", "fine"}
    assert cases["raises"].find("failure") is not None
    assert "ValueError: boom <script>" in (cases["raises"].find("failure").text or "")
    assert cases["never-fails"].find("skipped") is not None
    assert "not exposed in 3 trials" in cases["never-fails"].find("skipped").get("message", "")
    assert cases["fine"].find("failure") is None
    assert suite.get("failures") == "1"
    # Each case's time is floored to the millisecond; added up as floats, 0.018 + 0.035 is 0.053000000000000005.
    cases_time = sum(float(case.get("time", "0")) for case in cases.values())
    assert float(suite.get("time", "0")) >= cases_time - 1e-9
    # The run's wall time, not its workers' added up (they run side by side).
    assert float(suite.get("time", "0")) == pytest.approx(summary(tmp_path / "run")["wall_seconds"], abs=0.002)
    text = (tmp_path / "junit.xml").read_text()
    assert text.endswith("</testsuite>\n")
    assert "\n  <testcase " in text  # indented, one element per line
    assert "(failure rate < 100.0 % at 95 %)" in cases["never-fails"].find("skipped").get("message", "")
    markdown = (tmp_path / "summary.md").read_text()
    assert "| 1 | `misbehaving/raises` | safe | 3 |" in markdown
    assert "**FAILED**" in markdown
    assert "--variant raises --seed 1 --trial 0" in markdown


def test_sweep_reports_failure_rate_per_value(tmp_path: Path) -> None:
    out = stress(
        "run", "counter", "--variant", "no-lock", "-n", "60", "--seed", "2", "--sweep", "preempt=0,0.01",
        "--out", "run", cwd=tmp_path,
    )  # fmt: skip
    assert out.code == 0, out.stderr
    assert "Failure rate per value of preempt (swept)" in out.stdout
    rows = results(tmp_path / "run")
    assert len(rows) == 120
    assert {r["sweep"] for r in rows} == {0.0, 0.01}
    assert all(r["plan"]["preempt"] == r["sweep"] for r in rows)
    (entry,) = summary(tmp_path / "run")["variants"]
    by_value = {row["value"]: row for row in entry["sweep"]}
    assert by_value[0.0]["failures"] == 0  # no forced switches: the race inside one line never shows
    assert by_value[0.01]["failure_rate"] >= 0.5
    assert 'data-chart="sweep"' in (tmp_path / "run" / "report.html").read_text()


def test_report_of_a_folder_that_is_not_a_run_is_one_clear_line(tmp_path: Path) -> None:
    out = stress("report", "nowhere", cwd=tmp_path)
    assert out.code == 2
    assert out.stderr.strip().startswith("stress: error: 'nowhere' is not a run folder")
    assert len(out.stderr.strip().splitlines()) == 1


def test_huge_report_stays_small_and_fast(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    try:
        from report_render import write_run
    finally:
        sys.path.pop(0)
    write_run(tmp_path / "big", 100_000)
    started = time.monotonic()
    out = stress("report", "big", "-q", cwd=tmp_path)
    elapsed = time.monotonic() - started
    assert out.code == 1, out.stderr  # big/rare is expected safe and fails now and then
    html = tmp_path / "big" / "report.html"
    assert html.stat().st_size <= 5_000_000
    # 5 s is the budget on a quiet machine (about 2 s measured); the margin absorbs a busy one.
    assert elapsed <= 15, elapsed
    assert json.loads((tmp_path / "big" / "summary.json").read_text())["trials"] == 100_000


def test_a_knob_that_did_nothing_is_not_shown_and_a_flat_variant_is_not_charted(tmp_path: Path) -> None:
    # Threads only: --delay (process actors, multiprocessing operations) has nothing to act on.
    out = stress("run", "counter", "-n", "150", "--seed", "1", "--out", "threads", cwd=tmp_path)
    assert out.code == 0, out.stdout + out.stderr
    assert all(r.get("delay_used") is False for r in results(tmp_path / "threads"))
    plans = [line for line in out.stdout.splitlines() if line.strip().startswith("plan ")]
    assert plans
    assert not any(" delay " in line for line in plans)
    html = (tmp_path / "threads" / "report.html").read_text()
    assert "knob-preempt" in html
    assert "knob-delay" not in html
    knobs = re.search(r"<th>knobs</th><td>([^<]*)</td>", html)
    assert knobs is not None
    assert "--preempt 0.001 – 0.02" in knobs.group(1)  # as the flags are spelled
    assert "--switch-interval" in knobs.group(1)
    assert "delay" not in knobs.group(1)  # the run's settings, as far as they acted
    split = [r["outcome"] for r in results(tmp_path / "threads") if r["variant"] == "counter/split-lock"]
    if all(outcome == "failed" for outcome in split):  # 100 %, as nearly always: a flat line
        assert "Not drawn: counter/split-lock — failed every trial" in html
    else:  # it passed a trial: its chart says at which knob values
        assert "Not drawn: counter/split-lock" not in html
    # Process actors take the delay with them: it stays.
    out = stress("run", "pipe", "--variant", "end-message", "-n", "4", "--seed", "1", "--out", "procs", cwd=tmp_path)
    assert out.code in (0, 1), out.stdout + out.stderr
    assert all(r.get("delay_used", True) for r in results(tmp_path / "procs"))
    knobs = re.search(r"<th>knobs</th><td>([^<]*)</td>", (tmp_path / "procs" / "report.html").read_text())
    assert knobs is not None
    assert "delay" in knobs.group(1)
