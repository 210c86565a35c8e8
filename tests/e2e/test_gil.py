"""``--gil on|off``: a run has the GIL it asks for, or says in one line why it cannot."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.perturb import gil
from tests.helpers import stress, summary

free_threaded = pytest.mark.skipif(not gil.FREE_THREADED, reason="needs a free-threaded build (3.13t)")


@pytest.mark.skipif(gil.FREE_THREADED, reason="a build with a GIL")
def test_gil_off_on_a_build_with_a_gil_is_one_line_naming_the_build(tmp_path: Path) -> None:
    out = stress("run", "counter", "--gil", "off", "-n", "5", cwd=tmp_path)
    assert out.code == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "--gil off needs a free-threaded build" in lines[0], lines
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
