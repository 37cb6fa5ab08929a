"""A custom TokenStore for tests (and an example for docs/tokens.md): a JSON file guarded by flock."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator

from airflow_provider_exactonline.auth import TokenState


class FileTokenStore:
    name = "file"

    def __init__(self, path: str) -> None:
        self.path = path

    def load(self) -> TokenState | None:
        try:
            with open(self.path) as handle:
                return TokenState.from_dict(json.load(handle))
        except (FileNotFoundError, ValueError):
            return None

    def save(self, state: TokenState) -> None:
        tmp = f"{self.path}.tmp{os.getpid()}"
        with open(tmp, "w") as handle:
            json.dump(state.to_dict(), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        with open(f"{self.path}.lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
