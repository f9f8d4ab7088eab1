"""Per-client limits key on the real client: behind MAILER_TRUSTED_PROXIES proxies, from the
X-Forwarded-For they add; with none trusted, a forged header changes nothing. Limits counted
in Redis are shared by every process; the console's login is also limited per account.

The limiter is one object per process and off for the suite's app, so each check runs in a
process of its own with limits on.
"""

from __future__ import annotations

import uuid

import pytest

from tests.processes import run_with_limits

# Posts of the unsubscribe-by-address form (an empty one: 422, no mail), each from
# (the address the server sees, the X-Forwarded-For header or ""), as argv[3] in JSON.
_PAGE_POSTS = """
import flask_migrate
config.MAILER_PAGE_RATE_LIMIT = "2 per minute"
config.WTF_CSRF_ENABLED = False
config.MAILER_TRUSTED_PROXIES = int(sys.argv[2])
if len(sys.argv) > 4:
    config.MAILER_RATELIMIT_STORAGE_URL = sys.argv[4]
    config.RATELIMIT_KEY_PREFIX = sys.argv[5]
app = create_app(config)
with app.app_context():
    flask_migrate.upgrade()
client = app.test_client()
statuses = []
for remote, forwarded in json.loads(sys.argv[3]):
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    statuses.append(client.post("/unsubscribe", data={}, headers=headers,
                                environ_base={"REMOTE_ADDR": remote}).status_code)
print(json.dumps(statuses))
"""

PROXY = "10.0.0.1"


def posts(tmp_path, hops: int, requests: list[tuple[str, str]], *storage: str) -> list[int]:
    import json

    return run_with_limits(_PAGE_POSTS, tmp_path / "limits.db", str(hops),  # type: ignore[return-value]
                           json.dumps(requests), *storage)


def test_two_clients_behind_one_trusted_proxy_get_separate_counters(tmp_path):
    ann, bob = "198.51.100.1", "198.51.100.2"
    statuses = posts(tmp_path, 1, [(PROXY, ann), (PROXY, ann), (PROXY, ann), (PROXY, bob),
                                   (PROXY, bob)])
    assert statuses == [422, 422, 429, 422, 422]


def test_without_trusted_proxies_everyone_behind_a_proxy_shares_its_counter(tmp_path):
    """What an install behind a proxy had before MAILER_TRUSTED_PROXIES: one client's posts
    close the form for the next. (So the setting matters.)"""
    statuses = posts(tmp_path, 0, [(PROXY, "198.51.100.1"), (PROXY, "198.51.100.1"),
                                   (PROXY, "198.51.100.2")])
    assert statuses == [422, 422, 429]


def test_with_no_trusted_proxy_a_forged_forwarded_for_changes_nothing(tmp_path):
    client = "203.0.113.9"
    statuses = posts(tmp_path, 0, [(client, "198.51.100.1"), (client, "198.51.100.2"),
                                   (client, "198.51.100.3"), (client, "")])
    assert statuses == [422, 422, 429, 429]


def test_a_forged_header_before_the_proxy_is_not_trusted_either(tmp_path):
    """The proxy appends the address it saw; only that last hop is believed."""
    client = "203.0.113.9"
    statuses = posts(tmp_path, 1, [(PROXY, f"198.51.100.{n}, {client}") for n in range(1, 4)])
    assert statuses == [422, 422, 429]


@pytest.fixture
def redis_prefix():
    """A key prefix of this test's own in the Redis on 6379, removed afterwards."""
    redis = pytest.importorskip("redis")
    connection = redis.Redis(host="127.0.0.1", port=6379)
    try:
        connection.ping()
    except redis.exceptions.ConnectionError:
        pytest.skip("needs Redis on 127.0.0.1:6379")
    prefix = f"mailer-production-test-{uuid.uuid4().hex}"
    yield prefix
    for key in connection.scan_iter(match=f"*{prefix}*"):
        connection.delete(key)
    connection.close()


def test_limits_in_redis_are_shared_by_every_process(tmp_path, redis_prefix):
    import redis

    storage = ("redis://127.0.0.1:6379/0", redis_prefix)
    client = "198.51.100.7"
    first = posts(tmp_path, 0, [(client, ""), (client, "")], *storage)
    # Another process (another gunicorn worker, another host): the same count.
    second = posts(tmp_path, 0, [(client, ""), ("198.51.100.8", "")], *storage)
    assert first == [422, 422] and second == [429, 422]
    keys = list(redis.Redis(host="127.0.0.1", port=6379).scan_iter(match=f"*{redis_prefix}*"))
    assert keys  # counted there, under the prefix
    assert not any(b"@" in key for key in keys)


# Failed logins for one account from many clients, then what each kind of attempt gets.
_LOGINS = """
import flask_migrate
from mailer.admin import services
from mailer.extensions import db
config.WTF_CSRF_ENABLED = False
app = create_app(config)
with app.app_context():
    flask_migrate.upgrade()
    services.create_user("admin@shop.example", "the right password")
    services.create_user("other@shop.example", "another right password")
    db.session.commit()
client = app.test_client()
def login(email, password, client_address):
    return client.post("/admin/login", data={"email": email, "password": password},
                       environ_base={"REMOTE_ADDR": client_address}).status_code
guesses = [login("admin@shop.example", "guess %d" % n, "198.51.100.%d" % n)
           for n in range(1, 7)]
print(json.dumps({
    "guesses": guesses,
    "right_password_now": login("Admin@Shop.example", "the right password", "192.0.2.1"),
    "other_admin": login("other@shop.example", "another right password", "198.51.100.1"),
}))
"""


def test_failed_logins_for_one_account_from_many_clients_slow_that_account_only(tmp_path):
    outcome = run_with_limits(_LOGINS, tmp_path / "logins.db")
    # Six clients, one guess each: none reaches the per-client limit; the account's does.
    assert outcome["guesses"] == [422] * 5 + [429]
    # The account waits, whatever the spelling of its address and whoever asks...
    assert outcome["right_password_now"] == 429
    # ...and every other admin logs in as before, from the same clients too.
    assert outcome["other_admin"] == 302
