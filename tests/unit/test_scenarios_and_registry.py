from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import ScenarioError, ScenarioNotFound
from harness.loader import is_file_target, load_file, load_target
from harness.registry import Registry, scenarios_in
from harness.scenario import Expect, Scenario


def _scenario(name: str = "demo") -> Scenario:
    scenario = Scenario(name, "A demo", size=7)

    @scenario.variant(expect="unsafe")
    def no_lock(trial: object) -> None:
        """Races.

        More text."""

    @scenario.variant("with-lock", expect=Expect.SAFE, description="Locks")
    def locked(trial: object) -> None:
        pass

    return scenario


def test_variant_names_descriptions_and_tags() -> None:
    scenario = _scenario()
    assert list(scenario.variants) == ["no-lock", "with-lock"]
    no_lock = scenario.get("no-lock")
    assert (no_lock.key, no_lock.description, no_lock.expect, no_lock.size) == (
        "demo/no-lock",
        "Races.",
        Expect.UNSAFE,
        7,
    )
    assert __file__ in no_lock.files
    assert "def no_lock" in no_lock.source()


def test_declaration_errors() -> None:
    scenario = Scenario("demo", "x")
    with pytest.raises(ScenarioError, match="did you mean 'safe'"):
        scenario.variant(expect="saf")
    scenario.variant("a", expect="safe")(lambda trial: None)
    with pytest.raises(ScenarioError, match="declared twice"):
        scenario.variant("a", expect="safe")(lambda trial: None)
    with pytest.raises(ScenarioError, match="name"):
        Scenario("has space", "x")
    with pytest.raises(ScenarioError, match="size"):
        Scenario("ok", "x", size=0)


def test_registry_lookup_suggests() -> None:
    registry = Registry([_scenario("counter"), _scenario("bank")])
    with pytest.raises(ScenarioNotFound, match="did you mean 'counter'"):
        registry.get("countr")
    with pytest.raises(ScenarioNotFound, match="did you mean 'no-lock'"):
        registry.select(["counter"], ["nolock"])


def test_select_bare_and_qualified_variants() -> None:
    registry = Registry([_scenario("counter"), _scenario("bank")])
    assert [v.key for v in registry.select(["counter"])] == ["counter/no-lock", "counter/with-lock"]
    chosen = registry.select(["counter", "bank"], ["with-lock", "bank/no-lock"])
    assert [v.key for v in chosen] == ["counter/with-lock", "bank/no-lock", "bank/with-lock"]


def test_builtin_registry_holds_the_chapter_scenarios() -> None:
    registry = Registry.builtin()
    names = {s.name for s in registry}
    assert {"counter", "bank"} <= names
    for scenario in registry:
        tags = {v.expect for v in scenario}
        assert tags == {Expect.SAFE, Expect.UNSAFE}, f"{scenario.name} needs both safe and unsafe variants"


def test_file_targets() -> None:
    assert is_file_target("x.py")
    assert is_file_target("dir/x.py::name")
    assert not is_file_target("counter")


def test_load_target_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "helper_mod.py").write_text("VALUE = 3\n")
    (tmp_path / "mine.py").write_text(
        "from harness import Scenario\nimport helper_mod\n"
        "one = Scenario('one', 'first')\none.variant('v', expect='safe')(lambda trial: None)\n"
        "two = Scenario('two', 'second')\ntwo.variant('v', expect='unsafe')(lambda trial: None)\n"
    )
    assert [s.name for s in load_target(str(tmp_path / "mine.py"))] == ["one", "two"]
    assert [s.name for s in load_target(f"{tmp_path / 'mine.py'}::two")] == ["two"]
    with pytest.raises(ScenarioNotFound, match="did you mean 'two'"):
        load_target(f"{tmp_path / 'mine.py'}::tow")


@pytest.mark.parametrize(
    ("imports", "body", "site", "what"),
    [
        ("import subprocess\n", "subprocess.run(['true'])", "subprocess.run", "starts a process"),
        ("from os import forkpty\n", "forkpty()", "forkpty", "starts a process"),
        ("", "trial.mp.Queue()", "trial.mp", "starts a process"),
        ("import os\n", "os.system('true')", "os.system", "starts a process"),
        ("import multiprocessing as mp\n", "mp.Pool(2)", "mp.Pool", "starts a process"),
        # in a function of the module it calls
        ("import subprocess\n", "_helper()", "subprocess.run", "starts a process"),
        ("from multiprocessing.pool import ThreadPool\n", "ThreadPool(2)", None, ""),  # threads, dressed as processes
        ("import subprocess\n", "print('no subprocess here')", None, ""),  # imported, not used by this variant
        ("", "'Unlike a subprocess, or os.fork(), this runs threads.'", None, ""),
        ("class Pool:\n    pass\n", "Pool()", None, ""),  # the module's own Pool
        ("import signal\n", "signal.setitimer(signal.ITIMER_REAL, 1)", "signal.setitimer", "arms a signal timer"),
        ("from signal import alarm\n", "alarm(1)", "alarm", "arms a signal timer"),
        ("import signal\n", "signal.signal(signal.SIGINT, signal.SIG_IGN)", None, ""),
    ],
)
def test_what_no_schedule_decides_is_told_by_a_variants_code_not_its_words(
    tmp_path: Path, imports: str, body: str, site: str | None, what: str
) -> None:
    path = tmp_path / "guess.py"
    path.write_text(
        imports + "\nfrom harness import Scenario\n\nscenario = Scenario('guess', 'a guess')\n\n\n"
        "def _helper():\n    subprocess.run(['true'])\n\n\n"
        f"@scenario.variant(expect='safe')\ndef guessed(trial):\n    {body}\n"
    )
    (scenario,) = scenarios_in(load_file(path))
    found = scenario.get("guessed").outside_schedules()
    if site is None:
        assert found is None
        assert not scenario.outside_schedules
    else:
        assert found is not None
        assert found.startswith(f"{what} at guess.py:"), found
        assert found.endswith(f"({site})"), found
        assert scenario.outside_schedules
