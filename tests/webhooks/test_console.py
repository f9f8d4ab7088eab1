"""The console's webhooks section: admins only, CSRF on every form, the secret shown once,
delete after a confirmation, a delivery log per endpoint."""

from __future__ import annotations

import re

from sqlalchemy import select

from mailer.extensions import db
from mailer.webhooks import services as webhooks
from mailer.webhooks.models import WebhookEndpoint
from tests.admin.sections import marketer_console
from tests.admin.test_console import console, log_in, user  # noqa: F401 (fixtures)
from tests.pages.helpers import csrf_token
from tests.webhooks import Receiver, run_worker


def page(response) -> str:
    return response.get_data(as_text=True)


def test_an_admin_adds_a_webhook_sees_its_secret_once_then_deletes_it(
        console):  # noqa: F811
    receiver = Receiver()
    try:
        listing = console.get("/admin/webhooks")
        assert listing.status_code == 200 and "No webhooks yet" in page(listing)
        assert 'href="/admin/webhooks"' in page(console.get("/admin/"))

        # Without the CSRF token nothing is added.
        form = {"url": receiver.url, "events": ["message.sent", "contact.bounced"]}
        assert console.post("/admin/webhooks", data=form).status_code == 400
        assert db.session.scalar(select(WebhookEndpoint)) is None

        token = csrf_token(console, "/admin/webhooks")
        added = console.post("/admin/webhooks", data={**form, "csrf_token": token})
        assert added.status_code == 200, page(added)
        secret = re.search(r"<code>(whsec_[^<]+)</code>", page(added)).group(1)
        endpoint = db.session.scalar(select(WebhookEndpoint))
        assert endpoint.secret == secret and endpoint.events == ["message.sent",
                                                                 "contact.bounced"]
        public_id = endpoint.public_id
        again = page(console.get("/admin/webhooks"))
        assert receiver.url in again and secret not in again  # shown once only

        delete_path = f"/admin/webhooks/{public_id}/delete"
        confirm = console.get(delete_path)
        assert confirm.status_code == 200 and "Delete this webhook" in page(confirm)
        assert console.post(delete_path).status_code == 400  # no CSRF token: nothing
        assert webhooks.list_endpoints()
        done = console.post(delete_path, data={"csrf_token": csrf_token(console, delete_path)})
        assert done.status_code == 302
        db.session.expire_all()
        assert webhooks.list_endpoints() == []
    finally:
        receiver.close()


def test_an_endpoint_has_a_delivery_log_with_status_attempts_and_error(
        app, client, user, smtp, auth):  # noqa: F811
    receiver = Receiver()
    try:
        endpoint, _secret = webhooks.create_endpoint(receiver.url, ["message.sent"])
        public_id = endpoint.public_id
        db.session.commit()
        response = client.post("/api/v1/messages", headers=auth, json={
            "to": "buyer@example.com", "template": "receipt", "category": "transactional",
            "data": {"order_number": "A-1", "items": [], "total": "€0"}})
        assert response.status_code == 202
        receiver.statuses = [500]
        run_worker(app, smtp.url)
    finally:
        receiver.close()
    assert log_in(client).status_code == 302
    log_page = page(client.get(f"/admin/webhooks/{public_id}"))
    assert "message.sent" in log_page and "<td>delivered</td>" in log_page
    assert "<td>2</td>" in log_page  # two attempts, the first answered 500


def test_a_marketer_reaches_no_webhook_page(client):
    endpoint, _secret = webhooks.create_endpoint("http://127.0.0.1:9/hook", ["message.sent"])
    db.session.commit()
    marketer = marketer_console(client)
    for path in ("/admin/webhooks", f"/admin/webhooks/{endpoint.public_id}",
                 f"/admin/webhooks/{endpoint.public_id}/delete"):
        assert marketer.get(path).status_code == 403, path
    assert "/admin/webhooks" not in page(marketer.get("/admin/"))
