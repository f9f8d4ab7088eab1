"""A live server, a real SMTP server and Debian's Chromium driven by Playwright."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator

import pytest
from werkzeug.serving import make_server

from tests.conftest import IN_CI
from tests.delivery.helpers import run_worker_until_idle

CHROMIUM = os.environ.get("MAILER_TEST_CHROMIUM", "/usr/bin/chromium")


def _need(condition: bool, reason: str) -> None:
    if not condition:
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)


# Module scope: Playwright keeps an event loop running in this thread while it is open,
# and later tests run workers with asyncio.run() in this thread.
@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    _need(shutil.which(CHROMIUM) is not None or os.path.exists(CHROMIUM),
          f"needs Chromium at {CHROMIUM} (apt-get install chromium; make test does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need(False, "needs the playwright package (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 390, "height": 844})  # a phone
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def live_url(app) -> Iterator[str]:
    """The app served over real HTTP; mails link to this server for the test's duration."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    saved = app.config["MAILER_BASE_URL"]
    app.config["MAILER_BASE_URL"] = url
    try:
        yield url
    finally:
        app.config["MAILER_BASE_URL"] = saved
        server.shutdown()
        thread.join(5)
        server.server_close()


@pytest.fixture
def deliver(app, smtp):
    """Run a worker until the outbox is idle (in a thread: Playwright owns this one's loop)."""

    def run() -> None:
        errors: list[BaseException] = []

        def target() -> None:
            try:
                with app.app_context():
                    run_worker_until_idle(app, smtp.url)
            except BaseException as exc:  # re-raised in the test thread
                errors.append(exc)

        thread = threading.Thread(target=target)
        thread.start()
        thread.join(60)
        if errors:
            raise errors[0]

    return run
