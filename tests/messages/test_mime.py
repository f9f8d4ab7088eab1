"""build(): random mails go in, Python's own parser must read back the same mail, defect-free."""

from __future__ import annotations

import datetime as dt
import re
from email import policy
from email.header import decode_header
from email.message import EmailMessage
from email.parser import BytesParser

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mailer.messages.mime import (
    HeaderInjection,
    InvalidMail,
    OutgoingMail,
    build,
    check_header_value,
    make_message_id,
)

SENDER = "Music Store <news@shop.example>"
TO = "anna@example.org"
UNSUBSCRIBE = (
    ("List-Unsubscribe",
     "<https://shop.example/unsubscribe/abc>, <mailto:u@shop.example?subject=abc>"),
    ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
    ("List-Id", "<news.shop.example>"),
)
PARSER = BytesParser(policy=policy.default)
ENCODED_WORD = re.compile(r"=\?utf-8\?[qb]\?[^?]*\?=")

# Anything a template could produce, but CR, LF and NUL (their own test) and lone
# surrogates (not text).
HEADER_CHARS = st.characters(exclude_categories=("Cs",), exclude_characters="\r\n\x00")
NAME_CHARS = st.characters(exclude_categories=("Cs", "Cc"))  # controls: their own test
BODY_CHARS = st.characters(exclude_categories=("Cs",))

subjects = st.one_of(
    st.text(HEADER_CHARS, max_size=120),
    st.text(st.sampled_from("ab cd.=?_é€😀 \t"), max_size=400),
    st.lists(st.text(st.sampled_from("abc"), min_size=1, max_size=60), max_size=30)
    .map(" ".join),
)
special_lines = st.sampled_from([
    "", ".", "..", ".hidden", "From me", "From ", ">From x", "=", "a=b=", "==3D", "=_",
    "--", "--=_", "trailing  ", "tab\t", " ", "\t", "x" * 1200, "é" * 700, "\x0c", "\x0b",
    "\x1c", "x" * 75 + " ", "x" * 74 + "=", "x" * 75 + "é", "<p>Hi</p>",
])
lines = st.one_of(
    st.text(BODY_CHARS, max_size=100),
    special_lines,
    st.text(st.sampled_from("ab =.\t"), max_size=2000),
)
bodies = st.one_of(
    st.tuples(st.lists(lines, max_size=12), st.sampled_from(["\n", "\r\n", "\r"])).map(
        lambda parts: parts[1].join(parts[0])
    ),
    st.text(BODY_CHARS, max_size=300),
)
names = st.text(NAME_CHARS, max_size=40)
addresses = st.from_regex(
    r"[a-z0-9+_-]{1,20}(\.[a-z0-9+_-]{1,10})?@([a-z0-9-]{1,20}\.)?[a-z]{2,10}\.example",
    fullmatch=True,
)


def parse(raw: bytes) -> EmailMessage:
    """Parse raw bytes, asserting the wire format and that Python finds no defect at all."""
    assert raw.endswith(b"\r\n")
    for line in raw[:-2].split(b"\r\n"):
        assert len(line) <= 998
        assert b"\r" not in line and b"\n" not in line
    message = PARSER.parsebytes(raw)
    assert isinstance(message, EmailMessage)
    assert message.defects == []
    for part in message.walk():
        assert part.defects == []
        for name, value in part.items():
            assert value.defects == (), name
    return message


def header_lines(raw: bytes, name: str) -> list[bytes]:
    """The physical lines of one header field, first line and continuations."""
    found: list[bytes] = []
    for line in raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if found and found[-1] is not None:
                found.append(line)
        elif line.lower().startswith(name.lower().encode() + b":"):
            found = [line]
        elif found:
            break
    return found


def unfolded(raw: bytes, name: str) -> str:
    return b"".join(header_lines(raw, name)).decode("ascii").split(":", 1)[1].lstrip(" ")


