"""The capture SMTP server of `mailer dev`: what it receives can be listed and read back."""

from __future__ import annotations

import asyncio
import smtplib
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailer.delivery.transport import Outcome, SmtpPool
from mailer.devtools.capture import (
    CaptureServer,
    captured_path,
    list_captured,
    read_captured,
)
from mailer.smtp_url import SmtpSettings

MESSAGE = (
    b"From: Music Store <news@shop.example>\r\n"
    b"To: alice@example.org\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe_aus_dem?=\r\n"
    b" =?utf-8?q?_Laden?=\r\n"
    b"Message-ID: <1.test@shop.example>\r\n"
    b"\r\n"
    b"Hello Alice.\r\n"
)


@pytest.fixture
def capture(tmp_path: Path) -> Iterator[CaptureServer]:
    with CaptureServer(tmp_path / "captured", port=0) as server:
        yield server


def smtp_send(server: CaptureServer, sender: str, recipients: list[str], data: bytes) -> None:
    with smtplib.SMTP(server.host, server.port, timeout=30) as client:
        client.sendmail(sender, recipients, data)


def test_a_sent_mail_is_listed_and_read_back(capture: CaptureServer) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    smtp_send(capture, "news@shop.example", ["alice@example.org", "bob@example.org"], MESSAGE)

    [mail] = list_captured(capture.directory)

    assert mail.sender == "news@shop.example"
    assert mail.recipients == ("alice@example.org", "bob@example.org")
    assert mail.subject == "Grüße aus dem Laden"
    assert before <= mail.received_at <= datetime.now(UTC) + timedelta(seconds=1)
    assert mail.path.parent == capture.directory
    raw = read_captured(capture.directory, mail.id)
    assert raw.endswith(MESSAGE)  # Byte for byte, after the envelope trace headers.
    assert raw.startswith(b"Return-Path: <news@shop.example>\r\n")
    assert mail.size == len(raw)
    assert capture.received == 1


def test_newest_first_and_limit(capture: CaptureServer) -> None:
    for number in range(3):
        data = MESSAGE.replace(b"Message-ID: <1.", f"Message-ID: <{number}x.".encode())
        data = data.split(b"Subject:")[0] + f"Subject: mail {number}\r\n\r\nbody\r\n".encode()
        smtp_send(capture, "news@shop.example", ["alice@example.org"], data)

    listed = list_captured(capture.directory)

    assert [mail.subject for mail in listed] == ["mail 2", "mail 1", "mail 0"]
    assert [mail.id for mail in listed] == sorted((mail.id for mail in listed), reverse=True)
    assert [mail.subject for mail in list_captured(capture.directory, limit=2)] == [
        "mail 2",
        "mail 1",
    ]


def test_list_ignores_other_files_and_a_missing_directory(tmp_path: Path) -> None:
    assert list_captured(tmp_path / "nothing-here") == []
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "..secret.eml").write_text("Subject: no\r\n\r\n")
    (tmp_path / ".20250101T000000000000Z-0123456789ab.tmp").write_text("partial")
    assert list_captured(tmp_path) == []


@pytest.mark.parametrize(
    "capture_id",
    [
        "../captured/x",
        "../../etc/passwd",
        "/etc/passwd",
        "20250101T000000000000Z-0123456789ab/../../x",
        "20250101T000000000000Z-0123456789ab.eml",
        "..",
        "",
        "20250101T000000000000Z-0123456789AB\x00",
        "20250101T000000000000Z-0123456789ab\n",
    ],
)
def test_read_refuses_anything_but_a_capture_id(tmp_path: Path, capture_id: str) -> None:
    (tmp_path / "secret.eml").write_bytes(b"secret")
    with pytest.raises(ValueError):
        read_captured(tmp_path / "captured", capture_id)
    with pytest.raises(ValueError):
        captured_path(tmp_path, capture_id)


def test_read_of_an_unknown_id_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_captured(tmp_path, "20250101T000000000000Z-0123456789ab")


def test_the_pool_delivers_to_the_capture_server(capture: CaptureServer) -> None:
    # What `mailer dev` does: the worker's SmtpPool against the default MAILER_SMTP_URL form.
    async def body() -> Outcome:
        pool = SmtpPool(SmtpSettings.from_url(capture.url), 2)
        try:
            return (await pool.send("news@shop.example", "alice@example.org", MESSAGE)).outcome
        finally:
            await pool.close()

    assert asyncio.run(body()) is Outcome.SENT
    [mail] = list_captured(capture.directory)
    assert read_captured(capture.directory, mail.id).endswith(MESSAGE)


def test_a_taken_port_fails_at_once(capture: CaptureServer, tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(OSError):
        CaptureServer(tmp_path / "other", port=capture.port).start()
    assert time.monotonic() - started < 10  # Not aiosmtpd's whole ready timeout.


def _bench_sink_module():
    """bench/smtp_sink.py, imported as the benchmarks import it (bench/ is no package)."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[2] / "bench" / "smtp_sink.py"
    spec = importlib.util.spec_from_file_location("smtp_sink", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("smtp_sink", module)
    spec.loader.exec_module(module)
    return module


def test_the_test_server_and_the_bench_sink_share_the_capture_controller(
    capture: CaptureServer,
) -> None:
    # One controller (port 0 resolved, a taken port reported at once) for all three servers.
    from tests.smtp_server import ScriptedSmtpServer

    sink_module = _bench_sink_module()
    with ScriptedSmtpServer() as server, sink_module.start_sink(0) as sink:
        assert server.port > 0 and sink.port > 0
        for port in (server.port, sink.port):
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                client.sendmail("a@shop.example", ["b@example.org"], MESSAGE)
        assert len(server.messages) == 1 and sink.count == 1
    started = time.monotonic()
    with pytest.raises(OSError):
        sink_module.start_sink(capture.port)
    assert time.monotonic() - started < 10  # not aiosmtpd's whole ready timeout
