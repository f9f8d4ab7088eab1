#!/usr/bin/env python3
"""How fast mailer.messages.mime.build() turns a newsletter into bytes, against the email package.

Builds the same N newsletters (default 20,000: a ~3 KB HTML part, a ~1.5 KB text
part, per recipient a name, an address and unique unsubscribe and preference URLs,
the List-Unsubscribe headers) three ways, in one run:

1. ``build()`` from mailer.messages.mime;
2. ``email.message.EmailMessage`` with ``policy.SMTP``, ``set_content`` and
   ``add_alternative``, then ``as_bytes()``;
3. ``email.mime``: ``MIMEMultipart("alternative")`` with two ``MIMEText`` parts.

Then ``build()`` plus DKIM signing (``DkimSigner``, a fresh 2048-bit key) on fewer
messages (default 500), since signing is far slower than building. The recipient
data is made before the clock starts, so only message building is timed. One
message of each kind is parsed back with ``email.parser`` as a sanity check.

Run it with the project's venv from the repository root:

    .venv/bin/python bench/mime_build.py [-n 20000] [--dkim-n 500] [--ascii]

``--ascii`` uses a pure-ASCII newsletter (7bit parts) instead of the default one
with a few accented letters and euro signs (quoted-printable parts). The summary
with the figures comes last.
"""

from __future__ import annotations

import argparse
import gc
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.header import Header
from email.message import EmailMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.parser import BytesParser
from email.utils import format_datetime, formataddr, make_msgid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailer.messages.dkim import DkimSigner
from mailer.messages.mime import OutgoingMail, build

SENDER_NAME = "Music Store"
SENDER_ADDRESS = "news@shop.example"
SENDER = f"{SENDER_NAME} <{SENDER_ADDRESS}>"
BASE_URL = "https://shop.example"
LIST_ID = "Music Store news <news.shop.example>"
# email.mime's own policy (Header objects need it), with the CRLF line ends SMTP wants.
COMPAT32_SMTP = policy.compat32.clone(linesep="\r\n")

PRODUCTS = [
    ("Stratocaster Player II", "749", "A classic with a modern neck and Alnico V pickups."),
    ("Nord Stage 4 88", "4599", "Triple sensor keybed, piano, organ and synth sections."),
    ("Roland TD-07KV", "899", "Quiet mesh heads and Bluetooth audio for practice."),
    ("Yamaha HS8 pair", "679", "Honest studio monitors that tell you what is in the mix."),
    ("Shure SM7dB", "499", "The broadcast classic with a preamp built in."),
    ("Focusrite Scarlett 4i4", "229", "Four in, four out, and preamps that stay quiet."),
]


@dataclass(frozen=True, slots=True)
class Recipient:
    address: str
    subject: str
    text: str
    html: str
    list_unsubscribe: str


