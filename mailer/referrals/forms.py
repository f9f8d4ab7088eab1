"""The Tell-a-Friend form. The service checks everything again; these checks give early errors."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import EmailField, StringField, TextAreaField, URLField
from wtforms.validators import DataRequired, Length

from mailer.referrals import services


class TellAFriendForm(FlaskForm):
    """Field names are the service's, so its errors land next to the right field."""

    sender_name = StringField(
        "Your name", validators=[DataRequired("Enter your name."),
                                 Length(max=services.MAX_SENDER_NAME)],
        render_kw={"maxlength": services.MAX_SENDER_NAME, "autocomplete": "name"},
        description="Shown to your friend as you write it; no links.",
    )
    sender_email = EmailField(
        "Your email address", validators=[DataRequired("Enter your email address.")],
        render_kw={"maxlength": 254, "autocomplete": "email"},
        description="Only used to limit how many recommendations can be sent; never shown "
                    "or stored as it is.",
    )
    recipient_email = EmailField(
        "Your friend's email address",
        validators=[DataRequired("Enter your friend's email address.")],
        render_kw={"maxlength": 254, "autocomplete": "off"},
        description="Your friend gets this one mail; we do not add them to any list.",
    )
    item_name = StringField(
        "Item", validators=[DataRequired("Enter the item's name."),
                            Length(max=services.MAX_ITEM_NAME)],
        render_kw={"maxlength": services.MAX_ITEM_NAME},
        description="No links: the link to the item goes below.",
    )
    item_url = URLField(
        "Link to the item", validators=[DataRequired("Enter the item's link."),
                                        Length(max=services.MAX_ITEM_URL)],
        render_kw={"maxlength": services.MAX_ITEM_URL},
    )
    # The service checks the note's length once line breaks (sent as CRLF) count as one
    # character each, as the browser's maxlength counts them.
    note = TextAreaField(
        "A note for your friend (optional)",
        render_kw={"maxlength": services.MAX_NOTE, "rows": 4},
        description=f"Plain text, at most {services.MAX_NOTE} characters, no links.",
    )
    # The honeypot: hidden from people (CSS, aria-hidden, out of the tab order); bots fill it.
    website = StringField("Leave this field empty", render_kw={
        "autocomplete": "off", "tabindex": "-1", "aria-hidden": "true",
    })

    def is_bot(self) -> bool:
        return bool(self.website.data)
