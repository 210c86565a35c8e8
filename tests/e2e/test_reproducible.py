"""Same seed, same plans; and any trial's plan can be replayed."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import results, stress


def _plans(run_dir: Path) -> dict[tuple[str, int], tuple[object, object]]:
    return {(r["variant"], r["seq"]): (r["plan"], r["starts"]) for r in results(run_dir)}


def test_two_runs_with_the_same_seed_write_identical_plans(tmp_path: Path) -> None:
    for out in ("a", "b"):
        done = stress("run", "counter", "bank", "-n", "25", "--seed", "42", "--out", out, cwd=tmp_path)
        assert done.code == 0, done.stderr
    first, second = _plans(tmp_path / "a"), _plans(tmp_path / "b")
    assert len(first) == 25 * 7
    assert first == second
    other = stress("run", "counter", "bank", "-n", "25", "--seed", "43", "--out", "c", cwd=tmp_path)
    assert other.code == 0
    assert _plans(tmp_path / "c") != first


def test_trial_flag_replays_that_trials_plan(tmp_path: Path) -> None:
    done = stress("run", "counter", "--variant", "no-lock", "-n", "10", "--seed", "7", "--out", "orig", cwd=tmp_path)
    assert done.code == 0, done.stderr
    original = {r["trial"]: r["plan"] for r in results(tmp_path / "orig")}
    replay = stress(
        "run", "counter", "--variant", "no-lock", "--seed", "7", "--trial", "6", "-n", "4", "--out", "re", cwd=tmp_path
    )
    assert replay.code == 0, replay.stderr
    replayed = results(tmp_path / "re")
    assert len(replayed) == 4
    assert sorted(r["seq"] for r in replayed) == [0, 1, 2, 3]
    assert all(r["trial"] == 6 and r["plan"] == original[6] for r in replayed)
    assert "replaying the plan of trial 6" in replay.stdout
