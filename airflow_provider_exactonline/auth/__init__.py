"""OAuth token lifecycle for Exact Online (see docs/tokens.md)."""

from __future__ import annotations

from airflow_provider_exactonline.auth.token_manager import TokenManager, build_token_manager
from airflow_provider_exactonline.auth.token_state import TokenState
from airflow_provider_exactonline.auth.token_stores import (
    ConnectionExtrasTokenStore,
    ConnectionReadOnlySource,
    InMemoryTokenStore,
    StoreStateChanged,
    TokenStore,
    VariableTokenStore,
    default_stores,
)

__all__ = [
    "ConnectionExtrasTokenStore",
    "ConnectionReadOnlySource",
    "InMemoryTokenStore",
    "StoreStateChanged",
    "TokenManager",
    "TokenState",
    "TokenStore",
    "VariableTokenStore",
    "build_token_manager",
    "default_stores",
]
