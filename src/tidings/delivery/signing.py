"""Webhook signing after the Standard Webhooks spec (https://www.standardwebhooks.com).

Each delivery carries three headers: ``webhook-id`` (kept across retries, so receivers can
deduplicate), ``webhook-timestamp`` (integer seconds, fresh on every attempt) and
``webhook-signature``, a space-separated list of ``v1,<base64 HMAC-SHA256>`` over
``"{id}.{timestamp}.{body}"``. Secrets are ``whsec_`` + base64 of 24-64 random bytes; the
HMAC key is the decoded part.

``SigningKeys`` holds a stream's current secret and the previous ones still inside their
overlap, so a secret can be rotated without a window in which receivers reject deliveries:
while both are active every delivery is signed with each, and a receiver holding either
secret accepts it.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Mapping

import msgspec

from tidings.errors import TidingsError

__all__ = [
    "BadSecret",
    "BadSignature",
    "PreviousKey",
    "SigningKeys",
    "headers",
    "new_secret",
    "parse_secret",
    "sign",
    "verify",
]

PREFIX = "whsec_"
MIN_KEY_BYTES = 24
MAX_KEY_BYTES = 64
DEFAULT_TOLERANCE = 300
DEFAULT_OVERLAP = 24 * 3600

# The spec's timestamp is integer seconds; float("1e9") or " 17 " would also parse, so the
# header is matched exactly rather than handed to int()/float().
_INTEGER = re.compile(r"[0-9]{1,20}")


class BadSecret(TidingsError, ValueError):
    """A secret or key that is not base64, or decodes to fewer than 24 or more than 64 bytes."""


class BadSignature(TidingsError, ValueError):
    """A delivery that does not verify: a missing header, a stale or future timestamp,
    or no signature made with a known key."""


def new_secret() -> str:
    """A fresh secret: ``whsec_`` + base64 of 32 random bytes."""
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


@functools.lru_cache(maxsize=1024)  # every delivery signs: decode a stream's key once
def parse_secret(secret: str) -> bytes:
    """The HMAC key of a secret, given with or without the ``whsec_`` prefix."""
    text = secret.strip()
    text = text.removeprefix(PREFIX)
    if not text:
        raise BadSecret("empty secret")
    # Unpadded base64 is common in environment variables; the padding carries no data.
    text += "=" * (-len(text) % 4)
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        # The secret itself is not echoed: error messages end up in logs.
        raise BadSecret(f"secret is not valid base64 ({e})") from None
    _check_key(key)
    return key


def _check_key(key: bytes) -> None:
    if len(key) < MIN_KEY_BYTES:
        raise BadSecret(f"key is too short: {len(key)} bytes, at least {MIN_KEY_BYTES}")
    if len(key) > MAX_KEY_BYTES:
        raise BadSecret(f"key is too long: {len(key)} bytes, at most {MAX_KEY_BYTES}")


def _digest(key: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    mac = hmac.new(key, b"%s.%d." % (msg_id.encode(), timestamp), hashlib.sha256)
    mac.update(body)  # not joined to the prefix: a large body is not copied
    return mac.digest()


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One signature, ``v1,<base64 HMAC-SHA256 of "{msg_id}.{timestamp}.{body}">``."""
    _check_key(key)
    if type(timestamp) is not int:
        # A float would sign "1700000000.5", which no receiver reconstructs.
        raise TypeError(f"timestamp must be an int, not {type(timestamp).__name__}")
    return "v1," + base64.b64encode(_digest(key, msg_id, timestamp, body)).decode("ascii")


