"""The one-click POST is never rate limited: mail providers send them for many people from one
address, all at once when a campaign goes out.

The limiter is one object per process and off for the suite's app, so the check runs in a
process of its own with every kind of limit switched on and tight.
"""

from __future__ import annotations

from tests.processes import run_with_limits

_CHECK = """
import flask_migrate
from sqlalchemy import func, select
from mailer import addresses
from mailer.consent.models import Subscription
from mailer.contacts import services as contacts
from mailer.extensions import db
from mailer.messages.compose import unsubscribe_token
from mailer.topics.services import create_topic

config.MAILER_PAGE_RATE_LIMIT = "2 per minute"
config.RATELIMIT_DEFAULT = "2 per minute"
config.RATELIMIT_APPLICATION = "2 per minute"
config.WTF_CSRF_ENABLED = False
app = create_app(config)
links = []
with app.app_context():
    flask_migrate.upgrade()
    topic = create_topic("news", "News", "", False, True)
    for n in range(30):
        email = f"reader{n}@example.com"
        contacts.upsert(email, topics=["news"], source="test")
        links.append("/unsubscribe/" + unsubscribe_token(addresses.hash_of(email), topic.id))
    db.session.commit()
client = app.test_client()  # one client address for all: a provider's sending server
form = {"Content-Type": "application/x-www-form-urlencoded"}
clicks = [client.post(link, data="List-Unsubscribe=One-Click", headers=form).status_code
          for link in links + links]
with app.app_context():
    left = db.session.scalar(select(func.count()).select_from(Subscription)
                             .where(Subscription.state == "unsubscribed"))
# The same client is limited elsewhere: the limits are on in this process.
others = [client.post("/unsubscribe", data={"email": "x@example.com"}).status_code
          for _ in range(3)]
print(json.dumps({"clicks": sorted(set(clicks)), "count": len(clicks), "left": left,
                  "others": others}))
"""


def test_many_one_click_posts_from_one_client_all_succeed(tmp_path):
    outcome = run_with_limits(_CHECK, tmp_path / "limits.db")
    assert outcome == {"clicks": [200], "count": 60, "left": 30, "others": [200, 200, 429]}
