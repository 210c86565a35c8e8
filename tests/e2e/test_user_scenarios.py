"""A user's own scenarios: files and modules of their project, with their project's code in scope."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import stress, summary, variant

ROOT = Path(__file__).resolve().parents[2]

COUNTER = """
class Counter:
    def __init__(self):
        self.value = 0

    def increment(self):
        self.value += 1
"""

CHECKS = """
from harness import Scenario
from myapp.counter import Counter

scenario = Scenario("app-counter", "The app's counter from four threads", size=20)


@scenario.variant(expect="unsafe")
def plain(trial):
    counter = Counter()

    def work():
        for _ in range(trial.size):
            counter.increment()

    trial.run_threads(work, count=4)
    trial.check(counter.value == 4 * trial.size, f"lost {4 * trial.size - counter.value} increments")
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'myapp'\n")
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text("")
    (tmp_path / "myapp" / "counter.py").write_text(COUNTER)
    (tmp_path / "checks").mkdir()
    (tmp_path / "checks" / "__init__.py").write_text("")
    (tmp_path / "checks" / "app.py").write_text(CHECKS)
    return tmp_path


def test_a_module_target_runs_and_its_projects_code_is_perturbed(project: Path) -> None:
    # Only forced switches inside the code: none at lock operations, no switch-interval changes.
    # The race is in myapp/counter.py, not in the scenario's file: it is found because the whole
    # project is in scope.
    out = stress(
        "run", "checks.app:app-counter", "-n", "200", "--seed", "1", "--sync", "off", "--switch-interval", "off",
        "--out", "run", cwd=project,
    )  # fmt: skip
    assert out.code == 0, out.stdout + out.stderr
    assert variant(summary(project / "run"), "plain")["failure_rate"] > 0.2
    assert "stress run checks.app:app-counter --variant plain" in out.stdout


def test_a_file_target_in_a_project_imports_from_the_project(project: Path) -> None:
    out = stress("run", "checks/app.py", "-n", "100", "--seed", "2", "--out", "run", cwd=project)
    assert out.code == 0, out.stdout + out.stderr
    assert variant(summary(project / "run"), "plain")["verdict"] == "exposed"


def test_a_module_target_works_in_controlled_mode_and_replays(project: Path) -> None:
    out = stress("run", "checks.app", "--mode", "controlled", "-n", "30", "--seed", "1", "--out", "run", cwd=project)
    assert out.code == 0, out.stdout + out.stderr
    assert variant(summary(project / "run"), "plain")["verdict"] == "exposed"
    again = stress("replay", "run", "--times", "3", cwd=project)
    assert again.code == 0, again.stdout + again.stderr
    assert "reproduced 3/3" in again.stdout
    assert "counter.py" in again.stdout  # the trace shows the project's line, not just the scenario's


def test_list_names_a_modules_scenarios(project: Path) -> None:
    out = stress("list", "checks.app", cwd=project)
    assert out.code == 0, out.stderr
    assert "app-counter" in out.stdout
    assert "plain" in out.stdout


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("checks.missing", "cannot import 'checks.missing': no module named 'checks.missing'"),
        ("checks.app:nope", "checks.app has no scenario 'nope'; it defines: app-counter"),
        ("checks.app:bad name", "is not a scenario target"),
        ("myapp.counter", "myapp.counter defines no scenario"),
        ("checks.broken", "broken.py:2: importing checks.broken raised ZeroDivisionError: division by zero"),
        ("checks.typo", "typo.py:1: syntax error"),
    ],
)
def test_a_module_that_cannot_be_used_is_one_line_and_exit_2(project: Path, target: str, message: str) -> None:
    (project / "checks" / "broken.py").write_text("from harness import Scenario\nx = 1 / 0\n")
    (project / "checks" / "typo.py").write_text("def (:\n")
    out = stress("run", target, cwd=project)
    assert out.code == 2, out.stdout
    assert message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(
    ("example", "unsafe"),
    [("connection_pool.py", "check-then-open"), ("lazy_settings.py", "publish-early")],
)
@pytest.mark.parametrize("mode", ["stress", "controlled"])
def test_each_example_finds_its_bug(tmp_path: Path, example: str, unsafe: str, mode: str) -> None:
    out = stress(
        "run", str(ROOT / "examples" / example), "--mode", mode, "-n", "300", "--seed", "1", "--out", "run",
        cwd=tmp_path,
    )  # fmt: skip
    assert out.code == 0, out.stdout + out.stderr
    data = summary(tmp_path / "run")
    assert variant(data, unsafe)["verdict"] == "exposed"
    assert all(v["failures"] == 0 for v in data["variants"] if v["expect"] == "safe")
