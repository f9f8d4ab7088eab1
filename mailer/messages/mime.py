"""Building one rendered mail into RFC 5322 bytes, fast and without the email package.

The email package is the slow part of sending: bench/mime_build.py measures
`email.message.EmailMessage` at a few hundred newsletters a second per core and
`email.mime` at well under a thousand, against about ten thousand for build(). So
build() assembles the bytes itself, and writes exactly one shape of message:

    From, To, Subject, Date, Message-ID, MIME-Version, extra headers,
    then either one text/plain part or a multipart/alternative of
    text/plain and text/html, both UTF-8.

What it guarantees (tests/messages/test_mime.py checks each with random input):

- Every line ends with CRLF and is at most 998 octets; header lines are folded at
  whitespace to at most 78 characters wherever the value allows it.
- Header text that is not plain ASCII becomes RFC 2047 encoded-words (UTF-8, Q or B,
  whichever is shorter); an address's display name is quoted or encoded, the
  addr-spec never is.
- A header value holding CR, LF or NUL raises `HeaderInjection`; anything else that
  cannot become a correct message raises `InvalidMail` (its base class).
- Bodies get CRLF line endings and end with a line break. Each part is 7bit when it
  is printable ASCII with lines of at most 998 octets, else quoted-printable, or
  base64 when that is much shorter (mostly non-Latin text).
- Python's own parser reads the result back with no defects, and the decoded
  subject, display name and bodies equal the input.

Lines that start with "." are left alone: dot-stuffing is the SMTP client's job
(smtplib and aiosmtplib both do it).
"""

from __future__ import annotations

import binascii
import re
import secrets
import time
from bisect import bisect_right
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from functools import lru_cache

__all__ = [
    "HeaderInjection",
    "InvalidMail",
    "OutgoingMail",
    "build",
    "check_header_value",
    "make_message_id",
]

CRLF = "\r\n"
MAX_LINE = 998  # RFC 5322 2.1.1: octets per line, CRLF excluded (a MUST)
FOLD_AT = 78  # RFC 5322 2.1.1: the SHOULD for header lines
MAX_ENCODED_WORD = 75  # RFC 2047 2
QP_LINE = 76  # RFC 2045 6.7 (5)
B64_CHUNK = 57  # input bytes per 76-character base64 line

# Headers build() writes itself, and headers that must never be written by the
# caller: a second Content-Type would change the structure, a Bcc would leak the
# envelope, a Cc would add recipients the envelope does not have.
_RESERVED = frozenset({
    "from", "to", "subject", "date", "message-id", "mime-version", "content-type",
    "content-transfer-encoding", "dkim-signature", "bcc", "cc",
})
# Headers whose value is one mailbox ("Name <addr>" or "addr").
_MAILBOX_HEADERS = frozenset({"reply-to", "sender"})
# RFC 2369 headers: a list of <URI>. Only ASCII; folded at the whitespace between the
# <...> items, never inside one.
_URI_LIST_HEADERS = frozenset({
    "list-unsubscribe", "list-help", "list-subscribe", "list-post", "list-owner",
    "list-archive",
})

_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~-"
_ATOM_PHRASE = re.compile(rf"[{_ATEXT}]+(?: [{_ATEXT}]+)*")
# What build() accepts as an address: a dot-atom local part and a hostname (in IDNA
# form) or an address literal. Quoted local parts and SMTPUTF8 are not supported.
_ADDR_SPEC = re.compile(
    rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*@(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[!-Z^-~]+\])"
)
_DOMAIN = re.compile(r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[!-Z^-~]+\]")
_LIST_ID = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*")
_MSG_ID = re.compile(r"<[!-;=?-~]+@[!-;=?-~]+>")  # printable ASCII without < > or space
_HEADER_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 ftext
_URI_LIST = re.compile(r"<[!-;=?-~]+>(?:[ \t]*,[ \t]*<[!-;=?-~]+>)*")
# Printable ASCII words separated by spaces: safe to write as is in unstructured text.
# Leading or trailing blanks would be lost by parsers, so they need encoding.
_PLAIN_TEXT = re.compile(r"[!-~]+(?: +[!-~]+)*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# What a 7bit body may hold: printable ASCII, tab and LF (CR is gone after
# normalizing). Other controls are escaped with QP instead: some parsers (Python's
# among them) split lines at VT, FF and FS..RS, and NUL and DEL are not text.
_7BIT_SAFE = b"\t\n" + bytes(range(0x20, 0x7F))
_FOLD_POINT = re.compile(r"(?<=[^ ]) ")  # a space with text before it on the line
_QP_OVERLONG = re.compile(rb"^[^\n]{77,}$", re.MULTILINE)

# Q encoding limited to the characters RFC 2047 5(3) allows in a phrase, so the same
# encoder serves display names and unstructured text.
_Q_LITERAL = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/"
)
_Q_LITERAL_OR_SPACE = bytes(sorted(_Q_LITERAL | {0x20}))
_Q_BYTE = [
    chr(b) if b in _Q_LITERAL else "_" if b == 0x20 else f"={b:02X}" for b in range(256)
]
_EW_OVERHEAD = len("=?utf-8?q?") + len("?=")


