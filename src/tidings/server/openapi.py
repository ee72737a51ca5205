"""The OpenAPI document, with bodies described by the very msgspec types the wire uses."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from tidings.wire import ErrorBody

_REF = "#/components/schemas/{name}"
_types: set[Any] = {ErrorBody}
_ERROR_TEXT = {
    400: "Bad input (invalid_input, invalid_event, invalid_expected_version)",
    401: "No or bad credentials",
    403: "Not allowed",
    404: "Not found",
    409: "Conflict (wrong_expected_version, duplicate_event_id)",
    413: "Request body too large",
    415: "Not JSON",
    422: "Wrong shape (validation_error)",
    429: "Rate limited",
    503: "Store unavailable, or too many live clients (see Retry-After)",
}


SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "an API key or a JWT"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}


def _ref(type_: Any) -> dict[str, Any]:
    _types.add(type_)
    return {"$ref": _REF.format(name=type_.__name__)}


def body_of(type_: Any) -> dict[str, Any]:
    """``openapi_extra`` for a route whose JSON body decodes into ``type_``."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref(type_)}},
        }
    }


def responses(
    type_: Any, status: int = 200, errors: Iterable[int] = (503,), public: bool = False
) -> dict[int | str, dict[str, Any]]:
    """FastAPI ``responses`` for a route that answers ``type_`` and the given errors
    (401 and 403 too, unless the route is ``public``)."""
    found: dict[int | str, dict[str, Any]] = {
        status: {"description": "OK", "content": {"application/json": {"schema": _ref(type_)}}}
    }
    for code in sorted({*errors, *(() if public else (401, 403))}):
        found[code] = {
            "description": _ERROR_TEXT.get(code, "Error"),
            "content": {"application/json": {"schema": _ref(ErrorBody)}},
        }
    return found


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A parameter's schema without FastAPI's ``null`` branch (``int | None`` is
    ``anyOf: [integer, null]``): a path, query or header value is never JSON null, and
    an optional one is simply left out."""
    branches = schema.get("anyOf")
    if branches is None or {"type": "null"} not in branches:
        return schema
    kept = [b for b in branches if b != {"type": "null"}]
    rest = {k: v for k, v in schema.items() if k != "anyOf" and (k, v) != ("default", None)}
    return {**kept[0], **rest} if len(kept) == 1 else {**rest, "anyOf": kept}


def install(app: FastAPI) -> None:
    """Build the document once, on first request, with the wire types' schemas."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        _, components = msgspec.json.schema_components(
            sorted(_types, key=lambda t: t.__name__), ref_template=_REF
        )
        schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
        schemas = schema["components"].setdefault("schemas", {})
        schemas.update(components)
        # FastAPI's own 422 shape is never sent: every error is an ErrorBody.
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                for parameter in operation.get("parameters", []):
                    parameter["schema"] = _not_null(parameter.get("schema", {}))
                answers = operation.get("responses", {})
                if "422" in answers:
                    answers["422"] = {
                        "description": _ERROR_TEXT[422],
                        "content": {"application/json": {"schema": _ref(ErrorBody)}},
                    }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
