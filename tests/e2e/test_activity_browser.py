"""The Activity charts in headless Chromium: the page at ``/`` (the monitor's browser fixtures: a real uvicorn on
the test database) and the file ``cmdlog journal report --html`` writes, opened with every network request refused.
The charts are read back from the uPlot instances the page exposes (``window.cmdlogCharts``) and from the canvas
pixels; a screenshot of each lands in the test's tmp_path."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import pytest
from activity_data import expected, hour_floor, plan, write
from test_monitor_browser import browser, page, server  # noqa: F401 — the monitor's fixtures, reused

from commandlog.auth.tokens import create_token

HOURS = 5
ACTORS = ["ann", "ben", "cat"]
READ_CHARTS = """() => Object.fromEntries(Object.entries(window.cmdlogCharts).map(([name, u]) => [name, {
    series: u.series.slice(1).map(s => s.label), data: u.data.map(a => Array.from(a))}]))"""
INKED = """(sel) => { const c = document.querySelector(sel + ' canvas'); const g = c.getContext('2d');
    const px = g.getImageData(0, 0, c.width, c.height).data; let n = 0;
    for (let i = 3; i < px.length; i += 4) if (px[i] !== 0) n++; return n; }"""


@pytest.fixture
def activity(bus, tenant):
    """Rows of ``tenant`` over ``HOURS`` hours five days ago (hour 2 empty): ``(base, rows)``."""
    base = hour_floor(dt.datetime.now(dt.UTC)) - dt.timedelta(days=5)
    rows = plan(tenant, base, hours=HOURS, n=90, seed=11, actors=ACTORS, skip_hours=(2,))
    write(bus, rows)
    return base, rows


def _check_charts(charts: dict, want: dict) -> None:
    """The uPlot instances hold exactly the expected series and points."""
    assert set(charts) == {"commands", "failure", "p95", "actors"}
    assert charts["commands"]["series"] == want["classes"]
    assert charts["commands"]["data"][1:] == [want["commands"][k] for k in want["classes"]]
    assert all(len(a) == HOURS for a in charts["commands"]["data"])
    failure = charts["failure"]["data"][1]
    assert len(failure) == HOURS and failure[2] is None
    assert failure == [None if r is None else pytest.approx(100 * r, abs=1e-3) for r in want["failure_rate"]]
    assert charts["p95"]["series"] == want["classes"]
    for k, got in zip(want["classes"], charts["p95"]["data"][1:], strict=True):
        assert got == [None if v is None else pytest.approx(v, abs=0.002) for v in want["p95_ms"][k]]
    assert charts["actors"]["series"] == ["commands", "failed"]
    assert charts["actors"]["data"][1] == [a["commands"] for a in want["top_actors"]]
    assert charts["actors"]["data"][2] == [a["failed"] for a in want["top_actors"]]


def _check_drawn(page, want: dict) -> None:  # noqa: F811 — any page, not the fixture
    """The containers' data attributes and the canvases: something was painted in each."""
    points = {"commands": HOURS, "failure": HOURS, "p95": HOURS, "actors": len(want["top_actors"])}
    series = {"commands": len(want["classes"]), "failure": 1, "p95": len(want["classes"]), "actors": 2}
    for name in points:
        box = f"#chart-{name}"
        assert page.get_attribute(box, "data-points") == str(points[name]), name
        assert page.get_attribute(box, "data-series") == str(series[name]), name
        assert page.evaluate(INKED, box) > 500, f"{name}: the canvas is blank"


def test_the_activity_view_draws_the_tenants_rows(server, page, db, activity, tenant, tmp_path):  # noqa: F811
    base, rows = activity
    outside = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(server) else None)
    page.goto(f"{server}/#token={create_token(db, tenant=tenant, role='viewer')}")
    page.wait_for_function(f"document.querySelector('#who').textContent.includes('{tenant}')")  # signed in
    tab = page.locator("#tab-activity")
    box = tab.bounding_box()
    page.evaluate("document.querySelector('#who').textContent = 'a much longer text than the tenant line'")
    assert tab.bounding_box() == box, "the tabs moved when the header's text changed: a click could miss them"
    tab.click()
    page.wait_for_selector("#activity", state="visible", timeout=5000)
    assert page.is_hidden("#journal")
    page.select_option("#af-range", "custom")
    page.fill("#af-since", base.strftime("%Y-%m-%dT%H:%M"))
    page.fill("#af-until", (base + dt.timedelta(hours=HOURS)).strftime("%Y-%m-%dT%H:%M"))
    page.select_option("#af-bucket", "hour")
    page.click("#activity-form button[type=submit]")
    page.wait_for_function(f"document.querySelector('#chart-commands')?.dataset.points === '{HOURS}'")
    want = expected(rows, base, HOURS)
    _check_charts(page.evaluate(READ_CHARTS), want)
    _check_drawn(page, want)
    assert page.locator("#class-totals tbody tr").count() == len(want["classes"])
    assert f"{len(rows)} commands" in page.text_content("#activity-summary")
    page.screenshot(path=str(tmp_path / "activity.png"), full_page=True)
    print(f"screenshot: {tmp_path / 'activity.png'}")
    assert outside == [], "the page asked for something outside the app (a CDN?)"

    page.fill("#af-since", (base + dt.timedelta(hours=HOURS)).strftime("%Y-%m-%dT%H:%M"))
    page.click("#activity-form button[type=submit]")  # since == until: the server's message names the field
    page.wait_for_function("document.querySelector('#activity-status').textContent.startsWith('until:')")


def test_report_html_renders_offline_with_the_same_charts(browser, pg_url, activity, tenant, tmp_path):  # noqa: F811
    base, rows = activity
    out = tmp_path / "activity.html"
    env = {**os.environ, "CMDLOG_DATABASE_URL": pg_url, "CMDLOG_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-m", "commandlog.cli", "journal", "report", "--tenant", tenant,
                           "--since", base.isoformat(), "--until", (base + dt.timedelta(hours=HOURS)).isoformat(),
                           "--html", str(out)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"wrote {out}: {len(rows)} commands" in done.stdout.replace("\n", "")
    text = out.read_text()
    assert "<script src" not in text and "<link" not in text and "http://" not in text.split("</style>")[0]

    context = browser.new_context(viewport={"width": 1300, "height": 900}, offline=True)
    refused = []

    def refuse(route):
        if not route.request.url.startswith("file://"):
            refused.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    context.route("**/*", refuse)
    page = context.new_page()  # noqa: F811 — a page of the offline context, not the fixture
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(out.as_uri())
        page.wait_for_function(f"document.querySelector('#chart-commands')?.dataset.points === '{HOURS}'")
        want = expected(rows, base, HOURS)
        _check_charts(page.evaluate(READ_CHARTS), want)
        _check_drawn(page, want)
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        print(f"screenshot: {tmp_path / 'report.png'}")
    finally:
        context.close()
    assert errors == [] and refused == []
