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
here, several times the cost of building the message); bench/mime_build.py prints
the figure.
"""

from __future__ import annotations

import re
from collections import Counter

import dkim
from dkim.crypto import UnparsableKeyError, parse_pem_private_key

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
        self._pem = pem
        self._selector = _ascii(selector, "selector")
        self._domain = _ascii(domain, "domain")
        self._headers = names

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


def _ascii(value: str, what: str) -> bytes:
    if not value or not value.isascii() or any(c.isspace() for c in value):
        raise ValueError(f"the DKIM {what} must be non-empty ASCII without spaces")
    return value.encode("ascii")
