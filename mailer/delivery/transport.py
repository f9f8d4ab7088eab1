"""Transports: how the delivery worker hands one message for one recipient to the outside world.

One small protocol, `Transport`, with three implementations (listmonk's Messenger shape):

- `SmtpPool`: the real one, a pool of persistent SMTP connections (aiosmtplib);
- `ConsoleTransport`: logs a one-line summary, for a look at the worker without any SMTP;
- `MemoryTransport`: keeps what it was given, for the dev console and unit tests of callers.

Every send answers a `SendResult` whose `outcome` the worker acts on: SENT (done), TEMPORARY
(retry later with backoff) or PERMANENT (record; suppress the address when `recipient_refused`).
No result, exception or log line carries the recipient's address.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import re
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import parseaddr
from typing import Protocol

import aiosmtplib
from aiosmtplib.email import quote_address

from mailer.smtp_url import SETTING, SmtpSettings

log = logging.getLogger(__name__)

REPLY_LIMIT = 500
RECIPIENT_PLACEHOLDER = "<recipient>"


class Outcome(enum.StrEnum):
    """What the worker does next with a message: nothing, retry later, or give up."""

    SENT = "sent"
    TEMPORARY = "temporary"
    PERMANENT = "permanent"


@dataclass(frozen=True)
class SendResult:
    """The answer to one send.

    `reply` is the server's reply text (or a one-line summary of the error), at most 500
    characters, with the recipient's address replaced by ``<recipient>``: it is stored and
    logged. `recipient_refused` is True only when the server refused this recipient (or this
    message for this recipient) with a 5xx reply: a hard bounce, so the address is suppressed.
    """

    outcome: Outcome
    code: int | None
    reply: str
    recipient_refused: bool = False


class Transport(Protocol):
    """What the worker needs from a transport. Implementations never raise for a failed send."""

    async def send(self, sender: str, recipient: str, message: bytes) -> SendResult:
        """Hand `message` (RFC 5322 bytes) to the next hop for `recipient` alone."""
        ...

    async def close(self) -> None:
        """Release connections; no send may follow."""
        ...


def scrub_reply(text: str, recipient: str | None) -> str:
    """One line of at most 500 characters, with `recipient` replaced by ``<recipient>``.

    Servers often echo the address ("550 5.1.1 <a@b.example>: Recipient address rejected");
    the reply is stored with the message and logged, where no address may appear.
    """
    # The membership test first: compiling a pattern per recipient would cost every send.
    if recipient and recipient.lower() in text.lower():
        text = re.sub(re.escape(f"<{recipient}>"), RECIPIENT_PLACEHOLDER, text, flags=re.I)
        text = re.sub(re.escape(recipient), RECIPIENT_PLACEHOLDER, text, flags=re.I)
    text = " ".join(text.split())
    if len(text) > REPLY_LIMIT:
        text = text[: REPLY_LIMIT - 3] + "..."
    return text


def _error_summary(exc: BaseException) -> str:
    detail = str(exc) or exc.__class__.__name__
    if not detail.startswith(exc.__class__.__name__):
        detail = f"{exc.__class__.__name__}: {detail}"
    return detail


def _message_id(message: bytes) -> str:
    """The Message-ID header of `message`, or "-" when it has none."""
    head = message.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    value = BytesHeaderParser(policy=compat32).parsebytes(head).get("Message-ID")
    return " ".join(str(value).split()) if value else "-"


# --------------------------------------------------------------------------- SMTP


class _Stage(enum.StrEnum):
    MAIL = "MAIL FROM"
    RCPT = "RCPT TO"
    DATA = "DATA"


def classify(stage: str, code: int, text: str, recipient: str) -> SendResult:
    """Turn an SMTP error reply at `stage` into a SendResult (see SmtpPool for the rules)."""
    reply = scrub_reply(text, recipient)
    if 500 <= code <= 599 and stage in (_Stage.RCPT, _Stage.DATA):
        return SendResult(Outcome.PERMANENT, code, reply, recipient_refused=True)
    # 4xx anywhere; 5xx to MAIL FROM (our sender or our account is refused: the relay's or our
    # configuration's fault, not the recipient's, and permanent failure would burn the whole
    # queue while an operator fixes it, so retry with backoff instead); anything unexpected.
    return SendResult(Outcome.TEMPORARY, code, reply)


_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~-"
# A dot-atom addr-spec in ASCII with a hostname: parseaddr() gives such an address back
# unchanged, and aiosmtplib would quote it as <address> (tests/delivery/test_smtp_fast_path.py
# checks both on random addresses), so neither needs asking for the common case.
_PLAIN_ADDRESS = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
# What aiosmtplib does to DATA content (protocol.normalize_message_line_endings), done
# here so that a message already in shape skips the regex pass.
_LINE_ENDINGS = re.compile(rb"(?:\r\n|\n|\r(?!\n))")


def _bad_address(address: str) -> bool:
    """Whether `address` is anything but one bare addr-spec.

    aiosmtplib would quietly send "a@x, b@y" or "Name <a@x>\r\n..." to whatever address it
    finds in there; an envelope must go to exactly the address the caller named.
    """
    if _PLAIN_ADDRESS.fullmatch(address):
        return False
    if not address or any(ord(char) <= 32 or char in "<>,;\x7f" for char in address):
        return True
    return parseaddr(address)[1] != address


def _path(address: str) -> str:
    """The <address> of a MAIL FROM or RCPT TO, exactly as aiosmtplib's mail() and rcpt()
    write it (ValueError for what it refuses)."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return f"<{address}>"
    return quote_address(address)


