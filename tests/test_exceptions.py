"""Which errors make Airflow fail the task at once instead of retrying it."""

from __future__ import annotations

import pickle

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_exactonline import exceptions as e


@pytest.mark.parametrize(
    "error",
    [
        e.ExactOnlineConfigError("bad"),
        e.ExactOnlineUnknownEntity("bad"),
        e.ExactOnlineUnknownField("bad"),
        e.ExactOnlineReauthorizationRequired("conn", "Old refresh token used"),
        e.ExactOnlineNotFound("missing", status_code=404),
        e.ExactOnlineBadRequest("bad", status_code=400),
        e.ExactOnlineOutcomeUnknown("maybe sent"),
    ],
)
def test_errors_a_retry_cannot_cure_are_not_retried(error: e.ExactOnlineError) -> None:
    # A task retry would repeat the same 400/404 and count toward Exact's 10-errors-per-hour block.
    assert isinstance(error, AirflowFailException)
    assert isinstance(error, e.ExactOnlineError)


@pytest.mark.parametrize(
    "error",
    [
        e.ExactOnlineServerError("503", status_code=503),
        e.ExactOnlineRateLimitExceeded("spent", scope="minutely", reset_at=1.0, status_code=429),
        e.ExactOnlineResponseError("html"),
        e.ExactOnlineAuthError("could not take the token lease"),
    ],
)
def test_transient_errors_keep_airflow_retries(error: e.ExactOnlineError) -> None:
    assert not isinstance(error, AirflowFailException)


def test_errors_survive_pickling_with_their_fields() -> None:
    error = e.ExactOnlineRateLimitExceeded("spent", scope="daily", reset_at=123.0, status_code=429, reason="x")
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.scope, copy.reset_at, copy.status_code, copy.reason, str(copy)) == (
        e.ExactOnlineRateLimitExceeded,
        "daily",
        123.0,
        429,
        "x",
        "spent",
    )
    reauth = pickle.loads(pickle.dumps(e.ExactOnlineReauthorizationRequired("c1", "expired")))
    assert reauth.conn_id == "c1" and "airflow-exactonline authorize c1" in str(reauth)
