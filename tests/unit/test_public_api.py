"""The public API is exactly `harness.__all__`, and the core stays free of the CLI, renderers and pytest."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import harness

EXPECTED = {
    "ActorGroup",
    "ConfigError",
    "Evidence",
    "Expect",
    "InternalError",
    "Knob",
    "Outcome",
    "Perturbation",
    "Plan",
    "Registry",
    "RunConfig",
    "RunInfo",
    "RunObserver",
    "RunReport",
    "Scenario",
    "ScenarioError",
    "ScenarioNotFound",
    "StressError",
    "Trial",
    "TrialResult",
    "UserError",
    "Variant",
    "VariantSummary",
    "Verdict",
    "__version__",
    "atomic",
    "build_config",
    "make_plan",
    "run",
    "wilson",
}


def test_all_is_the_public_api() -> None:
    assert set(harness.__all__) == EXPECTED
    for name in harness.__all__:
        assert hasattr(harness, name), name


def test_nothing_else_leaks_out() -> None:
    public = {
        name
        for name, value in vars(harness).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public <= set(harness.__all__)


def test_core_imports_no_cli_renderer_or_pytest() -> None:
    # The import graph is checked statically in test_architecture; this checks what a process loads.
    harness_dir = Path(harness.__file__).parent
    core = sorted(
        ".".join(path.relative_to(harness_dir.parent).with_suffix("").parts)
        for package in ("engine", "perturb", "detect", "results", "controlled")
        for path in (harness_dir / package).glob("*.py")
        if path.stem != "__init__"
    )
    code = f"import json, sys, harness, {', '.join(core)}; print(json.dumps(sorted(sys.modules)))"
    loaded = set(json.loads(subprocess.check_output([sys.executable, "-c", code], text=True)))
    forbidden = {"harness.cli", "harness.render", "harness.render.terminal", "click", "rich", "pytest", "_pytest"}
    assert not loaded & forbidden, loaded & forbidden


def test_every_public_name_loads_lazily_from_where_it_lives() -> None:
    code = (
        "import sys, harness; before = set(sys.modules); "
        "from harness import Scenario, Trial; "
        "print(sorted(m for m in set(sys.modules) - before if m.startswith('harness')))"
    )
    loaded = subprocess.check_output([sys.executable, "-c", code], text=True)
    # A scenario file needs Scenario and Trial; it must not pull in the engine, workers or results.
    assert "harness.engine" not in loaded
    assert "harness.results" not in loaded
    assert set(harness.__all__) == {*harness._WHERE, "__version__"}
