"""Schemathesis against /openapi.json: whatever it sends, no 5xx, and every answer is of
a status, content type and shape the document gives.

The app runs on a memory store that its own lifespan opens, on schemathesis' event loop.
The live (SSE) endpoints, /events/live and /streams/{stream}/events/live, never end, so
they are left out here: tests/acceptance/test_sse_faults.py and the live contract tests
cover them, and test_bad_input.py their refusals.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings

from tidings.server import Settings
from tidings.server.app import create_app
from tidings.server.auth import ApiKey, AuthSettings, hash_key
from tidings.server.settings import EventStreamSettings

CONFIG = schemathesis.Config.from_dict(
    {
        # NUL is refused before routing by design (400; see test_bad_input.py).
        "generation": {"allow-x00": False},
        "checks": {
            # Valid by the schema yet refused: the store's own rules (400), which JSON
            # Schema cannot state (printable names, at least one event, the marker names
            # of expected_version), or a resource that is not there (404, 409).
            "positive_data_acceptance": {"expected-statuses": ["2xx", "400", "404", "409"]}
        },
    }
)

# Event streams are defined and listed, never run here: a generated webhook URL would
# send the server out to whatever host schemathesis made up.
QUIET = EventStreamSettings(enabled=False)
app = create_app("memory://", Settings(eventstreams=QUIET))
schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=CONFIG).exclude(
    path_regex=r"/live$"
)


def _has_integral_float(value: Any) -> bool:
    if isinstance(value, float):
        return value.is_integer()
    if isinstance(value, dict):
        return any(_has_integral_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_integral_float(v) for v in value)
    return False


@schema.hook
def filter_body(context: schemathesis.HookContext, body: Any) -> bool:
    """JSON Schema counts 357.0 as an integer; msgspec, strict, wants 357 (422 for 357.0)."""
    return not _has_integral_float(body)


@schema.hook
def map_query(context: schemathesis.HookContext, query: dict[str, Any] | None) -> Any:
    """Long polls (``wait=`` up to 60 s) cut to a hundredth of a second, still valid."""
    if query is None:
        return query
    wait = query.get("wait")
    if isinstance(wait, int | float) and not isinstance(wait, bool) and 0 <= wait <= 60:
        query["wait"] = min(wait, 0.01)
    return query


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_its_document_says(case: schemathesis.Case) -> None:
    case.call_and_validate()


# The same document with auth on: every case once with an admin key (answers as
# documented) and once with no credentials (401 on every guarded operation, in the
# documented error shape; the public ones answer as usual).
ADMIN_KEY = "schemathesis-admin-key-0123456789"
_auth = AuthSettings(api_keys=[ApiKey(name="admin", hash=hash_key(ADMIN_KEY), scopes=["admin"])])
AUTH_CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {"allow-x00": False},
        "checks": {
            "positive_data_acceptance": {"expected-statuses": ["2xx", "400", "401", "404", "409"]}
        },
    }
)
authed_app = create_app("memory://", Settings(auth=_auth, eventstreams=QUIET))
authed = schemathesis.openapi.from_asgi("/openapi.json", authed_app, config=AUTH_CONFIG).exclude(
    path_regex=r"/live$"
)
PUBLIC = {"/healthz", "/readyz", "/openapi.json", "/docs"}
authed.hook(filter_body)
authed.hook(map_query)


@authed.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
def test_with_auth_on_every_operation_wants_credentials_and_answers_with_them(
    case: schemathesis.Case,
) -> None:
    admin = case.call_and_validate(headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    anonymous = case.call()
    if case.operation.path in PUBLIC:
        return
    # Routing and query validation come first (404/405/422 for anyone: they reveal
    # nothing); a guarded operation never serves a caller without credentials, and what
    # it serves to an admin it refuses to them with 401.
    assert anonymous.status_code >= 400, (case.operation.path, anonymous.text)
    if admin.status_code < 300:
        assert anonymous.status_code == 401, (case.operation.path, anonymous.text)
        assert anonymous.json()["error"] == "unauthorized"