def newsletter(name: str, unsubscribe: str, preferences: str, ascii_only: bool) -> tuple[str, str]:
    """The text and HTML parts of one recipient's newsletter."""
    euro, dash, cafe = ("EUR ", "-", "Cafe") if ascii_only else ("€", "\u2013", "Café")
    items_text = "\n\n".join(
        f"* {title} {dash} {euro}{price}\n  {blurb}\n  {BASE_URL}/p/{i}?utm_source=news"
        for i, (title, price, blurb) in enumerate(PRODUCTS)
    )
    text = (
        f"Hello {name},\n\n"
        f"our winter sale starts today: up to 30 % off in every department, and the "
        f"{cafe} in our Berlin store serves free coffee all weekend. Bring your own "
        f"instrument for a free setup check while stocks of strings last.\n\n"
        f"{items_text}\n\n"
        f"Opening hours: Monday to Saturday, 10:00 {dash} 20:00.\n"
        f"Questions? Just reply to this mail.\n\n"
        f"--\nYou get this mail because you subscribed to Music Store news.\n"
        f"Unsubscribe: {unsubscribe}\nPreferences: {preferences}\n"
        f"Music Store GmbH, 1 High Street, 12345 Town\n"
    )
    items_html = "\n".join(
        f'<tr><td style="padding:12px 0;border-bottom:1px solid #eee">'
        f'<a href="{BASE_URL}/p/{i}?utm_source=news" style="color:#c00;font-weight:bold">'
        f"{title}</a> {dash} {euro}{price}<br>"
        f'<span style="color:#555;font-size:14px">{blurb}</span></td></tr>'
        for i, (title, price, blurb) in enumerate(PRODUCTS)
    )
    html = (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        "<title>Music Store news</title></head>\n"
        '<body style="margin:0;background:#f4f4f4;font-family:Helvetica,Arial,sans-serif">\n'
        '<table width="100%" cellpadding="0" cellspacing="0"><tr><td align="center">\n'
        '<table width="600" cellpadding="0" cellspacing="0" style="background:#fff">\n'
        f'<tr><td style="padding:24px"><h1 style="font-size:24px">Hello {name},</h1>\n'
        f"<p>our winter sale starts today: up to 30 % off in every department, and the "
        f"{cafe} in our Berlin store serves free coffee all weekend. Bring your own "
        f"instrument for a free setup check while stocks of strings last.</p></td></tr>\n"
        f'<tr><td style="padding:0 24px"><table width="100%">\n{items_html}\n'
        "</table></td></tr>\n"
        f'<tr><td style="padding:24px;color:#555;font-size:13px">Opening hours: Monday to '
        f"Saturday, 10:00 {dash} 20:00.</td></tr>\n"
        '<tr><td style="padding:24px;color:#999;font-size:12px">You get this mail because '
        "you subscribed to Music Store news.<br>\n"
        f'<a href="{unsubscribe}" style="color:#999">Unsubscribe</a> | '
        f'<a href="{preferences}" style="color:#999">Preferences</a><br>\n'
        "Music Store GmbH, 1 High Street, 12345 Town</td></tr>\n"
        "</table></td></tr></table>\n</body></html>\n"
    )
    return text, html


def recipients(count: int, ascii_only: bool) -> list[Recipient]:
    people = []
    subject = "Winter sale: up to 30 % off" + ("" if ascii_only else " \u2013 jetzt im Café 🎸")
    for i in range(count):
        name = f"Customer{i}"
        unsubscribe = f"{BASE_URL}/unsubscribe/{secrets.token_urlsafe(48)}"
        preferences = f"{BASE_URL}/preferences/{secrets.token_urlsafe(48)}"
        text, html = newsletter(name, unsubscribe, preferences, ascii_only)
        people.append(Recipient(
            address=f"customer{i}@example.org",
            subject=subject,
            text=text,
            html=html,
            list_unsubscribe=f"<{unsubscribe}>, <mailto:unsubscribe@shop.example>",
        ))
    return people


def with_build(person: Recipient) -> bytes:
    return build(OutgoingMail(
        sender=SENDER,
        to=person.address,
        subject=person.subject,
        text=person.text,
        html=person.html,
        extra_headers=(
            ("List-Unsubscribe", person.list_unsubscribe),
            ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
            ("List-Id", LIST_ID),
        ),
    ))


def with_email_message(person: Recipient) -> bytes:
    message = EmailMessage(policy=policy.SMTP)
    message["From"] = SENDER
    message["To"] = person.address
    message["Subject"] = person.subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain="shop.example")
    message["List-Unsubscribe"] = person.list_unsubscribe
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message["List-Id"] = LIST_ID
    message.set_content(person.text)
    message.add_alternative(person.html, subtype="html")
    return message.as_bytes()