def data_payload(message: bytes) -> bytes:
    """`message` as DATA sends it, with the final ".": CRLF line ends, a final line break,
    and a dot doubled at the start of every line (RFC 5321 4.5.2), exactly as aiosmtplib's
    data() would send it, at a fraction of the cost (its two regex passes were a tenth of the
    worker's event loop time)."""
    crlf = message.count(b"\r\n")
    if message.count(b"\r") != crlf or message.count(b"\n") != crlf:
        message = _LINE_ENDINGS.sub(b"\r\n", message)
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    # Every line now ends with CRLF, so a line starts at 0 and after each LF.
    if message.startswith(b"."):
        message = b"." + message
    return message.replace(b"\n.", b"\n..") + b".\r\n"


class SmtpPool:
    """A Transport over up to `size` persistent SMTP connections, opened lazily and reused.

    At most `size` sends run at once; more wait for a free connection. Classification:

    - 2xx after DATA: SENT.
    - 4xx to MAIL FROM, RCPT TO or DATA: TEMPORARY.
    - 5xx to RCPT TO: PERMANENT, recipient_refused (hard bounce).
    - 5xx to DATA: PERMANENT, recipient_refused (the message was refused for this recipient).
    - 5xx to MAIL FROM: TEMPORARY, because the sender or our account was refused (see
      `classify`).
    - Connection refused, dropped, timed out, TLS or login failure: TEMPORARY; the connection
      is thrown away and a new one is opened by the next send.
    - A recipient that is not one bare address ("a@x, b@y", "Name <a@x>", control
      characters), or non-ASCII when the relay lacks SMTPUTF8: PERMANENT with
      recipient_refused False (retrying cannot help; not a bounce). Such a sender: TEMPORARY.

    After a failed transaction on a live connection RSET is sent, so the connection stays
    usable. A pooled connection the server closed while idle (its idle timeout) is replaced
    transparently: if the first command on a reused connection meets a disconnect or a 421, the
    send is retried once on a fresh connection (nothing can have been delivered before MAIL
    FROM was accepted, so this cannot send twice).
    """

    def __init__(self, settings: SmtpSettings, size: int) -> None:
        if size < 1:
            raise ValueError("MAILER_SMTP_CONNECTIONS must be at least 1")
        self.settings = settings
        self.size = size
        self.connections_opened = 0
        self._local_hostname = settings.local_hostname
        # Created on first use so that it belongs to the running loop. LIFO: the most recently
        # used (warm) connection is taken first, and with little traffic only one is opened.
        # A None slot is a free place for a connection not opened yet (or thrown away).
        self._slots: asyncio.LifoQueue[aiosmtplib.SMTP | None] | None = None
        self._closed = False

    def _queue(self) -> asyncio.LifoQueue[aiosmtplib.SMTP | None]:
        if self._slots is None:
            self._slots = asyncio.LifoQueue(maxsize=self.size)
            for _ in range(self.size):
                self._slots.put_nowait(None)
        return self._slots

    async def send(self, sender: str, recipient: str, message: bytes) -> SendResult:
        """Send `message` to `recipient` through a pooled connection; never raises for SMTP.

        Raises RuntimeError when the pool is closed (a programming error, not a failed send).
        """
        if self._closed:
            raise RuntimeError("SmtpPool is closed")
        slots = self._queue()
        connection = await slots.get()
        try:
            if self._closed:
                raise RuntimeError("SmtpPool is closed")
            result, connection = await self._deliver(connection, sender, recipient, message)
            return result
        except BaseException:
            # _deliver has closed whatever connection it held; the slot goes back empty.
            if connection is not None:
                connection.close()
                connection = None
            raise
        finally:
            slots.put_nowait(connection)

    async def close(self) -> None:
        """Wait for running sends, QUIT every connection, and refuse further sends."""
        if self._closed:
            return
        self._closed = True
        if self._slots is None:
            return
        for _ in range(self.size):
            connection = await self._slots.get()
            if connection is not None:
                await self._quit(connection)
        # Wake any send still waiting for a slot; it sees the pool closed and raises.
        for _ in range(self.size):
            self._slots.put_nowait(None)
        # Let the transports' close callbacks run, so no socket outlives the event loop.
        await asyncio.sleep(0)

    async def _quit(self, connection: aiosmtplib.SMTP) -> None:
        try:
            if connection.is_connected:
                await connection.quit(timeout=min(self.settings.timeout, 5.0))
        except (aiosmtplib.SMTPException, OSError):
            pass  # Closing anyway; the server's view of a polite goodbye does not matter.
        finally:
            connection.close()

    async def _connect(self) -> aiosmtplib.SMTP:
        settings = self.settings
        connection = aiosmtplib.SMTP(
            hostname=settings.host,
            port=settings.port,
            username=settings.username,
            password=settings.password,
            use_tls=settings.implicit_tls,
            # False, not None: None would mean "STARTTLS when offered", which with certificate
            # checks on fails against relays with self-signed certificates in surprising ways.
            start_tls=settings.starttls,
            validate_certs=settings.verify_certs,
            timeout=settings.timeout,
            local_hostname=self._local_hostname,
        )
        await connection.connect()
        # aiosmtplib looks the FQDN up in a thread on every connect; once is enough.
        self._local_hostname = connection.local_hostname
        try:
            # Now rather than lazily in MAIL FROM: the extensions decide its options.
            if connection.is_ehlo_or_helo_needed:
                await self._greet(connection)
        except BaseException:
            connection.close()
            raise
        self.connections_opened += 1
        log.debug("smtp connection opened relay=%s", settings.redacted())
        return connection

    async def _deliver(
        self,
        connection: aiosmtplib.SMTP | None,
        sender: str,
        recipient: str,
        message: bytes,
    ) -> tuple[SendResult, aiosmtplib.SMTP | None]:
        """Run one transaction; answer the result and the connection to pool (None: discard)."""
        retried = False
        try:
            while True:
                reused = connection is not None and connection.is_connected
                if connection is not None and not reused:
                    # Closed by the server while idle (its idle timeout); nothing lost.
                    connection.close()
                    connection = None
                if connection is None:
                    try:
                        connection = await self._connect()
                    except (aiosmtplib.SMTPException, OSError) as exc:
                        # OSError covers refused connections, TLS errors and timeouts.
                        code = getattr(exc, "code", None)
                        reply = scrub_reply(_error_summary(exc), recipient)
                        log.warning(
                            "smtp connect failed relay=%s error=%s",
                            self.settings.redacted(),
                            reply,
                        )
                        return SendResult(Outcome.TEMPORARY, code, reply), None
                result, healthy, idle_drop = await self._transaction(
                    connection, sender, recipient, message
                )
                if idle_drop and reused and not retried:
                    # The server closed this pooled connection while it sat idle and we learned
                    # only now; MAIL FROM was not accepted, so retrying cannot send twice.
                    connection.close()
                    connection = None
                    retried = True
                    continue
                if not healthy:
                    connection.close()
                    connection = None
                return result, connection
        except BaseException:
            # Cancelled (or a bug) in the middle of a transaction: the connection's state is
            # unknown, so it must not carry another message.
            if connection is not None:
                connection.close()
            raise

    async def _transaction(
        self, connection: aiosmtplib.SMTP, sender: str, recipient: str, message: bytes
    ) -> tuple[SendResult, bool, bool]:
        """MAIL, RCPT, DATA on a live connection.

        Answers (result, whether the connection is still usable, whether the server had closed
        it before MAIL FROM, which makes a retry on a fresh connection safe).
        """
        if _bad_address(recipient):
            reply = "the recipient is not a bare address the relay could take"
            return SendResult(Outcome.PERMANENT, None, reply), True, False
        if sender and _bad_address(sender):
            # MAILER_FROM or similar: configuration, like a sender refused at MAIL FROM.
            reply = "the sender is not a bare address the relay could take"
            return SendResult(Outcome.TEMPORARY, None, reply), True, False
        mail_options: list[str] = []
        encoding = "ascii"
        if not (sender.isascii() and recipient.isascii()):
            if not connection.supports_extension("smtputf8"):
                reply = "relay does not support SMTPUTF8, needed for a non-ASCII address"
                return SendResult(Outcome.PERMANENT, None, reply), True, False
            mail_options.append("SMTPUTF8")
            encoding = "utf-8"
        if connection.supports_extension("size"):
            mail_options.append(f"SIZE={len(message)}")
        if not message.isascii() and connection.supports_extension("8bitmime"):
            mail_options.append("BODY=8BITMIME")

        stage = _Stage.MAIL
        try:
            # What connection.mail(), .rcpt() and .data() do, the same commands and the same
            # exceptions, without what costs most of a send's CPU there: four parseaddr()
            # calls and two regex passes over every message (see _path and data_payload).
            if connection.is_ehlo_or_helo_needed:
                await self._greet(connection)
            reply = await self._command(
                connection, b"MAIL", b"FROM:" + _path(sender).encode(encoding),
                *[option.encode("ascii") for option in mail_options],
            )
            if reply.code != aiosmtplib.SMTPStatus.completed:
                raise aiosmtplib.SMTPSenderRefused(reply.code, reply.message, sender)
            stage = _Stage.RCPT
            reply = await self._command(
                connection, b"RCPT", b"TO:" + _path(recipient).encode(encoding)
            )
            if reply.code not in (aiosmtplib.SMTPStatus.completed,
                                  aiosmtplib.SMTPStatus.will_forward):
                raise aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, recipient)
            stage = _Stage.DATA
            response = await self._data(connection, message)
        except aiosmtplib.SMTPResponseException as exc:
            result = classify(stage, exc.code, exc.message, recipient)
            # A server closing an idle connection often says "421 timeout" first; unasked, that
            # line waits in our buffer and is read as the answer to MAIL FROM.
            closing = stage is _Stage.MAIL and exc.code == 421
            return result, await self._reset(connection), closing
        except (aiosmtplib.SMTPException, OSError) as exc:
            # Disconnects and read timeouts (aiosmtplib has closed the connection already);
            # or a protocol surprise. Either way the connection's state is unknown.
            connection.close()
            reply = scrub_reply(f"{stage}: {_error_summary(exc)}", recipient)
            idle_drop = stage is _Stage.MAIL and isinstance(exc, aiosmtplib.SMTPServerDisconnected)
            if not idle_drop:
                log.warning("smtp send failed relay=%s error=%s", self.settings.redacted(), reply)
            return SendResult(Outcome.TEMPORARY, None, reply), False, idle_drop
        except ValueError as exc:
            # aiosmtplib refuses what _bad_address let through (should be nothing); the
            # address will never be sendable, so retrying is pointless, but it is no bounce.
            reply = scrub_reply(_error_summary(exc), recipient)
            return SendResult(Outcome.PERMANENT, None, reply), await self._reset(connection), False
        sent = SendResult(Outcome.SENT, response.code, scrub_reply(response.message, recipient))
        return sent, True, False

    @staticmethod
    async def _greet(connection: aiosmtplib.SMTP) -> None:
        try:
            await connection.ehlo()
        except aiosmtplib.SMTPHeloError:
            await connection.helo()

    @staticmethod
    async def _command(connection: aiosmtplib.SMTP, *args: bytes) -> aiosmtplib.SMTPResponse:
        """connection.execute_command(*args), its reply awaited for at most the connection's
        timeout, as aiosmtplib would, but timed by asyncio.timeout() rather than
        asyncio.wait_for() (an extra future and two extra loop passes per reply, a fifth of the
        worker's event loop time). A timeout closes the connection and raises aiosmtplib's
        own SMTPReadTimeoutError, as execute_command does."""
        try:
            async with asyncio.timeout(connection.timeout):
                return await connection.execute_command(*args, timeout=None)
        except TimeoutError as exc:
            if isinstance(exc, aiosmtplib.SMTPException):
                raise
            connection.close()
            raise aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response") \
                from None

    @classmethod
    async def _data(cls, connection: aiosmtplib.SMTP, message: bytes
                    ) -> aiosmtplib.SMTPResponse:
        """DATA, then the message: what aiosmtplib's data() does, with data_payload() for
        its regex passes."""
        reply = await cls._command(connection, b"DATA")
        if reply.code != aiosmtplib.SMTPStatus.start_input:
            raise aiosmtplib.SMTPDataError(reply.code, reply.message)
        protocol = connection.protocol
        if protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        try:
            # The connection is this send's alone (the pool), so no other command can come
            # between; read_response() arms the reply before any data can be read.
            protocol.write(data_payload(message))
            async with asyncio.timeout(connection.timeout):
                reply = await protocol.read_response(timeout=None)
        except aiosmtplib.SMTPServerDisconnected:
            connection.close()  # as data() leaves a dead connection
            raise
        except TimeoutError as exc:
            connection.close()  # the reply may still come: the connection is out of step
            if isinstance(exc, aiosmtplib.SMTPException):
                raise
            raise aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response") \
                from None
        if reply.code != aiosmtplib.SMTPStatus.completed:
            raise aiosmtplib.SMTPDataError(reply.code, reply.message)
        return reply

    async def _reset(self, connection: aiosmtplib.SMTP) -> bool:
        """RSET after a failed transaction; answer whether the connection is still usable."""
        if not connection.is_connected:
            return False  # e.g. a 421 reply, after which aiosmtplib closes the connection.
        try:
            await connection.rset()
        except (aiosmtplib.SMTPException, OSError):
            connection.close()
            return False
        return True


