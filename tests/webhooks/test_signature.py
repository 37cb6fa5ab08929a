"""Webhook signature verification: every refusal, and a genuine callback."""

from __future__ import annotations

import json

import pytest

from airflow_provider_exactonline.exceptions import ExactOnlineConfigError, ExactOnlineError
from airflow_provider_exactonline.webhooks.signature import (
    ReplayGuard,
    WebhookForged,
    WebhookMalformed,
    WebhookReplayed,
    WebhookTooLarge,
    WebhookUnsigned,
    is_validation_request,
    sign,
    verify,
)

SECRET = "whs-4f2a9c-secret"
CONTENT = {
    "Topic": "Accounts",
    "ClientId": "3f1a2b4c-0000-4000-8000-00000000c11d",
    "Action": "Update",
    "Division": 1001,
    "Key": "9f0e507b-9dde-458d-8358-0a70d63acd38",
    "ExactOnlineEndpoint": "https://start.exactonline.nl/api/v1/1001/crm/Accounts(guid'9f0e507b')",
}


def body(content: str, hash_code: str | None) -> bytes:
    members = [f'"Content": {content}']
    if hash_code is not None:
        members.append(f'"HashCode": "{hash_code}"')
    return ("{" + ", ".join(members) + "}").encode()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_genuine_callback_returns_its_content() -> None:
    raw = json.dumps(CONTENT, indent=1)  # spacing as sent: the signature covers the raw text
    assert verify(body(raw, sign(raw.encode(), SECRET)), SECRET) == CONTENT
    assert sign(raw.encode(), SECRET).isupper()  # uppercase hex, 64 digits
    assert len(sign(raw.encode(), SECRET)) == 64


def test_signature_is_over_the_raw_content_not_a_reserialization() -> None:
    raw = json.dumps(CONTENT, indent=1)
    compact_signature = sign(json.dumps(CONTENT, separators=(",", ":")).encode(), SECRET)
    with pytest.raises(WebhookForged):
        verify(body(raw, compact_signature), SECRET)


def test_lowercase_hash_code_is_accepted() -> None:
    raw = json.dumps(CONTENT)
    assert verify(body(raw, sign(raw.encode(), SECRET).lower()), SECRET)["Key"] == CONTENT["Key"]


@pytest.mark.parametrize("hash_code", [None, ""])
def test_unsigned_is_refused(hash_code: str | None) -> None:
    with pytest.raises(WebhookUnsigned) as err:
        verify(body(json.dumps(CONTENT), hash_code), SECRET)
    assert err.value.http_status == 401
    assert isinstance(err.value, ExactOnlineError)


def test_forged_altered_or_wrong_secret_is_refused() -> None:
    raw = json.dumps(CONTENT)
    genuine = sign(raw.encode(), SECRET)
    altered = raw.replace("Update", "Delete")
    for raw_body in (
        body(altered, genuine),
        body(raw, sign(raw.encode(), "another-secret")),
        body(raw, "0" * 64),
        body(raw, "not-hex-é"),
    ):
        with pytest.raises(WebhookForged) as err:
            verify(raw_body, SECRET)
        assert err.value.http_status == 401
        assert SECRET not in str(err.value)


def test_oversized_is_refused_before_parsing() -> None:
    with pytest.raises(WebhookTooLarge) as err:
        verify(b"{" + b" " * 2000 + b"}", SECRET, max_bytes=1000)
    assert err.value.http_status == 413
    raw = json.dumps(CONTENT)
    assert verify(body(raw, sign(raw.encode(), SECRET)), SECRET, max_bytes=1000) == CONTENT


@pytest.mark.parametrize(
    "raw_body",
    [b"", b"[1, 2]", b"not json", b'{"HashCode": "AB"}', b'{"Content": {}} trailing', b"\xff\xfe", b'{"Content" 1}'],
)
def test_malformed_is_refused(raw_body: bytes) -> None:
    with pytest.raises(WebhookMalformed) as err:
        verify(raw_body, SECRET)
    assert err.value.http_status == 400


def test_signed_content_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(WebhookMalformed):
        verify(body("[1]", sign(b"[1]", SECRET)), SECRET)


def test_replay_within_the_window_is_refused_and_allowed_after_it() -> None:
    clock = Clock()
    guard = ReplayGuard(window=60, clock=clock)
    raw = json.dumps(CONTENT)
    genuine = body(raw, sign(raw.encode(), SECRET))
    verify(genuine, SECRET, seen=guard)
    clock.now = 59
    with pytest.raises(WebhookReplayed) as err:
        verify(genuine, SECRET, seen=guard)
    assert err.value.http_status == 409
    clock.now = 121
    assert verify(genuine, SECRET, seen=guard) == CONTENT


def test_forged_callbacks_never_enter_the_replay_guard() -> None:
    guard = ReplayGuard(window=60, clock=Clock())
    raw = json.dumps(CONTENT)
    with pytest.raises(WebhookForged):
        verify(body(raw, "0" * 64), SECRET, seen=guard)
    assert len(guard) == 0
    verify(body(raw, sign(raw.encode(), SECRET)), SECRET, seen=guard)  # the genuine one still passes
    assert len(guard) == 1


def test_replay_guard_memory_is_bounded() -> None:
    guard = ReplayGuard(window=3600, max_entries=3, clock=Clock())
    for n in range(10):
        guard.check_and_remember(f"sig{n}")
        assert len(guard) <= 3
    with pytest.raises(WebhookReplayed):
        guard.check_and_remember("sig9")
    guard.check_and_remember("sig0")  # evicted, so no longer known


def test_bad_guard_settings_and_missing_secret_are_config_errors() -> None:
    with pytest.raises(ExactOnlineConfigError, match="window"):
        ReplayGuard(window=0)
    with pytest.raises(ExactOnlineConfigError, match="webhook_secret"):
        verify(b"{}", "")


def test_validation_request_is_an_empty_post() -> None:
    assert is_validation_request(b"") and is_validation_request(b" \r\n")
    assert not is_validation_request(b"{}")


def test_hash_code_matches_the_published_hmac_sha256_vector() -> None:
    # RFC 4231-style well-known vector: HMAC-SHA256(key="key", "The quick brown fox jumps over the lazy dog")
    expected = "F7BC83F430538424B13298E6AA6FB143EF4D59A14946175997479DBC2D1A3CD8"
    assert sign(b"The quick brown fox jumps over the lazy dog", "key") == expected


def test_member_order_and_non_ascii_content_are_handled() -> None:
    raw = json.dumps({**CONTENT, "Topic": "Accounts", "Note": "Müller & Zoon"}, ensure_ascii=False)
    raw_body = ('{"HashCode":"' + sign(raw.encode("utf-8"), SECRET) + '",\n "Content":' + raw + "}").encode("utf-8")
    assert verify(raw_body, SECRET)["Note"] == "Müller & Zoon"