def with_email_mime(person: Recipient) -> bytes:
    message = MIMEMultipart("alternative")
    message["From"] = formataddr((SENDER_NAME, SENDER_ADDRESS), "utf-8")
    message["To"] = person.address
    message["Subject"] = Header(person.subject, "utf-8")
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain="shop.example")
    message["List-Unsubscribe"] = person.list_unsubscribe
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message["List-Id"] = LIST_ID
    message.attach(MIMEText(person.text, "plain", "utf-8"))
    message.attach(MIMEText(person.html, "html", "utf-8"))
    return message.as_bytes(policy=COMPAT32_SMTP)


@dataclass(frozen=True, slots=True)
class Result:
    label: str
    count: int
    seconds: float
    average_size: float

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    @property
    def micros(self) -> float:
        return self.seconds / self.count * 1e6


def measure(label: str, make: Callable[[Recipient], bytes], people: list[Recipient]) -> Result:
    """Time make() over every recipient, after a short warm-up; sanity-check one result."""
    for person in people[:50]:
        make(person)
    sample = BytesParser(policy=policy.default).parsebytes(make(people[0]))
    assert not sample.defects and sample.is_multipart(), label
    gc.collect()
    size = 0
    started = time.perf_counter()
    for person in people:
        size += len(make(person))
    seconds = time.perf_counter() - started
    result = Result(label, len(people), seconds, size / len(people))
    print(f"  {label:<34} {result.rate:>9,.0f} msg/s  {result.micros:>8,.1f} us/msg", flush=True)
    return result


def rsa_key_pem() -> bytes:
    """A fresh 2048-bit RSA key: through cryptography if installed, else the openssl tool."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
    except ImportError:
        openssl = shutil.which("openssl")
        if openssl is None:
            raise SystemExit("needs the cryptography package or the openssl tool") from None
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "key.pem"
            subprocess.run(
                [openssl, "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                 "-out", str(path)], check=True, capture_output=True,
            )
            return path.read_bytes()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20_000, help="messages per method")
    parser.add_argument("--dkim-n", type=int, default=500, help="messages built and signed")
    parser.add_argument("--ascii", action="store_true", help="a pure-ASCII newsletter (7bit)")
    args = parser.parse_args()

    people = recipients(args.n, args.ascii)
    text_size = sum(len(p.text.encode()) for p in people) / len(people)
    html_size = sum(len(p.html.encode()) for p in people) / len(people)
    print(f"{args.n:,} newsletters: text part ~{text_size:,.0f} B, HTML part ~{html_size:,.0f} B,"
          f" {'ASCII only' if args.ascii else 'with accents and euro signs'}; Python "
          f"{sys.version.split()[0]}", flush=True)

    fast = measure("build()", with_build, people)
    modern = measure("EmailMessage (policy.SMTP)", with_email_message, people)
    legacy = measure("email.mime (MIMEMultipart)", with_email_mime, people)

    signer = DkimSigner(rsa_key_pem(), "bench", "shop.example")
    signed_people = people[: args.dkim_n]
    signed = measure("build() + DKIM sign (RSA 2048)",
                     lambda person: signer.sign(with_build(person)), signed_people)
    sign_ms = (signed.seconds / signed.count - fast.seconds / fast.count) * 1e3

    print("\nSummary")
    print(f"  {'method':<34} {'msg/s':>9}  {'us/msg':>8}  {'bytes/msg':>9}  {'messages':>8}")
    for result in (fast, modern, legacy, signed):
        print(f"  {result.label:<34} {result.rate:>9,.0f}  {result.micros:>8,.1f}  "
              f"{result.average_size:>9,.0f}  {result.count:>8,}")
    print(f"  build() / EmailMessage: {fast.rate / modern.rate:.1f}x;"
          f" build() / email.mime: {fast.rate / legacy.rate:.1f}x")
    print(f"  DKIM signing adds {sign_ms:.1f} ms per message"
          f" ({signed.rate:,.0f} msg/s signed vs {fast.rate:,.0f} unsigned, one core)")


if __name__ == "__main__":
    main()
