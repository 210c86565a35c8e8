"""Settings loaded lazily, on first use, and shared by every thread of an application.

The unsafe version is the classic broken double-checked locking: it checks for the instance
without the lock, and publishes the instance before it is filled in, so another thread can see a
half-built object — or two threads both build one. The safe versions check again under the lock
and publish only a finished object, or build it eagerly.

    stress run examples/lazy_settings.py
    stress run examples/lazy_settings.py --mode controlled
"""

import threading

from harness import Scenario, Trial

scenario = Scenario(
    "lazy-settings",
    "Threads (`actors`) read the application's settings; the first use loads them",
    size=2,
    actors=3,
)


class Settings:
    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def load(self, loads: list[int]) -> None:
        loads.append(1)  # count the (expensive) loads: there should be one
        self.values["database"] = "postgres://db/app"
        self.values["timeout"] = "5"


class UnsafeHolder:
    """Checks without the lock, and publishes the object before loading it."""

    def __init__(self, loads: list[int]) -> None:
        self.loads = loads
        self.instance: Settings | None = None
        self.lock = threading.Lock()

    def get(self) -> Settings:
        if self.instance is None:
            with self.lock:
                settings = Settings()
                self.instance = settings  # published half-built ...
                settings.load(self.loads)  # ... and filled in afterwards
        return self.instance


class DoubleCheckedHolder(UnsafeHolder):
    """Checks again under the lock, and publishes only a loaded object."""

    def get(self) -> Settings:
        if self.instance is None:
            with self.lock:
                if self.instance is None:
                    settings = Settings()
                    settings.load(self.loads)
                    self.instance = settings
        return self.instance


class LockedHolder(UnsafeHolder):
    """Takes the lock on every read: simple, and correct."""

    def get(self) -> Settings:
        with self.lock:
            if self.instance is None:
                settings = Settings()
                settings.load(self.loads)
                self.instance = settings
            return self.instance


def _readers(trial: Trial, holder_type) -> None:  # type: ignore[no-untyped-def]
    loads: list[int] = []
    holder = holder_type(loads)
    seen: list[str | None] = []

    def reader() -> None:
        for _ in range(trial.size):
            seen.append(holder.get().values.get("database"))  # noqa: PERF401 (one read per call)

    trial.run_threads(reader, count=trial.actors)
    missing = seen.count(None)
    trial.check(missing == 0, f"{missing} reads saw settings that were not loaded yet")
    trial.check(len(loads) == 1, f"the settings were loaded {len(loads)} times")


@scenario.variant(expect="unsafe")
def publish_early(trial: Trial) -> None:
    """Unlocked check; the instance is visible before it is loaded."""
    _readers(trial, UnsafeHolder)


@scenario.variant(expect="safe")
def double_checked(trial: Trial) -> None:
    """Check, lock, check again, publish a loaded object."""
    _readers(trial, DoubleCheckedHolder)


@scenario.variant(expect="safe")
def always_locked(trial: Trial) -> None:
    """Every read under the lock."""
    _readers(trial, LockedHolder)
