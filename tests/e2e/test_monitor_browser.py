"""The page at ``/`` in headless Chromium (Debian's ``/usr/bin/chromium`` driven by Playwright's Python package)
against a real uvicorn server on a free port; commands run in this test process reach the page through Postgres
NOTIFY. Skipped, with a message saying why, when no Chromium can be found."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from commandlog.auth.tokens import create_token
from commandlog.context import ExecutionContext
from commandlog.monitor.publisher import install_publisher
from examples.billing import commands as c

LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--no-first-run"]


def chromium_path() -> str | None:
    """Debian's chromium (``CMDLOG_CHROMIUM`` overrides), or None."""
    for candidate in (os.environ.get("CMDLOG_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser"), shutil.which("google-chrome")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(pg_url, tmp_path_factory):
    """A real uvicorn serving ``create_app`` on the test database (its own process, its own LISTEN)."""
    port = _free_port()
    env = {**os.environ, "CMDLOG_DATABASE_URL": pg_url, "CMDLOG_HOME": str(tmp_path_factory.mktemp("home")),
           "CMDLOG_API_RATE": "200,400"}
    log = open(tmp_path_factory.mktemp("uvicorn") / "server.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "commandlog.web.app:create_app",
                             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(base + "/api/health", timeout=1)
            break
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.2)
    else:
        proc.kill()
    if proc.poll() is not None:
        log.seek(0)
        pytest.fail(f"uvicorn did not start:\n{log.read()}")
    yield base
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


@pytest.fixture(scope="module")
def browser():
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium found (apt-get install -y chromium, or set CMDLOG_CHROMIUM): browser tests skipped")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright's Python package is not installed")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, args=LAUNCH_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    yield page
    context.close()


def _open(page, server: str, token: str) -> None:
    page.goto(f"{server}/#token={token}")
    page.wait_for_selector("#live-status.live", timeout=10_000)


def _run(bus, tenant: str, command, **ctx) -> str:
    context = ExecutionContext(tenant_id=tenant, actor_id=ctx.pop("actor", "alice"), **ctx)
    return str(bus.execute(command, context).cmd_uuid)


def test_a_command_appears_in_the_live_pane_within_two_seconds(server, page, db, bus, tenant):
    install_publisher(bus)
    other = f"t-{uuid.uuid4().hex[:12]}"
    _open(page, server, create_token(db, tenant=tenant, role="viewer"))
    assert "tenant " + tenant in page.text_content("#who")
    foreign = _run(bus, other, c.CreateCustomer(customer_id=1, name="Other Co", email="o@x.example"))
    corr = uuid.uuid4()
    first = _run(bus, tenant, c.CreateCustomer(customer_id=1, name="Acme", email="a@x.example"), correlation_id=corr)
    started = time.monotonic()
    page.wait_for_selector(f'#live .item.command[data-cmd-uuid="{first}"][data-status="succeeded"]', timeout=2000)
    assert time.monotonic() - started < 2.0
    second = _run(bus, tenant, c.RenameCustomer(customer_id=1, name="Acme Ltd"), correlation_id=corr)
    page.wait_for_selector(f'#live .item.command[data-cmd-uuid="{second}"]', timeout=2000)
    # Grouped by correlation: both commands and their events sit in one group. A command's events reach the page
    # by their own notification, so the second event may land just after its command: wait for it, same bound.
    group = page.locator(f'#live .group[data-correlation="{corr}"]')
    page.wait_for_function(
        "sel => document.querySelectorAll(sel).length >= 2",
        arg=f'#live .group[data-correlation="{corr}"] .item.event', timeout=2000)
    assert group.locator(".item.command").count() == 2
    assert group.locator(".item.event").count() == 2
    assert page.locator(f'[data-cmd-uuid="{foreign}"]').count() == 0
    assert set(page.eval_on_selector_all("#live [data-tenant]", "els => els.map(e => e.dataset.tenant)")) == {tenant}