class PreviousKey(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A retired secret that still signs until ``until`` (epoch seconds)."""

    secret: str
    until: float

    def __post_init__(self) -> None:
        parse_secret(self.secret)


class SigningKeys(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A stream's current secret and the retired ones still inside their overlap.

    A msgspec Struct, so stream definitions can embed it; ``to_json``/``from_json`` for
    anything else. Secrets are validated on construction and on decoding, so stored keys
    that cannot sign fail when loaded rather than at the first delivery.
    """

    current: str
    previous: tuple[PreviousKey, ...] = ()

    def __post_init__(self) -> None:
        parse_secret(self.current)

    @classmethod
    def of(cls, secret: str) -> SigningKeys:
        """Keys with one secret and nothing retired."""
        return cls(current=secret)

    def rotate(self, new_secret: str, now: float, overlap: float = DEFAULT_OVERLAP) -> SigningKeys:
        """``new_secret`` becomes current; the old current keeps signing until now+overlap."""
        if overlap < 0:
            raise ValueError(f"overlap must be >= 0, not {overlap}")
        new_key = parse_secret(new_secret)
        old_key = parse_secret(self.current)
        if new_key == old_key:
            # Retiring a secret in favour of itself would only sign every delivery twice.
            return self.pruned(now)
        retired = PreviousKey(self.current, now + overlap)
        # Newest retired first; a secret rotated back in is no longer "previous".
        kept = tuple(
            p
            for p in self.previous
            if p.until > now and parse_secret(p.secret) not in (new_key, old_key)
        )
        return SigningKeys(current=new_secret, previous=(retired, *kept))

    def active(self, now: float) -> list[bytes]:
        """The keys that sign at ``now``: current first, expired retired ones dropped."""
        return [parse_secret(self.current)] + [
            parse_secret(p.secret) for p in self.previous if p.until > now
        ]

    def pruned(self, now: float) -> SigningKeys:
        """The same keys without the retired ones expired at ``now``."""
        kept = tuple(p for p in self.previous if p.until > now)
        return self if kept == self.previous else SigningKeys(self.current, kept)

    def to_json(self) -> bytes:
        """The JSON form: ``{"current": ..., "previous": [{"secret": ..., "until": ...}]}``."""
        return msgspec.json.encode(self)

    @classmethod
    def from_json(cls, data: bytes | str) -> SigningKeys:
        """Keys from ``to_json``'s form; ``BadSecret`` if they cannot be used to sign."""
        try:
            return msgspec.json.decode(data, type=cls)
        except msgspec.DecodeError as e:
            # msgspec wraps the BadSecret raised in __post_init__; one error type for callers.
            raise BadSecret(f"stored signing keys are not valid: {e}") from None


def headers(
    keys: SigningKeys, msg_id: str, body: bytes, now: float | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers, signed with every key active at ``now``."""
    if not msg_id or any(c in msg_id for c in "\r\n"):
        raise ValueError("msg_id must be non-empty and fit on a header line")
    at = time.time() if now is None else now
    timestamp = int(at)
    signature = " ".join(sign(k, msg_id, timestamp, body) for k in keys.active(at))
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


def verify(
    secret_or_keys: str | bytes | SigningKeys,
    headers: Mapping[str, str],
    body: bytes,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> None:
    """Check a delivery; ``BadSignature`` unless one of its signatures matches a key.

    ``secret_or_keys`` is a secret (``whsec_...``), a raw key, or ``SigningKeys`` (every key
    active at ``now``). Header names are matched case-insensitively, as HTTP does.
    """
    at = time.time() if now is None else now
    if isinstance(secret_or_keys, SigningKeys):
        keys = secret_or_keys.active(at)
    elif isinstance(secret_or_keys, bytes):
        _check_key(secret_or_keys)
        keys = [secret_or_keys]
    else:
        keys = [parse_secret(secret_or_keys)]

    lower = {k.lower(): v for k, v in headers.items()}
    found: dict[str, str] = {}
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        value = lower.get(name)
        if not value:
            raise BadSignature(f"missing header {name}")
        found[name] = value
    msg_id, ts_text = found["webhook-id"], found["webhook-timestamp"]

    if not _INTEGER.fullmatch(ts_text):
        raise BadSignature(f"webhook-timestamp is not integer seconds: {ts_text[:40]!r}")
    timestamp = int(ts_text)
    # Checked before the signatures: a replayed old delivery is rejected even if genuine.
    if timestamp < at - tolerance:
        raise BadSignature(f"webhook-timestamp too old: {at - timestamp:.0f}s > {tolerance}s")
    if timestamp > at + tolerance:
        raise BadSignature(f"webhook-timestamp too new: {timestamp - at:.0f}s > {tolerance}s")

    received: list[bytes] = []
    for entry in found["webhook-signature"].split():
        version, _, encoded = entry.partition(",")
        if version != "v1":
            # Other schemes (v1a asymmetric, future ones) may sit beside v1; not ours to judge.
            continue
        try:
            received.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    for key in keys:
        expected = _digest(key, msg_id, timestamp, body)
        # compare_digest for every pair: the time taken says nothing about which bytes differ.
        if any(hmac.compare_digest(expected, r) for r in received):
            return
    raise BadSignature("no signature matches a known key")
