"""DKIM signing of built messages (RFC 6376), through dkimpy.

Signatures are rsa-sha256 with relaxed/relaxed canonicalization: relaxed headers
survive the refolding and whitespace changes that relays make, relaxed body the
trailing-blank changes.

Which headers are signed: every name in `headers` (SIGNED_HEADERS by default) is
listed in h= once for each instance the message holds, plus once more. The extra
listing signs an empty field, so a verifier fails the signature if anyone adds one
more such header later (RFC 6376 5.4.2, "over-signing"). For a header the message
does not have, that single listing asserts its absence: no List-Unsubscribe can be
added to a transactional mail, and no Reply-To or Cc to any mail, without breaking
the signature.

Cost: dkimpy does the RSA operation in pure Python (about 10 ms for a 2048-bit key
here, several times the cost of building the message). When the `cryptography`
package is installed, the signer has dkimpy do everything but that operation
(parse, canonicalize, hash, build and fold the header, with dkimpy's own functions)
and OpenSSL sign the hash: RSASSA-PKCS1-v1_5 is deterministic, so the header is
byte for byte the one dkimpy would write (tests/messages/test_dkim.py compares
them) at a fraction of the cost. bench/mime_build.py prints the figure.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections import Counter
from typing import Any

import dkim
from dkim.canonicalization import CanonicalizationPolicy
from dkim.crypto import UnparsableKeyError, parse_pem_private_key

try:  # OpenSSL's RSA, through the `cryptography` package, when it is installed
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
except ImportError:  # pragma: no cover - dkimpy signs alone, slowly
    serialization = None  # type: ignore[assignment]

__all__ = ["SIGNED_HEADERS", "DkimSigner"]

SIGNED_HEADERS: tuple[bytes, ...] = (
    b"from", b"to", b"subject", b"date", b"message-id",
    b"list-unsubscribe", b"list-unsubscribe-post", b"list-id",
    b"mime-version", b"content-type", b"content-transfer-encoding",
    # Not written by every mail, but signing their absence stops a replayed message
    # from gaining a Reply-To (phishing answers) or extra recipients.
    b"reply-to", b"cc", b"sender",
)
MIN_KEY_BITS = 1024  # RFC 8301 3.2: verifiers reject shorter RSA keys; use 2048

_HEADER_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:", re.MULTILINE)


class DkimSigner:
    """Signs messages for one domain with one key; safe to share between threads."""

    def __init__(
        self,
        private_key_pem: bytes,
        selector: str,
        domain: str,
        headers: tuple[bytes | str, ...] = SIGNED_HEADERS,
    ) -> None:
        """Check the key and settings once; raise ValueError if they cannot sign."""
        # dkimpy's regex finds the PEM body only between LF line ends.
        pem = private_key_pem.replace(b"\r\n", b"\n")
        # dkim.sign() takes the key as PEM and parses it again on every call; its API
        # has no way to pass a parsed key (DKIM.sign parses too). So the PEM bytes are
        # kept, and parsed here once only to fail at startup rather than at the first
        # mail. The repeated parse costs ~0.3 ms, small beside the RSA operation.
        try:
            key = parse_pem_private_key(pem)
        except (UnparsableKeyError, ValueError, IndexError) as exc:
            raise ValueError(f"the DKIM key is not a PEM RSA private key: {exc}") from None
        if key["modulus"].bit_length() < MIN_KEY_BITS:
            raise ValueError(f"the DKIM key is shorter than {MIN_KEY_BITS} bits")
        names = tuple(
            (name.encode("ascii") if isinstance(name, str) else name).lower()
            for name in headers
        )
        if b"from" not in names:
            raise ValueError("DKIM must sign the From header (RFC 6376 5.4)")
        if set(names) & set(dkim.DKIM.SHOULD_NOT):  # dkimpy refuses them at every sign()
            raise ValueError("DKIM must not sign trace headers (dkimpy's SHOULD_NOT list)")
        self._pem = pem
        self._selector = _ascii(selector, "selector")
        self._domain = _ascii(domain, "domain")
        self._headers = names
        self._key = _openssl_key(pem)

    @classmethod
    def from_files(cls, key_file: str, selector: str, domain: str) -> DkimSigner:
        """A signer whose PEM private key is read from key_file (MAILER_DKIM_KEY_FILE)."""
        with open(key_file, "rb") as handle:
            return cls(handle.read(), selector, domain)

    def sign(self, message: bytes) -> bytes:
        """Return message with a DKIM-Signature header prepended (CRLF line ends).

        Raises dkim.DKIMException if dkimpy cannot sign the message.
        """
        end = message.find(b"\r\n\r\n")
        head = message if end < 0 else message[:end]
        present = Counter(name.lower() for name in _HEADER_NAME.findall(head))
        include = [name for name in self._headers for _ in range(present[name] + 1)]
        if self._key is not None:
            return self._sign_with_openssl(message, include) + message
        signature = dkim.sign(
            message,
            self._selector,
            self._domain,
            self._pem,
            canonicalize=(b"relaxed", b"relaxed"),
            signature_algorithm=b"rsa-sha256",
            include_headers=include,
        )
        return signature + message

    def _sign_with_openssl(self, message: bytes, include: list[bytes],
                           now: float | None = None) -> bytes:
        """The DKIM-Signature header dkim.sign() would write, its RSA done by OpenSSL.

        The steps of dkimpy's DKIM.sign() and DKIM.gen_header() for rsa-sha256 and
        relaxed/relaxed, with dkimpy's own functions for each; only the signing of the
        hash differs. `now` (the t= tag) is for tests.
        """
        assert self._key is not None
        headers, body = dkim.rfc822_parse(message)
        policy = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
        body_hash = base64.b64encode(hashlib.sha256(policy.canonicalize_body(body)).digest())
        signed = tuple(include)
        fields = [
            (b"v", b"1"), (b"a", b"rsa-sha256"), (b"c", policy.to_c_value()),
            (b"d", self._domain), (b"i", b"@" + self._domain), (b"q", b"dns/txt"),
            (b"s", self._selector),
            (b"t", str(int(time.time() if now is None else now)).encode("ascii")),
            (b"h", b" : ".join(signed)), (b"bh", body_hash),
            (b"b", b"0" * 60),  # dkimpy's placeholder: b= folds onto a line of its own
        ]
        name = b"DKIM-Signature"
        value = dkim.fold(b"; ".join(b"=".join(f) for f in fields), namelen=len(name),
                          linesep=b"\r\n")
        value = dkim.RE_BTAG.sub(b"\\1", value)
        digest = hashlib.sha256()
        dkim.hash_headers(digest, policy, policy.canonicalize_headers(headers), signed,
                          (name, b" " + value), dict(fields))
        signature = self._key.sign(digest.digest(), padding.PKCS1v15(),
                                   Prehashed(hashes.SHA256()))
        fields[-1] = (b"b", base64.b64encode(signature))
        value = dkim.fold(b"; ".join(b"=".join(f) for f in fields) + b"\r\n",
                          namelen=len(name), linesep=b"\r\n")
        return name + b": " + value


def _ascii(value: str, what: str) -> bytes:
    if not value or not value.isascii() or any(c.isspace() for c in value):
        raise ValueError(f"the DKIM {what} must be non-empty ASCII without spaces")
    return value.encode("ascii")


def _openssl_key(pem: bytes) -> Any:
    """The key as `cryptography` holds it, or None (not installed, or not an RSA key it
    reads: dkimpy then signs alone)."""
    if serialization is None:
        return None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        return None
    return key if isinstance(key, rsa.RSAPrivateKey) else None
