from __future__ import annotations

import pytest

from airflow_provider_exactonline.auth.token_state import TokenState
from airflow_provider_exactonline.exceptions import ExactOnlineAuthError


def test_from_token_response_parses_string_expires_in() -> None:
    state = TokenState.from_token_response(
        {"access_token": "AAEA-x", "token_type": "bearer", "expires_in": "600", "refresh_token": "__1P!I-y"}, 1000.0
    )
    assert (state.expires_at, state.obtained_at, state.lifetime) == (1600.0, 1000.0, 600.0)
    assert state.refresh_token == "__1P!I-y"


def test_from_token_response_rejects_garbage() -> None:
    with pytest.raises(ExactOnlineAuthError, match="no access_token"):
        TokenState.from_token_response({"expires_in": "600"}, 0)
    with pytest.raises(ExactOnlineAuthError, match="invalid expires_in"):
        TokenState.from_token_response({"access_token": "a", "expires_in": "soon"}, 0)


def test_extras_round_trip_and_repr_hides_tokens() -> None:
    state = TokenState("secret-access", "secret-refresh", 1600.5, 1000.25, last_error="boom")
    extras = state.to_extras()
    assert set(extras) == {
        "access_token",
        "refresh_token",
        "token_expires_at",
        "token_obtained_at",
        "last_refresh_error",
    }
    assert TokenState.from_extras({**extras, "division": 1}) == state
    assert TokenState.from_dict(state.to_dict()) == state
    assert "secret" not in repr(state) and "secret" not in str(state)
    assert TokenState.from_extras({"division": 1}) is None


def test_refresh_window_scales_with_lifetime_and_stays_inside_exacts() -> None:
    real = TokenState("a", "r", expires_at=600, obtained_at=0)
    assert real.refresh_window() == pytest.approx(15.0)  # half of Exact's 30 s: never earlier than it allows
    short = TokenState("a", "r", expires_at=20, obtained_at=0)
    assert short.refresh_window() == pytest.approx(0.5)
    assert not real.needs_refresh(now=500)  # 100 s left
    assert not real.needs_refresh(now=584)  # Exact allows it from 570 s; we keep 15 s for clock skew
    assert real.needs_refresh(now=585)
    assert real.needs_refresh(now=700)
    assert TokenState(None, "r", 600, 0).needs_refresh(now=0)


def test_newer_than_compares_obtained_at() -> None:
    old = TokenState("a", "r", 600, 0)
    new = TokenState("b", "s", 700, 100)
    assert new.newer_than(old) and not old.newer_than(new) and new.newer_than(None)
