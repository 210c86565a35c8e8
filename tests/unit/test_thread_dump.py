"""A real faulthandler dump is read back into one 'blocked at' line per thread in scope."""

from __future__ import annotations

import faulthandler
import tempfile
import threading
from pathlib import Path

from harness.detect.thread_dump import blocked_at, parse_dump
from harness.scope import Scope


def _dump_with_a_blocked_thread() -> tuple[str, int]:
    release = threading.Event()
    ready = threading.Event()

    def waiter() -> None:
        ready.set()
        release.wait(10)  # BLOCKED LINE

    thread = threading.Thread(target=waiter)
    thread.start()
    try:
        assert ready.wait(10)
        with tempfile.TemporaryFile() as file:
            faulthandler.dump_traceback(file, all_threads=True)
            file.seek(0)
            text = file.read().decode()
    finally:
        release.set()
        thread.join()
    source = Path(__file__).read_text().splitlines()
    line = next(n for n, src in enumerate(source, 1) if "# BLOCKED LINE" in src)
    return text, line


def test_parse_dump_finds_every_thread_and_frame() -> None:
    text, line = _dump_with_a_blocked_thread()
    threads = parse_dump(text)
    assert len(threads) >= 2
    assert sum(t.current for t in threads) == 1
    waiter = next(t for t in threads if any(f.function == "waiter" for f in t.frames))
    assert any(f.line == line and f.file == __file__ for f in waiter.frames)


def test_blocked_at_names_the_line_and_the_wait() -> None:
    text, line = _dump_with_a_blocked_thread()
    lines = blocked_at(text, Scope(files=[__file__]))
    assert any(f"test_thread_dump.py:{line} in waiter (waiting in wait, threading.py:" in entry for entry in lines)


def test_blocked_at_ignores_threads_outside_scope() -> None:
    text, _ = _dump_with_a_blocked_thread()
    assert blocked_at(text, Scope(files=["/elsewhere.py"])) == ()


def test_a_thread_from_before_the_trial_is_labelled_and_listed_last() -> None:
    # A module's ticker, running before the trial, is in a hang's dump too: its line is not the
    # trial's, and read as one it sent people looking at the wrong code.
    text, line = _dump_with_a_blocked_thread()
    waiter = next(t for t in parse_dump(text) if any(f.function == "waiter" for f in t.frames))
    from harness.detect.thread_dump import BEFORE

    labelled = blocked_at(f"{BEFORE}{waiter.ident}\n{text}", Scope(files=[__file__]))
    assert f"test_thread_dump.py:{line} in waiter" in labelled[-1], labelled
    assert labelled[-1].endswith("(a thread from before the trial)"), labelled
    assert sum("before the trial" in entry for entry in labelled) == 1
