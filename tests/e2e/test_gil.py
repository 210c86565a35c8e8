"""``--gil on|off``: a run has the GIL it asks for, or says in one line why it cannot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.perturb import gil
from tests.helpers import stress, summary

free_threaded = pytest.mark.skipif(not gil.FREE_THREADED, reason="needs a free-threaded build (3.13t)")


@pytest.mark.skipif(gil.FREE_THREADED, reason="a build with a GIL")
@pytest.mark.parametrize("asked", [("--gil", "off"), ("--sweep", "gil=on,off")], ids=["gil-off", "sweep"])
def test_no_gil_on_a_build_with_a_gil_is_one_line_naming_the_build(tmp_path: Path, asked: tuple[str, str]) -> None:
    out = stress("run", "counter", *asked, "-n", "5", cwd=tmp_path)
    assert out.code == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert f"{' '.join(asked)} needs a free-threaded build" in lines[0], lines
    assert "with the GIL" in lines[0], lines
    assert not (tmp_path / "reports").exists()  # nothing ran


@pytest.mark.skipif(gil.FREE_THREADED, reason="a build with a GIL")
def test_gil_on_on_a_build_with_a_gil_runs_as_ever(tmp_path: Path) -> None:
    out = stress("run", "counter", "--variant", "lock", "--gil", "on", "-n", "5", "--out", "run", cwd=tmp_path)
    assert out.code == 0, out.stdout + out.stderr
    data = summary(tmp_path / "run")
    assert data["python"]["gil_enabled"] is True
    assert data["config"]["gil"] == "on"


def test_a_bad_gil_value_is_a_usage_error(tmp_path: Path) -> None:
    out = stress("run", "counter", "--gil", "maybe", cwd=tmp_path)
    assert out.code == 2, out.stdout + out.stderr
    assert "--gil maybe: use one of on, off" in out.stderr


@free_threaded
@pytest.mark.parametrize("setting", ["on", "off"])
def test_a_run_starts_again_with_the_gil_it_asks_for(tmp_path: Path, setting: str) -> None:
    out = stress(
        "run", "counter", "--variant", "lock", "--gil", setting, "-n", "20", "--seed", "1", "--out", "run",
        cwd=tmp_path,
    )  # fmt: skip
    assert out.code == 0, out.stdout + out.stderr
    data = summary(tmp_path / "run")
    assert data["python"]["gil_enabled"] is (setting == "on"), data["python"]
    assert data["python"]["free_threaded_build"] is True
    # The replay line and the recorded command are the user's, not the restarted interpreter's.
    assert "--gil " + setting in data["command"], data["command"]


RACE = str(Path(__file__).parent / "fixtures" / "gil_race.py")


@free_threaded
def test_a_gil_sweep_runs_each_setting_in_its_own_interpreter_and_names_what_is_safe_only_under_it(
    tmp_path: Path,
) -> None:
    # No injection: with the GIL on (and a switch interval of 1 s) the race cannot happen; with it
    # off it happens whenever the two threads overlap, which the fixture's wait makes near certain.
    out = stress(
        "run", RACE, "--iterations", "50", "--seed", "1", "--sweep", "gil=on,off", "--preempt", "0", "--sync", "0",
        "--switch-interval", "1", "--jitter", "0", "--out", "run",
        cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert out.code == 0, out.stdout + out.stderr
    assert "safe only under the GIL: read-then-write" in out.stdout, out.stdout
    data = summary(tmp_path / "run")
    assert data["safe_only_under_gil"] == ["gil-race/read-then-write"]
    assert data["config"]["sweep"] == {"knob": "gil", "values": [1.0, 0.0]}
    assert data["complete"] is True
    assert data["trials"] == 200
    rows = {v["variant"]: {row["value"]: row for row in v["sweep"]} for v in data["variants"]}
    assert rows["gil-race/read-then-write"][1.0]["failures"] == 0
    assert rows["gil-race/read-then-write"][0.0]["failures"] > 0
    assert rows["gil-race/locked"][1.0]["failures"] == rows["gil-race/locked"][0.0]["failures"] == 0
    racy = next(v for v in data["variants"] if v["variant"] == "gil-race/read-then-write")
    assert racy["example"]["replay"].endswith("--gil off"), racy["example"]["replay"]
    # Each setting ran in an interpreter that had it, and wrote a run folder of its own.
    for setting, enabled in (("on", True), ("off", False)):
        side = summary(tmp_path / "run" / f"gil-{setting}")
        assert side["python"]["gil_enabled"] is enabled, side["python"]
        assert side["trials"] == 100
    lines = (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    assert len(lines) == 200
    assert {json.loads(line)["sweep"] for line in lines} == {1.0, 0.0}
    assert "With the GIL and without it" in (tmp_path / "run" / "report.html").read_text()
