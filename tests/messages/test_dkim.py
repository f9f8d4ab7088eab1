"""DKIM: build() then sign, verify with dkimpy against the key served by a stand-in DNS."""

from __future__ import annotations

import base64
from email import policy
from email.parser import BytesParser
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dkim.util import parse_tag_value

from mailer.messages.dkim import SIGNED_HEADERS, DkimSigner
from mailer.messages.mime import OutgoingMail, build

SELECTOR = "mail2026"
DOMAIN = "shop.example"
UNSUBSCRIBE_URL = "https://shop.example/unsubscribe/tok-123"


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="module")
def signer(pem: bytes) -> DkimSigner:
    return DkimSigner(pem, SELECTOR, DOMAIN)


@pytest.fixture(scope="module")
def dns(key: rsa.RSAPrivateKey):
    """A dnsfunc for dkim.verify serving the public key's TXT record, and nothing else."""
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)
    wanted = f"{SELECTOR}._domainkey.{DOMAIN}.".encode()

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == wanted else None

    return lookup


def promotional(**fields: object) -> bytes:
    values: dict[str, object] = {
        "sender": "Müsic Store <news@shop.example>",
        "to": "anna@example.org",
        "subject": "Neue Gitarren \u2013 20 % Rabatt 🎸",
        "text": "Hallo Anna,\n.\nFrom today on: 20 % off.\n\nAbmelden: " + UNSUBSCRIBE_URL + "\n",
        "html": f'<p>Hallo Anna</p>\n<p><a href="{UNSUBSCRIBE_URL}">Abmelden</a></p>\n',
        "extra_headers": (
            ("List-Unsubscribe", f"<{UNSUBSCRIBE_URL}>, <mailto:unsubscribe@shop.example>"),
            ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
            ("List-Id", "Music Store news <news.shop.example>"),
        ),
    }
    values.update(fields)
    return build(OutgoingMail(**values))  # type: ignore[arg-type]


def signature_tags(signed: bytes) -> dict[bytes, bytes]:
    first = signed.split(b"\r\n\r\n", 1)[0]
    header = first.split(b"\r\n", 1)[0]
    assert header.startswith(b"DKIM-Signature:")
    # The signature header may be folded: take every line up to the next field.
    lines = [header]
    for line in first.split(b"\r\n")[1:]:
        if not line.startswith((b" ", b"\t")):
            break
        lines.append(line)
    return parse_tag_value(b"".join(lines).split(b":", 1)[1])


def replace_header(message: bytes, name: bytes, value: bytes) -> bytes:
    head, body = message.split(b"\r\n\r\n", 1)
    out = []
    skipping = False
    for line in head.split(b"\r\n"):
        if skipping and line.startswith((b" ", b"\t")):
            continue
        skipping = line.lower().startswith(name.lower() + b":")
        out.append(name + b": " + value if skipping else line)
    return b"\r\n".join(out) + b"\r\n\r\n" + body


def test_signed_promotional_mail_verifies_and_covers_both_unsubscribe_headers(
    signer: DkimSigner, dns
) -> None:
    signed = signer.sign(promotional())
    assert dkim.verify(signed, dnsfunc=dns)
    tags = signature_tags(signed)
    assert tags[b"a"] == b"rsa-sha256"
    assert tags[b"c"] == b"relaxed/relaxed"
    assert tags[b"d"] == DOMAIN.encode()
    assert tags[b"s"] == SELECTOR.encode()
    signed_names = [name.strip() for name in tags[b"h"].split(b":")]
    assert b"list-unsubscribe" in signed_names
    assert b"list-unsubscribe-post" in signed_names
    # Each present header is signed once more than it occurs, so none can be added.
    assert signed_names.count(b"list-unsubscribe") == 2
    assert signed_names.count(b"from") == 2
    # Absent ones are listed once, asserting their absence.
    assert signed_names.count(b"reply-to") == 1


