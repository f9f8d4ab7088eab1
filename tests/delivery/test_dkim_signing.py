"""DKIM signing through OpenSSL writes exactly the header dkimpy writes, and dkimpy verifies it."""

from __future__ import annotations

import base64
import time

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dkim.util import parse_tag_value

from mailer.messages.dkim import DkimSigner
from mailer.messages.mime import OutgoingMail, build

SELECTOR = "sel1"
DOMAIN = "shop.example"


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module", params=["pkcs8", "pkcs1"])
def pem(request: pytest.FixtureRequest, key: rsa.RSAPrivateKey) -> bytes:
    form = (serialization.PrivateFormat.PKCS8 if request.param == "pkcs8"
            else serialization.PrivateFormat.TraditionalOpenSSL)
    return key.private_bytes(serialization.Encoding.PEM, form, serialization.NoEncryption())


def lookup_for(key: rsa.RSAPrivateKey):
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == f"{SELECTOR}._domainkey.{DOMAIN}.".encode() else None

    return lookup


def message(subject: str = "Herbst-Neuheiten: Gitarren, Pianos und Mikrofone für alle") -> bytes:
    return build(OutgoingMail(
        sender="Müsic Store <news@shop.example>", to="reader@example.org", subject=subject,
        text="Hello,\n\nnew strings: €5.\n" * 20, html="<p>new strings: €5</p>\n" * 20,
        extra_headers=(("List-Unsubscribe", "<https://shop.example/unsubscribe/tok>"),
                       ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
                       ("List-Id", "<news.shop.example>")),
    ))


@pytest.mark.parametrize("subject", ["Hi", "Herbst-Neuheiten: Gitarren, Pianos und Mikrofone "
                                     "für alle, die gern spielen, und für alle anderen auch"])
def test_the_header_is_byte_for_byte_what_dkimpy_writes_and_verifies(
    key: rsa.RSAPrivateKey, pem: bytes, subject: str
) -> None:
    signer = DkimSigner(pem, SELECTOR, DOMAIN)
    assert signer._key is not None  # the OpenSSL path is the one under test
    raw = message(subject)
    for _ in range(5):  # dkimpy stamps t= with the current second: compare within one
        second = int(time.time())
        signed = signer.sign(raw)
        header = signed[: len(signed) - len(raw)]
        tags = parse_tag_value(header.split(b":", 1)[1])
        expected = dkim.sign(raw, SELECTOR.encode(), DOMAIN.encode(), pem,
                             canonicalize=(b"relaxed", b"relaxed"),
                             include_headers=[h.strip() for h in tags[b"h"].split(b":")])
        if int(time.time()) == second:
            break
    assert header == expected
    assert dkim.verify(signed, dnsfunc=lookup_for(key))
    # And a change to a signed header breaks it, as it must.
    assert not dkim.verify(signed.replace(b"To: reader@", b"To: other@"),
                           dnsfunc=lookup_for(key))


def test_trace_headers_are_refused_at_construction(pem: bytes) -> None:
    with pytest.raises(ValueError, match="trace headers"):
        DkimSigner(pem, SELECTOR, DOMAIN, headers=("from", "received"))
