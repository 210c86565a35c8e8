"""Each built-in scenario behaves as its variants declare, at low iterations, seeded.

The margins are generous on purpose: at the default knobs `counter/no-lock` fails in roughly 85 %
of trials and `bank/unsafe` in roughly 55 %; the bounds below are far under that, so a slow or busy
machine does not make these tests flake, while a harness that stopped injecting preemption (0 %)
fails them at once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.registry import Registry
from tests.helpers import stress, summary, variant

ITERATIONS = 150
# Lowest failure rate accepted from an unsafe variant at the default knobs.
FLOOR = {
    "counter/no-lock": 0.4,
    "counter/split-lock": 0.4,
    "bank/unsafe": 0.2,
    "bank/check-locked-only": 0.2,
}


@pytest.mark.parametrize("scenario", ["counter", "bank"])
def test_scenario_behaves_as_declared(tmp_path: Path, scenario: str) -> None:
    out = stress("run", scenario, "--iterations", str(ITERATIONS), "--seed", "11", "--out", "run", "-q", cwd=tmp_path)
    assert out.code == 0, out.stdout + out.stderr
    data = summary(tmp_path / "run")
    for entry in data["variants"]:
        if entry["expect"] == "safe":
            assert entry["failures"] == 0, entry
            assert entry["verdict"] == "held"
        else:
            assert entry["failure_rate"] >= FLOOR[entry["variant"]], entry
            assert entry["verdict"] == "exposed"
            # An unsafe variant here fails by a broken invariant, not by crashing the harness.
            assert set(entry["outcomes"]) <= {"failed", "passed"}, entry["outcomes"]


def test_every_unsafe_builtin_variant_has_a_floor() -> None:
    unsafe = {v.key for s in Registry.builtin() for v in s if v.expect.value == "unsafe"}
    assert unsafe <= set(FLOOR), unsafe - set(FLOOR)


def test_without_injection_the_counter_race_is_far_rarer(tmp_path: Path) -> None:
    args = ("run", "counter", "--variant", "no-lock", "--iterations", "150", "--seed", "11", "-q")
    injected = stress(*args, "--out", "on", cwd=tmp_path)
    plain = stress(*args, "--preempt", "0", "--out", "off", cwd=tmp_path)
    assert injected.code == 0, injected.stderr
    assert plain.code == 0, plain.stderr
    on = variant(summary(tmp_path / "on"), "no-lock")["failure_rate"]
    off = variant(summary(tmp_path / "off"), "no-lock")["failure_rate"]
    assert on >= 0.4
    assert off <= on / 4, (on, off)