def test_signed_message_is_still_a_clean_message(signer: DkimSigner) -> None:
    signed = signer.sign(promotional())
    for line in signed.split(b"\r\n"):
        assert len(line) <= 998
    message = BytesParser(policy=policy.default).parsebytes(signed)
    assert message.defects == []
    assert all(part.defects == [] for part in message.walk())
    assert "DKIM-Signature" in message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (b"List-Unsubscribe", b"<https://evil.example/unsubscribe/tok-123>"),
        (b"List-Unsubscribe-Post", b"List-Unsubscribe=Two-Clicks"),
        (b"Subject", b"Changed"),
    ],
)
def test_tampering_with_a_signed_header_fails_verification(
    signer: DkimSigner, dns, name: bytes, value: bytes
) -> None:
    signed = signer.sign(promotional())
    assert dkim.verify(signed, dnsfunc=dns)
    assert not dkim.verify(replace_header(signed, name, value), dnsfunc=dns)


@pytest.mark.parametrize(
    "added",
    [
        b"List-Unsubscribe: <https://evil.example/u>\r\n",
        b"Reply-To: phisher@evil.example\r\n",
    ],
)
def test_adding_a_signed_header_fails_verification(
    signer: DkimSigner, dns, added: bytes
) -> None:
    signed = signer.sign(promotional())
    head, body = signed.split(b"\r\n\r\n", 1)
    assert not dkim.verify(head + b"\r\n" + added.rstrip(b"\r\n") + b"\r\n\r\n" + body,
                           dnsfunc=dns)
    assert not dkim.verify(added + signed, dnsfunc=dns)


def test_a_transactional_mail_cannot_gain_a_list_unsubscribe(signer: DkimSigner, dns) -> None:
    signed = signer.sign(promotional(extra_headers=()))
    assert dkim.verify(signed, dnsfunc=dns)
    assert b"list-unsubscribe" in signature_tags(signed)[b"h"]
    forged = b"List-Unsubscribe: <https://evil.example/u>\r\n" + signed
    assert not dkim.verify(forged, dnsfunc=dns)


def test_tampering_with_the_body_fails_verification(signer: DkimSigner, dns) -> None:
    signed = signer.sign(promotional())
    assert not dkim.verify(signed.replace(b"Hallo Anna", b"Hallo Bert"), dnsfunc=dns)


def test_from_files_reads_the_key(tmp_path: Path, pem: bytes, dns) -> None:
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(pem.replace(b"\n", b"\r\n"))  # CRLF PEM files work too
    signer = DkimSigner.from_files(str(key_file), SELECTOR, DOMAIN)
    assert dkim.verify(signer.sign(promotional()), dnsfunc=dns)


def test_a_traditional_pkcs1_key_works(key: rsa.RSAPrivateKey, dns) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    assert dkim.verify(DkimSigner(pem, SELECTOR, DOMAIN).sign(promotional()), dnsfunc=dns)


@pytest.mark.parametrize(
    ("key_pem", "selector", "domain", "headers"),
    [
        (b"not a key", SELECTOR, DOMAIN, SIGNED_HEADERS),
        (None, "bad selector", DOMAIN, SIGNED_HEADERS),
        (None, SELECTOR, "shöp.example", SIGNED_HEADERS),
        (None, SELECTOR, DOMAIN, (b"subject",)),  # From must be signed
    ],
)
def test_unusable_settings_fail_at_construction(
    key_pem: bytes | None, selector: str, domain: str, headers: tuple[bytes, ...], pem: bytes
) -> None:
    with pytest.raises(ValueError):
        DkimSigner(key_pem or pem, selector, domain, headers)


def _der(tag: int, content: bytes) -> bytes:
    size = len(content)
    length = bytes([size]) if size < 0x80 else bytes([0x81, size]) if size < 0x100 else (
        bytes([0x82]) + size.to_bytes(2, "big"))
    return bytes([tag]) + length + content


def test_a_short_key_is_refused() -> None:
    # cryptography will not make a key under 1024 bits, so write a 512-bit RSAPrivateKey
    # structure by hand: the signer must refuse it before any signing is tried.
    modulus = (1 << 511) + 1
    numbers = [0, modulus, *([3] * 7)]
    der = _der(0x30, b"".join(
        _der(0x02, n.to_bytes(n.bit_length() // 8 + 1, "big")) for n in numbers))
    pem = (b"-----BEGIN RSA PRIVATE KEY-----\n" + base64.encodebytes(der)
           + b"-----END RSA PRIVATE KEY-----\n")
    with pytest.raises(ValueError, match="1024"):
        DkimSigner(pem, SELECTOR, DOMAIN)