class InvalidMail(ValueError):
    """The mail cannot become a correct message; the message names the field, never a value."""


class HeaderInjection(InvalidMail):
    """A header value holds CR, LF or NUL: written out, it would start a new header."""


@dataclass(frozen=True, slots=True)
class OutgoingMail:
    """One rendered mail for one recipient, ready for build().

    sender: the From header, 'Name <addr>', '"Name" <addr>' or 'addr'; the name may
        be any Unicode. to: one bare ASCII addr-spec (IDNA domain), also the envelope
        recipient. subject, text, html: any Unicode; html None makes a single
        text/plain message. message_id: '<id@domain>', or None for a new one in the
        sender's domain. date: timezone-aware, or None for now. extra_headers: (name,
        value) pairs written after MIME-Version in order; List-* headers, Reply-To
        and Sender are written as their syntax needs, other names as free text.
    """

    sender: str
    to: str
    subject: str
    text: str
    html: str | None = None
    message_id: str | None = None
    date: datetime | None = None
    extra_headers: tuple[tuple[str, str], ...] = ()


def check_header_value(value: str) -> str:
    """Return value unchanged, or raise HeaderInjection if it holds CR, LF or NUL."""
    if "\r" in value or "\n" in value or "\0" in value:
        raise HeaderInjection("a header value holds CR, LF or NUL")
    return value


def make_message_id(domain: str) -> str:
    """Return a new, globally unique Message-ID, '<128 random bits as hex@domain>'."""
    check_header_value(domain)
    if not _DOMAIN.fullmatch(domain):
        raise InvalidMail("the Message-ID domain is not an ASCII hostname")
    return f"<{secrets.token_hex(16)}@{domain}>"


def build(mail: OutgoingMail) -> bytes:
    """Return the complete message as bytes with CRLF line endings, ready for SMTP DATA.

    Raises HeaderInjection for CR, LF or NUL in any header value, InvalidMail for
    anything else that cannot be written correctly (a malformed address, a naive
    date, a reserved or malformed extra header, text that is not valid Unicode).
    """
    from_line, domain = _from_header(mail.sender)
    check_header_value(mail.to)
    if not _ADDR_SPEC.fullmatch(mail.to):
        raise InvalidMail("To is not a plain ASCII addr-spec")
    if mail.message_id is None:
        message_id = make_message_id(domain)
    else:
        message_id = check_header_value(mail.message_id)
        if not _MSG_ID.fullmatch(message_id):
            raise InvalidMail("Message-ID is not of the form <id@domain>")
    lines = [
        from_line,
        "To: " + mail.to,
        _subject_header(mail.subject),
        "Date: " + _date(mail.date),
        "Message-ID: " + message_id,
        "MIME-Version: 1.0",
    ]
    lines.extend(_extra_header(name, value) for name, value in mail.extra_headers)

    text_cte, text_body = _encode_body(mail.text)
    if mail.html is None:
        lines.append("Content-Type: text/plain; charset=utf-8")
        lines.append("Content-Transfer-Encoding: " + text_cte)
        return (CRLF.join(lines) + CRLF + CRLF).encode("ascii") + text_body

    html_cte, html_body = _encode_body(mail.html)
    boundary = _boundary(text_body if text_cte == "7bit" else b"",
                         html_body if html_cte == "7bit" else b"")
    lines.append(f'Content-Type: multipart/alternative; boundary="{boundary}"')
    head = CRLF.join(lines)
    delimiter = f"{CRLF}--{boundary}{CRLF}"
    # Each body ends with CRLF; the CRLF before a delimiter belongs to the delimiter
    # (RFC 2046 5.1.1), so it is written on top to keep the body's last line break.
    return b"".join((
        f"{head}{CRLF}{CRLF}--{boundary}{CRLF}"
        f"Content-Type: text/plain; charset=utf-8{CRLF}"
        f"Content-Transfer-Encoding: {text_cte}{CRLF}{CRLF}".encode("ascii"),
        text_body,
        f"{delimiter}Content-Type: text/html; charset=utf-8{CRLF}"
        f"Content-Transfer-Encoding: {html_cte}{CRLF}{CRLF}".encode("ascii"),
        html_body,
        f"{CRLF}--{boundary}--{CRLF}".encode("ascii"),
    ))


