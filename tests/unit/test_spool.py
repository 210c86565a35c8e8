"""A worker's results spool: every record read once, in order, even while the worker empties it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from typing import IO

import pytest

from harness.engine import spool
from harness.engine.beacon import Beacon
from harness.engine.spool import SpoolReader, SpoolWriter


@pytest.fixture
def file() -> Iterator[IO[bytes]]:
    with tempfile.TemporaryFile() as spool_file:
        yield spool_file


def _pair(file: IO[bytes]) -> tuple[SpoolWriter, SpoolReader, Beacon]:
    beacon = Beacon()
    return SpoolWriter(file, beacon), SpoolReader(file, beacon), beacon


def test_records_arrive_once_and_in_order(file: IO[bytes]) -> None:
    writer, reader, _ = _pair(file)
    for ticket in range(1, 6):
        writer.append((ticket, "passed"))
    assert [r[0] for r in reader.read()] == [1, 2, 3, 4, 5]
    assert reader.read() == []
    writer.append((6, "failed"))
    assert reader.read() == [(6, "failed")]


def test_a_record_written_in_part_waits_for_the_rest(file: IO[bytes]) -> None:
    writer, reader, _ = _pair(file)
    writer.append((1, "passed"))
    whole = spool._LENGTH.pack(9) + b"123456789"
    os.write(file.fileno(), whole[:7])  # a record the worker was stopped in the middle of
    assert reader.read() == [(1, "passed")]
    assert reader.read() == []


def test_emptying_never_lets_a_record_be_read_twice(file: IO[bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool, "EMPTY_AFTER", 1)
    writer, reader, beacon = _pair(file)
    for ticket in range(1, 4):
        writer.append((ticket, "passed"))
    assert [r[0] for r in reader.read()] == [1, 2, 3]
    # The worker is stopped in the middle of emptying: the epoch is odd, the file not yet empty.
    beacon.set_spool_epoch(beacon.spool_epoch() + 1)
    assert reader.read() == [], "nothing is read while the spool is being emptied"
    beacon.set_spool_epoch(beacon.spool_epoch() - 1)
    writer.consumed(reader.offset, reader.epoch)  # now it empties it for real
    writer.append((4, "passed"))
    assert reader.read() == [(4, "passed")]
    assert reader.read() == []
    assert beacon.spool_epoch() % 2 == 0


def test_the_spool_is_emptied_only_when_everything_was_read(file: IO[bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool, "EMPTY_AFTER", 1)
    writer, reader, beacon = _pair(file)
    writer.append((1, "passed"))
    writer.append((2, "passed"))
    reader.read()
    writer.append((3, "passed"))  # not read yet
    writer.consumed(reader.offset, reader.epoch)
    assert beacon.spool_epoch() == 0, "an unread record keeps the file"
    assert reader.read() == [(3, "passed")]
