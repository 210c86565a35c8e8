from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.perturb.plan import ActorStart, Plan
from harness.results.outcome import Evidence, Outcome, TrialResult
from harness.results.run_dir import ResultsWriter, make_run_dir, read_results
from harness.text import clip


def _result(seq: int) -> TrialResult:
    plan = Plan(seq, 99, 0.01, 0.0, 1e-3, 1e-4, True, True)
    return TrialResult(
        "s/v",
        seq,
        seq,
        Outcome.HUNG,
        0.25,
        plan,
        starts=((ActorStart(1, 2e-5), ActorStart(0, 0.0)),),
        switches=3,
        timeout=0.2,
        evidence=Evidence(messages=("m",), dump="Thread 0x1", blocked_at=("x.py:3 in f",), exit_status=None),
    )


def test_results_round_trip(tmp_path: Path) -> None:
    writer = ResultsWriter(tmp_path)
    for seq in range(3):
        writer.write(_result(seq))
    writer.close()
    assert list(read_results(tmp_path)) == [_result(0), _result(1), _result(2)]


def test_writer_flushes_within_the_interval(tmp_path: Path) -> None:
    now = [0.0]
    writer = ResultsWriter(tmp_path, clock=lambda: now[0])
    writer.write(_result(0))
    now[0] = 0.5
    writer.tick()
    assert len(list(read_results(tmp_path))) == 1  # on disk before close
    writer.close()


def test_torn_last_line_is_skipped(tmp_path: Path) -> None:
    writer = ResultsWriter(tmp_path)
    writer.write(_result(0))
    writer.close()
    with (tmp_path / "results.jsonl").open("a") as file:
        file.write('{"variant": "s/v", "seq": 1, "tri')
    assert [r.seq for r in read_results(tmp_path)] == [0]


def test_run_dir_gets_a_suffix_when_the_id_exists(tmp_path: Path) -> None:
    first = make_run_dir(tmp_path, "run", exact=False)
    second = make_run_dir(tmp_path, "run", exact=False)
    assert (first.name, second.name) == ("run", "run-2")


def test_unwritable_run_dir_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="not writable"):
        make_run_dir(blocker / "sub", "x", exact=True)


def test_clip_keeps_head_and_tail_with_a_marker() -> None:
    text = "A" * 5000 + "Z" * 5000
    clipped = clip(text, 1000)
    assert len(clipped) <= 1000
    assert clipped.startswith("A")
    assert clipped.endswith("Z")
    assert "characters cut by stress" in clipped
    assert clip("short", 1000) == "short"
