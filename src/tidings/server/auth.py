"""Who is calling, and what they may do: API keys and JWTs, scopes per category.

A scope is ``<action>:<category>`` (``read:order``, ``append:order``,
``subscribe:order``), with ``*`` for every category (``read:*``), or ``admin`` for
everything; ``sync:<satellite id>`` lets a satellite push and pull as that id.
Credentials come as ``Authorization: Bearer <key or JWT>``, ``X-API-Key``, or
``?access_token=`` (for browsers' EventSource, which cannot set headers). API keys
are stored as SHA-256 hashes (``tidings hash-key`` makes one); JWTs are checked for
signature, ``exp``, ``nbf``, ``aud`` and ``iss``, and carry their scopes in a claim.
With no keys and no JWT settings, auth is off and every caller is ``admin`` (allowed
only on loopback; see ``run.check_exposure``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import jwt
from fastapi import Depends, Request
from pydantic import BaseModel, Field
from starlette.requests import HTTPConnection

from tidings.errors import ConfigurationError
from tidings.events import Filter
from tidings.server.errors import ApiError
from tidings.server.limits import RateLimiter

log = logging.getLogger("tidings.server.auth")
ACTIONS = ("read", "append", "subscribe", "sync")


class ApiKey(BaseModel):
    """One API key: a name for the logs, the key's SHA-256 hash, and its scopes."""

    name: str
    hash: str = Field(description="sha256:<hex> of the key (tidings hash-key prints it)")
    scopes: list[str]


class AuthSettings(BaseModel):
    """How callers prove who they are (none of it set: auth is off)."""

    api_keys: list[ApiKey] = Field(default_factory=list)
    jwt_secret: str | None = Field(default=None, description="HS256 shared secret")
    jwt_public_key: str | None = Field(
        default=None, description="PEM file of an RS256/ES256 public key"
    )
    jwt_jwks_file: str | None = Field(default=None, description="a JWKS JSON file of public keys")
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_scopes_claim: str = Field(default="scope", description="claim holding the scopes")
    jwt_leeway: float = Field(default=0.0, ge=0, description="seconds of clock skew allowed")

    @property
    def enabled(self) -> bool:
        """Whether any credentials are configured."""
        return bool(self.api_keys or self.jwt_secret or self.jwt_public_key or self.jwt_jwks_file)


