"""The console in a real browser: Debian's chromium driven by Playwright (no browser
download). Log in with TOTP, the dashboard changing after mail is sent, tracking, releasing a
quarantined message and seeing it delivered, a configuration edit with an error (line:column
shown) and then a correct one (reloaded), block/unblock, two nodes up and one down. Every page
is saved as a screenshot under the test's tmp dir."""

import re
import time
from pathlib import Path

import pytest

from conftest import make_message, queue_id_of, send_mail
from console_fixture import PASSWORD, Federation, totp_now

playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def fed(tmp_path_factory, tls_cert):
    f = Federation(tmp_path_factory.mktemp("console-browser"), tls_cert)
    yield f
    f.stop()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def page(fed):
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, timeout=30_000)
        context = browser.new_context(ignore_https_errors=True)
        page = context.new_page()
        page.set_default_timeout(20_000)
        yield page
        browser.close()


def shot(page, shots: Path, name: str) -> None:
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)


def test_login_with_totp(fed, page, shots):
    page.goto(fed.url + "/login")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", PASSWORD)
    page.click("button")
    assert "TOTP" in page.content(), "an admin without a code must be refused"
    shot(page, shots, "login-refused")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", PASSWORD)
    page.fill("input[name=totp]", totp_now(fed.admin_totp))
    page.click("button")
    page.wait_for_selector("#total-accepted")
    shot(page, shots, "dashboard")


def test_dashboard_changes_after_mail(fed, page, shots):
    page.goto(fed.url + "/")
    before = int(page.inner_text("#total-accepted"))
    send_mail(fed.nodes[0].port, "s@other.org", ["alice@example.com"], make_message(subject="dash"))
    page.goto(fed.url + "/")
    assert int(page.inner_text("#total-accepted")) == before + 1
    time.sleep(2.5)  # two samples for the charts
    page.goto(fed.url + "/?range=hour")
    assert page.locator("svg polyline").count() == 3
    shot(page, shots, "dashboard-after-mail")


def test_tracking_finds_the_message(fed, page, shots):
    qid = queue_id_of(send_mail(fed.nodes[1].port, "track@other.org", ["alice@example.com"], make_message(subject="tracked")))
    page.goto(fed.url + "/track")
    page.fill("input[name=id]", qid)
    page.click("text=Search all nodes")
    page.wait_for_selector("#timeline")
    assert qid.lower() in page.inner_text("#timeline").lower()
    assert "node3-down did not answer" in page.content()
    shot(page, shots, "tracking")


def test_release_a_quarantined_message_and_see_it_delivered(fed, page, shots):
    qid = queue_id_of(send_mail(fed.nodes[0].port, "s@other.org", ["alice@example.com"],
                                make_message(subject="invoice 42", message_id="<release-42@test>")))
    page.goto(fed.url + "/quarantine")
    assert qid in page.content()
    shot(page, shots, "quarantine")
    page.click(f"a[href='/quarantine/node1/{qid}']")
    page.wait_for_selector("#preview")
    shot(page, shots, "quarantine-preview")
    page.click("button[value=release]")
    page.wait_for_selector("text=released")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any(b"release-42@test" in t["data"] for t in fed.hop.transactions):
        time.sleep(0.2)
    assert any(b"release-42@test" in t["data"] for t in fed.hop.transactions), "not delivered"
    shot(page, shots, "quarantine-released")


def test_config_edit_with_an_error_then_correctly(fed, page, shots):
    page.goto(fed.url + "/config?node=node2")
    original = page.input_value("#config-text")
    broken = original + "\n[limits]\nmax_recipients = \"many\"\n"
    page.fill("#config-text", broken)
    page.click("button[value=validate]")
    problems = page.inner_text("#problems")
    assert re.search(r"line \d+, column \d+", problems), problems
    shot(page, shots, "config-error")
    fixed = original.replace('hostname = "mx.test"', 'hostname = "edited.test"')
    page.fill("#config-text", fixed)
    page.click("button[value=validate]")
    # One outcome row per target node, and one diff per target.
    assert "valid" in page.inner_text("#outcomes") and "edited.test" in page.inner_text("#diff-node2")
    shot(page, shots, "config-diff")
    page.click("button[value=apply]")
    assert "applied and reloaded" in page.inner_text("#outcomes")
    shot(page, shots, "config-applied")
    status = fed.nodes[1].ctl("status", "--json").stdout
    assert '"edited.test"' in status


def test_block_and_unblock_a_source(fed, page, shots):
    page.goto(fed.url + "/flow")
    form = page.locator("form", has=page.locator("button", has_text="block on node1"))
    form.locator("input[name=target]").fill("198.51.100.7")
    form.locator("button").click()
    page.wait_for_selector("text=done")
    assert "198.51.100.7" in fed.nodes[0].ctl("flow", "list", "--json").stdout
    page.goto(fed.url + "/flow")
    assert "198.51.100.7" in page.inner_text("#blocked")
    shot(page, shots, "flow-blocked")
    page.locator("#blocked button[value=unblock]").first.click()
    page.wait_for_selector("text=done")
    assert "198.51.100.7" not in fed.nodes[0].ctl("flow", "list", "--json").stdout
    shot(page, shots, "flow-unblocked")


def test_two_nodes_up_and_one_down(fed, page, shots):
    page.goto(fed.url + "/nodes")
    rows = page.locator("#nodes tr")
    text = page.inner_text("#nodes")
    assert rows.count() == 4 and text.count("up") >= 2 and "DOWN" in text
    shot(page, shots, "nodes")
    for name in ("queue", "audit"):
        page.goto(f"{fed.url}/{name}")
        shot(page, shots, name)
    print(f"screenshots in {shots}")
