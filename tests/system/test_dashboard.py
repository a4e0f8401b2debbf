"""The dashboard (`GET /`) in a real headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright): the challenge's 2021 metrics as charts and tables, the latest uploads going live while a
real consumer loads them, nothing fetched from outside the service, a screenshot kept."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from playwright.async_api import Browser, Page, async_playwright

from tests.system.consumers import ConsumerProcess
from tests.system.stack import Stack

if TYPE_CHECKING:
    from tests.system.query_fixtures import Client, ClientFactory

pytest_plugins = ("tests.system.query_fixtures",)

DATA = Path(__file__).resolve().parents[1] / "data"
CHROMIUM = os.environ.get("HIRING_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("HIRING_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / ".artifacts"))
ARGS = [
    "--headless",
    "--no-sandbox",  # as root
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)"
    async with async_playwright() as pw:
        # launch() gives every run a fresh temporary profile (its own --user-data-dir)
        launched = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def _open(browser: Browser, url: str) -> tuple[Page, list[str], list[str]]:
    page = await browser.new_page(viewport={"width": 1280, "height": 1800})
    requested: list[str] = []
    problems: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    await page.goto(url)
    return page, requested, problems


async def _table(page: Page, selector: str) -> list[list[str]]:
    rows: list[list[str]] = await page.eval_on_selector_all(
        f"{selector} tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent.trim()))"
    )
    return rows


async def _upload(client: Client, name: str) -> None:
    form = aiohttp.FormData()
    form.add_field("file", (DATA / "globant" / name).read_bytes(), filename=name, content_type="text/csv")
    assert (await client.post("/upload", data=form)).status == 202


async def test_dashboard_renders_the_challenges_2021_metrics_live(
    client: Client, fresh: Stack, browser: Browser, tmp_path: Path
) -> None:
    base = str(client.make_url("/"))
    page, requested, problems = await _open(browser, base)
    await page.wait_for_selector("body[data-metrics-year='2021']")
    assert await _table(page, "#departments-table") == []  # nothing loaded yet
    assert await _table(page, "#uploads-table") == []

    with ConsumerProcess(fresh.env, tmp_path / "consumer.log"):
        for name in ("departments.csv", "jobs.csv", "hired_employees.csv"):
            await _upload(client, name)
        # no reload: the page polls, and shows every upload loaded with its counts and reasons
        await page.wait_for_function(
            "() => [...document.querySelectorAll('#uploads-table tbody tr')]"
            ".filter(r => r.cells[4].innerText === 'loaded').length === 3",
            timeout=120_000,
        )
    expected = json.loads((DATA / "globant-2021.json").read_text(encoding="utf-8"))
    await page.wait_for_function(
        f"() => document.querySelectorAll('#hires-table tbody tr').length === {len(expected['hires'])}",
        timeout=30_000,
    )
    departments = await _table(page, "#departments-table")
    assert departments == [[str(d["id"]), d["department"], str(d["hired"])] for d in expected["departments"]]
    hires = await _table(page, "#hires-table")
    assert hires == [
        [h["department"], h["job"], *(str(h[q]) for q in ("Q1", "Q2", "Q3", "Q4"))] for h in expected["hires"]
    ]
    uploads = {r[2]: r for r in await _table(page, "#uploads-table")}
    assert set(uploads) == {"departments", "jobs", "hired_employees"}
    employees = uploads["hired_employees"]
    assert employees[4:7] == ["loaded", "1,929", "70"]
    assert "is empty" in employees[7]  # the reject reasons, counted
    # both charts drew, from the vendored Chart.js, with the data of the tables
    drawn: dict[str, Any] = await page.evaluate(
        """() => ({
            hires: Chart.getChart('hires-chart').data.datasets.map(d => d.data.reduce((a, b) => a + b, 0)),
            departments: Chart.getChart('departments-chart').data.datasets[0].data,
            width: document.getElementById('hires-chart').width,
        })"""
    )
    quarters = [sum(h[q] for h in expected["hires"]) for q in ("Q1", "Q2", "Q3", "Q4")]
    assert drawn["hires"] == quarters
    assert drawn["departments"] == [d["hired"] for d in expected["departments"]]
    assert drawn["width"] > 300
    # everything came from the service itself: works offline, no CDN
    assert requested and all(url.startswith(base) for url in requested), requested
    assert problems == []

    os.makedirs(ARTIFACTS, exist_ok=True)
    shot = ARTIFACTS / "dashboard-2021.png"
    png = await page.screenshot(path=str(shot), full_page=True)
    print(f"\ndashboard screenshot: {shot}")
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


async def test_dashboard_is_open_with_api_keys_and_asks_for_one(
    make_client: ClientFactory, browser: Browser
) -> None:
    client = await make_client(api_keys="dashb0ard-key:read")
    for path in ("/", "/static/dashboard.js", "/static/chart.umd.min.js", "/static/chart.js-LICENSE.md"):
        resp = await client.get(path)
        assert resp.status == 200, path
    resp = await client.get("/static/..%2Fapp.py")  # only the listed files, never a path
    assert resp.status == 404
    assert (await client.get("/static/nope.js")).status == 404
    assert (await client.get("/uploads")).status == 401  # the data still needs a key

    page, _, _ = await _open(browser, str(client.make_url("/")))
    await page.wait_for_selector("#key-label:not([hidden])")
    assert "needs a key" in await page.inner_text("#error")
    await page.fill("#api-key", "dashb0ard-key")
    await page.fill("#year", "2022")
    await page.click("button[type=submit]")
    await page.wait_for_selector("body[data-metrics-year='2022']")
    assert await page.is_hidden("#error")
    assert "year=2022" in page.url