# --- headers -------------------------------------------------------------------------


class _LineTooLong(InvalidMail):
    """A header has a run of text too long for one line even after folding."""


def _fold(name: str, value: str) -> str:
    """Return 'Name: value' folded at spaces to <= 78 characters a line where possible.

    A fold puts CRLF before a space, so unfolding (removing the CRLFs) gives back
    the value exactly. Only spaces with text before them on the line are used, so
    no line is ever blank. Raises _LineTooLong if some line still exceeds 998.
    """
    if not value:
        return name + ":"  # no trailing blank after the colon
    line = f"{name}: {value}"
    if len(line) <= FOLD_AT:
        return line
    breaks = [m.start() for m in _FOLD_POINT.finditer(line, len(name) + 2)]
    pieces = []
    start = 0
    while len(line) - start > FOLD_AT:
        i = bisect_right(breaks, start + FOLD_AT) - 1
        if i >= 0 and breaks[i] > start:
            cut = breaks[i]
        else:  # nothing fits: break at the first space after the overlong run
            i = bisect_right(breaks, start)
            if i == len(breaks):
                break
            cut = breaks[i]
        pieces.append(line[start:cut])
        start = cut
    pieces.append(line[start:])
    if any(len(piece) > MAX_LINE for piece in pieces):
        raise _LineTooLong(f"the {name} header has a word longer than one line may be")
    return CRLF.join(pieces)


def _encoded_words(text: str, first: int) -> list[str]:
    """Encode text as RFC 2047 encoded-words, the first at most `first` characters long.

    Q is used when it is no longer than B, which keeps mostly-Latin text readable
    (and avoids spam rules about needlessly base64-encoded headers). Words are cut
    between characters, never inside a UTF-8 sequence (RFC 2047 5).
    """
    data = _utf8(text)
    quoted = len(data) + 2 * len(data.translate(None, _Q_LITERAL_OR_SPACE))
    budget = max(min(first, MAX_ENCODED_WORD), 40) - _EW_OVERHEAD
    words = []
    if quoted <= (len(data) + 2) // 3 * 4:
        chunk: list[str] = []
        size = 0
        for char in text:
            token = "".join([_Q_BYTE[b] for b in char.encode("utf-8")])
            if size + len(token) > budget and chunk:
                words.append("=?utf-8?q?" + "".join(chunk) + "?=")
                chunk, size, budget = [], 0, MAX_ENCODED_WORD - _EW_OVERHEAD
            chunk.append(token)
            size += len(token)
        if chunk:
            words.append("=?utf-8?q?" + "".join(chunk) + "?=")
        return words
    start = 0
    while start < len(data):
        end = start + budget // 4 * 3
        while end < len(data) and data[end] & 0xC0 == 0x80:  # a continuation byte
            end -= 1
        words.append("=?utf-8?b?" + binascii.b2a_base64(data[start:end], newline=False)
                     .decode("ascii") + "?=")
        start, budget = end, MAX_ENCODED_WORD - _EW_OVERHEAD
    return words


def _unstructured(name: str, text: str) -> str:
    """A folded header of free text (RFC 5322 unstructured), encoded where it must be."""
    check_header_value(text)
    if _PLAIN_TEXT.fullmatch(text) and "=?" not in text:
        try:
            return _fold(name, text)
        except _LineTooLong:
            pass  # one very long word: encoded-words can be cut anywhere
    elif not text:
        return name + ":"
    return _fold(name, " ".join(_encoded_words(text, FOLD_AT - len(name) - 2)))