def hash_key(key: str) -> str:
    """The stored form of an API key: ``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh random API key (32 bytes, URL-safe)."""
    return "tdg_" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a subject and the scopes granted to it; for a JWT, its
    user (the ``sub`` claim) and when it expires (a Unix time)."""

    subject: str
    scopes: frozenset[str]
    user: str | None = None
    expires: float | None = None

    @property
    def is_admin(self) -> bool:
        """Whether the caller may do everything."""
        return "admin" in self.scopes

    def may(self, action: str, category: str) -> bool:
        """Whether the caller may ``action`` (read, append, subscribe) on ``category``."""
        scopes = self.scopes
        return "admin" in scopes or f"{action}:*" in scopes or f"{action}:{category}" in scopes

    def categories(self, action: str) -> frozenset[str] | None:
        """The categories the caller may ``action`` on; None for all of them."""
        if self.may(action, "*"):
            return None
        prefix = action + ":"
        return frozenset(s[len(prefix) :] for s in self.scopes if s.startswith(prefix))

    def require(self, action: str, category: str) -> None:
        """Raise 403 unless the caller may ``action`` on ``category``."""
        if not self.may(action, category):
            raise ApiError(
                403, "forbidden", f"{self.subject} may not {action} category {category!r}"
            )

    def require_admin(self) -> None:
        """Raise 403 unless the caller is an admin."""
        if not self.is_admin:
            raise ApiError(403, "forbidden", f"{self.subject} is not an admin")


ANONYMOUS_ADMIN = Principal("anonymous", frozenset({"admin"}))


class Authenticator:
    """Turns a request's credentials into a ``Principal``, or refuses it with 401."""

    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self.enabled = settings.enabled
        self._keys = {k.hash.lower(): k for k in settings.api_keys}
        for key in settings.api_keys:
            if not key.hash.startswith("sha256:") or len(key.hash) != 71:
                raise ConfigurationError(
                    f"API key {key.name!r}: hash must be sha256:<64 hex digits> "
                    "(tidings hash-key prints it)"
                )
        self._jwt_keys = _jwt_keys(settings)

    def authenticate(self, request: HTTPConnection) -> Principal:
        """The caller of ``request``; 401 when auth is on and the credentials fail."""
        if not self.enabled:
            return ANONYMOUS_ADMIN
        token = credential(request)
        if token is None:
            raise _unauthorized("credentials required: Authorization: Bearer <key or token>")
        return self.from_token(token)

    def from_token(self, token: str) -> Principal:
        """The caller an API key or a JWT stands for; 401 when it fails."""
        if not self.enabled:
            return ANONYMOUS_ADMIN
        key = self._keys.get(hash_key(token))
        if key is not None:
            return Principal(f"key {key.name}", frozenset(key.scopes))
        if self._jwt_keys and token.count(".") == 2:
            return self._from_jwt(token)
        raise _unauthorized("unknown API key or malformed token")

    def _from_jwt(self, token: str) -> Principal:
        settings = self.settings
        try:
            header = jwt.get_unverified_header(token)
            algorithm = header.get("alg")
            key = self._pick(header)
            if key is None or algorithm not in key[1]:
                raise _unauthorized("the token is signed with a key or algorithm not accepted")
            claims: dict[str, Any] = jwt.decode(
                token,
                key[0],
                algorithms=list(key[1]),
                audience=settings.jwt_audience,
                issuer=settings.jwt_issuer,
                leeway=settings.jwt_leeway,
                options={"require": ["exp"], "verify_aud": settings.jwt_audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise _unauthorized("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise _unauthorized("the token is not valid yet") from None
        except jwt.InvalidTokenError as exc:
            raise _unauthorized(f"invalid token: {exc}") from None
        raw = claims.get(settings.jwt_scopes_claim, [])
        scopes = raw.split() if isinstance(raw, str) else [str(s) for s in raw]
        user = claims.get("sub")
        expires = claims.get("exp")
        return Principal(
            f"token {user or '?'}",
            frozenset(scopes),
            None if user is None else str(user),
            float(expires) if isinstance(expires, int | float) else None,
        )

    def _pick(self, header: dict[str, Any]) -> tuple[Any, tuple[str, ...]] | None:
        kid = header.get("kid")
        if kid is not None and kid in self._jwt_keys:
            return self._jwt_keys[kid]
        return self._jwt_keys.get("")


def _jwt_keys(settings: AuthSettings) -> dict[str, tuple[Any, tuple[str, ...]]]:
    """Verification keys by key id ("" for the one without), each with its algorithms."""
    keys: dict[str, tuple[Any, tuple[str, ...]]] = {}
    try:
        if settings.jwt_secret:
            keys[""] = (settings.jwt_secret, ("HS256",))
        if settings.jwt_public_key:
            pem = Path(settings.jwt_public_key).read_bytes()
            keys[""] = (pem, ("RS256", "ES256"))
        if settings.jwt_jwks_file:
            jwks = jwt.PyJWKSet.from_json(Path(settings.jwt_jwks_file).read_text())
            for item in jwks.keys:
                if item.algorithm_name is None:
                    continue
                entry = (item.key, (item.algorithm_name,))
                keys[item.key_id or ""] = entry
    except (OSError, ValueError, json.JSONDecodeError, jwt.PyJWKSetError) as exc:
        raise ConfigurationError(f"cannot load the JWT verification keys: {exc}") from exc
    return keys


def credential(request: HTTPConnection, query: bool = True) -> str | None:
    """The key or token a request (or a WebSocket handshake) carries, if any: from
    ``Authorization: Bearer``, ``X-API-Key``, then (if ``query``) ``?access_token=``."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        raise _unauthorized("use Authorization: Bearer <key or token>")
    key = request.headers.get("x-api-key")
    if not key and query:
        key = request.query_params.get("access_token")
    return key or None


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, {"WWW-Authenticate": "Bearer"})


async def caller(request: Request) -> Principal:
    """The authenticated caller of ``request`` (a FastAPI dependency), within its rate
    limit when one is configured (429 past it)."""
    authenticator: Authenticator = request.app.state.authenticator
    who = authenticator.authenticate(request)
    limiter: RateLimiter | None = request.app.state.rate_limiter
    if limiter is not None:
        client = request.client
        limiter.check(who.subject if authenticator.enabled else (client.host if client else "?"))
    return who


Caller = Annotated[Principal, Depends(caller)]


def readable(who: Principal, found: Filter | None, action: str = "read") -> Filter | None:
    """``found``, narrowed to the categories the caller may ``action`` on (403 if it asks
    for more)."""
    allowed = who.categories(action)
    if allowed is None:
        return found
    if found is not None and found.categories is not None:
        for name in found.categories:
            who.require(action, name)
        return found
    if not allowed:
        raise ApiError(403, "forbidden", f"{who.subject} may not {action} any category")
    if found is None:
        return Filter(sorted(allowed))
    return Filter(sorted(allowed), found.stream_prefix, found.types, found.stream_pattern)
