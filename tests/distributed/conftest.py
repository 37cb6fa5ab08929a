"""One distributed rig per module (it takes about a minute to start)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from integration.rotation_support import pg_available

from .netns import why_no_namespaces
from .rig import Rig, distributed_rig


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    reason = why_no_namespaces()
    if reason is None and not pg_available():
        reason = "needs PostgreSQL at 127.0.0.1:5432 (user postgres)"
    if reason is None and shutil.which("redis-server") is None:
        reason = "needs redis-server (Debian package redis-server) for the Celery broker"
    if reason:
        pytest.skip(f"distributed rig unavailable: {reason}")
    with distributed_rig(tmp_path_factory.mktemp("distributed")) as built:
        yield built
