"""Choosing a backend by URL, and the public API surface."""

from __future__ import annotations

import pytest

import tidings
from tidings.store import redact


@pytest.mark.parametrize("url", ["mysql://x/y", "redis://localhost", "nonsense", "file:///x.db"])
async def test_unknown_url_schemes_are_configuration_errors(url: str) -> None:
    with pytest.raises(tidings.ConfigurationError, match="unknown store URL scheme"):
        await tidings.connect(url)


async def test_unknown_options_are_configuration_errors() -> None:
    with pytest.raises(tidings.ConfigurationError):
        await tidings.connect("memory://?colour=blue")
    with pytest.raises(tidings.ConfigurationError):
        await tidings.connect("memory://", max_event_bytes="lots")


def test_redact_hides_the_password_only() -> None:
    assert redact("postgresql://u:pw@h:5432/db?x=1") == "postgresql://u:***@h:5432/db?x=1"
    assert redact("postgresql://u@h/db") == "postgresql://u@h/db"


def test_every_exported_name_exists_and_is_documented() -> None:
    for name in tidings.__all__:
        value = getattr(tidings, name)
        if callable(value) and not name.isupper():
            assert value.__doc__, f"tidings.{name} has no docstring"


def test_errors_share_one_root() -> None:
    errors = [
        tidings.WrongExpectedVersion,
        tidings.InvalidEvent,
        tidings.DuplicateEventId,
        tidings.StoreUnavailable,
        tidings.InvalidExpectedVersion,
        tidings.ConfigurationError,
        tidings.StoreClosed,
        tidings.InvalidInput,
    ]
    assert all(issubclass(e, tidings.TidingsError) for e in errors)


def test_errors_survive_pickling() -> None:
    import pickle
    import uuid

    for error in [
        tidings.WrongExpectedVersion("s-1", tidings.NO_STREAM, 3),
        tidings.DuplicateEventId(uuid.uuid4(), "s-1"),
        tidings.StoreUnavailable("postgresql://x", "down"),
    ]:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
