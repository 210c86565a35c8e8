"""Bounding text that comes from code under test.

Messages, tracebacks, dumps and printed output can be arbitrarily large (or binary). Everything that
goes into a result passes through `clip`, which keeps the head and the tail and says how much was cut,
so a 10 MB exception message costs a few kilobytes and is still recognisable.
"""

from __future__ import annotations

__all__ = ["clip", "decode"]


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
