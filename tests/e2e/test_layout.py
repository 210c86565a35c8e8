"""What stress prints fits the width it is given, and a log or a pipe gets no padding.

Rich pads table cells and indented blocks with spaces up to the width; a terminal never shows them,
but a CI log, a file or a diff keeps every one. And a line that wraps must keep its indent and
break between the parts of a note, never inside one (``jitter ≤ 42`` / ``µs``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.cells import cell_len

from tests.helpers import stress

COMMANDS = {
    "run": ("run", "deadlock", "--iterations", "40", "--seed", "1"),
    "controlled": ("run", "counter", "--mode", "controlled", "--iterations", "20", "--seed", "1"),
    "list": ("list",),
    "show": ("show", "counter"),
}


def _problems(text: str, width: int) -> list[str]:
    problems = []
    for number, line in enumerate(text.splitlines(), 1):
        if line != line.rstrip():
            problems.append(f"line {number} ends in spaces: {line!r}")
        if cell_len(line) > width:
            problems.append(f"line {number} is {cell_len(line)} columns wide: {line}")
    return problems


@pytest.mark.parametrize("width", [60, 80, 120, 200])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_output_fits_the_width_with_no_trailing_spaces(tmp_path: Path, command: str, width: int) -> None:
    out = stress(*COMMANDS[command], cwd=tmp_path, env={"COLUMNS": str(width)})
    assert out.code == 0, out.stderr
    assert out.stdout.strip(), "printed nothing"
    assert _problems(out.stdout, width) == []


@pytest.mark.parametrize("width", [60, 74, 76])
def test_no_line_starts_with_a_unit_cut_off_its_number(tmp_path: Path, width: int) -> None:
    out = stress(*COMMANDS["run"], cwd=tmp_path, env={"COLUMNS": str(width)})
    assert out.code == 0, out.stderr
    lines = [line.strip() for line in out.stdout.splitlines()]
    assert [line for line in lines if line == "%" or line.startswith(("% ", "µs", "ms "))] == [], out.stdout


def test_a_wrapped_plan_breaks_between_knobs_and_keeps_its_indent(tmp_path: Path) -> None:
    out = stress(*COMMANDS["run"], cwd=tmp_path, env={"COLUMNS": "60"})
    assert out.code == 0, out.stderr
    lines = out.stdout.splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith("  plan "))
    plan = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.startswith(" " * 11):
            break
        plan.append(line)
    assert len(plan) > 1, "the plan fits in 60 columns: nothing to check"
    for line in plan[1:]:
        assert line.startswith(" " * 11), plan  # under the plan's first knob
        assert not line[11].isspace(), plan
    knobs = " · ".join(line.strip().removeprefix("plan").strip() for line in plan).split(" · ")
    assert all(knob.split(" ", 1)[0] in {"preempt", "sync", "delay", "pause", "switch", "jitter"} for knob in knobs), (
        knobs
    )


def test_a_wrapped_source_line_continues_under_its_own_indent(tmp_path: Path) -> None:
    # bank's docstrings are longer than 80 columns less the code's indent.
    out = stress("show", "bank", cwd=tmp_path, env={"COLUMNS": "80"})
    assert out.code == 0, out.stderr
    lines = out.stdout.splitlines()
    opening = next(n for n, line in enumerate(lines) if line.startswith('      """Check the balance'))
    assert not lines[opening].rstrip().endswith('"""'), "the docstring fits in 80 columns: nothing to check"
    # 6 for the line, 4 more for the code, after a mark that says it is the same line of code
    assert lines[opening + 1].startswith(" " * 8 + "↪ "), lines[opening : opening + 2]
    assert lines[opening + 1].strip().endswith('"""'), lines[opening : opening + 2]
    # The scenario's shape breaks between its parts, never inside one.
    assert any(line.strip() == "controlled mode: size 1, 2 actors" for line in lines[:5]), lines[:5]


@pytest.mark.parametrize("width", [50, 60, 80])
def test_a_narrow_terminal_gets_every_column_of_the_ranking_whole(tmp_path: Path, width: int) -> None:
    # Rich fits a table by dropping columns and cutting words to a letter a line; the ranking
    # stacks its columns instead, or breaks a long variant name after a hyphen.
    out = stress(*COMMANDS["run"], cwd=tmp_path, env={"COLUMNS": str(width)})
    assert out.code == 0, out.stderr
    ranking = out.stdout[out.stdout.index("Ranked by") : out.stdout.index("failure rate: observed")]
    words = ranking.split()
    for whole in ("opposite-order", "timeout-backoff", "unsafe", "exposed", "held", "deadlocked", "potential"):
        assert whole in words, ranking
    assert _problems(out.stdout, width) == []


def test_a_narrow_list_keeps_commands_whole(tmp_path: Path) -> None:
    out = stress("list", cwd=tmp_path, env={"COLUMNS": "50"})
    assert out.code == 0, out.stderr
    assert "stress run SCENARIO --mode controlled" in out.stdout
    assert _problems(out.stdout, 50) == []


def test_a_wrapped_evidence_line_hangs_under_its_own_start(tmp_path: Path) -> None:
    out = stress(*COMMANDS["run"], cwd=tmp_path, env={"COLUMNS": "80"})
    assert out.code == 0, out.stderr
    lines = out.stdout.splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith("  · "))
    block = []
    for line in lines[start:]:
        if line.startswith("  plan "):
            break
        block.append(line)
    assert len(block) > 2, "nothing wrapped at 80 columns: nothing to check"
    for line in block:
        # each wait-for line starts with a bullet; what wraps from it sits two columns further in
        assert line.startswith(("  · ", "    ")), block
        assert not line.startswith("    ·"), block
    # The potential deadlock's paths, one per thread: what wraps from one hangs under it.
    paths = lines[next(n for n, line in enumerate(lines) if line.startswith("Potential deadlocks")) + 3 :]
    paths = paths[: paths.index("")]
    assert len(paths) > 2, "no path wrapped at 80 columns: nothing to check"
    for line in paths:
        assert line.startswith(("  thread_", "    ")), paths
        assert not line.startswith("    thread_"), paths


def test_a_wrapped_traceback_line_continues_under_its_own_indent(tmp_path: Path) -> None:
    # A frame's "File ..., line N, in f" and its source line fold under themselves: at the left
    # edge, a fold reads as a frame of its own.
    (tmp_path / "raising_with_a_long_name.py").write_text(
        "from harness import Scenario\n\nscenario = Scenario('raising', 'An actor raises')\n\n\n"
        "def a_function_whose_name_is_long_enough_to_fold_any_frame_line_that_names_it(values):\n"
        "    return values['a key that is not there, with a long name to make the source line fold']\n\n\n"
        "@scenario.variant(expect='unsafe')\n"
        "def raises(trial):\n"
        "    trial.run_threads(lambda: a_function_whose_name_is_long_enough_to_fold_any_frame_line_that_names_it({}),"
        " count=1)\n"
    )
    out = stress("run", "raising_with_a_long_name.py", "-n", "2", "--seed", "1", "--out", "run", cwd=tmp_path,
                 env={"COLUMNS": "80"})  # fmt: skip
    lines = out.stdout.splitlines()
    start = next(n for n, line in enumerate(lines) if line.strip() == "Traceback (most recent call last):")
    end = next(n for n, line in enumerate(lines) if n > start and line.lstrip().startswith("KeyError"))
    block = lines[start + 1 : end]
    frames = [line for line in block if line.startswith("    File")]
    assert frames, block
    assert len(block) > 2 * len(frames), block  # something folded
    assert all(line.startswith("    ") for line in block), block  # no fold falls back to the edge
