"""Bounding text that comes from code under test.

Messages, tracebacks, dumps and printed output can be arbitrarily large (or binary). Everything that
goes into a result passes through `clip`, which keeps the head and the tail and says how much was cut,
so a 10 MB exception message costs a few kilobytes and is still recognisable.
"""

from __future__ import annotations

import os

__all__ = ["clip", "decode", "short_path", "short_where"]


def decode(data: bytes) -> str:
    """Bytes from a file or pipe as text, with undecodable bytes shown as escapes."""
    return data.decode("utf-8", errors="backslashreplace")


def clip(text: str, limit: int) -> str:
    """``text`` if it fits in ``limit`` characters, else its head and tail around a marker."""
    if len(text) <= limit:
        return text
    keep = max(limit - 60, 2)
    head = keep * 2 // 3
    tail = keep - head
    cut = len(text) - head - tail
    return f"{text[:head]}\n[... {cut} characters cut by stress ...]\n{text[-tail:]}"


def short_path(file: str) -> str:
    """A file as a person wants to read it: relative to the working directory when inside it,
    else just its name (a scenario installed in site-packages has a long, useless prefix)."""
    try:
        relative = os.path.relpath(file)
    except ValueError:
        return os.path.basename(file)
    return relative if not relative.startswith("..") else os.path.basename(file)


def short_where(where: str) -> str:
    """``/long/path/x.py:12 in f`` -> ``x.py:12 in f`` (see `short_path`)."""
    file, sep, rest = where.partition(":")
    return f"{short_path(file)}{sep}{rest}" if sep else where
