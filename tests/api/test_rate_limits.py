"""The API skips Flask-Limiter's per-request work only where no limit applies.

The limiter is one object per process and off for the suite's app, so each check runs in a
process of its own with limits enabled.
"""

from __future__ import annotations

from tests.processes import run_with_limits

_CHECK = """
import flask_migrate
from mailer.api.guards import unlimited_api_request
from mailer.apikeys import services as apikeys
from mailer.extensions import db

if sys.argv[2]:
    config.RATELIMIT_DEFAULT = sys.argv[2]
app = create_app(config)
with app.app_context():
    flask_migrate.upgrade()
    _row, key = apikeys.issue("limits")
    db.session.commit()
client = app.test_client()
auth = {"Authorization": "Bearer " + key}
statuses = [client.get("/api/v1/topics", headers=auth).status_code for _ in range(3)]
with app.test_request_context("/api/v1/topics"):
    api_skipped = unlimited_api_request()
with app.test_request_context("/healthz"):
    page_skipped = unlimited_api_request()
print(json.dumps({"statuses": statuses, "api_skipped": api_skipped,
                  "page_skipped": page_skipped}))
"""


def check(tmp_path, default_limit: str = "") -> dict:
    return run_with_limits(_CHECK, tmp_path / "limits.db", default_limit)


def test_an_api_route_without_limits_skips_the_limiter(tmp_path):
    assert check(tmp_path) == {"statuses": [200, 200, 200], "api_skipped": True,
                               "page_skipped": False}


def test_a_default_limit_configured_for_the_app_still_applies_to_the_api(tmp_path):
    outcome = check(tmp_path, "2 per minute")
    assert outcome["statuses"] == [200, 200, 429]
    assert outcome["api_skipped"] is False
