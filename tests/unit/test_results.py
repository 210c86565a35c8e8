from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from harness.errors import ConfigError, OutputError
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


def test_a_full_disk_leaves_every_line_whole_and_says_where(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    room = [900]  # bytes the "disk" still takes
    real_write = os.write

    def write(fd: int, data: bytes) -> int:
        if room[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        taken = real_write(fd, data[: room[0]])
        room[0] -= taken
        return taken

    now = [0.0]
    writer = ResultsWriter(tmp_path, clock=lambda: now[0])
    monkeypatch.setattr("harness.results.run_dir.os.write", write)

    def fill() -> tuple[int, OutputError | None]:
        for seq in range(20):
            now[0] += 1.0  # a flush at every write
            try:
                writer.write(_result(seq))
            except OutputError as exc:
                return seq, exc
        return 20, None

    seq, error = fill()
    assert error is not None, "the full disk was never noticed"
    assert "results.jsonl': No space left on device" in str(error)
    text = (tmp_path / "results.jsonl").read_text()
    assert text.endswith("\n")  # what fitted, in whole lines only
    kept = list(read_results(tmp_path))
    assert [r.seq for r in kept] == list(range(len(kept)))
    room[0] = 10**9  # room again: what was queued is written, nothing lost, nothing doubled
    writer.close()
    assert [r.seq for r in read_results(tmp_path)] == list(range(seq + 1))


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
