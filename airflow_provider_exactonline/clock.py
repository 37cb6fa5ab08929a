"""Clocks shared by the hook and the fake Exact Online server.

Exact's rules are in wall-clock time (600 s tokens, per-minute limits). Tests run
the fake server on a :class:`ScaledClock` so a "minute" can pass in a second; the
hook is given the same clock so it waits in the same time frame as the server.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Seconds since the epoch, in this clock's time frame."""

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""


class SystemClock:
    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class ScaledClock:
    """A clock running ``scale`` times faster than real time from ``origin``.

    Two processes that build a ScaledClock with the same ``origin`` and ``scale``
    agree on the time, so a test can hand both numbers to worker processes.
    """

    def __init__(self, scale: float = 1.0, origin: float | None = None) -> None:
        if scale <= 0:
            raise ValueError("scale must be positive")
        self.scale = scale
        self.origin = time.time() if origin is None else origin
        self._offset = 0.0

    def time(self) -> float:
        return self.origin + (time.time() - self.origin) * self.scale + self._offset

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds / self.scale)

    def advance(self, seconds: float) -> None:
        """Jump this clock forward (only this process's instance)."""
        self._offset += seconds


SYSTEM_CLOCK = SystemClock()
