"""A worker's results, on their way to the parent without a message per trial.

A worker finishes thousands of small trials a second. Sending each result through the pipe would wake
the parent for each one, and on a machine with as many workers as cores every wake-up takes a core
from a worker. Instead the worker appends each result to its spool, an unlinked temporary file
the parent made before forking it, with one ``write`` (a length, then the pickled result); the parent
reads whatever has arrived whenever it looks — at least every `harness.engine.driver.POLL` — and
right before it judges a trial hung or a worker dead, so a trial's report is never lost with its
worker, and a trial that finished is never mistaken for the one that hung.

The file would grow for as long as the run lasts, so the worker empties it when the parent has read
all of it (the parent tells it how far it has read with each batch of trials it sends). Emptying is
guarded like a seqlock: the worker makes the epoch in its `Beacon` odd, empties the file, and makes
it even again before it appends anything; a reader that finds the epoch odd, or changed while it
read, throws that reading away (and starts from the top of the file once the epoch is new).
"""

from __future__ import annotations

import os
import pickle
import struct
from typing import IO, Any

from harness.engine.beacon import Beacon

__all__ = ["SpoolReader", "SpoolWriter"]

_LENGTH = struct.Struct("=I")
#: The worker empties its spool once the parent has read this many bytes of it.
EMPTY_AFTER = 1 << 20


class SpoolWriter:
    """The worker's side: `append` one result; `consumed` when the parent says how far it read."""

    def __init__(self, file: IO[bytes], beacon: Beacon) -> None:
        self._fd = file.fileno()
        self._beacon = beacon
        self._written = 0
        self._epoch = beacon.spool_epoch()

    def append(self, record: tuple[Any, ...]) -> None:
        payload = pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)
        data = _LENGTH.pack(len(payload)) + payload
        written = 0
        while written < len(data):
            written += os.write(self._fd, data[written:])
        self._written += len(data)

    def consumed(self, offset: int, epoch: int) -> None:
        """The parent has read the first ``offset`` bytes of epoch ``epoch``: when that is all of a
        large spool, empty it."""
        if epoch != self._epoch or offset != self._written or offset < EMPTY_AFTER:
            return
        self._beacon.set_spool_epoch(self._epoch + 1)  # odd: being emptied, nobody reads
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        self._written = 0
        self._epoch += 2
        self._beacon.set_spool_epoch(self._epoch)  # even: a new file, read from the top


class SpoolReader:
    """The parent's side: `read` returns the results appended since the last call, in order."""

    def __init__(self, file: IO[bytes], beacon: Beacon) -> None:
        self._file = file
        self._beacon = beacon
        self.offset = 0
        self.epoch = beacon.spool_epoch()

    def read(self) -> list[tuple[Any, ...]]:
        try:
            fd = self._file.fileno()
            epoch = self._beacon.spool_epoch()
            if epoch % 2:
                return []  # being emptied: next time
            if epoch != self.epoch:
                self.epoch, self.offset = epoch, 0
            size = os.fstat(fd).st_size
            if size <= self.offset:
                return []
            data = os.pread(fd, size - self.offset, self.offset)
            if self._beacon.spool_epoch() != epoch:
                return []  # emptied while we read: what we read may be the new epoch's; next time
        except (OSError, ValueError):
            return []
        records: list[tuple[Any, ...]] = []
        at = 0
        while at + _LENGTH.size <= len(data):
            (length,) = _LENGTH.unpack_from(data, at)
            end = at + _LENGTH.size + length
            if end > len(data):
                break  # written in part: the rest comes with the next read
            records.append(pickle.loads(data[at + _LENGTH.size : end]))
            at = end
        self.offset += at
        return records