def _phrase(text: str, first: int) -> str:
    """A display name as an RFC 5322 phrase: atoms as is, else a quoted-string, else RFC 2047.

    The whole name becomes one run of encoded-words when it is not ASCII. Python
    before 3.14 (gh-128110) wrongly keeps a space between adjacent encoded-words in
    a phrase; RFC 2047 6.2 says to drop it, as mail clients do, so names long enough
    to need two words read right everywhere but in those Pythons.
    """
    if _CONTROL.search(text):
        raise InvalidMail("a display name holds control characters")
    if "=?" in text:  # would read as an encoded-word, even inside quotes for some parsers
        return " ".join(_encoded_words(text, first))
    if _ATOM_PHRASE.fullmatch(text):
        return text
    if text.isascii():
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return " ".join(_encoded_words(text, first))


def _split_mailbox(value: str) -> tuple[str, str]:
    """Split 'Name <addr>', '"Name" <addr>' or 'addr' into (display name, addr)."""
    value = value.strip()
    if value.endswith(">") and "<" in value:
        at = value.rindex("<")
        name, addr = value[:at].strip(), value[at + 1:-1].strip()
        if len(name) >= 2 and name[0] == '"' and name[-1] == '"':
            name = re.sub(r"\\(.)", r"\1", name[1:-1])
        return name, addr
    return "", value


def _mailbox(name: str, value: str) -> tuple[str, str]:
    """A folded mailbox header and the domain of its address."""
    check_header_value(value)
    display, addr = _split_mailbox(value)
    if not _ADDR_SPEC.fullmatch(addr):
        raise InvalidMail(f"the {name} address is not a plain ASCII addr-spec")
    if not display.strip():  # a blank name says nothing: write the bare address
        return _fold(name, addr), addr.rpartition("@")[2]
    value = f"{_phrase(display, FOLD_AT - len(name) - 2)} <{addr}>"
    return _fold(name, value), addr.rpartition("@")[2]


@lru_cache(maxsize=64)
def _from_header(sender: str) -> tuple[str, str]:
    """The From header and the sender's domain; cached, as a service has few senders."""
    return _mailbox("From", sender)


@lru_cache(maxsize=1024)
def _subject_header(subject: str) -> str:
    # Cached: a campaign repeats one subject (or a few) across every recipient.
    return _unstructured("Subject", subject)


_now_header: tuple[int, str] = (0, "")


def _date(value: datetime | None) -> str:
    """An RFC 5322 date; the current time's text is reused within the same second."""
    global _now_header
    if value is not None:
        if value.utcoffset() is None:
            raise InvalidMail("Date must be a timezone-aware datetime")
        return format_datetime(value)
    now = int(time.time())
    second, text = _now_header
    if second != now:
        text = format_datetime(datetime.fromtimestamp(now, UTC))
        _now_header = (now, text)
    return text


@lru_cache(maxsize=1024)
def _extra_header(name: str, value: str) -> str:
    """One caller-supplied header, written as its kind of field needs.

    Cached: most extra headers (List-Id, Reply-To, List-Unsubscribe-Post) are the
    same for a whole campaign.
    """
    check_header_value(name)
    if not _HEADER_NAME.fullmatch(name):
        raise InvalidMail("an extra header name is not printable ASCII without ':'")
    key = name.lower()
    if key in _RESERVED:
        raise InvalidMail(f"the {name} header is written by build() or never allowed")
    if key in _MAILBOX_HEADERS:
        return _mailbox(name, value)[0]
    if key in _URI_LIST_HEADERS:
        check_header_value(value)
        value = value.strip()
        if not _URI_LIST.fullmatch(value):
            raise InvalidMail(f"{name} must be a list of <URI> in ASCII")
        # One space after each comma gives the folder a place to break.
        return _fold(name, re.sub(r"[ \t]*,[ \t]*", ", ", value))
    if key == "list-id":
        return _list_id(name, value)
    return _unstructured(name, value)


def _list_id(name: str, value: str) -> str:
    """RFC 2919 List-Id: an optional phrase, then <list-id>."""
    check_header_value(value)
    phrase, list_id = _split_mailbox(value)
    if not value.strip().endswith(">") or not _LIST_ID.fullmatch(list_id):
        raise InvalidMail("List-Id must be 'Name <label.domain>' or '<label.domain>'")
    if phrase.strip():
        return _fold(name, f"{_phrase(phrase, FOLD_AT - len(name) - 2)} <{list_id}>")
    return _fold(name, f"<{list_id}>")


