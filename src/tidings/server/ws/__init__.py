"""The WebSocket gateway (``GET /ws``, subprotocol ``tidings.v1``; docs/protocol.md)."""
