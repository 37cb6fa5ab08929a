"""A private redis-server per test (own port, no persistence), killed afterwards."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from redis_support import RedisServer


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server")
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
