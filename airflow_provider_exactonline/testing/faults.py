"""Faults the fake injects on request: latency, failed or dropped responses, HTML error pages, slow tokens."""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass
class Fault:
    kind: str  # fail / drop / html
    remaining: int
    status: int
    path_contains: str | None
    when: str = "mid_response"


class FaultInjector:
    """The faults armed on one fake (``fake.fail_next(...)`` and friends delegate here)."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self.faults: list[Fault] = []
        self.latency = (0.0, 0.0)
        self.token_delay = 0.0

    def set_latency(self, fixed: float = 0.0, jitter: float = 0.0) -> None:
        """Delay every /api response by ``fixed + uniform(0, jitter)`` real seconds."""
        with self._lock:
            self.latency = (max(0.0, fixed), max(0.0, jitter))

    def fail_next(self, n: int = 1, status: int = 503, path_contains: str | None = None) -> None:
        """Answer the next ``n`` matching requests with ``status`` (JSON error envelope), unprocessed.

        ``path_contains=None`` matches API calls (``/api/v1/...``); pass ``"oauth2/token"`` to fail token calls.
        """
        with self._lock:
            self.faults.append(Fault("fail", n, status, path_contains))

    def drop_next(self, n: int = 1, path_contains: str | None = None, when: str = "mid_response") -> None:
        """Drop the connection on the next ``n`` matching requests.

        ``when="mid_response"``: the request is processed (a token call rotates the chain!), then the
        headers and half the body are sent and the socket closed. ``"before_response"``: closed right
        after the request is read, without processing it.
        """
        if when not in ("mid_response", "before_response"):
            raise ValueError("when must be 'mid_response' or 'before_response'")
        with self._lock:
            self.faults.append(Fault("drop", n, 0, path_contains, when))

    def html_error_next(self, n: int = 1, status: int = 200, path_contains: str | None = None) -> None:
        """Answer the next ``n`` matching requests with an HTML page (``text/html``) instead of JSON."""
        with self._lock:
            self.faults.append(Fault("html", n, status, path_contains))

    def set_token_delay(self, seconds: float) -> None:
        """Hold token responses for ``seconds`` real seconds *after* the token was issued (lost-response tests)."""
        with self._lock:
            self.token_delay = max(0.0, seconds)

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()
            self.latency = (0.0, 0.0)
            self.token_delay = 0.0

    def take(self, path: str) -> Fault | None:
        lowered = path.lower()
        with self._lock:
            for fault in self.faults:
                if fault.path_contains is None:
                    matches = lowered.startswith("/api/v1/")
                else:
                    matches = fault.path_contains.lower() in lowered
                if matches and fault.remaining > 0:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self.faults.remove(fault)
                    return fault
        return None
