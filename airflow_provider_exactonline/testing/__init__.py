"""A fake Exact Online server for tests: ``from airflow_provider_exactonline.testing import FakeExactOnline``.

Importing this package never imports Airflow. See ``docs/fake-server.md``.
"""

from __future__ import annotations

from airflow_provider_exactonline.testing.events import WriteEvent
from airflow_provider_exactonline.testing.server import FakeExactOnline, RequestRecord, TokenCall

__all__ = ["FakeExactOnline", "RequestRecord", "TokenCall", "WriteEvent"]
