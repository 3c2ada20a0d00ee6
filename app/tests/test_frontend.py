"""The front page in headless Chromium (Debian's package, driven by Playwright), served with
the APIs on one origin by a real HAProxy using the development config
(app/dev/haproxy/haproxy.cfg, the same file compose uses)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from .conftest import free_port

pytestmark = pytest.mark.browser

HAPROXY_CFG = Path(__file__).resolve().parents[1] / "dev" / "haproxy" / "haproxy.cfg"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def _addr(url: str) -> str:
    return url.removeprefix("http://")


@pytest.fixture(scope="module")
def origin(live, tmp_path_factory):
    if not shutil.which("haproxy"):
        pytest.fail("haproxy is not installed: run app/scripts/test-setup.sh")
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/bin"),
        "HAPROXY_BIND": "127.0.0.1",
        "HAPROXY_PUBLIC_PORT": str(port),
        "HAPROXY_INTERNAL_PORT_WEB": str(free_port()),
        "HAPROXY_INTERNAL_PORT_REGISTRY": str(free_port()),
        "HAPROXY_INTERNAL_PORT_REDEEM": str(free_port()),
        "HAPROXY_INTERNAL_PORT_VENDOR": str(free_port()),
        "WEB_ADDR": _addr(live["web"].url),
        "REGISTRY_ADDR": _addr(live["registry"].url),
        "REDEEM_ADDR": _addr(live["redeem"].url),
        "VENDOR_ADDR": _addr(live["vendor"].url),
    }
    log_path = tmp_path_factory.mktemp("haproxy") / "haproxy.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            ["haproxy", "-db", "-f", str(HAPROXY_CFG)],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                if requests.get(url + "/api/v1/rewards", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"haproxy did not come up:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_haproxy_routes_one_origin_and_hides_internal(origin, api):
    handle, project = api.member()
    assert requests.get(f"{origin}/api/v1/users/{handle}", timeout=5).status_code == 200
    assert requests.get(f"{origin}/api/v1/balances/{handle}", timeout=5).json()["balance"] == 0
    assert requests.get(f"{origin}/", timeout=5).headers["Content-Type"].startswith("text/html")
    hidden = requests.post(f"{origin}/internal/v1/debits", json={}, timeout=5)
    assert hidden.status_code == 403
    # The code host's deliveries reach web, which refuses an unsigned one.
    hook = requests.post(f"{origin}/api/v1/webhooks/github/{project}", json={}, timeout=5)
    assert hook.status_code == 401
    assert hook.json()["error"]["code"] == "invalid_signature"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run app/scripts/test-setup.sh")
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as pw:
        # A fresh profile directory per run (Playwright passes it as --user-data-dir).
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            yield context
        finally:
            context.close()


def test_sign_in_look_up_a_balance_and_redeem_through_the_page(origin, browser, api, tmp_path):
    # A user as a client makes one: the API answers the token once.
    handle, project = api.member()
    token = api.tokens[handle]
    other = api.user()
    api.earn(handle, project, 50)
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(origin + "/")
        page.wait_for_selector(f"#leaderboard td:text-is('{handle}')", timeout=10_000)
        page.wait_for_selector("#redeem-sku option[value='coffee']", state="attached")

        page.fill("#balance-handle", handle)
        page.click("#balance-form button")
        page.wait_for_selector("#balance-result.ok")
        assert page.text_content("#balance-result") == f"{handle} has 50 points."

        page.fill("#balance-handle", "nobody-" + handle[-8:])
        page.click("#balance-form button")
        page.wait_for_selector("#balance-result.error")
        assert "No user named" in page.text_content("#balance-result")

        # Signed out, the page offers no redemption.
        assert page.is_disabled("#redeem-form button")

        # Someone else's valid token, then an unknown one: refused, nothing stored.
        page.fill("#signin-handle", handle)
        page.fill("#signin-token", api.tokens[other])
        page.click("#signin-form button")
        page.wait_for_selector("#signin-result.error")
        assert page.text_content("#signin-result") == f"That token is not {handle}'s."
        page.fill("#signin-token", "spu_" + "A" * 43)
        page.click("#signin-form button")
        page.wait_for_function(
            "document.querySelector('#signin-result').textContent === 'That token is not valid.'"
        )
        assert page.evaluate("sessionStorage.length") == 0

        page.fill("#signin-token", token)
        page.click("#signin-form button")
        page.wait_for_selector("#signed-in:not([hidden])")
        assert page.text_content("#signed-in-handle") == handle
        assert page.is_hidden("#signin-form")
        stored = page.evaluate("JSON.parse(sessionStorage.getItem('sprintpoints.session'))")
        assert stored == {"handle": handle, "token": token}
        assert page.evaluate("document.cookie") == ""
        assert browser.cookies() == []
        assert page.input_value("#signin-token") == ""

        page.select_option("#redeem-sku", "coffee")
        page.fill("#redeem-quantity", "2")
        page.click("#redeem-form button")
        page.wait_for_selector("#redeem-result.ok")
        assert "New balance: 10." in page.text_content("#redeem-result")
        assert api.balance(handle) == 10

        page.select_option("#redeem-sku", "dogecoin")
        page.fill("#redeem-quantity", "1")
        page.click("#redeem-form button")
        page.wait_for_selector("#redeem-result.error")
        assert page.text_content("#redeem-result") == "Not enough points for that."
        assert api.balance(handle) == 10
        page.screenshot(path=str(tmp_path / "front-page.png"), full_page=True)

        page.click("#signout")
        page.wait_for_selector("#signin-form:not([hidden])")
        assert page.evaluate("sessionStorage.length") == 0
        assert page.is_disabled("#redeem-form button")
        assert errors == []
    finally:
        page.close()


def test_a_replaced_token_signs_the_page_out(origin, browser, api):
    handle, project = api.member()
    api.earn(handle, project, 25)
    page = browser.new_page()
    try:
        page.goto(origin + "/")
        page.wait_for_selector("#redeem-sku option[value='coffee']", state="attached")
        page.fill("#signin-handle", handle)
        page.fill("#signin-token", api.tokens[handle])
        page.click("#signin-form button")
        page.wait_for_selector("#signed-in:not([hidden])")
        # The token is replaced elsewhere (another device rotated it).
        rotated = api.post(
            "registry", f"/api/v1/users/{handle}/token", None, headers=api.as_user(handle)
        )
        api.tokens[handle] = rotated.json()["token"]
        page.click("#redeem-form button")
        page.wait_for_selector("#signin-form:not([hidden])")
        assert "sign in again" in page.text_content("#signin-result")
        assert page.evaluate("sessionStorage.length") == 0
        assert api.balance(handle) == 25
    finally:
        page.close()
