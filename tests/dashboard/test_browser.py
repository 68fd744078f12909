"""The real dashboard in headless Chromium: sign in, visit every page, see its figures, save a screenshot.

Needs Debian's ``chromium`` (``apt-get install -y chromium``) and the Python ``playwright`` package driving
it through ``executable_path`` (never ``playwright install``). Skips locally without Chromium; fails
under CI=true.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CI, ROOT, free_port
from tests.dashboard.conftest import SeededDb

CHROMIUM = os.environ.get("MIDWATCH_TEST_CHROMIUM", "/usr/bin/chromium")
SHOTS = ROOT / "tests" / "artifacts" / "screenshots"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"]


def _pages() -> list[tuple[str, str, list[str]]]:
    """(sidebar link, file name, texts the page must show), figures computed from the read models."""
    from dashboard.ui import money, pct
    from tenants.kit.db import read_only
    from tenants.reliability.agent_reliability import reliability
    from tenants.reliability.escalations import escalations
    from tenants.reliability.overview import overview
    from tenants.reliability.security_posture import security_posture
    from tenants.reliability.tenants_budgets import tenants_and_budgets

    with read_only() as s:
        o = overview(s)
        agents = reliability(s, days=7)
        esc = escalations(s)
        tb = tenants_and_budgets(s)
        postures = security_posture(s).tenants
    return [
        ("Overview", "overview", ["Success 7 d", pct(o.last_7d.success_rate), "Runs per hour (24 h)",
                                  "Latest failures", "Budget burn per tenant", "Pending approvals",
                                  "facts (money 80%)", "Queues: tenants with work waiting",
                                  f"{sum(1 for q in o.queues if q.overdue)} tenant(s) have a run waiting longer than",
                                  "decision log up to"]),
        ("Approvals & escalations", "approvals", ["Escalated runs", str(len(esc.escalated)), "Approval queue",
                                                  str(esc.pending_total), "Next expiry", "Escalated items"]),
        ("Reliability", "reliability", ["Measured end-to-end", "Per-step success", "Slowest steps",
                                        str(len(agents)), pct(agents[0].measured)]),
        ("Runs", "runs", ["100 newest matching run(s)", "Decision log"]),
        ("Security posture", "security", ["Lowest score", str(min(p.score for p in postures)),
                                          "Scope breadth per agent", "Operator keys", "Secrets: age and rotation",
                                          "Audit chain", "Blocked scope / egress attempts"]),
        ("Tenants & budgets", "tenants", ["Spend 7 d", money(sum(t.runs_7d.cost_usd for t in tb.tenants)),
                                          "Budgets: limits, use", "Open reservations",
                                          "Threshold events (50 / 80 / 100 %)", "time-to-start p50 / p95"]),
    ]


@pytest.fixture
def dashboard_url(seeded_db: SeededDb) -> Iterator[str]:
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        if CI:
            pytest.fail(f"Chromium not found at {CHROMIUM} (CI=true requires it: apt-get install -y chromium)")
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MIDWATCH_")}, **seeded_db.env}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "dashboard" / "app.py"), "--server.address",
         "127.0.0.1", "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats",
         "false"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail(f"dashboard did not start: {proc.communicate()[0].decode()[-2000:]}")
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=15)


def _settle(page) -> None:
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=60_000)
    page.wait_for_function("!document.querySelector(\"[data-testid='stAppSkeleton']\")", timeout=60_000)
    page.wait_for_timeout(1200)  # let Vega charts and data grids paint


def _screenshot_whole_page(page, path: Path) -> None:
    """Streamlit scrolls inside its main section, so a full-page screenshot would stop at the viewport:
    grow the viewport to the content's height for the shot, then restore it."""
    height = page.evaluate("document.querySelector(\"[data-testid='stMain']\")?.scrollHeight || 0")
    page.set_viewport_size({"width": 1500, "height": max(1100, min(int(height) + 40, 6000))})
    page.wait_for_timeout(800)  # data grids re-render for the new size
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size({"width": 1500, "height": 1100})


def test_operator_signs_in_and_every_page_shows_its_figures(dashboard_url: str, seeded_db: SeededDb) -> None:
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        page.goto(dashboard_url)
        _settle(page)
        assert page.get_by_text("Operator sign-in").is_visible()
        page.screenshot(path=str(SHOTS / "0-sign-in.png"))
        page.get_by_label("Operator API key").fill(seeded_db.operator_key)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_selector("text=Runs per hour (24 h)", timeout=60_000)
        for index, (link, _path, texts) in enumerate(_pages(), start=1):
            page.get_by_test_id("stSidebarNav").get_by_text(link, exact=True).click()
            page.wait_for_selector(f"h1:has-text('{link}')", timeout=60_000)
            _settle(page)
            body = page.inner_text("body")
            for text in texts:
                assert text in body, f"{link}: {text!r} not shown"
            _screenshot_whole_page(page, SHOTS / f"{index}-{_path}.png")
        browser.close()
