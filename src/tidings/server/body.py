"""Request and response bodies: bounded, JSON only, straight to and from the wire types."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from fastapi import Request
from starlette.responses import Response

from tidings.server.errors import ApiError
from tidings.wire import encoder

T = TypeVar("T")
_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or 413 past ``limit`` bytes (read no further than that)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413, "payload_too_large", f"the request body is over {limit} bytes", limit=limit
    )


async def decode_body(request: Request, type_: type[T], limit: int) -> T:
    """Decode a JSON body into ``type_``: 415 if it is not JSON, 400 if it does not parse,
    422 if it has the wrong shape."""
    media = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if media.lower() != "application/json" and not media.lower().endswith("+json"):
        raise ApiError(415, "unsupported_media_type", f"send application/json, not {media!r}")
    raw = await read_body(request, limit)
    decoder = _decoders.get(type_)
    if decoder is None:
        decoder = _decoders[type_] = msgspec.json.Decoder(type_)
    try:
        value: T = decoder.decode(raw)
    except msgspec.ValidationError as exc:
        path = str(exc).rpartition(" - at `")[2].rstrip("`") if " - at `" in str(exc) else None
        raise ApiError(422, "validation_error", str(exc), field=path) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, "invalid_input", f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "invalid_input", "the body nests too deeply to decode") from None
    return value


def reply(value: Any, status: int = 200) -> Response:
    """A JSON response of a wire value, encoded once by msgspec."""
    return Response(encoder.encode(value), status, media_type="application/json")
