"""Write events: the fake tells listeners (e.g. a webhook sender) about every successful write."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_exactonline.testing.entities import EntityDef

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WriteEvent:
    """One successful write: ``action`` is ``"Create"``, ``"Update"`` or ``"Delete"``; ``key`` is the row's
    key as a string (GUIDs lower-case); ``timestamp`` the row's new Timestamp; ``entity`` the catalog name."""

    division: int
    entity: str
    action: str
    key: str
    timestamp: int


WriteListener = Callable[[WriteEvent], Any]


class WriteListeners:
    """Listeners and the events waiting to be sent (sent after the fake's lock is released)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: list[WriteListener] = []
        self._pending = threading.local()

    def add(self, callback: WriteListener) -> None:
        with self._lock:
            self._listeners.append(callback)

    def remove(self, callback: WriteListener) -> None:
        with self._lock:
            if callback in self._listeners:
                self._listeners.remove(callback)

    def queue(self, division: int, entity: EntityDef, action: str, row: Mapping[str, Any]) -> None:
        """Remember a write made by this thread; :meth:`emit` sends it."""
        key = row.get(entity.key)
        event = WriteEvent(division, entity.label, action, str(key).lower(), int(row.get("Timestamp") or 0))
        pending = getattr(self._pending, "events", None)
        if pending is None:
            pending = self._pending.events = []
        pending.append(event)

    def emit(self) -> None:
        """Send this thread's queued events; a listener's exception is logged and never breaks the write."""
        events = getattr(self._pending, "events", None) or []
        self._pending.events = []
        with self._lock:
            listeners = list(self._listeners)
        for event in events:
            for callback in listeners:
                try:
                    callback(event)
                except Exception:
                    log.exception("write listener %r failed on %s", callback, event)
