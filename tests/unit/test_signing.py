"""Webhook signing: Standard Webhooks interop both ways, rotation, retries, typed errors."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime

import msgspec
import pytest
import standardwebhooks

from tidings.delivery.signing import (
    BadSecret,
    BadSignature,
    PreviousKey,
    SigningKeys,
    headers,
    new_secret,
    parse_secret,
    sign,
    verify,
)
from tidings.errors import TidingsError

# The example in the Standard Webhooks spec.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TS = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

T = 1_700_000_000.0
BODY = json.dumps({"event": "order.placed", "name": "Zoë ✓"}, ensure_ascii=False).encode()


def secret_of(n: int) -> str:
    return "whsec_" + base64.b64encode(bytes(range(n))).decode()


# --- secrets ------------------------------------------------------------------------------


def test_spec_example_signature() -> None:
    assert sign(parse_secret(SPEC_SECRET), SPEC_ID, SPEC_TS, SPEC_BODY) == SPEC_SIG


def test_new_secret_is_prefixed_base64_of_32_random_bytes() -> None:
    a, b = new_secret(), new_secret()
    assert a.startswith("whsec_") and a != b
    assert len(parse_secret(a)) == 32
    assert base64.b64decode(a.removeprefix("whsec_"), validate=True) == parse_secret(a)


def test_parse_secret_with_or_without_prefix_and_padding() -> None:
    key = parse_secret(SPEC_SECRET)
    assert parse_secret(SPEC_SECRET.removeprefix("whsec_")) == key
    unpadded = secret_of(25).rstrip("=")
    assert secret_of(25).endswith("=") and parse_secret(unpadded) == bytes(range(25))
    assert parse_secret(secret_of(24)) == bytes(range(24))
    assert parse_secret(secret_of(64)) == bytes(range(64))


@pytest.mark.parametrize(
    ("secret", "match"),
    [
        ("whsec_not base64!", "not valid base64"),
        ("whsec_abc-def_ghi", "not valid base64"),  # url-safe alphabet: not the spec's
        ("whsec_A", "not valid base64"),
        ("whsec_", "empty"),
        ("", "empty"),
        (secret_of(23), "too short: 23 bytes"),
        (secret_of(65), "too long: 65 bytes"),
    ],
)
def test_bad_secrets(secret: str, match: str) -> None:
    with pytest.raises(BadSecret, match=match) as info:
        parse_secret(secret)
    assert isinstance(info.value, ValueError) and isinstance(info.value, TidingsError)


def test_bad_raw_keys() -> None:
    with pytest.raises(BadSecret, match="too short"):
        sign(b"short", "msg_1", 1, b"")
    with pytest.raises(BadSecret, match="too long"):
        verify(bytes(65), {}, b"")


def test_sign_wants_integer_seconds() -> None:
    with pytest.raises(TypeError, match="int"):
        sign(parse_secret(SPEC_SECRET), SPEC_ID, 1.5, SPEC_BODY)  # type: ignore[arg-type]


# --- interop with the standardwebhooks reference library ----------------------------------


def test_tidings_headers_verify_with_standardwebhooks() -> None:
    secret = new_secret()
    h = headers(SigningKeys.of(secret), "msg_1", BODY)
    assert set(h) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert h["webhook-id"] == "msg_1" and h["webhook-timestamp"].isdigit()
    assert standardwebhooks.Webhook(secret).verify(BODY, h) == json.loads(BODY)
    # The reference library also takes the key without the prefix.
    standardwebhooks.Webhook(secret.removeprefix("whsec_")).verify(BODY, h, json_parse=False)


def test_standardwebhooks_signatures_verify_with_tidings() -> None:
    secret = new_secret()
    now = time.time()
    ts = datetime.fromtimestamp(int(now), tz=UTC)
    sig = standardwebhooks.Webhook(secret).sign("msg_2", ts, BODY.decode())
    h = {"webhook-id": "msg_2", "webhook-timestamp": str(int(now)), "webhook-signature": sig}
    verify(secret, h, BODY)
    verify(secret, h, BODY, now=now)
    verify(parse_secret(secret), h, BODY, now=now)
    verify(SigningKeys.of(secret), h, BODY, now=now)
    assert sig == sign(parse_secret(secret), "msg_2", int(now), BODY)


def test_standardwebhooks_rejects_a_tampered_tidings_delivery() -> None:
    secret = new_secret()
    h = headers(SigningKeys.of(secret), "msg_3", BODY)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(secret).verify(BODY + b" ", h)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(new_secret()).verify(BODY, h)


# --- rotation -----------------------------------------------------------------------------


def test_rotation_overlap_signs_with_both_then_only_the_new() -> None:
    old, new = new_secret(), new_secret()
    keys = SigningKeys.of(old).rotate(new, now=T, overlap=3600)
    assert keys.active(T + 10) == [parse_secret(new), parse_secret(old)]  # current first

    during = headers(keys, "msg_r", BODY, now=T + 10)
    assert len(during["webhook-signature"].split(" ")) == 2
    verify(old, during, BODY, now=T + 10)
    verify(new, during, BODY, now=T + 10)

    after = headers(keys, "msg_r", BODY, now=T + 3600)
    assert keys.active(T + 3600) == [parse_secret(new)]
    assert len(after["webhook-signature"].split(" ")) == 1
    verify(new, after, BODY, now=T + 3600)
    with pytest.raises(BadSignature, match="no signature"):
        verify(old, after, BODY, now=T + 3600)


def test_rotation_overlap_with_standardwebhooks_receivers() -> None:
    old, new = new_secret(), new_secret()
    now = time.time()
    during = headers(SigningKeys.of(old).rotate(new, now=now), "msg_s", BODY)
    standardwebhooks.Webhook(old).verify(BODY, during)
    standardwebhooks.Webhook(new).verify(BODY, during)

    # Rotated two hours ago with a one-hour overlap: the old secret no longer signs.
    expired = SigningKeys.of(old).rotate(new, now=now - 7200, overlap=3600)
    after = headers(expired, "msg_s", BODY)
    standardwebhooks.Webhook(new).verify(BODY, after)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(old).verify(BODY, after)


def test_a_receiver_holding_keys_accepts_a_sender_not_yet_rotated() -> None:
    old, new = new_secret(), new_secret()
    receiver = SigningKeys.of(old).rotate(new, now=T, overlap=60)
    from_old = headers(SigningKeys.of(old), "msg_o", BODY, now=T + 30)
    verify(receiver, from_old, BODY, now=T + 30)
    late = headers(SigningKeys.of(old), "msg_o", BODY, now=T + 60)
    with pytest.raises(BadSignature):
        verify(receiver, late, BODY, now=T + 60)


def test_repeated_rotation_order_and_pruning() -> None:
    a, b, c = new_secret(), new_secret(), new_secret()
    keys = SigningKeys.of(a).rotate(b, now=T, overlap=100).rotate(c, now=T + 50, overlap=100)
    assert keys.current == c
    assert keys.previous == (PreviousKey(b, T + 150), PreviousKey(a, T + 100))
    assert keys.active(T + 60) == [parse_secret(k) for k in (c, b, a)]
    assert keys.active(T + 120) == [parse_secret(k) for k in (c, b)]
    assert keys.pruned(T + 120) == SigningKeys(c, (PreviousKey(b, T + 150),))
    assert keys.pruned(T + 60) is keys
    assert keys.pruned(T + 500) == SigningKeys.of(c)
    # The expired one is dropped when rotating again, too.
    assert keys.rotate(a, now=T + 120, overlap=10).previous == (
        PreviousKey(c, T + 130),
        PreviousKey(b, T + 150),
    )


def test_rotating_back_and_to_the_same_secret() -> None:
    a, b = new_secret(), new_secret()
    keys = SigningKeys.of(a).rotate(b, now=T)
    back = keys.rotate(a, now=T + 1)
    assert back.current == a and [p.secret for p in back.previous] == [b]
    assert keys.rotate(b.removeprefix("whsec_"), now=T + 1) is keys
    with pytest.raises(ValueError, match="overlap"):
        keys.rotate(new_secret(), now=T, overlap=-1)
    with pytest.raises(BadSecret):
        keys.rotate("whsec_short", now=T)


# --- retries ------------------------------------------------------------------------------


def test_a_retry_keeps_the_id_and_re_signs_with_a_new_timestamp() -> None:
    keys = SigningKeys.of(new_secret())
    first = headers(keys, "msg_x", BODY, now=T)
    retry = headers(keys, "msg_x", BODY, now=T + 30.9)
    assert first["webhook-id"] == retry["webhook-id"] == "msg_x"
    assert first["webhook-timestamp"] == str(int(T))
    assert retry["webhook-timestamp"] == str(int(T) + 30)
    assert first["webhook-signature"] != retry["webhook-signature"]
    verify(keys, first, BODY, now=T)
    verify(keys, retry, BODY, now=T + 31)
    # A signature cannot be moved to another timestamp.
    moved = {**retry, "webhook-signature": first["webhook-signature"]}
    with pytest.raises(BadSignature, match="no signature"):
        verify(keys, moved, BODY, now=T + 31)


# --- verification failures ----------------------------------------------------------------


@pytest.fixture
def signed() -> tuple[str, dict[str, str]]:
    secret = new_secret()
    return secret, headers(SigningKeys.of(secret), "msg_v", BODY, now=T)


def test_verify_accepts_any_header_case(signed: tuple[str, dict[str, str]]) -> None:
    secret, h = signed
    verify(secret, {k.title(): v for k, v in h.items()}, BODY, now=T)
    verify(secret, {k.upper(): v for k, v in h.items()}, BODY, now=T)


def test_tampered_body_and_id(signed: tuple[str, dict[str, str]]) -> None:
    secret, h = signed
    with pytest.raises(BadSignature, match="no signature"):
        verify(secret, h, BODY + b"\n", now=T)
    with pytest.raises(BadSignature, match="no signature"):
        verify(secret, {**h, "webhook-id": "msg_w"}, BODY, now=T)
    with pytest.raises(BadSignature, match="no signature"):
        verify(new_secret(), h, BODY, now=T)


def test_timestamp_tolerance(signed: tuple[str, dict[str, str]]) -> None:
    secret, h = signed
    verify(secret, h, BODY, now=T + 300)  # exactly at the edge: accepted
    verify(secret, h, BODY, now=T - 300)
    with pytest.raises(BadSignature, match="too old"):
        verify(secret, h, BODY, now=T + 301)
    with pytest.raises(BadSignature, match="too new"):
        verify(secret, h, BODY, now=T - 301)
    verify(secret, h, BODY, tolerance=3600, now=T + 3000)
    with pytest.raises(BadSignature, match="too old"):
        verify(secret, h, BODY, tolerance=10, now=T + 11)


def test_stale_and_future_timestamps_checked_against_the_clock() -> None:
    secret = new_secret()
    keys = SigningKeys.of(secret)
    with pytest.raises(BadSignature, match="too old"):
        verify(secret, headers(keys, "msg_t", BODY, now=time.time() - 600), BODY)
    with pytest.raises(BadSignature, match="too new"):
        verify(secret, headers(keys, "msg_t", BODY, now=time.time() + 600), BODY)


@pytest.mark.parametrize("name", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_or_empty_header(signed: tuple[str, dict[str, str]], name: str) -> None:
    secret, h = signed
    without = {k: v for k, v in h.items() if k != name}
    with pytest.raises(BadSignature, match=f"missing header {name}"):
        verify(secret, without, BODY, now=T)
    with pytest.raises(BadSignature, match=f"missing header {name}"):
        verify(secret, {**h, name: ""}, BODY, now=T)


@pytest.mark.parametrize("ts", ["1.7e9", f"{int(T)}.0", f" {int(T)}", "-5", "abc", "١٢٣"])
def test_timestamp_must_be_integer_seconds(signed: tuple[str, dict[str, str]], ts: str) -> None:
    secret, h = signed
    with pytest.raises(BadSignature, match="not integer seconds"):
        verify(secret, {**h, "webhook-timestamp": ts}, BODY, now=T)


def test_unusable_signature_entries_are_skipped(signed: tuple[str, dict[str, str]]) -> None:
    secret, h = signed
    good = h["webhook-signature"]
    noisy = f"garbage v1,@@@ v1 v1a,{good[3:]} v2,abc  {good}"
    verify(secret, {**h, "webhook-signature": noisy}, BODY, now=T)
    only_noise = f"garbage v1,@@@ v1a,{good[3:]} v1,{good[3:-4]}"
    with pytest.raises(BadSignature, match="no signature"):
        verify(secret, {**h, "webhook-signature": only_noise}, BODY, now=T)


def test_headers_refuses_an_unusable_id() -> None:
    keys = SigningKeys.of(new_secret())
    with pytest.raises(ValueError, match="msg_id"):
        headers(keys, "", BODY, now=T)
    with pytest.raises(ValueError, match="msg_id"):
        headers(keys, "msg\r\nx-injected: 1", BODY, now=T)


# --- storage ------------------------------------------------------------------------------


def test_json_round_trip() -> None:
    keys = SigningKeys.of(new_secret()).rotate(new_secret(), now=T, overlap=3600)
    data = keys.to_json()
    assert json.loads(data) == {
        "current": keys.current,
        "previous": [{"secret": keys.previous[0].secret, "until": T + 3600}],
    }
    assert SigningKeys.from_json(data) == keys
    assert SigningKeys.from_json(data.decode()) == keys
    assert SigningKeys.from_json(SigningKeys.of(SPEC_SECRET).to_json()) == SigningKeys.of(
        SPEC_SECRET
    )


def test_embedded_in_a_stored_struct() -> None:
    class Stream(msgspec.Struct):
        name: str
        signing: SigningKeys

    stream = Stream("orders", SigningKeys.of(SPEC_SECRET).rotate(new_secret(), now=T))
    assert msgspec.json.decode(msgspec.json.encode(stream), type=Stream) == stream


@pytest.mark.parametrize(
    "data",
    [
        b'{"current": "whsec_short"}',
        b'{"current": "%s", "previous": [{"secret": "nope!", "until": 1}]}' % SPEC_SECRET.encode(),
        b'{"current": "%s", "extra": 1}' % SPEC_SECRET.encode(),
        b'{"previous": []}',
        b"not json",
    ],
)
def test_from_json_refuses_unusable_keys(data: bytes) -> None:
    with pytest.raises(BadSecret, match="stored signing keys"):
        SigningKeys.from_json(data)


def test_construction_validates_secrets() -> None:
    with pytest.raises(BadSecret, match="too short"):
        SigningKeys.of(secret_of(10))
    with pytest.raises(BadSecret):
        SigningKeys(SPEC_SECRET, (PreviousKey("whsec_!!", T),))
    keys = SigningKeys.of(SPEC_SECRET)
    with pytest.raises(AttributeError):
        keys.current = new_secret()  # type: ignore[misc]
