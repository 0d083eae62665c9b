"""Pure unit tests of the retry policy and of webhook signing: no app, no DB, no Redis.

mutmut runs these (``-m unit``, ``[tool.mutmut]`` in pyproject.toml): each one pins a value,
so a changed constant, operator or branch in ``dispatched/retry.py`` or
``dispatched/signing.py`` fails one of them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from dispatched import retry, signing

pytestmark = pytest.mark.unit

# --- retry: DESIGN.md §6 ------------------------------------------------------------------------

DEFAULT_DELAYS = (30, 120, 300)  # 30 s, 2 min, 5 min
HOUR = 3600


class Pinned:
    """A stand-in for ``random.Random`` whose ``uniform`` returns one end of its range."""

    def __init__(self, end: str) -> None:
        self.end = end
        self.calls: list[tuple[float, float]] = []

    def uniform(self, low: float, high: float) -> float:
        self.calls.append((low, high))
        return low if self.end == "low" else high


class Forbidden:
    """An rng that must not be used."""

    def uniform(self, low: float, high: float) -> float:
        raise AssertionError("no jitter was asked for, yet the rng was used")


def test_retry_delays_follow_the_list_then_double_to_the_cap():
    got = [retry.delay(n, DEFAULT_DELAYS, HOUR, 0) for n in range(1, 10)]
    assert got == [30, 120, 300, 600, 1200, 2400, 3600, 3600, 3600]


def test_retry_doubling_starts_from_the_last_listed_delay():
    assert [retry.delay(n, [7], 10_000, 0) for n in (1, 2, 3, 4)] == [7, 14, 28, 56]


def test_retry_with_no_list_doubles_from_one_second():
    assert [retry.delay(n, [], 10_000, 0) for n in (1, 2, 3)] == [2, 4, 8]


def test_retry_cap_applies_to_listed_delays_too():
    assert retry.delay(1, [30], 10, 0) == 10
    assert retry.delay(2, [30, 500], 500, 0) == 500  # exactly at the cap: kept


def test_retry_number_starts_at_one():
    assert retry.delay(1, DEFAULT_DELAYS, HOUR, 0) == 30
    for bad in (0, -1):
        with pytest.raises(ValueError, match=rf"retry_number must be 1 or more, got {bad}"):
            retry.delay(bad, DEFAULT_DELAYS, HOUR, 0)


def test_retry_jitter_is_plus_or_minus_the_fraction_of_the_capped_delay():
    high, low = Pinned("high"), Pinned("low")
    assert retry.delay(2, DEFAULT_DELAYS, HOUR, 0.1, rng=high) == pytest.approx(132)
    assert retry.delay(2, DEFAULT_DELAYS, HOUR, 0.1, rng=low) == pytest.approx(108)
    assert high.calls == low.calls == [(-0.1, 0.1)]
    # Jitter comes after the cap, so the longest waits spread too instead of all landing on it.
    assert retry.delay(9, DEFAULT_DELAYS, HOUR, 0.1, rng=Pinned("high")) == pytest.approx(3960)


def test_retry_without_jitter_uses_no_randomness():
    assert retry.delay(3, DEFAULT_DELAYS, HOUR, 0, rng=Forbidden()) == 300
    assert retry.delay(3, DEFAULT_DELAYS, HOUR, 0.0, rng=Forbidden()) == 300


def test_retry_jitter_stays_in_bounds_and_varies():
    rng = random.Random(7)
    values = [retry.delay(2, DEFAULT_DELAYS, HOUR, 0.1, rng=rng) for _ in range(500)]
    assert 108 <= min(values) < 110 and 130 < max(values) <= 132
    # Without an rng of its own it uses the module's random generator, still within bounds.
    values = {retry.delay(1, DEFAULT_DELAYS, HOUR, 0.1) for _ in range(200)}
    assert all(27 <= v <= 33 for v in values) and len(values) > 100


def test_retry_delay_is_never_negative():
    # A jitter fraction above 1 (a misconfiguration) must not ask for a retry in the past.
    assert retry.delay(1, [30], HOUR, 2, rng=Pinned("low")) == 0.0


def test_retry_after_is_a_floor():
    assert retry.delay(1, DEFAULT_DELAYS, HOUR, 0, retry_after=90) == 90
    assert retry.delay(1, DEFAULT_DELAYS, HOUR, 0, retry_after=5) == 30
    assert retry.delay(1, DEFAULT_DELAYS, HOUR, 0, retry_after=0) == 30
    assert retry.delay(1, DEFAULT_DELAYS, HOUR, 0, retry_after=None) == 30


def test_retry_after_is_not_undercut_by_jitter():
    # Jitter is applied before the floor: a receiver that said 100 s never hears from us at 90 s.
    low, high = Pinned("low"), Pinned("high")
    assert retry.delay(1, [100], HOUR, 0.1, retry_after=100, rng=low) == 100
    assert retry.delay(1, [100], HOUR, 0.1, retry_after=100, rng=high) == pytest.approx(110)


def test_retry_after_is_honoured_up_to_one_hour():
    assert retry.RETRY_AFTER_CAP == 3600
    assert retry.delay(1, DEFAULT_DELAYS, HOUR, 0, retry_after=3599) == 3599
    assert retry.delay(1, DEFAULT_DELAYS, HOUR, 0, retry_after=3600) == 3600
    assert retry.delay(1, DEFAULT_DELAYS, HOUR, 0, retry_after=86_400) == 3600
    # The hour caps what the receiver may ask for, not our own schedule.
    assert retry.delay(1, [7200], 7200, 0, retry_after=86_400) == 7200


# --- signing: Standard Webhooks ----------------------------------------------------------------

#: The example of the Standard Webhooks specification (its reference libraries test it too).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 132))
SECRET_A = "whsec_" + base64.b64encode(KEY_A).decode()
SECRET_B = "whsec_" + base64.b64encode(KEY_B).decode()
#: A bearer token: sent as `Authorization: Bearer`, unrelated to the signing secrets.
TOKEN = "whbt_" + "t" * 43


def reference_signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The signature as the specification defines it, computed here independently."""
    signed = msg_id.encode() + b"." + str(timestamp).encode() + b"." + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def test_signature_matches_the_specification_example():
    assert signing.SECRET_PREFIX == "whsec_"
    assert signing.signature(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_signature_matches_an_independent_hmac():
    body = '{"jobId":"job_1","payload":{"é":"☃"}}'.encode()
    expected = reference_signature(KEY_A, "job_1", 1_700_000_000, body)
    assert signing.signature(SECRET_A, "job_1", 1_700_000_000, body) == expected
    # Every part is signed: another id, time, body or key gives another signature.
    assert signing.signature(SECRET_A, "job_2", 1_700_000_000, body) != expected
    assert signing.signature(SECRET_A, "job_1", 1_700_000_001, body) != expected
    assert signing.signature(SECRET_A, "job_1", 1_700_000_000, body + b" ") != expected
    assert signing.signature(SECRET_B, "job_1", 1_700_000_000, body) != expected


def test_secret_key_is_the_base64_after_the_prefix():
    assert signing.secret_key(SECRET_A) == KEY_A
    assert signing.secret_key(base64.b64encode(KEY_A).decode()) == KEY_A  # prefix optional


def test_headers_with_one_secret_and_bearer():
    body = b'{"a":1}'
    got = signing.headers([SECRET_A], "job_1", 1_700_000_000, body, bearer_token=TOKEN)
    assert list(got.items()) == [
        ("webhook-id", "job_1"),
        ("webhook-timestamp", "1700000000"),
        ("webhook-signature", reference_signature(KEY_A, "job_1", 1_700_000_000, body)),
        ("Authorization", f"Bearer {TOKEN}"),
    ]
    assert SECRET_A not in " ".join(got.values())  # the signing secret is never sent


def test_headers_without_bearer():
    got = signing.headers([SECRET_A], "job_1", 1_700_000_000, b"{}", bearer_token=None)
    assert list(got) == ["webhook-id", "webhook-timestamp", "webhook-signature"]


def test_headers_sign_with_every_live_secret_current_first():
    body = b'{"a":1}'
    got = signing.headers([SECRET_B, SECRET_A], "job_1", 1_700_000_000, body, bearer_token=TOKEN)
    assert got["webhook-signature"] == " ".join(
        [
            reference_signature(KEY_B, "job_1", 1_700_000_000, body),
            reference_signature(KEY_A, "job_1", 1_700_000_000, body),
        ]
    )
    assert got["Authorization"] == f"Bearer {TOKEN}"  # one token, whatever the secrets


def test_the_standardwebhooks_library_verifies_each_live_secret():
    body = b'{"jobId":"job_1","payload":{}}'
    got = signing.headers([SECRET_B, SECRET_A], "job_1", int(time.time()), body, bearer_token=None)
    for secret in (SECRET_A, SECRET_B):
        assert Webhook(secret).verify(body, got) == {"jobId": "job_1", "payload": {}}
    stranger = "whsec_" + base64.b64encode(bytes(32)).decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(stranger).verify(body, got)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET_A).verify(body.replace(b"job_1", b"job_2"), got)


