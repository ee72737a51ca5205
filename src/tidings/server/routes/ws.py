"""``GET /ws``: the WebSocket gateway's handshake (origin, subprotocol, credentials, caps)."""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import APIRouter, WebSocket

from tidings.server.auth import ANONYMOUS_ADMIN, Authenticator, Principal, credential
from tidings.server.errors import ApiError
from tidings.server.node import node_in
from tidings.server.ws import protocol
from tidings.server.ws.connection import Connection

router = APIRouter()


@router.websocket("/ws")
async def gateway(websocket: WebSocket) -> None:
    """The ``tidings.v1`` protocol (docs/protocol.md)."""
    node = node_in(websocket)
    if not origin_allowed(websocket, node.settings.cors_origins):
        await websocket.close(protocol.POLICY)  # before accept: the handshake gets 403
        return
    offered = websocket.scope.get("subprotocols") or []
    token = next((p[len(protocol.TOKEN_PREFIX) :] for p in offered if _is_token(p)), None)
    wanted = [p for p in offered if not _is_token(p)]
    if wanted and protocol.SUBPROTOCOL not in wanted:
        # Select what it offered, only to close at once: a browser fails a handshake that
        # selects none of its offers, and its page would see 1006 instead of 4000.
        await websocket.accept(wanted[0])
        await websocket.close(protocol.UNSUPPORTED_PROTOCOL, f"offer {protocol.SUBPROTOCOL}")
        return
    subprotocol = protocol.SUBPROTOCOL if wanted else None
    authenticator: Authenticator = websocket.app.state.authenticator
    try:
        who = _caller(websocket, authenticator, token)
    except ApiError as exc:
        await websocket.accept(subprotocol)
        await websocket.close(protocol.POLICY, exc.body.message[:120])
        return
    refusal = None
    if node.stopping.is_set():
        refusal = (protocol.RESTARTING, "the server is restarting: reconnect")
    elif len(node.ws_connections) >= node.settings.ws.max_connections:
        refusal = (protocol.TRY_LATER, "too many connections: retry later")
    await websocket.accept(subprotocol)
    if refusal is not None:
        code, reason = refusal
        closing = protocol.reply("closing", reason=reason, code=code, resume={})
        await websocket.send_text(closing.decode())
        await websocket.close(code, reason)
        return
    await Connection(websocket, node, authenticator, who, firefly=subprotocol is None).serve()


def _is_token(subprotocol: str) -> bool:
    return subprotocol.startswith(protocol.TOKEN_PREFIX)


def _caller(
    websocket: WebSocket, authenticator: Authenticator, token: str | None
) -> Principal | None:
    """The caller, from the handshake's credentials; None when they must come in a message."""
    if not authenticator.enabled:
        return ANONYMOUS_ADMIN
    # The order docs/protocol.md gives: headers, the subprotocol token, the query.
    given = (
        credential(websocket, query=False) or token or websocket.query_params.get("access_token")
    )
    return None if not given else authenticator.from_token(given)


def origin_allowed(websocket: WebSocket, allowed: list[str]) -> bool:
    """A browser's page may connect from the server's own origin or an allowed one; a
    client that sends no Origin (not a browser) is not asked."""
    origin = websocket.headers.get("origin")
    if origin is None or "*" in allowed or origin in allowed:
        return True
    host = websocket.headers.get("host")
    return host is not None and urlsplit(origin).netloc == host
