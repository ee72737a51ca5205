"""The HTTP wire format of satellite sync (``/sync/push``, ``/sync/pull``). No I/O.

A push carries each transaction as raw JSON, decoded one at a time, so that a malformed
transaction is rejected alone while the good ones around it are applied.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from tidings.events import AppendResult, RecordedEvent
from tidings.wire import AuditBody, StreamAppend

SATELLITE_ID_PATTERN = r"^[A-Za-z0-9._:-]+$"
SatelliteId = Annotated[
    str, msgspec.Meta(min_length=1, max_length=100, pattern=SATELLITE_ID_PATTERN)
]
"""A satellite's id: 1 to 100 letters, digits, ``.``, ``_``, ``:`` or ``-`` (a UUID by default)."""

Seq = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
"""A satellite's local sequence number: 1 for its first transaction, then one more each."""

Outcome = Literal["accepted", "conflict", "rejected", "duplicate", "out_of_order"]


class PushedTransaction(msgspec.Struct, forbid_unknown_fields=True):
    """One local transaction of a satellite: its sequence number and its appends, each
    with the expected version it was decided on, and an optional audit."""

    seq: Seq
    appends: list[StreamAppend]
    audit: AuditBody | None = None


class PushBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /sync/push``: a satellite's pending transactions, in their local order."""

    satellite_id: SatelliteId
    transactions: list[msgspec.Raw]


class Verdict(msgspec.Struct, omit_defaults=True):
    """What the server made of one pushed transaction.

    - ``accepted``: applied; ``results`` says where each append landed and ``position``
      is the position of the verdict itself (the transaction's last).
    - ``conflict``: nothing applied; ``stream`` was at ``actual``, not ``expected``.
    - ``rejected``: nothing applied, for ``reason`` (scope, validation).
    - ``duplicate``: this sequence number was decided before; ``stored`` is that verdict.
    - ``out_of_order``: not the next sequence number (``last_seq`` in the reply is); not
      stored, push the missing ones first.

    ``seq`` is null only for a transaction too malformed to read its number from.
    """

    seq: int | None
    verdict: Outcome
    results: list[AppendResult] | None = None
    position: int | None = None
    stream: str | None = None
    expected: int | str | None = None
    actual: int | None = None
    reason: str | None = None
    stored: Verdict | None = None
    first: str | None = None
    """The id of the transaction's first event: a satellite checks it is its own."""


class PushResult(msgspec.Struct):
    """The reply to a push: one verdict per transaction, in order, and the satellite's
    ``last_seq`` (the last sequence number the server has decided) after them."""

    satellite_id: str
    verdicts: list[Verdict]
    last_seq: int


class SyncPage(msgspec.Struct):
    """``GET /sync/pull``: the next events of the satellite's categories, never ending in
    the middle of a transaction with an audit record; ``cursor`` is where to pull on
    from; ``last_seq`` and the ``verdicts`` after the ``seq_after`` asked for come along,
    so one pull also tells the satellite what became of its pushes."""

    events: list[RecordedEvent]
    cursor: int
    head: int
    last_seq: int
    verdicts: list[Verdict]
    identity: str | None


def decode_transaction(raw: msgspec.Raw) -> PushedTransaction | Verdict:
    """A pushed transaction, or the ``rejected`` verdict of one that does not decode."""
    try:
        return _transaction.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        seq = _seq_of(raw)
        return Verdict(seq, "rejected", reason=f"malformed transaction: {exc}")


def _seq_of(raw: msgspec.Raw) -> int | None:
    try:
        found: Any = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None
    seq = found.get("seq") if isinstance(found, dict) else None
    return seq if type(seq) is int and seq >= 1 else None


_transaction = msgspec.json.Decoder(PushedTransaction)
