"""Finding scenarios by name.

A `Registry` holds scenarios keyed by name. The built-in ones live in the ``stress_scenarios``
package (the ``scenarios/`` folder of the source tree); every module there that defines a module-level
`Scenario` contributes it. Scenarios are found by looking at module globals, not by import-time side
effects, so importing a scenario module twice never registers anything twice.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable, Iterator, Sequence
from types import ModuleType

from harness.errors import ScenarioError, ScenarioNotFound, did_you_mean
from harness.scenario import Scenario, Variant

__all__ = ["BUILTIN_PACKAGE", "Registry", "scenarios_in"]

BUILTIN_PACKAGE = "stress_scenarios"


def scenarios_in(module: ModuleType) -> list[Scenario]:
    """Every `Scenario` bound to a global name of ``module``, in definition order."""
    found: list[Scenario] = []
    for value in vars(module).values():
        if isinstance(value, Scenario) and all(value is not s for s in found):
            found.append(value)
    return found


class Registry:
    """Scenarios by name, with "did you mean" lookups."""

    def __init__(self, scenarios: Iterable[Scenario] = ()) -> None:
        self._scenarios: dict[str, Scenario] = {}
        for scenario in scenarios:
            self.add(scenario)

    @classmethod
    def builtin(cls) -> Registry:
        """The scenarios shipped with stress."""
        package = importlib.import_module(BUILTIN_PACKAGE)
        registry = cls()
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
            if info.name.startswith("_"):
                continue
            module = importlib.import_module(f"{BUILTIN_PACKAGE}.{info.name}")
            for scenario in scenarios_in(module):
                registry.add(scenario)
        return registry

    def add(self, scenario: Scenario) -> None:
        first = self._scenarios.get(scenario.name)
        if first is not None and first is not scenario:
            other = first.where
            raise ScenarioError(f"{scenario.where}: two scenarios are named {scenario.name!r} (the other: {other})")
        if not len(scenario):
            raise ScenarioError(f"{scenario.where}: scenario {scenario.name!r} declares no variant")
        self._scenarios[scenario.name] = scenario

    def __iter__(self) -> Iterator[Scenario]:
        return iter(sorted(self._scenarios.values(), key=lambda s: s.name))

    def __len__(self) -> int:
        return len(self._scenarios)

    def get(self, name: str) -> Scenario:
        try:
            return self._scenarios[name]
        except KeyError:
            known = ", ".join(sorted(self._scenarios)) or "none"
            raise ScenarioNotFound(
                f"unknown scenario {name!r}"
                + did_you_mean(name, self._scenarios)
                + f"; known scenarios: {known} (see 'stress list')"
            ) from None

    def select(self, names: Sequence[str], variants: Sequence[str] = ()) -> list[Variant]:
        """The variants to run: all of each named scenario, or only those named in ``variants``.

        A variant name may be bare (``lock``) or qualified (``counter/lock``); every name must match
        at least one selected scenario.
        """
        scenarios = [self.get(name) for name in dict.fromkeys(names)]
        if not variants:
            return [v for s in scenarios for v in s]
        chosen: dict[str, Variant] = {}
        for wanted in variants:
            scenario_part, _, variant_part = wanted.rpartition("/")
            pool = [s for s in scenarios if not scenario_part or s.name == scenario_part]
            if scenario_part and not pool:
                raise ScenarioNotFound(f"--variant {wanted!r} names scenario {scenario_part!r}, which is not being run")
            matches = [s.variants[variant_part] for s in pool if variant_part in s.variants]
            if not matches:
                if len(pool) == 1:
                    pool[0].get(variant_part)  # raises with the scenario's own suggestion
                every = [v.name for s in pool for v in s]
                raise ScenarioNotFound(
                    f"no scenario being run has a variant {variant_part!r}" + did_you_mean(variant_part, every)
                )
            for match in matches:
                chosen[match.key] = match
        order = [v.key for s in scenarios for v in s]
        return sorted(chosen.values(), key=lambda v: order.index(v.key))
