"""SmtpPool's shortcuts around aiosmtplib give what aiosmtplib itself would have sent."""

from __future__ import annotations

import asyncio
import random
from email.utils import parseaddr

import aiosmtplib
import pytest
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

from mailer.delivery.transport import (
    _PLAIN_ADDRESS,
    Outcome,
    SmtpPool,
    _bad_address,
    _path,
    data_payload,
)
from mailer.smtp_url import SmtpSettings

ATEXT = "abcXYZ0189!#$%&'*+/=?^_`{|}~-"


def slow_bad_address(address: str) -> bool:
    """_bad_address without its shortcut: the definition."""
    if not address or any(ord(char) <= 32 or char in "<>,;\x7f" for char in address):
        return True
    return parseaddr(address)[1] != address


def random_plain_address(rnd: random.Random) -> str:
    local = ".".join("".join(rnd.choice(ATEXT) for _ in range(rnd.randint(1, 8)))
                     for _ in range(rnd.randint(1, 3)))
    domain = ".".join("".join(rnd.choice("ab-9Z") for _ in range(rnd.randint(1, 6)))
                      for _ in range(rnd.randint(1, 3)))
    return f"{local}@{domain}"


def test_plain_addresses_are_what_parseaddr_and_aiosmtplib_leave_alone():
    rnd = random.Random(5)
    for _ in range(20_000):
        address = random_plain_address(rnd)
        assert _PLAIN_ADDRESS.fullmatch(address)
        assert parseaddr(address)[1] == address
        assert quote_address(address) == f"<{address}>" == _path(address)
        assert _bad_address(address) is False


@pytest.mark.parametrize("address", [
    "", "a@b", "a.b@c.d", "a..b@c.d", ".a@b.c", "a.@b.c", "a@b..c", "a@-b.c", "a@[1.2.3.4]",
    '"quoted"@x.org', '"a b"@x.org', 'a"b@x.org', "a b@x.org", "a@b, c@d", "Name <a@b>",
    "a@b\r\nRCPT TO:<c@d>", "a\x7f@b", "(comment)a@b", "a@b(comment)", "a:b@c", "a;b@c",
    "jürgen@beispiel.de", "a@bücher.de", "a@b.c.", "@b.c", "a@", "a@b@c", "a\\b@c.d",
])
def test_odd_addresses_are_judged_and_quoted_as_before(address):
    assert _bad_address(address) is slow_bad_address(address)
    try:
        expected: str | type[ValueError] = quote_address(address)
    except ValueError:
        expected = ValueError
    if expected is ValueError:
        with pytest.raises(ValueError):
            _path(address)
    else:
        assert _path(address) == expected


def aiosmtplib_payload(message: bytes) -> bytes:
    """What aiosmtplib's SMTP.data() writes after DATA."""
    return PERIOD_REGEX.sub(b"..", normalize_message_line_endings(message)) + b".\r\n"


@pytest.mark.parametrize("message", [
    b"", b"x", b"\r\n", b"\n", b"\r", b".", b"..\r\n", b"a\r\n.\r\nb\r\n", b".start\r\nend",
    b"a\nb\rc\r\nd", b"a\r\r\nb", b"a\n\r\nb\n", b"line\r\n.\r\n.\r\n", b"\r\n.x", b"a\r",
    b"From: a@b\r\nSubject: s\r\n\r\nbody\r\n", b"tail without newline",
])
def test_data_payload_is_what_aiosmtplib_sends(message):
    assert data_payload(message) == aiosmtplib_payload(message)


def test_data_payload_on_random_messages():
    rnd = random.Random(7)
    pieces = [b"a", b"b", b".", b"\r", b"\n", b"\r\n", b" ", b"\xe2\x82\xac", b"=", b"\t"]
    for _ in range(20_000):
        message = b"".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 30)))
        assert data_payload(message) == aiosmtplib_payload(message), message


class RecordingServer:
    """A bare SMTP server on 127.0.0.1 that accepts everything and keeps every byte it read."""

    def __init__(self) -> None:
        self.received = bytearray()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 recorder ready\r\n")
        in_data = False
        while line := await reader.readline():
            self.received += line
            if in_data:
                if line == b".\r\n":
                    in_data = False
                    writer.write(b"250 2.0.0 queued\r\n")
            elif line.upper().startswith(b"EHLO"):
                writer.write(b"250-recorder\r\n250-SIZE 10000000\r\n250-8BITMIME\r\n"
                             b"250 SMTPUTF8\r\n")
            elif line.upper().startswith(b"DATA"):
                in_data = True
                writer.write(b"354 go ahead\r\n")
            elif line.upper().startswith(b"QUIT"):
                writer.write(b"221 bye\r\n")
                break
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()
        writer.close()


async def transcript(use_pool: bool, sender: str, recipient: str, message: bytes) -> bytes:
    recorder = RecordingServer()
    server = await asyncio.start_server(recorder.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        if use_pool:
            pool = SmtpPool(SmtpSettings.from_url(f"smtp://127.0.0.1:{port}?helo=client.test"), 1)
            result = await pool.send(sender, recipient, message)
            assert result.outcome is Outcome.SENT, result
            await pool.close()
        else:
            # What SmtpPool did before its shortcuts: aiosmtplib's own mail, rcpt and data.
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False,
                                     local_hostname="client.test")
            await client.connect()
            await client.ehlo()
            options = []
            encoding = "ascii"
            if not (sender.isascii() and recipient.isascii()):
                options.append("SMTPUTF8")
                encoding = "utf-8"
            options.append(f"SIZE={len(message)}")
            if not message.isascii():
                options.append("BODY=8BITMIME")
            await client.mail(sender, options=options, encoding=encoding)
            await client.rcpt(recipient, encoding=encoding)
            await client.data(message)
            await client.quit()
    finally:
        server.close()
        await server.wait_closed()
    return bytes(recorder.received)


@pytest.mark.parametrize(("sender", "recipient", "message"), [
    ("news@shop.example", "alice@example.org", b"Subject: a\r\n\r\nHello\r\n"),
    ("news@shop.example", "o'brien+tag@mail.example.org",
     b"Subject: b\r\n\r\n.leading dot\r\nlone\nline feeds\rand CR\r\n..two\r\nno final break"),
    ("news@shop.example", "alice@example.org", "Subject: c\r\n\r\nK\u00e4se \u20ac\r\n".encode()),
    ("", "jürgen@bücher.example", b"Subject: d\r\n\r\nnull sender, UTF-8 mailbox\r\n"),
])
def test_the_wire_carries_what_aiosmtplib_would_have_written(sender, recipient, message):
    ours = asyncio.run(transcript(True, sender, recipient, message))
    theirs = asyncio.run(transcript(False, sender, recipient, message))
    assert ours == theirs
    assert b"MAIL FROM:" in ours and b"RCPT TO:" in ours and ours.count(b"\r\n.\r\n") == 1