# --------------------------------------------------------------------------- others


class MemoryTransport:
    """Keeps every message as (sender, recipient, bytes) in `sent`; every send succeeds.

    For the dev console and for unit tests of callers; tests of SMTP behaviour use SmtpPool
    against a real server (tests/smtp_server.py).
    """

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, bytes]] = []
        self.closed = False

    async def send(self, sender: str, recipient: str, message: bytes) -> SendResult:
        """Record the message and answer SENT."""
        if self.closed:
            raise RuntimeError("MemoryTransport is closed")
        self.sent.append((sender, recipient, message))
        return SendResult(Outcome.SENT, 250, f"kept in memory as #{len(self.sent)}")

    async def close(self) -> None:
        """Refuse further sends; what was sent stays readable."""
        self.closed = True


class ConsoleTransport:
    """Logs one line per message (its Message-ID and size, never an address); sends nothing."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or log

    async def send(self, sender: str, recipient: str, message: bytes) -> SendResult:
        """Log a summary of the message and answer SENT."""
        message_id = _message_id(message)
        self.logger.info("console transport: message_id=%s bytes=%d", message_id, len(message))
        return SendResult(Outcome.SENT, 250, f"logged {message_id}")

    async def close(self) -> None:
        """Nothing to release."""


def transport_from_url(url: str, size: int) -> Transport:
    """The transport MAILER_SMTP_URL names: smtp:// or smtps:// (an SmtpPool of `size`
    connections), ``memory://`` or ``console://``. Raises ValueError naming the setting."""
    scheme = url.strip().split(":", 1)[0].lower() if ":" in url else ""
    if scheme in ("smtp", "smtps"):
        return SmtpPool(SmtpSettings.from_url(url), size)
    if scheme == "memory":
        return MemoryTransport()
    if scheme == "console":
        return ConsoleTransport()
    shown = f"{scheme}://" if scheme else "no scheme"
    raise ValueError(
        f"{SETTING} must start with smtp://, smtps://, memory:// or console://, not {shown}"
    )
