"""The README's promises, checked: its scenario tutorial runs as written, its quick start is what CI runs."""

from __future__ import annotations

import re
from pathlib import Path

from tests.helpers import stress, summary, variant

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _block(marker: str) -> str:
    match = re.search(r"```python\n(" + re.escape(marker) + r".*?)```", README, re.S)
    assert match, f"no python block starting with {marker!r} in the README"
    return match.group(1)


def test_writing_a_scenario_tutorial_runs_as_written(tmp_path: Path) -> None:
    (tmp_path / "my_scenarios.py").write_text(_block("# my_scenarios.py"))
    out = stress("run", "my_scenarios.py", "--iterations", "300", "--seed", "1", "--out", "run", cwd=tmp_path)
    assert out.code == 0, out.stdout + out.stderr
    data = summary(tmp_path / "run")
    assert variant(data, "unlocked")["verdict"] == "exposed"
    assert variant(data, "unlocked")["failure_rate"] >= 0.2
    assert variant(data, "locked")["failures"] == 0


def test_coroutine_example_runs_as_written(tmp_path: Path) -> None:
    (tmp_path / "my_async.py").write_text(_block("# my_async.py"))
    args = ("run", "my_async.py", "--iterations", "300", "--seed", "1")
    out = stress(*args, "--out", "run", cwd=tmp_path)
    assert out.code == 0, out.stdout + out.stderr
    data = summary(tmp_path / "run")
    assert variant(data, "check-then-connect")["verdict"] == "exposed"
    assert variant(data, "locked")["failures"] == 0
    plain = stress(*args, "--no-perturbation", "--out", "plain", cwd=tmp_path)
    assert plain.code == 0, plain.stdout + plain.stderr
    assert variant(summary(tmp_path / "plain"), "check-then-connect")["failures"] == 0


def test_quick_start_has_two_commands_and_ci_runs_the_test_one() -> None:
    quick = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```sh\n(.*?)\n```", quick, re.S)
    assert len(commands) == 2, commands
    install_and_run, install_and_test = commands[0].strip(), commands[1].strip()
    assert install_and_run.startswith('pip install -e ".[test]" && stress run ')
    assert install_and_test == 'pip install -e ".[test]" && pytest'
    assert install_and_test in (ROOT / ".ci" / "run").read_text()
