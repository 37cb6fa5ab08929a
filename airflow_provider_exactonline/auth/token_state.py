"""The token pair and its timing, as stored in every token store."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from airflow_provider_exactonline.exceptions import ExactOnlineAuthError

# Extras keys on the ``exactonline`` connection (see docs/design.md "Connection").
EXTRA_ACCESS_TOKEN = "access_token"
EXTRA_REFRESH_TOKEN = "refresh_token"
EXTRA_EXPIRES_AT = "token_expires_at"
EXTRA_OBTAINED_AT = "token_obtained_at"
EXTRA_LAST_ERROR = "last_refresh_error"
TOKEN_EXTRA_KEYS = (EXTRA_ACCESS_TOKEN, EXTRA_REFRESH_TOKEN, EXTRA_EXPIRES_AT, EXTRA_OBTAINED_AT, EXTRA_LAST_ERROR)

#: Exact's access tokens live 600 s; a new one may be requested only in the last 30 s.
EXACT_TOKEN_LIFETIME = 600.0
EXACT_REFRESH_WINDOW = 30.0
#: Share of Exact's window we use: refresh at >= 585 s of a 600 s token, 15 s after Exact allows it
#: (570 s), a margin for clock skew between hosts (``obtained_at`` may come from another host's clock).
DEFAULT_WINDOW_SAFETY = 0.5


def _float(value: Any, default: float = 0.0) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


@dataclass(frozen=True)
class TokenState:
    """One point in the token chain. Times are epoch seconds in the manager's clock."""

    access_token: str | None
    refresh_token: str | None
    expires_at: float
    obtained_at: float
    last_error: str | None = None

    def __repr__(self) -> str:  # never print tokens
        return (
            f"TokenState(access_token={'***' if self.access_token else None}, "
            f"refresh_token={'***' if self.refresh_token else None}, expires_at={self.expires_at:.3f}, "
            f"obtained_at={self.obtained_at:.3f}, last_error={self.last_error!r})"
        )

    __str__ = __repr__

    # --- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> TokenState | None:
        """Tolerant: returns None when there is no token at all."""
        if not isinstance(data, dict):
            return None
        access = data.get("access_token") or None
        refresh = data.get("refresh_token") or None
        if not access and not refresh:
            return None
        return cls(
            access_token=str(access) if access else None,
            refresh_token=str(refresh) if refresh else None,
            expires_at=_float(data.get("expires_at")),
            obtained_at=_float(data.get("obtained_at")),
            last_error=data.get("last_error") or None,
        )

    @classmethod
    def from_extras(cls, extras: dict[str, Any] | None) -> TokenState | None:
        if not isinstance(extras, dict):
            return None
        return cls.from_dict(
            {
                "access_token": extras.get(EXTRA_ACCESS_TOKEN),
                "refresh_token": extras.get(EXTRA_REFRESH_TOKEN),
                "expires_at": extras.get(EXTRA_EXPIRES_AT),
                "obtained_at": extras.get(EXTRA_OBTAINED_AT),
                "last_error": extras.get(EXTRA_LAST_ERROR),
            }
        )

    def to_extras(self) -> dict[str, Any]:
        """The extras keys to merge into the connection. ``last_refresh_error`` is None when cleared."""
        return {
            EXTRA_ACCESS_TOKEN: self.access_token,
            EXTRA_REFRESH_TOKEN: self.refresh_token,
            EXTRA_EXPIRES_AT: self.expires_at,
            EXTRA_OBTAINED_AT: self.obtained_at,
            EXTRA_LAST_ERROR: self.last_error,
        }

    @classmethod
    def from_token_response(cls, resp_json: dict[str, Any], now: float) -> TokenState:
        """Build from Exact's token response. ``expires_in`` arrives as a string (``"600"``).

        ``now`` must be taken when the response arrived, not when the request left: the
        server's clock started earlier, so our ``expires_at`` is never earlier than its own
        and our refresh window never opens before the server's.
        """
        access = resp_json.get("access_token")
        refresh = resp_json.get("refresh_token")
        if not access:
            raise ExactOnlineAuthError("Exact's token response has no access_token")
        raw_expires = resp_json.get("expires_in")
        expires_in = _float(raw_expires, default=-1.0)
        if expires_in <= 0:
            if raw_expires in (None, ""):
                expires_in = EXACT_TOKEN_LIFETIME
            else:
                raise ExactOnlineAuthError(f"Exact's token response has an invalid expires_in {raw_expires!r}")
        return cls(
            access_token=str(access),
            refresh_token=str(refresh) if refresh else None,
            expires_at=now + expires_in,
            obtained_at=now,
            last_error=None,
        )

    # --- timing ---------------------------------------------------------------------------------
    @property
    def lifetime(self) -> float:
        life = self.expires_at - self.obtained_at
        return life if life > 0 else EXACT_TOKEN_LIFETIME

    def refresh_window(self, safety: float = DEFAULT_WINDOW_SAFETY) -> float:
        """Seconds before expiry in which we may refresh.

        Exact allows a refresh only in the last 30 s of a 600 s token. The window scales with the
        token's lifetime (test servers shorten it) and is multiplied by ``safety`` < 1 so we are
        never early, even with a little clock skew or a late-persisted ``obtained_at``.
        """
        return min(EXACT_REFRESH_WINDOW, self.lifetime * EXACT_REFRESH_WINDOW / EXACT_TOKEN_LIFETIME) * safety

    def is_expired(self, now: float) -> bool:
        return now >= self.expires_at

    def needs_refresh(self, now: float, safety: float = DEFAULT_WINDOW_SAFETY) -> bool:
        """Missing access token, expired, or inside the refresh window."""
        if not self.access_token:
            return True
        return now >= self.expires_at - self.refresh_window(safety)

    def newer_than(self, other: TokenState | None) -> bool:
        return other is None or self.obtained_at > other.obtained_at

    def same_tokens(self, other: TokenState | None) -> bool:
        return (
            other is not None and self.access_token == other.access_token and self.refresh_token == other.refresh_token
        )

    def with_error(self, error: str | None) -> TokenState:
        return replace(self, last_error=error)
