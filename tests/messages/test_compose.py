"""compose(): the whole mail as a recipient gets it, links, footer and headers included."""

from __future__ import annotations

import email
import email.policy
from email.parser import BytesParser

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailer.messages import render
from mailer.messages.compose import Envelope, TopicInfo, compose
from mailer.messages.mime import build
from mailer.messages.models import Category
from mailer.messages.render import DEFAULT_TEMPLATE_DIR, Renderer

TOPIC = TopicInfo(3, "news", "News")


def envelope(template="newsletter", data=None, category=Category.PROMOTIONAL, topic=TOPIC):
    return Envelope(public_id="0" * 32, to_address="fan@example.com", address_hash="ab" * 32,
                    category=category, template=template,
                    data=data if data is not None else {"headline": "Hi", "intro": "Hello"},
                    topic=topic)


def parse(raw: bytes):
    return BytesParser(policy=email.policy.default).parsebytes(raw)


@pytest.fixture
def own_templates(app, tmp_path):
    """Templates of the test's own, searched first (as MAILER_TEMPLATE_DIR would be)."""
    saved = app.extensions[render.EXTENSION_KEY]
    app.extensions[render.EXTENSION_KEY] = Renderer([tmp_path, DEFAULT_TEMPLATE_DIR])
    yield tmp_path
    app.extensions[render.EXTENSION_KEY] = saved


def test_the_footer_is_added_only_to_the_part_that_lacks_the_link(app, own_templates):
    folder = own_templates / "linked_text"
    folder.mkdir()
    (folder / "subject.txt").write_text("Hello")
    (folder / "body.txt").write_text("Leave: {{ unsubscribe_url }}\n{{ postal_address }}\n")
    (folder / "body.html").write_text("<html><body><p>Hello</p></body></html>")
    mail = compose(envelope("linked_text", {}))
    assert mail.text.count("/unsubscribe/") == 1
    assert "You receive this because" not in mail.text
    assert "You receive this because" in mail.html
    assert mail.html.index("You receive this") < mail.html.index("</body>")
    assert app.config["MAILER_POSTAL_ADDRESS"] in mail.html


def test_transactional_mail_has_no_unsubscribe_header_or_footer(app):
    mail = compose(envelope("receipt", {"order_number": "1", "items": [], "total": "0"},
                            Category.TRANSACTIONAL, None))
    assert dict(mail.extra_headers).get("List-Unsubscribe") is None
    assert "/unsubscribe/" not in mail.text


def test_referral_mail_links_to_never_mail_me_again(app):
    mail = compose(envelope("referral", {"sender_name": "Ann", "item_name": "Guitar",
                                         "item_url": "http://127.0.0.1:5000/g", "note": ""},
                            Category.REFERRAL, None))
    headers = dict(mail.extra_headers)
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "Never receive mail from us again" in mail.text


text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(headline=text.filter(lambda s: "\r" not in s and "\n" not in s and "\x00" not in s
                            and s.strip()),
       intro=text, name=text)
def test_any_unicode_data_gives_a_mail_that_parses_back_without_defects(app, headline, intro,
                                                                        name):
    mail = compose(envelope(data={"headline": headline, "intro": intro,
                                  "items": [{"name": name, "price": "€1"}]}))
    message = parse(build(mail))
    assert not message.defects
    for part in message.walk():
        assert not part.defects
    assert message["Subject"] == headline.strip()
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    body = message.get_body(("plain",)).get_content()
    assert "/unsubscribe/" in body and app.config["MAILER_POSTAL_ADDRESS"] in body
