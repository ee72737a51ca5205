"""The Notifier contract, written once and run on memory, PostgreSQL, Redis and NATS for real."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

import tidings.notify
from tidings.errors import (
    ConfigurationError,
    InvalidChannel,
    InvalidInput,
    NotifierClosed,
    NotifierUnavailable,
    PayloadTooLarge,
    SubscriptionOverflow,
)
from tidings.notify import Message, Notice, NotifierBase, Subscription

WAIT = 5.0  # seconds a message may take to arrive before a test gives up


@pytest.fixture
async def notifier(notifier_url: str) -> AsyncIterator[NotifierBase]:
    n = await tidings.notify.connect(notifier_url)
    async with n:
        yield n


async def next_message(sub: Subscription, within: float = WAIT) -> Message:
    message = await sub.get(within)
    assert message is not None, f"nothing arrived within {within} s"
    return message


async def payloads(sub: Subscription, count: int, within: float = WAIT) -> list[bytes]:
    """The next ``count`` message payloads (notices skipped)."""
    got: list[bytes] = []
    async with asyncio.timeout(within):
        async for message in sub:
            if message.notice is None:
                got.append(message.payload)
                if len(got) == count:
                    break
    return got


async def eventually(check: Callable[[], bool], within: float = WAIT) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def assert_nothing_arrives(sub: Subscription, wait: float = 0.2) -> None:
    message = await sub.get(wait)
    assert message is None, f"unexpected {message!r}"


# -- delivery --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b"hello",
        "h\u00e9llo w\u00f6rld \u2603".encode(),
        bytes(range(256)),  # not UTF-8
        b"a\x00b\x00",  # NUL bytes
        b"",
        b"\x01looks like the marker",
        b"\xff\xfe\x00\x01",
    ],
    ids=["text", "utf8", "binary", "nul", "empty", "marker", "bom"],
)
async def test_a_message_published_after_subscribing_arrives_with_its_exact_bytes(
    notifier: NotifierBase, channel: str, payload: bytes
) -> None:
    async with notifier.subscribe(channel) as sub:
        await notifier.publish(channel, payload)
        message = await next_message(sub)
    assert message == Message(channel, payload)
    assert type(message.payload) is bytes


async def test_bytearray_and_memoryview_payloads_are_accepted(
    notifier: NotifierBase, channel: str
) -> None:
    async with notifier.subscribe(channel) as sub:
        await notifier.publish(channel, bytearray(b"one"))
        await notifier.publish(channel, memoryview(b"two"))
        assert await payloads(sub, 2) == [b"one", b"two"]


async def test_a_payload_exactly_at_the_limit_arrives(notifier: NotifierBase, channel: str) -> None:
    # PostgreSQL's limit applies to the text sent, and bytes that are not text travel
    # base64-encoded: only a text payload can reach the limit there.
    at_limit = [b"x" * notifier.max_payload]
    if notifier.kind != "postgresql":
        at_limit.append(bytes(i % 256 for i in range(notifier.max_payload)))
    async with notifier.subscribe(channel) as sub:
        for payload in at_limit:
            await notifier.publish(channel, payload)
        assert await payloads(sub, len(at_limit)) == at_limit


async def test_a_payload_over_the_limit_is_refused_and_nothing_is_published(
    notifier: NotifierBase, channel: str
) -> None:
    too_large = [b"x" * (notifier.max_payload + 1)]
    if notifier.kind == "postgresql":
        too_large.append(b"\xff" * 6000)  # 6,000 bytes, but 8,001 once base64-encoded
    async with notifier.subscribe(channel) as sub:
        for payload in too_large:
            with pytest.raises(PayloadTooLarge) as caught:
                await notifier.publish(channel, payload)
            assert caught.value.limit == notifier.max_payload
            assert caught.value.size > notifier.max_payload
            assert caught.value.backend == notifier.kind
        await notifier.publish(channel, b"after")
        assert await payloads(sub, 1) == [b"after"]
        await assert_nothing_arrives(sub)


@pytest.mark.parametrize("payload", ["text", 42, None, ["b"]], ids=["str", "int", "none", "list"])
async def test_a_payload_that_is_not_bytes_is_invalid_input(
    notifier: NotifierBase, channel: str, payload: object
) -> None:
    with pytest.raises(InvalidInput, match="bytes"):
        await notifier.publish(channel, payload)  # type: ignore[arg-type]


async def test_one_publishers_messages_arrive_in_order(
    notifier: NotifierBase, channel: str
) -> None:
    sent = [f"m{i}".encode() for i in range(1000)]
    async with notifier.subscribe(channel, maxsize=len(sent)) as sub:
        for payload in sent:
            await notifier.publish(channel, payload)
        assert await payloads(sub, len(sent), within=20) == sent


async def test_concurrent_publishes_of_one_task_group_keep_their_order(
    notifier: NotifierBase, channel: str
) -> None:
    sent = [f"m{i}".encode() for i in range(1000)]
    async with notifier.subscribe(channel, maxsize=len(sent)) as sub:
        await asyncio.gather(*(notifier.publish(channel, p) for p in sent))
        assert await payloads(sub, len(sent), within=20) == sent


async def test_repeated_identical_messages_all_arrive(notifier: NotifierBase, channel: str) -> None:
    # PostgreSQL folds identical notifications of one transaction: none may be lost here.
    async with notifier.subscribe(channel) as sub:
        await asyncio.gather(*(notifier.publish(channel, b"same") for _ in range(20)))
        assert await payloads(sub, 20) == [b"same"] * 20
        await assert_nothing_arrives(sub)


async def test_every_subscriber_of_a_channel_gets_every_message(
    notifier: NotifierBase, channel: str
) -> None:
    sent = [str(i).encode() for i in range(50)]
    async with (
        notifier.subscribe(channel) as a,
        notifier.subscribe(channel) as b,
        notifier.subscribe(channel) as c,
    ):
        for payload in sent:
            await notifier.publish(channel, payload)
        for sub in (a, b, c):
            assert await payloads(sub, len(sent)) == sent


async def test_a_subscriber_gets_only_its_own_channels(
    notifier: NotifierBase, channel: str
) -> None:
    mine, other, third = f"{channel}.mine", f"{channel}.other", f"{channel}.third"
    async with notifier.subscribe(mine, other) as sub, notifier.subscribe(third) as bystander:
        await notifier.publish(third, b"not for sub")
        await notifier.publish(f"{channel}.nobody", b"for nobody")
        await notifier.publish(mine, b"1")
        await notifier.publish(other, b"2")
        got = [await next_message(sub), await next_message(sub)]
        assert got == [Message(mine, b"1"), Message(other, b"2")]
        assert await bystander.get(WAIT) == Message(third, b"not for sub")
        await assert_nothing_arrives(sub)
        await assert_nothing_arrives(bystander)


async def test_channels_can_be_added_and_removed(notifier: NotifierBase, channel: str) -> None:
    first, second = f"{channel}.first", f"{channel}.second"
    async with notifier.subscribe(first) as sub:
        await sub.add(second)
        assert sub.channels == {first, second}
        await notifier.publish(second, b"added")
        assert await next_message(sub) == Message(second, b"added")

        await sub.remove(first)
        assert sub.channels == {second}
        await notifier.publish(first, b"removed")
        await notifier.publish(second, b"still here")
        assert await next_message(sub) == Message(second, b"still here")
        await assert_nothing_arrives(sub)
    assert first not in notifier.listening and second not in notifier.listening


async def test_removing_a_channel_leaves_other_subscribers_of_it_listening(
    notifier: NotifierBase, channel: str
) -> None:
    async with notifier.subscribe(channel) as keeper, notifier.subscribe(channel) as leaver:
        await leaver.remove(channel)
        await notifier.publish(channel, b"x")
        assert await payloads(keeper, 1) == [b"x"]
        await assert_nothing_arrives(leaver)


async def test_a_closed_subscription_gets_nothing_more(
    notifier: NotifierBase, channel: str
) -> None:
    sub = notifier.subscribe(channel, notices=True)
    async with sub:
        assert (await next_message(sub)).notice == Notice("subscribe", topic=channel)
    assert await next_message(sub) == Message("", b"", Notice("close", final=True))
    await notifier.publish(channel, b"late")
    assert await sub.get(0.2) is None
    assert channel not in notifier.listening


async def test_two_notifiers_on_one_url_reach_each_other(notifier_url: str, channel: str) -> None:
    node_a = await tidings.notify.connect(notifier_url)
    node_b = await tidings.notify.connect(notifier_url)
    async with node_a, node_b, node_b.subscribe(channel) as sub:
        await node_a.publish(channel, b"from a")
        assert await next_message(sub) == Message(channel, b"from a")


async def test_a_subscriber_joining_a_channel_being_subscribed_misses_nothing(
    notifier_url: str, channel: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The second subscription of a channel must not return before the server has it.
    async with (
        await tidings.notify.connect(notifier_url) as publisher,
        await tidings.notify.connect(notifier_url) as listener,
    ):
        listen = listener._listen

        async def slow_listen(channels: list[str]) -> None:
            await asyncio.sleep(0.2)  # a slow server: the first LISTEN takes a while
            await listen(channels)

        monkeypatch.setattr(listener, "_listen", slow_listen)
        first = listener.subscribe(channel)
        second = listener.subscribe(channel)
        entering = asyncio.create_task(first.open())
        await asyncio.sleep(0)  # the first subscription is now asking the server
        async with second:
            await publisher.publish(channel, b"right after")
            assert await payloads(second, 1) == [b"right after"]
        await entering
        await first.close()


# -- channel names -----------------------------------------------------------------------

BAD_CHANNELS = ["", "a b", "a..b", ".a", "a.", "x" * 64, "caf\u00e9", "a*", "a>", "a/b", "a\x00"]


@pytest.mark.parametrize("bad", [*BAD_CHANNELS, None, 7, b"bytes"])
async def test_bad_channel_names_are_refused_before_any_io(
    notifier: NotifierBase, bad: object
) -> None:
    with pytest.raises(InvalidChannel):
        await notifier.publish(bad, b"x")  # type: ignore[arg-type]
    with pytest.raises(InvalidChannel):
        notifier.subscribe(bad)  # type: ignore[arg-type]
    async with notifier.subscribe() as sub:
        with pytest.raises(InvalidChannel):
            await sub.add(bad)  # type: ignore[arg-type]
    assert notifier.published == 0
    assert notifier.listening == frozenset()


async def test_the_longest_and_mixed_case_channel_names_work(
    notifier: NotifierBase, channel: str
) -> None:
    longest = f"{channel}.{'y' * (62 - len(channel))}"
    assert len(longest) == 63
    mixed = f"{channel}.Mixed-Case_9"
    async with notifier.subscribe(longest, mixed, mixed.lower()) as sub:
        await notifier.publish(longest, b"long")
        await notifier.publish(mixed, b"mixed")
        await notifier.publish(mixed.lower(), b"lower")
        got = [await next_message(sub) for _ in range(3)]
    assert got == [
        Message(longest, b"long"),
        Message(mixed, b"mixed"),
        Message(mixed.lower(), b"lower"),
    ]


# -- bounded subscriptions ---------------------------------------------------------------


async def test_a_subscriber_that_does_not_read_keeps_only_the_newest_maxsize_messages(
    notifier: NotifierBase, channel: str
) -> None:
    sent = [str(i).encode() for i in range(100)]
    async with notifier.subscribe(channel, maxsize=10) as sub:
        for payload in sent:
            await notifier.publish(channel, payload)
        await eventually(lambda: sub.received == len(sent))
        assert (sub.depth, sub.max_depth, sub.dropped) == (10, 10, 90)
        assert await payloads(sub, 10) == sent[-10:]
        await assert_nothing_arrives(sub)


async def test_an_overflowing_subscriber_with_notices_hears_how_much_it_lost(
    notifier: NotifierBase, channel: str
) -> None:
    sent = [str(i).encode() for i in range(100)]
    async with notifier.subscribe(channel, maxsize=10, notices=True) as sub:
        assert (await next_message(sub)).notice == Notice("subscribe", topic=channel)
        for payload in sent:
            await notifier.publish(channel, payload)
        await eventually(lambda: sub.received == len(sent))
        overflow = await next_message(sub)
        assert overflow.notice is not None and overflow.notice.action == "overflow"
        assert "90" in overflow.notice.detail
        assert sub.dropped == 90
        assert [(await next_message(sub)).payload for _ in range(10)] == sent[-10:]


async def test_an_overflowing_subscriber_with_the_disconnect_policy_gets_an_error(
    notifier: NotifierBase, channel: str
) -> None:
    async with (
        notifier.subscribe(channel, maxsize=5, overflow="disconnect") as strict,
        notifier.subscribe(channel) as other,
    ):
        for i in range(10):
            await notifier.publish(channel, str(i).encode())
        assert await payloads(other, 10) == [str(i).encode() for i in range(10)]
        with pytest.raises(SubscriptionOverflow) as caught:
            await strict.get(WAIT)
        assert caught.value.channels == (channel,) and caught.value.maxsize == 5
        assert strict.depth == 0
        # The notifier and the other subscriber carry on.
        await notifier.publish(channel, b"more")
        assert await payloads(other, 1) == [b"more"]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"maxsize": 0}, "maxsize"),
        ({"maxsize": True}, "maxsize"),
        ({"overflow": "grow"}, "overflow"),
    ],
)
async def test_bad_subscription_bounds_are_invalid_input(
    notifier: NotifierBase, channel: str, options: dict[str, object], match: str
) -> None:
    with pytest.raises(InvalidInput, match=match):
        notifier.subscribe(channel, **options)  # type: ignore[arg-type]


# -- notices and lifecycle ---------------------------------------------------------------


async def test_the_subscribe_notice_names_its_channel(notifier: NotifierBase, channel: str) -> None:
    other = f"{channel}.other"
    async with notifier.subscribe(channel, other, notices=True) as sub:
        got = {await next_message(sub), await next_message(sub)}
    assert got == {
        Message(channel, b"", Notice("subscribe", topic=channel)),
        Message(other, b"", Notice("subscribe", topic=other)),
    }


async def test_a_second_subscriber_of_a_channel_hears_its_subscribe_notice_too(
    notifier: NotifierBase, channel: str
) -> None:
    async with notifier.subscribe(channel, notices=True) as first:
        assert (await next_message(first)).notice == Notice("subscribe", topic=channel)
        async with notifier.subscribe(channel, notices=True) as second:
            assert (await next_message(second)).notice == Notice("subscribe", topic=channel)
            await assert_nothing_arrives(first)


async def test_notices_are_off_by_default(notifier: NotifierBase, channel: str) -> None:
    async with notifier.subscribe(channel) as sub:
        await notifier.publish(channel, b"only this")
        assert await next_message(sub) == Message(channel, b"only this")
        await assert_nothing_arrives(sub)


async def test_closing_the_notifier_ends_subscriptions_with_a_final_stop_notice(
    notifier_url: str, channel: str
) -> None:
    n = await tidings.notify.connect(notifier_url)
    quiet = n.subscribe(channel)
    loud = n.subscribe(channel, notices=True)
    async with n, quiet, loud:
        assert (await next_message(loud)).notice == Notice("subscribe", topic=channel)
        waiting = asyncio.create_task(payloads(quiet, 1))
        await asyncio.sleep(0.05)
        await n.close()
        assert await waiting == []  # a waiting reader is woken and its iteration ends
        assert await next_message(loud) == Message("", b"", Notice("stop", final=True))
        assert await loud.get(0.1) is None
    assert [m async for m in loud] == []


async def test_a_closed_notifier_refuses_to_be_used(notifier_url: str, channel: str) -> None:
    n = await tidings.notify.connect(notifier_url)
    sub = n.subscribe(channel)
    async with n:
        pass
    await n.close()  # closing twice is fine
    with pytest.raises(NotifierClosed):
        await n.publish(channel, b"x")
    with pytest.raises(NotifierClosed):
        n.subscribe(channel)
    with pytest.raises(NotifierClosed):
        await sub.open()


async def test_every_notifier_satisfies_the_protocol(notifier: NotifierBase) -> None:
    assert isinstance(notifier, tidings.notify.Notifier)
    assert notifier.max_payload > 0


# -- connecting --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres:s3cret-pw@127.0.0.1:1/postgres",
        "redis://:s3cret-pw@127.0.0.1:1/0",
        "nats://user:s3cret-pw@127.0.0.1:1",
    ],
    ids=["postgres", "redis", "nats"],
)
async def test_an_unreachable_server_is_notifier_unavailable_quickly(url: str) -> None:
    started = time.monotonic()
    with pytest.raises(NotifierUnavailable) as caught:
        await tidings.notify.connect(url)
    # Refused at once: no waiting out the 5 s connect_timeout, no retrying.
    assert time.monotonic() - started < 2
    text = str(caught.value)
    assert "127.0.0.1:1" in text and "s3cret-pw" not in text
    assert "connect call failed" in text.lower()  # the reason, not a bare timeout
    assert "s3cret-pw" not in caught.value.url and caught.value.detail


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("kafka://127.0.0.1:9092", {}),
        ("127.0.0.1:6379", {}),
        ("redis://127.0.0.1:1/0", {"keepalive": "often"}),
        ("redis://127.0.0.1:1/0", {"keepalive": 0}),
        ("redis://127.0.0.1:1/0?publish_timeout=-1", {}),
        ("redis://127.0.0.1:1/0", {"colour": "blue"}),
        ("redis://127.0.0.1:1/0", {"max_payload": "big"}),
        ("nats://127.0.0.1:1", {"max_payload": 10}),
        ("postgresql://127.0.0.1:1/x", {"max_payload": 10}),
        ("memory://", {"keepalive": 1}),
        (None, {}),
    ],
)
async def test_bad_urls_and_options_are_configuration_errors(
    url: object, options: dict[str, object]
) -> None:
    with pytest.raises(ConfigurationError):
        await tidings.notify.connect(url, **options)  # type: ignore[arg-type]


async def test_scheme_errors_never_show_the_password() -> None:
    with pytest.raises(ConfigurationError) as caught:
        await tidings.notify.connect("kafka://user:s3cret-pw@127.0.0.1:9092")
    assert "s3cret-pw" not in str(caught.value)
