"""Forced preemption exposes a race inside one line, only in scope, and only when asked."""

from __future__ import annotations

import sys
import threading

import pytest

from harness.perturb.preempt import HAS_MONITORING, Preemptor
from harness.scope import Scope

HERE = __file__


def _lost_updates(preemptor: Preemptor, probability: float, *, threads: int = 4, size: int = 300) -> int:
    box = [0]

    def add() -> None:
        for _ in range(size):
            box[0] += 1

    preemptor.start(probability, seed=1)
    try:
        workers = [threading.Thread(target=add) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        preemptor.stop()
    return threads * size - box[0]


BACKENDS = ["settrace"] + (["monitoring"] if HAS_MONITORING else [])


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "settrace" and HAS_MONITORING:
        pytest.skip("one mechanism per process: 3.12+ uses sys.monitoring")
    return str(request.param)


def test_injection_exposes_the_lost_update(backend: str) -> None:
    preemptor = Preemptor(Scope(files=[HERE]), backend=backend)
    try:
        lost = [_lost_updates(preemptor, 0.05) for _ in range(5)]
    finally:
        preemptor.close()
    assert all(n > 0 for n in lost), lost


def test_no_injection_at_probability_zero(backend: str) -> None:
    preemptor = Preemptor(Scope(files=[HERE]), backend=backend)
    try:
        preemptor.start(0.0)
        assert preemptor.stop() == 0
        assert sys.gettrace() is None
    finally:
        preemptor.close()


def test_out_of_scope_code_is_never_preempted(backend: str) -> None:
    preemptor = Preemptor(Scope(files=["/nonexistent/other.py"]), backend=backend)
    try:
        preemptor.start(1.0)
        _ = [i * 2 for i in range(100)]
        switches = preemptor.stop()
    finally:
        preemptor.close()
    assert switches == 0


def test_in_scope_code_counts_switches(backend: str) -> None:
    preemptor = Preemptor(Scope(files=[HERE]), backend=backend)
    try:
        lost = _lost_updates(preemptor, 1.0, threads=1, size=20)
        switches = preemptor._switches
    finally:
        preemptor.close()
    assert lost == 0  # one thread cannot race with itself
    assert switches > 20  # every instruction of the loop was a switch point


def test_tracing_is_removed_after_the_trial(backend: str) -> None:
    preemptor = Preemptor(Scope(files=[HERE]), backend=backend)
    try:
        preemptor.start(0.5)
        preemptor.stop()
        assert sys.gettrace() is None
        assert threading.gettrace() is None
    finally:
        preemptor.close()


def test_scope_by_file_and_folder(tmp_path: object) -> None:
    scope = Scope(files=[HERE], dirs=["/srv/app"])
    assert scope.contains_file(HERE)
    assert scope.contains_file("/srv/app/models/account.py")
    assert not scope.contains_file("/srv/application.py")
    assert not scope.contains_file("<string>")
    import harness.engine.driver

    assert not Scope(dirs=["/"]).contains_file(harness.engine.driver.__file__)  # the harness is never in scope
