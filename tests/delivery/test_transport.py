"""The transports, SmtpPool above all, against a real SMTP server (tests/smtp.py)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import pytest

from mailer.delivery.transport import (
    ConsoleTransport,
    MemoryTransport,
    Outcome,
    SendResult,
    SmtpPool,
    transport_from_url,
)
from mailer.smtp_url import SmtpSettings
from tests.smtp_server import DROP, ScriptedSmtpServer

SENDER = "news@shop.example"
RECIPIENT = "alice@example.org"
T = TypeVar("T")


def message(number: int = 0) -> bytes:
    """A small RFC 5322 message; one body line starts with a dot (SMTP must escape it)."""
    return (
        "From: Music Store <news@shop.example>\r\n"
        "To: alice@example.org\r\n"
        f"Subject: Test {number}\r\n"
        f"Message-ID: <{number}.test@shop.example>\r\n"
        "Date: Tue, 25 Nov 2025 10:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        f"Hello number {number}.\r\n"
        ".A line that starts with a dot.\r\n"
        "..And one with two.\r\n"
        "\r\n"
        "Bye\r\n"
    ).encode()


@asynccontextmanager
async def pool_for(url: str, size: int = 2) -> AsyncIterator[SmtpPool]:
    pool = SmtpPool(SmtpSettings.from_url(url), size)
    try:
        yield pool
    finally:
        await pool.close()


def run(make: Callable[[], Awaitable[T]]) -> T:
    """Run an async test body on a fresh loop (pytest-asyncio is not used)."""

    async def main() -> T:
        return await make()

    return asyncio.run(main())


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "smtp://127.0.0.1:8025",
            dict(
                host="127.0.0.1",
                port=8025,
                username=None,
                password=None,
                implicit_tls=False,
                starttls=False,
                timeout=30.0,
                verify_certs=True,
                local_hostname=None,
            ),
        ),
        ("smtp://mail.example.org", dict(host="mail.example.org", port=25)),
        ("SMTP://Relay.Example:2525/", dict(host="relay.example", port=2525)),
        (
            "smtps://u%40shop.example:p%3Ass%2Fw%40rd@mail.example.org",
            dict(port=465, username="u@shop.example", password="p:ss/w@rd", implicit_tls=True),
        ),
        (
            "smtp://user:pw@relay.example:587?starttls=1&timeout=10",
            dict(port=587, username="user", password="pw", starttls=True, timeout=10.0),
        ),
        ("smtp://apikey@relay.example", dict(username="apikey", password=None)),
        (
            "smtp://[::1]:2525?starttls=true&verify=0&helo=mailer.example",
            dict(host="::1", starttls=True, verify_certs=False, local_hostname="mailer.example"),
        ),
    ],
)
def test_from_url_parses(url: str, expected: dict[str, object]) -> None:
    settings = SmtpSettings.from_url(url)
    for name, value in expected.items():
        assert getattr(settings, name) == value, name


@pytest.mark.parametrize(
    "url",
    [
        "",
        "   ",
        "127.0.0.1:25",
        "http://relay.example",
        "smtp://",
        "smtp://:s3cret@relay.example",
        "smtp://user:s3cret@relay.example:abc",
        "smtp://user:s3cret@relay.example:70000",
        "smtp://relay.example:0",
        "smtp://relay.example/path",
        "smtp://relay.example#frag",
        "smtp://relay.example?starttls=maybe",
        "smtp://relay.example?starttls=1&starttls=0",
        "smtp://relay.example?timeout=-1",
        "smtp://relay.example?timeout=nan",
        "smtp://relay.example?timeout=soon",
        "smtp://relay.example?startls=1",
        "smtp://relay.example?helo=bad%20name",
        "smtps://user:s3cret@relay.example?starttls=1",
        "smtp://[::1",
    ],
)
def test_from_url_refuses_bad_urls_naming_the_setting(url: str) -> None:
    with pytest.raises(ValueError, match="MAILER_SMTP_URL") as caught:
        SmtpSettings.from_url(url)
    assert "s3cret" not in str(caught.value)


def test_redacted_and_repr_hide_the_password() -> None:
    settings = SmtpSettings.from_url("smtp://u%40shop.example:s3cret@relay.example:587?starttls=1")
    assert settings.redacted() == "smtp://u%40shop.example:***@relay.example:587?starttls=1"
    assert "s3cret" not in repr(settings)
    assert SmtpSettings.from_url("smtps://[::1]?timeout=5&verify=0").redacted() == (
        "smtps://[::1]:465?timeout=5&verify=0"
    )
    # The redacted form parses back to the same settings, minus the password.
    plain = SmtpSettings.from_url("smtp://relay.example:2525?timeout=2.5")
    assert SmtpSettings.from_url(plain.redacted()) == plain


def test_transport_from_url_picks_the_transport() -> None:
    pool = transport_from_url("smtp://127.0.0.1:8025", 3)
    assert isinstance(pool, SmtpPool)
    assert pool.size == 3
    assert isinstance(transport_from_url("smtps://relay.example", 1), SmtpPool)
    assert isinstance(transport_from_url("memory://", 4), MemoryTransport)
    assert isinstance(transport_from_url("console://", 4), ConsoleTransport)
    with pytest.raises(ValueError, match="MAILER_SMTP_URL"):
        transport_from_url("ftp://relay.example", 4)
    with pytest.raises(ValueError, match="MAILER_SMTP_CONNECTIONS"):
        SmtpPool(SmtpSettings.from_url("smtp://relay.example"), 0)


# --------------------------------------------------------------------------- sending


def test_a_plain_send_arrives_byte_for_byte(smtp: ScriptedSmtpServer) -> None:
    async def body() -> SendResult:
        async with pool_for(smtp.url) as pool:
            return await pool.send(SENDER, RECIPIENT, message(1))

    result = run(body)

    assert result == SendResult(Outcome.SENT, 250, "2.0.0 OK queued as 1")
    [received] = smtp.messages
    assert received.envelope_from == SENDER
    assert received.rcpt_tos == [RECIPIENT]
    assert received.data == message(1)
    assert smtp.commands[-1] == "QUIT"  # close() says goodbye


def test_connections_are_reused(smtp: ScriptedSmtpServer) -> None:
    async def body() -> list[SendResult]:
        async with pool_for(smtp.url, size=2) as pool:
            one_by_one = [
                await pool.send(SENDER, f"r{n}@example.org", message(n)) for n in range(50)
            ]
            together = await asyncio.gather(
                *(pool.send(SENDER, f"r{n}@example.org", message(n)) for n in range(50, 100))
            )
            return one_by_one + together

    results = run(body)

    assert {result.outcome for result in results} == {Outcome.SENT}
    assert len(smtp.messages) == 100
    assert 1 <= smtp.connections <= 2


def test_temporary_rcpt_failure_then_success_on_retry(smtp: ScriptedSmtpServer) -> None:
    smtp.script_rcpt(RECIPIENT, ["451 4.3.0 try again later", None])

    async def body() -> tuple[SendResult, SendResult]:
        async with pool_for(smtp.url) as pool:
            first = await pool.send(SENDER, RECIPIENT, message())
            second = await pool.send(SENDER, RECIPIENT, message())
            return first, second

    first, second = run(body)

    assert first == SendResult(Outcome.TEMPORARY, 451, "4.3.0 try again later")
    assert second.outcome is Outcome.SENT
    assert len(smtp.messages) == 1
    # The failed transaction was reset, and the same connection carried the retry.
    assert smtp.commands[:6] == ["MAIL", "RCPT", "RSET", "MAIL", "RCPT", "DATA"]
    assert smtp.connections == 1


def test_rcpt_refused_with_5xx_is_a_hard_bounce(smtp: ScriptedSmtpServer) -> None:
    smtp.script_rcpt(RECIPIENT, ["550 5.1.1 no such user"])

    async def body() -> tuple[SendResult, SendResult]:
        async with pool_for(smtp.url) as pool:
            refused = await pool.send(SENDER, RECIPIENT, message())
            other = await pool.send(SENDER, "bob@example.org", message())
            return refused, other

    refused, other = run(body)

    assert refused == SendResult(Outcome.PERMANENT, 550, "5.1.1 no such user", True)
    assert other.outcome is Outcome.SENT
    assert [m.rcpt_tos for m in smtp.messages] == [["bob@example.org"]]
    assert smtp.connections == 1


def test_reject_all_with(smtp: ScriptedSmtpServer) -> None:
    smtp.reject_all_with("550 5.1.1 no such user")

    async def body() -> list[SendResult]:
        async with pool_for(smtp.url) as pool:
            return [await pool.send(SENDER, f"r{n}@example.org", message()) for n in range(3)]

    results = run(body)

    assert all(r.outcome is Outcome.PERMANENT and r.recipient_refused for r in results)
    assert smtp.messages == []


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (
            "554 5.7.1 message content rejected",
            SendResult(Outcome.PERMANENT, 554, "5.7.1 message content rejected", True),
        ),
        (
            "452 4.3.1 insufficient system storage",
            SendResult(Outcome.TEMPORARY, 452, "4.3.1 insufficient system storage"),
        ),
    ],
)
def test_data_refused(smtp: ScriptedSmtpServer, reply: str, expected: SendResult) -> None:
    smtp.script_data([reply])

    async def body() -> tuple[SendResult, SendResult]:
        async with pool_for(smtp.url) as pool:
            refused = await pool.send(SENDER, RECIPIENT, message())
            again = await pool.send(SENDER, RECIPIENT, message())
            return refused, again

    refused, again = run(body)

    assert refused == expected
    assert again.outcome is Outcome.SENT
    assert len(smtp.messages) == 1
    assert smtp.connections == 1


def test_sender_refused_is_temporary_not_a_bounce(smtp: ScriptedSmtpServer) -> None:
    # Our sender (or account) refused: configuration to fix, never the recipient's fault.
    smtp.script_mail(["553 5.7.1 sender address rejected: not owned by user"])

    async def body() -> SendResult:
        async with pool_for(smtp.url) as pool:
            return await pool.send(SENDER, RECIPIENT, message())

    result = run(body)

    assert result.outcome is Outcome.TEMPORARY
    assert result.code == 553
    assert result.recipient_refused is False


def test_connection_dropped_at_connect_is_temporary_and_next_send_works(
    smtp: ScriptedSmtpServer,
) -> None:
    smtp.fail_next_connections(1)

    async def body() -> tuple[SendResult, SendResult]:
        async with pool_for(smtp.url, size=1) as pool:
            dropped = await pool.send(SENDER, RECIPIENT, message())
            again = await pool.send(SENDER, RECIPIENT, message())
            return dropped, again

    dropped, again = run(body)

    assert dropped.outcome is Outcome.TEMPORARY
    assert dropped.code is None
    assert dropped.reply
    assert again.outcome is Outcome.SENT
    assert smtp.connections == 2


def test_connection_dropped_during_data_is_temporary_and_discarded(
    smtp: ScriptedSmtpServer,
) -> None:
    smtp.script_data([None, DROP])

    async def body() -> list[SendResult]:
        async with pool_for(smtp.url, size=1) as pool:
            return [await pool.send(SENDER, RECIPIENT, message(n)) for n in range(3)]

    first, dropped, third = run(body)

    assert first.outcome is Outcome.SENT
    assert dropped.outcome is Outcome.TEMPORARY
    assert "DATA" in dropped.reply
    assert third.outcome is Outcome.SENT
    # No retry after a drop in DATA (the server might have kept it): the worker decides.
    assert [m.data for m in smtp.messages] == [message(0), message(2)]
    assert smtp.connections == 2


def test_idle_connection_closed_by_server_is_replaced_transparently(
    smtp: ScriptedSmtpServer,
) -> None:
    async def body() -> tuple[SendResult, SendResult]:
        async with pool_for(smtp.url, size=1) as pool:
            first = await pool.send(SENDER, RECIPIENT, message(1))
            # Blocks this loop while the server says "421 idle timeout" and hangs up, so the
            # pool learns of it only from its next command: the harder case.
            smtp.drop_connections()
            second = await pool.send(SENDER, RECIPIENT, message(2))
            return first, second

    first, second = run(body)

    assert first.outcome is Outcome.SENT
    assert second.outcome is Outcome.SENT
    assert [m.data for m in smtp.messages] == [message(1), message(2)]
    assert smtp.connections == 2


def test_server_down_is_temporary_and_quick() -> None:
    url = f"smtp://127.0.0.1:{free_port()}"

    async def body() -> SendResult:
        async with pool_for(url) as pool:
            return await pool.send(SENDER, RECIPIENT, message())

    started = time.monotonic()
    result = run(body)

    assert result.outcome is Outcome.TEMPORARY
    assert result.code is None
    assert "connect" in result.reply.lower()
    assert time.monotonic() - started < 10  # A refused connection is not a 30 s timeout.


def test_slow_server_beyond_timeout_is_temporary(smtp: ScriptedSmtpServer) -> None:
    smtp.delay = 300  # Far beyond the client's timeout; cancelled when it hangs up.

    async def body() -> tuple[SendResult, SendResult]:
        async with pool_for(f"{smtp.url}?timeout=2", size=1) as pool:
            slow = await pool.send(SENDER, RECIPIENT, message())
            smtp.delay = 0
            again = await pool.send(SENDER, RECIPIENT, message())
            return slow, again

    started = time.monotonic()
    slow, again = run(body)

    assert slow.outcome is Outcome.TEMPORARY
    assert "timed out" in slow.reply.lower()
    assert again.outcome is Outcome.SENT
    assert time.monotonic() - started < 120
    assert len(smtp.messages) == 1


def test_a_cancelled_send_discards_its_connection(smtp: ScriptedSmtpServer) -> None:
    smtp.delay = 300

    async def body() -> SendResult:
        async with pool_for(smtp.url, size=1) as pool:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(pool.send(SENDER, RECIPIENT, message()), timeout=1)
            smtp.delay = 0
            return await pool.send(SENDER, RECIPIENT, message(2))

    result = run(body)

    assert result.outcome is Outcome.SENT
    assert [m.data for m in smtp.messages] == [message(2)]
    assert smtp.connections == 2


@pytest.mark.parametrize(
    "reply",
    [
        "550 5.1.1 <{address}>: Recipient address rejected: User unknown in local table",
        "550 5.1.1 {upper} unknown",
        "550-5.1.1 The email account that you tried to reach ({address}) does not exist.\n"
        "550 5.1.1 Please try double-checking the recipient's email address " + "x" * 600,
    ],
)
def test_reply_never_contains_the_recipient(smtp: ScriptedSmtpServer, reply: str) -> None:
    address = "Alice.Smith@example.org"
    smtp.script_rcpt(
        address, [reply.format(address=address, upper=address.upper()).replace("\n", "\r\n")]
    )
    smtp.script_data([f"451 4.7.1 {address} greylisted"], address=address)

    async def body() -> list[SendResult]:
        async with pool_for(smtp.url) as pool:
            return [await pool.send(SENDER, address, message()) for _ in range(3)]

    results = run(body)

    assert [r.outcome for r in results] == [Outcome.PERMANENT, Outcome.TEMPORARY, Outcome.SENT]
    for result in results:
        assert address.lower() not in result.reply.lower()
        assert len(result.reply) <= 500
        assert "\n" not in result.reply
    assert "<recipient>" in results[0].reply
    assert results[1].reply == "4.7.1 <recipient> greylisted"


def test_concurrent_sends_all_arrive(smtp: ScriptedSmtpServer) -> None:
    recipients = [f"r{n}@example.org" for n in range(50)]

    async def body() -> list[SendResult]:
        async with pool_for(smtp.url, size=4) as pool:
            return await asyncio.gather(
                *(pool.send(SENDER, r, message(n)) for n, r in enumerate(recipients))
            )

    results = run(body)

    assert [r.outcome for r in results] == [Outcome.SENT] * 50
    received = smtp.messages
    assert sorted(r for m in received for r in m.rcpt_tos) == sorted(recipients)
    assert {m.data for m in received} == {message(n) for n in range(50)}
    assert 1 <= smtp.connections <= 4


def test_non_ascii_address_uses_smtputf8(smtp: ScriptedSmtpServer) -> None:
    async def body() -> SendResult:
        async with pool_for(smtp.url) as pool:
            return await pool.send(SENDER, "jürgen@bücher.example", message())

    assert run(body).outcome is Outcome.SENT
    assert smtp.messages[0].rcpt_tos == ["jürgen@bücher.example"]


@pytest.mark.parametrize(
    "address",
    [
        "x@example.org>\r\nRCPT TO:<y@example.org",
        "x@example.org, y@example.org",
        "X <x@example.org>",
    ],
)
def test_anything_but_one_bare_address_is_permanent(
    smtp: ScriptedSmtpServer, address: str
) -> None:
    # Never quietly sent to some address found inside: exactly the one named, or none.
    async def body() -> tuple[SendResult, SendResult]:
        async with pool_for(smtp.url, size=1) as pool:
            bad = await pool.send(SENDER, address, message())
            good = await pool.send(SENDER, RECIPIENT, message())
            return bad, good

    bad, good = run(body)

    assert bad.outcome is Outcome.PERMANENT
    assert bad.recipient_refused is False
    assert good.outcome is Outcome.SENT
    assert [m.rcpt_tos for m in smtp.messages] == [[RECIPIENT]]


def test_a_closed_pool_refuses_to_send(smtp: ScriptedSmtpServer) -> None:
    async def body() -> None:
        pool = SmtpPool(SmtpSettings.from_url(smtp.url), 2)
        assert (await pool.send(SENDER, RECIPIENT, message())).outcome is Outcome.SENT
        await pool.close()
        await pool.close()  # idempotent
        with pytest.raises(RuntimeError):
            await pool.send(SENDER, RECIPIENT, message())

    run(body)
    assert smtp.commands[-1] == "QUIT"


# --------------------------------------------------------------------------- others


def test_memory_transport_keeps_messages() -> None:
    transport = MemoryTransport()

    async def body() -> SendResult:
        result = await transport.send(SENDER, RECIPIENT, message())
        await transport.close()
        return result

    assert run(body).outcome is Outcome.SENT
    assert transport.sent == [(SENDER, RECIPIENT, message())]


def test_console_transport_logs_the_message_id_not_the_address(
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = ConsoleTransport()

    async def body() -> SendResult:
        result = await transport.send(SENDER, RECIPIENT, message(7))
        await transport.close()
        return result

    with caplog.at_level(logging.INFO, logger="mailer.delivery.transport"):
        result = run(body)

    assert result.outcome is Outcome.SENT
    [record] = caplog.records
    assert "<7.test@shop.example>" in record.getMessage()
    assert RECIPIENT not in record.getMessage()