# --- the request of one attempt: body bytes and headers -----------------------------------------

PAYLOAD = {"name": "Zoë", "rocket": "🚀", "sep": "\u2028", "n": [1, 2.5, None, True], "o": {}}
#: Compact JSON, non-ASCII as raw UTF-8 (not \\u escapes), keys in this order.
EXPECTED_BODY = (
    '{"jobId":"job_1","attemptId":"att_9","attempt":"att_9","attemptNumber":3,'
    '"payload":{"name":"Zoë","rocket":"🚀","sep":"\u2028","n":[1,2.5,null,true],"o":{}}}'
).encode("utf-8")


def test_delivery_request_body_and_headers_are_pinned():
    body, headers = signing.delivery_request(
        [SECRET_B, SECRET_A],
        "job_1",
        "att_9",
        3,
        PAYLOAD,
        timestamp=1_700_000_000,
        bearer_token=TOKEN,
        user_agent="Dispatched/9.9.9",
    )
    assert body == EXPECTED_BODY
    signatures = " ".join(
        reference_signature(key, "job_1", 1_700_000_000, EXPECTED_BODY) for key in (KEY_B, KEY_A)
    )
    assert list(headers.items()) == [  # in this order on the wire
        ("Content-Type", "application/json"),
        ("User-Agent", "Dispatched/9.9.9"),
        ("webhook-id", "job_1"),
        ("webhook-timestamp", "1700000000"),
        ("webhook-signature", signatures),
        ("Authorization", f"Bearer {TOKEN}"),
    ]


def test_delivery_request_without_bearer_verifies_with_the_library():
    now = int(time.time())
    body, headers = signing.delivery_request(
        [SECRET_A], "job_1", "att_1", 1, PAYLOAD, timestamp=now, bearer_token=None, user_agent="UA"
    )
    assert "Authorization" not in headers and headers["webhook-id"] == "job_1"
    assert json.loads(body) == {
        "jobId": "job_1",
        "attemptId": "att_1",
        "attempt": "att_1",
        "attemptNumber": 1,
        "payload": PAYLOAD,
    }
    assert Webhook(SECRET_A).verify(body, headers)["payload"] == PAYLOAD