def test_journal_filters_paging_and_detail_with_full_body(server, page, db, bus, tenant):
    install_publisher(bus)
    for n in range(1, 28):
        _run(bus, tenant, c.CreateCustomer(customer_id=n, name=f"Customer {n}", email=f"c{n}@x.example"))
    renamed = _run(bus, tenant, c.RenameCustomer(customer_id=3, name="Renamed Three"), actor="carol")
    secret = _run(bus, tenant, c.UpdatePaymentDetails(customer_id=4, iban="DE89370400440532013000",
                                                      holder="Ann Example"))
    _open(page, server, create_token(db, tenant=tenant, role="viewer"))

    page.wait_for_selector("#journal-rows tr[data-cmd-uuid]")
    assert page.locator("#journal-rows tr").count() == 25
    assert page.is_enabled("#journal-older")
    page.click("#journal-older")
    page.wait_for_function("document.querySelector('#journal-page').textContent === 'page 2'")
    page.wait_for_function("document.querySelectorAll('#journal-rows tr').length === 4")
    assert not page.is_enabled("#journal-older")

    page.fill("#jf-class", "billing.RenameCustomer")
    page.click("#journal-filters button[type=submit]")
    page.wait_for_function("document.querySelectorAll('#journal-rows tr').length === 1")
    assert page.get_attribute("#journal-rows tr", "data-cmd-uuid") == renamed
    page.click("#jf-reset")
    page.fill("#jf-actor", "carol")
    page.click("#journal-filters button[type=submit]")
    page.wait_for_function("document.querySelectorAll('#journal-rows tr').length === 1")
    page.click("#jf-reset")
    page.wait_for_function("document.querySelectorAll('#journal-rows tr').length === 25")

    # The tenant's own viewer sees the full body (the sensitive IBAN included) and the events.
    page.click(f'#journal-rows tr[data-cmd-uuid="{secret}"]')
    page.wait_for_selector("#detail-cmd-body")
    assert "DE89370400440532013000" in page.text_content("#detail-cmd-body")
    assert "PaymentDetailsUpdated" in page.text_content("#detail-body")
    assert "cmdlog replay " + secret in page.text_content("#detail-body")


def test_live_filters_reconnect_with_the_new_filter(server, page, db, bus, tenant):
    install_publisher(bus)
    _run(bus, tenant, c.CreateCustomer(customer_id=1, name="Acme", email="a@x.example"))
    _open(page, server, create_token(db, tenant=tenant, role="viewer"))
    page.fill("#lf-classes", "billing.RenameCustomer")
    page.uncheck("#live-filters input[value=event]")
    page.click("#live-filters button[type=submit]")
    page.wait_for_selector("#live-status.live")
    created = _run(bus, tenant, c.CreateCustomer(customer_id=2, name="Beta", email="b@x.example"))
    renamed = _run(bus, tenant, c.RenameCustomer(customer_id=1, name="Acme Two"))
    page.wait_for_selector(f'#live .item.command[data-cmd-uuid="{renamed}"][data-status="succeeded"]', timeout=2000)
    assert page.locator(f'[data-cmd-uuid="{created}"]').count() == 0
    assert page.locator("#live .item.event").count() == 0


def test_a_bad_token_shows_the_sign_in_form(server, page):
    page.goto(f"{server}/#token=cl_0123456789ab.{'x' * 43}")
    page.wait_for_selector("#login:not([hidden])")
    assert "rejected" in page.text_content("#who").lower()
    assert page.text_content("#live-status") == "signed out"


def test_without_a_token_the_badge_says_signed_out(server, page):
    page.goto(f"{server}/")
    page.wait_for_selector("#login:not([hidden])")
    assert page.text_content("#live-status") == "signed out"
    assert "connecting" not in page.text_content("body")


def test_api_docs_render_offline_with_every_request_kept_on_this_machine(server, page, tmp_path):
    # Any request that would leave 127.0.0.1 (a CDN, Google Fonts) is refused and recorded.
    remote: list[str] = []

    def only_local(route):
        url = route.request.url
        if url.startswith(("http://127.0.0.1:", "data:", "blob:")):
            route.continue_()
        else:
            remote.append(url)
            route.abort()

    page.route("**/*", only_local)
    page.goto(f"{server}/docs")
    # Swagger UI puts zero-width spaces into the shown path; data-path holds it as is.
    page.wait_for_selector('.opblock-get .opblock-summary-path[data-path="/api/journal"]', timeout=20_000)
    assert page.locator(".opblock-get .opblock-summary-method").first.text_content() == "GET"
    page.screenshot(path=str(tmp_path / "docs.png"), full_page=True)
    assert remote == [], remote
    print(f"screenshot: {tmp_path / 'docs.png'}")