# --- bodies --------------------------------------------------------------------------


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidMail("the mail holds text that is not valid Unicode") from None


def _encode_body(text: str) -> tuple[str, bytes]:
    """Return (Content-Transfer-Encoding, body bytes with CRLF line ends and a final CRLF)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"
    if text.isascii():
        data = text.encode("ascii")
        if (
            not data.translate(None, _7BIT_SAFE)
            # "From " starting a line gets a ">" in mbox deliveries, which breaks DKIM;
            # quoted-printable can hide it (below).
            and not data.startswith(b"From ")
            and b"\nFrom " not in data
            and (len(data) <= MAX_LINE or max(map(len, data.split(b"\n"))) <= MAX_LINE)
        ):
            return "7bit", data.replace(b"\n", b"\r\n")
    else:
        data = _utf8(text)
    encoded = _quoted_printable(data)
    b64_size = (len(data) + 2) // 3 * 4 + (len(data) + B64_CHUNK - 1) // B64_CHUNK
    # Base64 only when it saves a lot, i.e. for mostly non-Latin text: spam filters
    # score base64 text parts whose content would have read fine as ASCII
    # (SpamAssassin's MIME_BASE64_TEXT), and QP stays readable in a raw message.
    if b64_size * 4 < len(encoded) * 3:
        return "base64", _base64(data)
    return "quoted-printable", encoded.replace(b"\n", b"\r\n")


def _quoted_printable(data: bytes) -> bytes:
    """Quoted-printable (RFC 2045 6.7) of LF-terminated text; LF line ends in the result.

    binascii.b2a_qp does the work in C: it escapes '=', non-ASCII and control bytes,
    and blanks before a line end, and inserts soft line breaks. Two fixes follow:
    "From " at a line start is escaped as "=46rom " (mbox safety), and any line longer
    than 76 characters is split again, because b2a_qp lets a line grow to 78 when it
    escapes a trailing blank right at the limit.
    """
    encoded = binascii.b2a_qp(data, quotetabs=False, istext=True, header=False)
    # b2a_qp only overruns 76 when it escapes a blank at a line end, so a line can be
    # too long only where "=20" or "=09" ends a line, or where "From " got longer.
    # Checking for those first skips a regex scan of the body for nearly every mail.
    suspect = b"=20\n" in encoded or b"=09\n" in encoded
    if encoded.startswith(b"From "):
        encoded = b"=46" + encoded[1:]
        suspect = True
    if b"\nFrom " in encoded:
        encoded = encoded.replace(b"\nFrom ", b"\n=46rom ")
        suspect = True
    if suspect and _QP_OVERLONG.search(encoded):
        encoded = _QP_OVERLONG.sub(lambda m: _split_qp_line(m.group()), encoded)
    return encoded


def _split_qp_line(line: bytes) -> bytes:
    """Split one encoded line into soft-broken lines of at most 76, never inside '=XX'."""
    pieces = []
    while len(line) > QP_LINE:
        cut = QP_LINE - 1  # room for the '=' of the soft break
        if line[cut - 1] == 0x3D:  # '=' just before the cut: the escape spans it
            cut -= 1
        elif line[cut - 2] == 0x3D:
            cut -= 2
        pieces.append(line[:cut] + b"=")
        line = line[cut:]
    pieces.append(line)
    return b"\n".join(pieces)


def _base64(data: bytes) -> bytes:
    b2a = binascii.b2a_base64
    return b"".join(
        [b2a(data[i:i + B64_CHUNK])[:-1] + b"\r\n" for i in range(0, len(data), B64_CHUNK)]
    )


def _boundary(*seven_bit_bodies: bytes) -> str:
    """A random boundary that occurs in no body.

    It starts with "=_", which quoted-printable and base64 output can never hold, so
    only 7bit bodies need the check; a clash there is astronomically unlikely but is
    still ruled out rather than assumed away.
    """
    while True:
        boundary = "=_" + secrets.token_hex(12)
        token = boundary.encode("ascii")
        if not any(token in body for body in seven_bit_bodies):
            return boundary
