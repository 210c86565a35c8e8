"""`stress run deadlock`, as a user types it: the cycle, the lock-order analysis, and the costs."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import stress, summary, variant


def test_opposite_order_deadlocks_with_the_cycle_and_safe_strategies_hold(tmp_path: Path) -> None:
    out = stress("run", "deadlock", "--iterations", "300", "--seed", "1", "--out", "run", cwd=tmp_path)
    assert out.code == 0, out.stdout + out.stderr
    data = summary(tmp_path / "run")
    opposite = variant(data, "opposite-order")
    assert opposite["outcomes"].get("deadlocked", 0) >= 0.2 * 300
    assert opposite["ci95"][0] >= 0.2
    evidence = opposite["example"]["evidence"]
    assert "thread_1 waits for lock_" in evidence["messages"][0]
    assert "held by thread_2" in evidence["messages"][0]
    assert any("deadlock.py:" in line and "took it at" in line for line in evidence["wait_for"])
    assert opposite["example"]["duration"] < 0.5  # detected when the cycle closed, not timed out
    for safe in ("global-order", "timeout-backoff", "coarse-lock"):
        assert variant(data, safe)["failures"] == 0
        assert variant(data, safe)["potential_deadlocks"] == []
    assert "thread_1 waits for lock_" in out.stdout


def test_lock_order_flags_opposite_order_even_when_no_trial_deadlocks(tmp_path: Path) -> None:
    out = stress(
        "run", "deadlock", "--iterations", "200", "--seed", "1", "--no-perturbation", "--out", "run", cwd=tmp_path
    )
    assert out.code == 0, out.stdout + out.stderr
    data = summary(tmp_path / "run")
    opposite = variant(data, "opposite-order")
    assert opposite["failures"] == 0  # no injection: the threads never overlap
    (potential,) = opposite["potential_deadlocks"]
    assert sorted(potential["cycle"]) == ["lock_a", "lock_b"]
    assert len(potential["paths"]) == 2
    assert opposite["verdict"] == "exposed"
    assert "Potential deadlocks" in out.stdout
