"""Typed errors. Every message says what went wrong and, where a human must act, what to do.

All inherit :class:`ExactOnlineError`, which is an ``AirflowException`` so Airflow's
retry and failure handling applies. Messages never contain tokens or secrets.
"""

from __future__ import annotations

from typing import Any

from airflow.exceptions import AirflowException
from airflow.sdk.exceptions import AirflowFailException


class ExactOnlineError(AirflowException):
    """Base class. ``status_code``, ``exact_message`` and ``reason`` come from Exact's answer when there was one."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        exact_message: str | None = None,
        reason: str | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code: int | None = status_code  # type: ignore[assignment]
        self.exact_message = exact_message
        self.reason = reason
        self.url = url

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep keyword attributes across pickling (multiprocessing, XCom of errors).
        return (_rebuild, (type(self), self.message, self.__dict__))


def _rebuild(cls: type[ExactOnlineError], message: str, state: dict[str, Any]) -> ExactOnlineError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class ExactOnlineConfigError(ExactOnlineError, ValueError, AirflowFailException):
    """The connection (or an argument) is mis-configured; the message names the field and the fix.

    Like every error a retry cannot cure, an ``AirflowFailException``: the task fails without retrying.
    """


class ExactOnlineCatalogError(ExactOnlineError, ValueError, AirflowFailException):
    """An entity or field name is not in the endpoint catalog; raised before any HTTP call."""

    #: Closest valid names, best first (per unknown field for field errors; set by the catalog).
    suggestions: Any
    entity: str | None
    variant: str | None


class ExactOnlineUnknownEntity(ExactOnlineCatalogError):
    """No such entity; the message lists the closest names."""


class ExactOnlineUnknownField(ExactOnlineCatalogError):
    """A ``$select``/``$filter`` field does not exist on the entity; the message lists the closest names."""

    #: The unknown field names.
    fields: list[str]


class ExactOnlineMandatoryFilterError(ExactOnlineCatalogError):
    """A collection GET that Exact's mandatory filtering would refuse (HTTP 400); raised before the call.

    The message names the endpoint, the fields a ``$filter`` must reference and the ``sync/`` endpoint
    (or the export's full mode) to read everything instead.
    """

    #: Fields a ``$filter`` must reference (empty: any field counts), and the sync path if there is one.
    allowed_fields: tuple[str, ...]
    sync_path: str | None


class ExactOnlineAuthError(ExactOnlineError):
    """Exact refused our credentials or token (HTTP 401/403, or a token-endpoint refusal)."""


class ExactOnlineReauthorizationRequired(ExactOnlineAuthError, AirflowFailException):
    """The token chain is dead (refresh token reused, expired or missing): a human must authorize again."""

    def __init__(self, conn_id: str, detail: str, **kwargs: Any) -> None:
        message = (
            f"Exact Online connection {conn_id!r} must be re-authorized: {detail}. "
            f"Open the 'Exact Online' page in the Airflow UI (/exactonline) and click Reconnect, "
            f"or run `airflow-exactonline authorize {conn_id}`."
        )
        super().__init__(message, **kwargs)
        self.conn_id = conn_id
        self.detail = detail


class ExactOnlineRateLimitExceeded(ExactOnlineError):
    """A rate limit is spent. ``reset_at`` (epoch seconds, UTC) says when calls are allowed again."""

    def __init__(self, message: str, *, scope: str, reset_at: float | None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.scope = scope  # "daily" or "minutely"
        self.reset_at = reset_at


class ExactOnlineNotFound(ExactOnlineError, AirflowFailException):
    """HTTP 404: the entity, record or endpoint does not exist (not retried: Exact counts 404s toward its
    10-errors-per-hour block; wait for a record with ExactOnlineSensor instead)."""


class ExactOnlineBadRequest(ExactOnlineError, AirflowFailException):
    """HTTP 400 on an API call: Exact rejected the request (bad field, filter, body). Not retried: the
    same request fails again, and Exact blocks the app for an hour after 10 errors per endpoint."""


class ExactOnlineServerError(ExactOnlineError):
    """HTTP 5xx after retries, or the connection kept failing."""


class ExactOnlineResponseError(ExactOnlineError):
    """Exact answered with something that is not the JSON we expect (HTML page, truncated body)."""


class ExactOnlineOutcomeUnknown(ExactOnlineError, AirflowFailException):
    """A non-idempotent call (POST) failed after it may have reached Exact Online.

    An ``AirflowFailException``: Airflow does not retry the task, because a retry would send the
    call again and might create a second record. Check in Exact whether it took effect first.
    """


class ExactOnlineUpsertFailed(ExactOnlineError):
    """Some records could not be written; ``report`` has the counts and the failures."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report
