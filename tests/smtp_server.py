"""A real SMTP server for tests (aiosmtpd in a thread on 127.0.0.1), with scripted replies.

    from tests.smtp_server import DROP, ScriptedSmtpServer

    with ScriptedSmtpServer() as server:
        server.script_rcpt("a@example.org", ["451 4.3.0 try later", None])  # 451, then accept
        ...send to server.url...
        assert server.messages[0].data.endswith(b"Hello\\r\\n")

In a test, use the `smtp` fixture of tests/conftest.py: one started server, stopped after it.

A scripted reply is a full SMTP reply line ("550 5.1.1 no such user"), None for the normal
behaviour (accept), or DROP to close the connection instead of answering. Scripts are consumed
one entry per command; once a script is used up the server behaves normally again. All the
methods and properties may be used from any thread while the server runs.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict, deque
from collections.abc import Iterable
from types import TracebackType
from typing import Any, NamedTuple

from aiosmtpd.smtp import SMTP, Envelope, Session

from mailer.devtools.capture import SmtpController

HOST = "127.0.0.1"
# Generous: a loaded CI machine may need seconds to start a thread and answer a first connect.
READY_TIMEOUT = 30.0


class _Drop:
    def __repr__(self) -> str:
        return "DROP"


DROP: Any = _Drop()
"""A scripted reply that closes the connection instead of answering."""

Reply = str | None


class ReceivedMessage(NamedTuple):
    """One message the server accepted: the envelope and the DATA bytes as received."""

    envelope_from: str
    rcpt_tos: list[str]
    data: bytes


class _DropConnection(asyncio.Protocol):
    """Stands in for the SMTP protocol on a connection to drop before the greeting."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class _TrackedSMTP(SMTP):
    """aiosmtpd's SMTP, telling its server when a connection opens and closes."""

    def __init__(self, owner: ScriptedSmtpServer, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._owner = owner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._owner._live.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        self._owner._live.discard(self)
        super().connection_lost(error)


class _Controller(SmtpController):
    """The project's controller (port 0, prompt bind errors), with connections tracked."""

    def __init__(self, owner: ScriptedSmtpServer, host: str) -> None:
        super().__init__(
            _Handler(owner),
            hostname=host,
            port=0,
            ready_timeout=READY_TIMEOUT,
            # A fixed name: the default (socket.getfqdn()) can wait on DNS.
            server_hostname="smtp.test",
        )
        self._owner = owner

    def factory(self) -> Any:
        # Called on the server's loop for every accepted connection.
        return self._owner._new_connection(
            lambda: _TrackedSMTP(self._owner, self.handler, **self.SMTP_kwargs)
        )


async def _hang_up(server: SMTP) -> None:
    """Close the connection and wait for aiosmtpd to cancel this session's handler task."""
    assert server.transport is not None
    server.transport.close()
    await asyncio.get_running_loop().create_future()  # Cancelled by connection_lost.


class _Handler:
    """aiosmtpd hooks; they run on the server's thread and read scripts under the lock."""

    def __init__(self, owner: ScriptedSmtpServer) -> None:
        self.owner = owner

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = self.owner._take("MAIL", self.owner._mail_script)
        if reply is DROP:
            await _hang_up(server)
        if reply is not None:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = self.owner._take_rcpt(address)
        if reply is DROP:
            await _hang_up(server)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        owner = self.owner
        delay = owner.delay
        if delay > 0:
            # Cancelled by aiosmtpd when the client gives up and hangs up, or on stop().
            await asyncio.sleep(delay)
        reply = owner._take_data(envelope.rcpt_tos)
        if reply is DROP:
            await _hang_up(server)
        if reply is not None:
            return reply
        content = envelope.original_content or b""
        assert envelope.mail_from is not None
        number = owner._accept(
            ReceivedMessage(envelope.mail_from, list(envelope.rcpt_tos), content)
        )
        return f"250 2.0.0 OK queued as {number}"

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.owner._record("RSET")
        return "250 OK"

    async def handle_NOOP(
        self, server: SMTP, session: Session, envelope: Envelope, arg: str
    ) -> str:
        self.owner._record("NOOP")
        return "250 OK"

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.owner._record("QUIT")
        return "221 Bye"


class ScriptedSmtpServer:
    """A real SMTP server on 127.0.0.1 and a free port, whose replies tests can script.

    `messages` holds what was accepted, `connections` how many connections were opened,
    `commands` the MAIL/RCPT/DATA/RSET/NOOP/QUIT commands seen, in order.
    """

    def __init__(self, host: str = HOST) -> None:
        self.host = host
        self.delay = 0.0
        """Seconds to wait before answering each DATA (for slow-server tests)."""
        self._lock = threading.Lock()
        self._received = threading.Condition(self._lock)
        self._messages: list[ReceivedMessage] = []
        self._commands: list[str] = []
        self._connections = 0
        self._drop_next = 0
        self._reject_all: str | None = None
        self._mail_script: deque[Any] = deque()
        self._data_script: deque[Any] = deque()
        self._rcpt_scripts: defaultdict[str, deque[Any]] = defaultdict(deque)
        self._data_scripts: defaultdict[str, deque[Any]] = defaultdict(deque)
        # Touched only on the server's loop.
        self._live: set[_TrackedSMTP] = set()
        self._controller: _Controller | None = None

    # ------------------------------------------------------------------ life cycle

    def start(self) -> ScriptedSmtpServer:
        """Listen on a free port; return when the server answers."""
        if self._controller is not None:
            raise RuntimeError("already started")
        controller = _Controller(self, self.host)
        controller.start()
        self._controller = controller
        with self._lock:
            # aiosmtpd's start-up probe was a connection too; tests count their own.
            self._connections = 0
        return self

    def stop(self) -> None:
        """Close every connection and stop the server; idempotent."""
        controller, self._controller = self._controller, None
        if controller is None:
            return
        # Closing the sessions first means no server-side socket is left to the garbage
        # collector (a ResourceWarning, an error under filterwarnings = error).
        self._on_loop(controller, self._close_all(None))
        controller.stop()

    def __enter__(self) -> ScriptedSmtpServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port the server listens on."""
        if self._controller is None:
            raise RuntimeError("not started")
        return int(self._controller.port)

    @property
    def url(self) -> str:
        """``smtp://127.0.0.1:PORT``, as MAILER_SMTP_URL takes it."""
        return f"smtp://{self.host}:{self.port}"

    # ------------------------------------------------------------------ what happened

    @property
    def messages(self) -> list[ReceivedMessage]:
        """The accepted messages, oldest first (a copy)."""
        with self._lock:
            return list(self._messages)

    @property
    def connections(self) -> int:
        """How many connections were opened since start() (or reset())."""
        with self._lock:
            return self._connections

    @property
    def commands(self) -> list[str]:
        """The MAIL, RCPT, DATA, RSET, NOOP and QUIT commands seen, in order (a copy)."""
        with self._lock:
            return list(self._commands)

    def wait_for_messages(self, count: int, timeout: float = 30.0) -> list[ReceivedMessage]:
        """Block until at least `count` messages were accepted; raise TimeoutError otherwise."""
        with self._received:
            if not self._received.wait_for(lambda: len(self._messages) >= count, timeout):
                raise TimeoutError(f"{len(self._messages)} of {count} messages after {timeout}s")
            return list(self._messages)

    # ------------------------------------------------------------------ scripting

    def script_mail(self, replies: Iterable[Reply]) -> None:
        """Answer the next MAIL FROM commands (whatever the sender) with `replies`, in order."""
        with self._lock:
            self._mail_script.extend(replies)

    def script_rcpt(self, address: str, replies: Iterable[Reply]) -> None:
        """Answer the next RCPT TO commands for `address` with `replies`, in order."""
        with self._lock:
            self._rcpt_scripts[address.lower()].extend(replies)

    def script_data(self, replies: Iterable[Reply], *, address: str | None = None) -> None:
        """Answer the next DATA commands with `replies`, in order.

        With `address`, only transactions that include that recipient use this script (and
        it takes precedence over the unkeyed one).
        """
        with self._lock:
            if address is None:
                self._data_script.extend(replies)
            else:
                self._data_scripts[address.lower()].extend(replies)

    def reject_all_with(self, reply: str | None) -> None:
        """Answer every RCPT TO not otherwise scripted with `reply`; None accepts again."""
        with self._lock:
            self._reject_all = reply

    def fail_next_connections(self, count: int) -> None:
        """Close the next `count` connections as soon as they are accepted (no greeting)."""
        with self._lock:
            self._drop_next += count

    def drop_connections(self) -> None:
        """Say "421 idle timeout" on every open connection and close it, as a server does with
        idle clients; returns once the server has closed them all."""
        if self._controller is None:
            raise RuntimeError("not started")
        self._on_loop(self._controller, self._close_all("421 4.4.2 smtp.test idle timeout"))

    def reset(self) -> None:
        """Forget messages, commands, counts and scripts."""
        with self._lock:
            self._messages.clear()
            self._commands.clear()
            self._connections = 0
            self._drop_next = 0
            self._reject_all = None
            self._mail_script.clear()
            self._data_script.clear()
            self._rcpt_scripts.clear()
            self._data_scripts.clear()
        self.delay = 0.0

    # ------------------------------------------------------------------ internals

    def _new_connection(self, make: Any) -> Any:
        with self._lock:
            self._connections += 1
            if self._drop_next > 0:
                self._drop_next -= 1
                return _DropConnection()
        return make()

    def _take(self, command: str, script: deque[Any]) -> Any:
        with self._lock:
            self._commands.append(command)
            return script.popleft() if script else None

    def _take_rcpt(self, address: str) -> Any:
        with self._lock:
            self._commands.append("RCPT")
            script = self._rcpt_scripts.get(address.lower())
            if script:
                return script.popleft()
            return self._reject_all

    def _take_data(self, recipients: list[str]) -> Any:
        with self._lock:
            self._commands.append("DATA")
            for address in recipients:
                script = self._data_scripts.get(address.lower())
                if script:
                    return script.popleft()
            return self._data_script.popleft() if self._data_script else None

    def _record(self, command: str) -> None:
        with self._lock:
            self._commands.append(command)

    def _accept(self, message: ReceivedMessage) -> int:
        with self._received:
            self._messages.append(message)
            self._received.notify_all()
            return len(self._messages)

    async def _close_all(self, farewell: str | None) -> None:
        for session in list(self._live):
            transport = session.transport
            if transport is None or transport.is_closing():
                continue
            if farewell is not None:
                transport.write(farewell.encode() + b"\r\n")  # type: ignore[attr-defined]
            transport.close()
        # transport.close() runs connection_lost on a later loop iteration.
        for _ in range(100):
            if not self._live:
                break
            await asyncio.sleep(0)

    @staticmethod
    def _on_loop(controller: _Controller, coroutine: Any) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, controller.loop).result(READY_TIMEOUT)