def normalized(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def assert_same_body(decoded: str, original: str) -> None:
    """Equal after normalizing line ends; build() may add one final line break."""
    got, want = normalized(decoded), normalized(original)
    assert got == want or got == want + "\n"


def _python_joins_encoded_words() -> bool:
    raw = b"From: =?utf-8?q?a?= =?utf-8?q?b?= <a@b.example>\r\n\r\n"
    return PARSER.parsebytes(raw)["from"].addresses[0].display_name == "ab"


# CPython gh-128110 (fixed in 3.14): between two adjacent encoded-words of a display
# name the parser keeps a space that RFC 2047 6.2 says to drop.
PYTHON_JOINS_ENCODED_WORDS = _python_joins_encoded_words()


def assert_display_name(raw: bytes, message: EmailMessage, expected: str) -> None:
    got = message["from"].addresses[0].display_name
    phrase = unfolded(raw, "From").rpartition(" <")[0]
    words = ENCODED_WORD.findall(phrase)
    if len(words) > 1:
        assert " ".join(words) == phrase  # the whole name is one run of encoded-words
        pieces = [b.decode(charset) for word in words for b, charset in decode_header(word)]
        assert "".join(pieces) == expected  # as RFC 2047 reads it
        if not PYTHON_JOINS_ENCODED_WORDS:
            expected = " ".join(pieces)
    assert got == expected


def assert_body_encoding(part: EmailMessage) -> None:
    """Each transfer encoding keeps within its own limits."""
    cte = part["content-transfer-encoding"]
    body = part.get_payload(decode=False)
    body_lines = normalized(body).split("\n")
    for line in body_lines:
        assert not line.startswith("From ")
    if cte == "quoted-printable":
        for line in body_lines:
            assert len(line) <= 76
            assert not line.endswith((" ", "\t"))
    elif cte == "base64":
        assert all(len(line) <= 76 for line in body_lines)
    else:
        assert cte == "7bit"
        assert body.isascii()


def mail(**fields: object) -> OutgoingMail:
    values: dict[str, object] = {"sender": SENDER, "to": TO, "subject": "Hello", "text": "Hi\n"}
    values.update(fields)
    return OutgoingMail(**values)  # type: ignore[arg-type]


# --- round trips ---------------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(subject=subjects)
@example(subject="")
@example(subject="  leading and trailing  ")
@example(subject="Sale 🎸🎹 — «Größte» Auswahl")
@example(subject="مرحبا بالعالم — שלום עולם")
@example(subject="x" * 2000)
@example(subject="word " * 400)
@example(subject="=?utf-8?q?not_an_encoded_word?=")
@example(subject="tab\tand\x0bvertical")
def test_subject_round_trips(subject: str) -> None:
    raw = build(mail(subject=subject))
    message = parse(raw)
    assert str(message["subject"]) == subject
    if all(len(word) <= 60 for word in subject.split(" ")):
        assert all(len(line) <= 78 for line in header_lines(raw, "Subject"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=bodies, html=st.one_of(st.none(), bodies))
@example(text="=\n.\nFrom here\n trailing \t\n", html="<p>a=b</p>\r\n.\r")
@example(text="é\n" + "x" * 75 + " \n", html=None)  # b2a_qp would write 78 characters
@example(text="x" * 5000, html="y" * 5000)
@example(text="", html="")
@example(text="你好\uff0c世界。" * 50, html="<p>" + "你好\uff0c世界。" * 50 + "</p>")
def test_bodies_round_trip(text: str, html: str | None) -> None:
    message = parse(build(mail(text=text, html=html)))
    if html is None:
        assert message.get_content_type() == "text/plain"
        assert not message.is_multipart()
        assert_body_encoding(message)
        assert_same_body(message.get_content(), text)
        return
    assert message.get_content_type() == "multipart/alternative"
    plain, rich = message.iter_parts()
    assert plain.get_content_type() == "text/plain"
    assert rich.get_content_type() == "text/html"
    for part, original in ((plain, text), (rich, html)):
        assert part.get_content_charset() == "utf-8"
        assert_body_encoding(part)
        assert_same_body(part.get_content(), original)


@settings(max_examples=300, deadline=None)
@given(name=names, address=addresses, quoted=st.booleans())
@example(name='Smith, John "JJ" \\ <x>', address="john@shop.example", quoted=False)
@example(name="  spaced  out  ", address="a@shop.example", quoted=True)
@example(name="Jürgen Müller \u2013 Musikalienhandlung & Söhne GmbH", address="a@b.example",
         quoted=False)
@example(name="株式会社ミュージックストア・ニュースレター配信", address="a@b.example", quoted=False)
@example(name="=?utf-8?q?x?=", address="a@b.example", quoted=True)
def test_display_names_round_trip(name: str, address: str, quoted: bool) -> None:
    if quoted:
        sender = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + f'" <{address}>'
        expected = name if name.strip() else ""
    else:
        stripped = name.strip()
        # Written bare, a name that is itself quoted is read as quoted.
        if len(stripped) >= 2 and stripped[0] == stripped[-1] == '"':
            return
        sender = f"{name} <{address}>"
        expected = stripped
    raw = build(mail(sender=sender, to=address))
    message = parse(raw)
    assert message["from"].addresses[0].addr_spec == address
    assert message["to"].addresses[0].addr_spec == address
    assert_display_name(raw, message, expected)


def test_a_bare_address_is_the_whole_from() -> None:
    message = parse(build(mail(sender="news@shop.example")))
    assert str(message["from"]) == "news@shop.example"
    assert message["from"].addresses[0].display_name == ""


def test_headers_come_in_order_with_mime_version() -> None:
    raw = build(mail(html="<p>Hi</p>", extra_headers=UNSUBSCRIBE))
    names = [line.split(b":", 1)[0] for line in raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
             if not line.startswith(b" ")]
    assert names == [
        b"From", b"To", b"Subject", b"Date", b"Message-ID", b"MIME-Version",
        b"List-Unsubscribe", b"List-Unsubscribe-Post", b"List-Id", b"Content-Type",
    ]
    message = parse(raw)
    assert message["MIME-Version"] == "1.0"
    for name, value in UNSUBSCRIBE:
        assert str(message[name]) == value


# --- header injection ----------------------------------------------------------------


@pytest.mark.parametrize("bad", ["\r", "\n", "\r\n", "\0", "\r\nBcc: victim@example.org"])
@pytest.mark.parametrize(
    "field",
    ["subject", "to", "sender", "message_id", "extra_value", "extra_name", "list_unsubscribe",
     "reply_to", "list_id"],
)
def test_cr_lf_or_nul_in_any_header_raises(field: str, bad: str) -> None:
    cases = {
        "subject": {"subject": f"Hello{bad}there"},
        "to": {"to": f"anna@example.org{bad}"},
        "sender": {"sender": f"Music{bad}Store <news@shop.example>"},
        "message_id": {"message_id": f"<a{bad}b@shop.example>"},
        "extra_value": {"extra_headers": (("X-Mailer-Test", f"a{bad}b"),)},
        "extra_name": {"extra_headers": ((f"X-A{bad}", "b"),)},
        "list_unsubscribe": {"extra_headers": (("List-Unsubscribe", f"<https://x/{bad}>"),)},
        "reply_to": {"extra_headers": (("Reply-To", f"Help{bad} <help@shop.example>"),)},
        "list_id": {"extra_headers": (("List-Id", f"News{bad} <news.shop.example>"),)},
    }
    with pytest.raises(HeaderInjection):
        build(mail(**cases[field]))


@given(st.text(HEADER_CHARS))
def test_check_header_value_passes_clean_text_through(value: str) -> None:
    assert check_header_value(value) is value


@pytest.mark.parametrize("bad", ["a\rb", "a\nb", "a\0b", "\r\n"])
def test_check_header_value_refuses_line_breaks_and_nul(bad: str) -> None:
    with pytest.raises(HeaderInjection):
        check_header_value(bad)
    assert issubclass(HeaderInjection, ValueError)


# --- ids and dates -------------------------------------------------------------------


def test_every_message_gets_its_own_message_id() -> None:
    first = parse(build(mail()))["message-id"]
    second = parse(build(mail()))["message-id"]
    assert first != second
    assert re.fullmatch(r"<[0-9a-f]{32}@shop\.example>", str(first))


def test_make_message_id_is_unique_and_well_formed() -> None:
    ids = {make_message_id("shop.example") for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(re.fullmatch(r"<[0-9a-f]{32}@shop\.example>", value) for value in ids)
    with pytest.raises(InvalidMail):
        make_message_id("not a domain")


def test_a_given_message_id_and_date_are_used() -> None:
    when = dt.datetime(2026, 11, 25, 16, 30, 5, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    message = parse(build(mail(message_id="<m-42.x_y@shop.example>", date=when)))
    assert str(message["message-id"]) == "<m-42.x_y@shop.example>"
    assert message["date"].datetime == when
    assert str(message["date"]) == "Wed, 25 Nov 2026 16:30:05 +0100"


def test_date_defaults_to_now() -> None:
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    stamped = parse(build(mail()))["date"].datetime
    assert before <= stamped <= dt.datetime.now(dt.UTC)


@pytest.mark.parametrize(
    "fields",
    [
        {"date": dt.datetime(2026, 1, 1)},  # naive
        {"message_id": "no-angle@shop.example"},
        {"to": "Anna <anna@example.org>"},  # the envelope recipient: a bare address only
        {"to": "anna@exämple.org"},
        {"sender": "Music Store <news at shop.example>"},
        {"sender": "Bell\x07 <news@shop.example>"},
        {"subject": "lone \ud800 surrogate"},
        {"extra_headers": (("Bcc", "x@example.org"),)},
        {"extra_headers": (("content-type", "text/plain"),)},
        {"extra_headers": (("X Bad", "name with a space"),)},
        {"extra_headers": (("List-Unsubscribe", "https://no-angle-brackets"),)},
        {"extra_headers": (("List-Unsubscribe", "<https://shop.example/" + "u" * 1000 + ">"),)},
        {"extra_headers": (("List-Id", "no brackets"),)},
    ],
)
def test_what_cannot_be_written_correctly_is_refused(fields: dict[str, object]) -> None:
    with pytest.raises(InvalidMail):
        build(mail(**fields))


# --- extra headers -------------------------------------------------------------------


@settings(deadline=None)
@given(token=st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-_."), min_size=1,
                     max_size=600))
def test_long_list_unsubscribe_folds_between_uris_only(token: str) -> None:
    value = (f"<https://shop.example/unsubscribe/{token}>, "
             f"<mailto:unsubscribe@shop.example?subject={token}>")
    raw = build(mail(extra_headers=(("List-Unsubscribe", value),
                                    ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))))
    message = parse(raw)
    assert str(message["List-Unsubscribe"]) == value
    folded = header_lines(raw, "List-Unsubscribe")
    for line in folded:
        assert line.count(b"<") == line.count(b">")  # never folded inside <...>
    if len(token) <= 24:  # then each URI fits on a line of its own
        assert all(len(line) <= 78 for line in folded)


def test_extra_headers_of_each_kind_round_trip() -> None:
    headers = (
        ("Reply-To", "Kundendienst, Team Süd <help@shop.example>"),
        ("List-Id", "Neuigkeiten für alle <news.shop.example>"),
        ("X-Mailer-Test", "  ümlauts and spaces  "),
        ("X-Plain", "just ascii"),
        ("List-Unsubscribe", "<https://shop.example/u/1>,<mailto:u@shop.example>"),
    )
    message = parse(build(mail(extra_headers=headers)))
    reply_to = message["Reply-To"].addresses[0]
    assert (reply_to.display_name, reply_to.addr_spec) == (
        "Kundendienst, Team Süd", "help@shop.example")
    assert str(message["List-Id"]) == "Neuigkeiten für alle <news.shop.example>"
    assert str(message["X-Mailer-Test"]) == "  ümlauts and spaces  "
    assert str(message["X-Plain"]) == "just ascii"
    assert str(message["List-Unsubscribe"]) == (
        "<https://shop.example/u/1>, <mailto:u@shop.example>")


# --- body encodings ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "cte"),
    [
        ("Plain ASCII\nwith short lines.\n", "7bit"),
        ("ASCII but\nFrom a line start\n", "quoted-printable"),
        ("x" * 999, "quoted-printable"),
        ("Grüße aus Köln, 5 € Rabatt\n", "quoted-printable"),
        ("你好\uff0c世界。" * 30, "base64"),
        ("form\x0cfeed", "quoted-printable"),
    ],
)
def test_each_body_gets_the_cheapest_safe_encoding(text: str, cte: str) -> None:
    message = parse(build(mail(text=text)))
    assert message["content-transfer-encoding"] == cte
    assert_same_body(message.get_content(), text)


def test_the_boundary_never_occurs_in_a_body() -> None:
    raw = build(mail(text="--=_\n=_abc\n", html="<p>--=_</p>\n"))
    boundary = parse(raw).get_boundary()
    assert boundary is not None and boundary.startswith("=_")
    assert raw.count(f"--{boundary}".encode()) == 3


def test_line_ends_become_crlf_and_a_final_one_is_added() -> None:
    raw = build(mail(text="a\rb\nc\r\nd", html=None))
    assert raw.endswith(b"\r\n\r\na\r\nb\r\nc\r\nd\r\n")
