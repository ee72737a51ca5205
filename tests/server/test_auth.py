"""Auth: API keys and JWTs, scopes per category, on every endpoint; tokens never logged."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import tidings
from tidings.server import Settings, create_app
from tidings.server.auth import ApiKey, AuthSettings, hash_key
from tidings.server.run import check_exposure

SECRET = "a-shared-secret-of-enough-length-for-hs256"
KEYS = {
    "reader": ["read:order"],
    "writer": ["read:order", "append:order"],
    "subscriber": ["subscribe:order"],
    "everything": ["read:*", "append:*"],
    "admin": ["admin"],
}


def key_of(name: str) -> str:
    return f"key-for-{name}-0123456789"


def token(scope: str = "read:order append:order", **claims: Any) -> str:
    body = {"sub": "alice", "aud": "tidings", "iss": "issuer", "exp": time.time() + 60}
    body.update(claims, scope=scope)
    return jwt.encode({k: v for k, v in body.items() if v is not None}, SECRET, "HS256")


def auth_settings(**jwt_options: Any) -> AuthSettings:
    keys = [ApiKey(name=n, hash=hash_key(key_of(n)), scopes=s) for n, s in KEYS.items()]
    options = {"jwt_secret": SECRET, "jwt_audience": "tidings", "jwt_issuer": "issuer"}
    options.update(jwt_options)
    return AuthSettings(api_keys=keys, **options)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    store = await tidings.connect("memory://")
    await store.append("order-1", [tidings.NewEvent("Placed", {"n": 1})])
    await store.append("stock-1", [tidings.NewEvent("Counted", {"n": 2})])
    async with store.transaction(tidings.Audit("al")) as tx:
        tx.append("order-2", [tidings.NewEvent("Placed")])
    app = create_app(store, Settings(auth=auth_settings()))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            yield c
    await store.close()


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


EVENT = {"events": [{"type": "Placed", "data": {}}]}
# (method, path, body, a key that may, a key that may not)
ENDPOINTS: list[tuple[str, str, Any, str, str]] = [
    ("POST", "/streams/order-9/events", EVENT, "writer", "reader"),
    ("GET", "/streams/order-1/events", None, "reader", "subscriber"),
    ("GET", "/streams/order-1", None, "reader", "subscriber"),
    ("GET", "/streams", None, "reader", None),  # everyone may list (filtered)
    ("GET", "/events?category=order", None, "reader", "subscriber"),
    ("GET", "/events/3/audit", None, "reader", "subscriber"),
    ("GET", "/head", None, "subscriber", None),
    (
        "POST",
        "/transactions",
        {"appends": [{"stream": "order-8", "events": EVENT["events"]}]},
        "writer",
        "reader",
    ),
]


@pytest.mark.parametrize(("method", "path", "body", "allowed", "refused"), ENDPOINTS)
async def test_every_endpoint_wants_credentials_and_the_right_scope(
    client: httpx.AsyncClient, method: str, path: str, body: Any, allowed: str, refused: str | None
) -> None:
    anonymous = await client.request(method, path, json=body)
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.json()["error"] == "unauthorized"
    assert anonymous.headers["www-authenticate"] == "Bearer"
    wrong_key = await client.request(method, path, json=body, headers=bearer("not-a-key"))
    assert wrong_key.status_code == 401
    if refused is not None:
        forbidden = await client.request(method, path, json=body, headers=bearer(key_of(refused)))
        assert forbidden.status_code == 403, forbidden.text
        assert forbidden.json()["error"] == "forbidden"
    for credential in (key_of(allowed), key_of("admin")):
        ok = await client.request(method, path, json=body, headers=bearer(credential))
        assert ok.status_code in (200, 201), ok.text
    by_header = await client.request(
        method, path, json=body, headers={"X-API-Key": key_of(allowed)}
    )
    assert by_header.status_code in (200, 201)


@pytest.mark.parametrize("path", ["/events/live?category=order", "/streams/order-1/events/live"])
async def test_live_reads_check_credentials_before_streaming(
    client: httpx.AsyncClient, path: str
) -> None:
    assert (await client.get(path)).status_code == 401
    sep = "&" if "?" in path else "?"
    refused = await client.get(f"{path}{sep}access_token={key_of('subscriber')}")
    assert refused.status_code == 403
    assert (await client.get(path, headers=bearer("nope"))).status_code == 401


async def test_health_and_docs_need_no_credentials(client: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/readyz", "/openapi.json", "/docs"):
        assert (await client.get(path)).status_code == 200, path


async def test_a_log_read_without_a_category_sees_only_what_the_caller_may_read(
    client: httpx.AsyncClient,
) -> None:
    mine = await client.get("/events", headers=bearer(key_of("reader")))
    assert {e["stream"] for e in mine.json()["events"]} == {"order-1", "order-2"}
    everything = await client.get("/events", headers=bearer(key_of("everything")))
    assert {e["stream"] for e in everything.json()["events"]} == {"order-1", "order-2", "stock-1"}
    other = await client.get("/events?category=stock", headers=bearer(key_of("reader")))
    assert other.status_code == 403
    listed = await client.get("/streams", headers=bearer(key_of("reader")))
    assert [s["name"] for s in listed.json()["streams"]] == ["order-1", "order-2"]
    nothing = await client.get("/events", headers=bearer(key_of("subscriber")))
    assert nothing.status_code == 403


async def test_an_audit_record_is_read_with_the_scope_of_its_event(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.get("/events/3/audit", headers=bearer(key_of("reader")))).json()[
        "user"
    ] == "al"
    stock_audit = await client.get("/events/2/audit", headers=bearer(key_of("reader")))
    assert stock_audit.status_code == 403


async def test_a_jwt_grants_the_scopes_of_its_claim(client: httpx.AsyncClient) -> None:
    ok = await client.post("/streams/order-7/events", json=EVENT, headers=bearer(token()))
    assert ok.status_code == 201, ok.text
    reader = bearer(token(scope="read:order"))
    refused = await client.post("/streams/order-7/events", json=EVENT, headers=reader)
    assert refused.status_code == 403
    as_list = jwt.encode(
        {
            "sub": "b",
            "aud": "tidings",
            "iss": "issuer",
            "exp": time.time() + 60,
            "scope": ["read:stock"],
        },
        SECRET,
        "HS256",
    )
    assert (await client.get("/streams/stock-1", headers=bearer(as_list))).status_code == 200


@pytest.mark.parametrize(
    ("credential", "says"),
    [
        (lambda: token(exp=time.time() - 10), "expired"),
        (lambda: token(nbf=time.time() + 600), "not valid yet"),
        (lambda: token(aud="someone-else"), "invalid token"),
        (lambda: token(iss="mallory"), "invalid token"),
        (lambda: token(exp=None), "invalid token"),
        (
            lambda: jwt.encode(
                {"scope": "admin", "exp": time.time() + 60},
                "wrong-secret-xxxxxxxxxxxxxxxxxxxxxxx",
                "HS256",
            ),
            "invalid token",
        ),
        (
            lambda: jwt.encode({"scope": "admin", "exp": time.time() + 60}, None, "none"),
            "not accepted",
        ),
        (lambda: "a.b.c", "invalid token"),
    ],
)
async def test_bad_tokens_are_refused_with_401(
    client: httpx.AsyncClient, credential: Any, says: str
) -> None:
    response = await client.get("/head", headers=bearer(credential()))
    assert response.status_code == 401, response.text
    assert says in response.json()["message"]


def _rsa_pem(tmp_path: Path) -> tuple[Any, Path]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "public.pem"
    path.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, path


async def _head_with(settings: AuthSettings, credential: str) -> int:
    app = create_app("memory://", Settings(auth=settings))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return (await c.get("/head", headers=bearer(credential))).status_code


async def test_rs256_tokens_are_checked_against_a_public_key_file(tmp_path: Path) -> None:
    private, path = _rsa_pem(tmp_path)
    settings = AuthSettings(jwt_public_key=str(path))
    claims = {"sub": "svc", "exp": time.time() + 60, "scope": "read:*"}
    assert await _head_with(settings, jwt.encode(claims, private, "RS256")) == 200
    (tmp_path / "other").mkdir()
    other, _ = _rsa_pem(tmp_path / "other")
    assert await _head_with(settings, jwt.encode(claims, other, "RS256")) == 401
    # The classic confusion: the public key used as an HS256 secret must not pass.
    forged = jwt.encode(claims, "x" * 40, "HS256")
    assert await _head_with(settings, forged) == 401


async def test_es256_tokens_are_checked_against_a_jwks_file_by_key_id(tmp_path: Path) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    jwk.update(kid="k1", alg="ES256", use="sig")
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk]}))
    settings = AuthSettings(jwt_jwks_file=str(path))
    claims = {"sub": "svc", "exp": time.time() + 60, "scope": "read:*"}
    good = jwt.encode(claims, private, "ES256", headers={"kid": "k1"})
    assert await _head_with(settings, good) == 200
    unknown_kid = jwt.encode(
        claims, ec.generate_private_key(ec.SECP256R1()), "ES256", headers={"kid": "k2"}
    )
    assert await _head_with(settings, unknown_kid) == 401


def test_a_key_hash_in_the_wrong_form_is_a_configuration_error() -> None:
    bad = AuthSettings(api_keys=[ApiKey(name="x", hash="plaintext-key", scopes=["admin"])])
    with pytest.raises(tidings.ConfigurationError, match="sha256"):
        create_app("memory://", Settings(auth=bad))


def test_serving_beyond_loopback_needs_auth_or_insecure() -> None:
    with pytest.raises(tidings.ConfigurationError, match="without authentication"):
        check_exposure(Settings(host="0.0.0.0"))
    check_exposure(Settings(host="0.0.0.0", insecure=True))
    check_exposure(Settings(host="0.0.0.0", auth=auth_settings()))
    check_exposure(Settings(host="127.0.0.2"))
    check_exposure(Settings(host="::1"))


def test_no_token_or_key_reaches_the_server_logs(tmp_path: Path) -> None:
    from tests.served import served

    env = {
        "TIDINGS_AUTH__API_KEYS": json.dumps(
            [{"name": "ci", "hash": hash_key(key_of("ci")), "scopes": ["admin"]}]
        ),
        "TIDINGS_AUTH__JWT_SECRET": SECRET,
    }
    secrets = [key_of("ci"), token(), "wrong-" + key_of("ci"), token(exp=time.time() - 5)]
    with served(f"sqlite:///{tmp_path / 'e.db'}", env=env) as server:
        with httpx.Client(base_url=server.url) as c:
            assert c.get("/head", headers=bearer(key_of("ci"))).status_code == 200
            assert c.get("/head", headers=bearer(secrets[1])).status_code == 200
            assert c.get("/head", headers=bearer(secrets[2])).status_code == 401
            assert c.get("/head", headers=bearer(secrets[3])).status_code == 401
            assert c.get(f"/events?access_token={secrets[2]}").status_code == 401
            assert c.get(f"/events?access_token={key_of('ci')}").status_code == 200
        asyncio.run(_ws_handshakes(server.url.replace("http", "ws") + "/ws", secrets))
        server.stop()
        output = server.output
    assert "listening on" in output
    for secret in secrets:
        assert secret not in output
    assert SECRET not in output


async def _ws_handshakes(url: str, secrets: list[str]) -> None:
    import websockets

    for secret in secrets:  # in the query string, as a browser may send it, and as a header
        for query, headers in ((f"?access_token={secret}", {}), ("", bearer(secret))):
            async with websockets.connect(url + query, additional_headers=headers) as ws:
                with contextlib.suppress(websockets.ConnectionClosed):  # 1008 when refused
                    await ws.recv()


async def test_a_caller_over_the_rate_limit_gets_429_with_retry_after() -> None:
    settings = Settings(auth=auth_settings(), rate_limit=1, rate_burst=3)
    app = create_app("memory://", settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            reader = bearer(key_of("reader"))
            codes = [(await c.get("/head", headers=reader)).status_code for _ in range(4)]
            assert codes == [200, 200, 200, 429]
            limited = await c.get("/head", headers=reader)
            assert limited.json()["error"] == "rate_limited"
            assert int(limited.headers["retry-after"]) >= 1
            # Each caller has its own bucket; health checks are never limited.
            assert (await c.get("/head", headers=bearer(key_of("admin")))).status_code == 200
            assert (await c.get("/healthz")).status_code == 200
