"""pytest plugin (entry point ``exactonline_fake``): the ``fake_exact_online`` fixture.

Import-light on purpose: pytest loads it in every run, so the server is imported only when the
fixture is used. Configure a test's fake with a marker::

    @pytest.mark.fake_exact_online(rows={"crm/Accounts": 500}, auto_approve=True)
    def test_sync(fake_exact_online):
        ...
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from airflow_provider_exactonline.testing.server import FakeExactOnline


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "fake_exact_online(**kwargs): keyword arguments for the FakeExactOnline of the fake_exact_online fixture",
    )


@pytest.fixture
def fake_exact_online(request: pytest.FixtureRequest) -> Iterator[FakeExactOnline]:
    """A started FakeExactOnline on an ephemeral loopback port, stopped after the test."""
    from airflow_provider_exactonline.testing.server import FakeExactOnline

    kwargs: dict[str, Any] = {}
    for marker in reversed(list(request.node.iter_markers("fake_exact_online"))):
        kwargs.update(marker.kwargs)
    with FakeExactOnline(**kwargs) as fake:
        yield fake
