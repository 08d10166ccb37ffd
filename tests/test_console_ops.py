"""The console's operations with real peers: alert rules evaluated over real nodes (a stuck
queue behind a dead next hop, a node that is down, an expiring certificate, a nearly full
disk) and delivered both by mail through a node's own queue to the capture server and by
webhook to a loopback HTTP server; a report whose numbers (JSON, HTML and the PDF read by
pdftotext) match the mail actually sent; a quarantine digest whose signed link, opened in
Debian's chromium (Playwright), releases the message, which is then delivered; used,
tampered and expired links refused. Screenshots of the new pages are kept under the tmp dir."""

import base64
import email
import email.policy
import hashlib
import hmac
import http.server
import json
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import make_message, send_mail, wait_until
from console_fixture import Federation, totp_now

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
OPS = "ops@example.com"


class Webhook:
    """A loopback HTTP server that records every JSON POST."""

    def __init__(self):
        self.posts: list[dict] = []
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                hook.posts.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()


@pytest.fixture(scope="module")
def hook():
    h = Webhook()
    yield h
    h.stop()


@pytest.fixture(scope="module")
def fed(tmp_path_factory, tls_cert, hook):
    base = tmp_path_factory.mktemp("console-ops")
    rules = [
        {"name": "backlog", "when": "queue_above", "limit": 0, "nodes": ["node1"]},
        {"name": "old-mail", "when": "oldest_older_than", "duration": "1s", "nodes": ["node1"]},
        {"name": "next-hop-down", "when": "destination_down", "duration": "0s"},
        {"name": "node-down", "when": "node_unreachable", "duration": "0s"},
        {"name": "cert-soon", "when": "certificate_expiring", "duration": "7d", "nodes": ["node2"]},
        {"name": "disk", "when": "disk_nearly_full", "limit": 0, "nodes": ["node2"]},
        {"name": "spool", "when": "spool_nearly_full", "limit": 100, "nodes": ["node2"]},
    ]
    console_extra = lambda port: {
        "public_url": f"https://127.0.0.1:{port}",
        "mail": {"node": "node1", "from": "console@example.com"},
        "alerts": {"interval": "1s", "mail_to": [OPS], "webhook": hook.url, "repeat": "1h", "rule": rules},
        "reports": {"mail_to": [OPS], "hour": 23, "daily": True, "weekly": False},
        "digest": {"hour": 23, "link_lifetime": "1h", "domains": ["example.net"]},
    }
    f = Federation(base, tls_cert,
                   routes=[{"domains": ["stuck.example"], "next_hops": ["127.0.0.1:9"], "tls": "none"}],
                   relay_domains=["stuck.example"],
                   node_extra={"delivery": {"retry_initial": "1h", "retry_max": "2h",
                                            "dead_destination_failures": 1}},
                   console_extra=console_extra)
    yield f
    f.stop()


@pytest.fixture(scope="module")
def admin(fed) -> str:
    return fed.token("admin", totp_now(fed.admin_totp))


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def browser(fed):
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install chromium)")
    api = pytest.importorskip("playwright.sync_api")
    with api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, timeout=30_000)
        yield b
        b.close()


def logged_in_page(fed, browser):
    context = browser.new_context(ignore_https_errors=True)
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(fed.url + "/login")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", "correct horse battery")
    page.fill("input[name=totp]", totp_now(fed.admin_totp))
    page.click("button")
    page.wait_for_selector("#total-accepted")
    return page


def messages_to(fed, address: str) -> list[email.message.EmailMessage]:
    """Every message the capture server got for `address`, parsed."""
    found = []
    for t in list(fed.hop.transactions):
        if any(address.encode() in r for r in t["rcpts"]):
            raw = t["data"][:-3].replace(b"\r\n..", b"\r\n.")
            found.append(email.message_from_bytes(raw, policy=email.policy.default))
    return found


def with_subject(fed, address: str, needle: str):
    return [m for m in messages_to(fed, address) if needle in str(m["Subject"])]


def test_alerts_fire_and_clear_by_mail_and_webhook(fed, hook, admin, browser, shots):
    send_mail(fed.nodes[0].port, "stuck@other.org", ["nobody@stuck.example"], make_message(subject="stuck"))
    fired = lambda rule, node: [p for p in hook.posts if p["alert"] == rule and p["node"] == node
                                and p["change"] == "fired"]
    for rule, node in [("backlog", "node1"), ("old-mail", "node1"), ("next-hop-down", "node1"),
                       ("node-down", "node3-down"), ("cert-soon", "node2"), ("disk", "node2")]:
        wait_until(lambda: fired(rule, node), 60, what=f"webhook for {rule} on {node}")
    assert not [p for p in hook.posts if p["alert"] == "spool"], "a 100 % limit cannot be passed"
    assert not [p for p in hook.posts if p["node"] == "node2" and p["alert"] == "backlog"], "node2 is not watched"
    assert "tls certificate" in fired("cert-soon", "node2")[0]["detail"]
    wait_until(lambda: with_subject(fed, OPS, "[Bulwark ALERT] backlog on node1"), 60, what="alert mail")
    mail = with_subject(fed, OPS, "[Bulwark ALERT] backlog on node1")[0]
    assert "messages queued (limit 0)" in mail.get_body(("plain",)).get_content()
    status, answer = fed.api(admin, "GET", "/api/v1/alerts")
    assert status == 200
    firing = {(f["rule"], f["node"]) for f in answer["firing"]}
    assert ("backlog", "node1") in firing and ("node-down", "node3-down") in firing
    backlog = [n for n in answer["history"] if n["rule"] == "backlog" and n["change"] == "fired"][0]
    assert re.fullmatch(r"[0-9A-F]{16}", backlog["mail"]["Ok"]), backlog
    assert backlog["webhook"] == {"Ok": 204}
    # The stuck message goes: the queue alerts clear, by webhook and by mail.
    stuck = [e["id"] for e in fed.nodes[0].queue_list() if "nobody@stuck.example" in e["recipients"]]
    assert fed.nodes[0].ctl("queue", "delete", *stuck).returncode == 0
    cleared = lambda: [p for p in hook.posts if p["alert"] == "backlog" and p["change"] == "cleared"]
    wait_until(cleared, 60, what="backlog cleared")
    wait_until(lambda: with_subject(fed, OPS, "[Bulwark CLEARED] backlog on node1"), 60, what="cleared mail")
    page = logged_in_page(fed, browser)
    page.goto(fed.url + "/alerts")
    assert "node3-down" in page.inner_text("#alerts-firing")
    assert "cleared" in page.inner_text("#alerts-history")
    page.screenshot(path=str(shots / "alerts.png"), full_page=True)


def pdf_text(data: bytes, tmp: Path) -> str:
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext is not installed (apt-get install poppler-utils)")
    path = tmp / "report.pdf"
    path.write_bytes(data)
    cp = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, timeout=30)
    assert cp.returncode == 0, cp.stderr
    return cp.stdout


def node_section(text: str, node: str) -> dict[str, int]:
    """The volume rows under "Node NAME" in pdftotext's layout output."""
    section = text.split(f"Node {node}", 1)[1].split("Node ", 1)[0].split("Top senders", 1)[0]
    return {m.group(1).strip(): int(m.group(2)) for m in re.finditer(r"^\s*([A-Z][a-z][a-z ]+?)\s{2,}(\d+)\s*$", section, re.M)}


def test_a_report_counts_the_mail_sent(fed, admin, browser, shots, tmp_path):
    node2 = fed.nodes[1]
    delivered_before = len(fed.hop.transactions)
    for sender, rcpts, subject in [("rep1@other.org", ["alice@example.com"], "report one"),
                                   ("rep1@other.org", ["alice@example.com", "carol@example.net"], "report two"),
                                   ("rep2@other.org", ["dave@example.com"], "invoice 7")]:
        assert send_mail(node2.port, sender, rcpts, make_message(subject=subject))[0] == 250
    fed.hop.wait_for(delivered_before + 2)
    wait_until(lambda: not node2.queue_list(), 30, what="node2's queue empty")
    status, report = fed.api(admin, "GET", "/api/v1/reports?period=daily")
    assert status == 200
    nodes = dict((name, summary) for name, summary in report["nodes"])
    mine = nodes["node2"]
    assert (mine["received"], mine["delivered"], mine["quarantined"]) == (3, 3, 1), mine
    senders = {c["key"]: c["count"] for c in mine["top_senders"]}
    assert senders == {"rep1@other.org": 2, "rep2@other.org": 1}
    destinations = {c["key"]: c["count"] for c in mine["top_destinations"]}
    assert destinations == {"example.com": 2, "example.net": 1}
    assert report["total"]["received"] == sum(s["received"] for s in nodes.values())
    assert [m[0] for m in report["missing"]] == ["node3-down"]
    status, _, pdf = fed.request("GET", "/api/v1/reports?period=daily&format=pdf",
                                 headers={"Authorization": f"Bearer {admin}"})
    assert status == 200 and pdf.startswith(b"%PDF-")
    rows = node_section(pdf_text(pdf, tmp_path), "node2")
    assert rows["Messages received"] == 3 and rows["Recipients delivered"] == 3, rows
    assert rows["Messages quarantined"] == 1, rows
    # Mailed now: the mail carries the same PDF numbers.
    status, answer = fed.api(admin, "POST", "/api/v1/reports/mail?period=daily")
    assert status == 200, answer
    wait_until(lambda: with_subject(fed, OPS, "Daily report"), 60, what="report mail")
    mail = with_subject(fed, OPS, "Daily report")[0]
    attachment = next(mail.iter_attachments())
    assert attachment.get_content_type() == "application/pdf"
    mailed = node_section(pdf_text(attachment.get_content(), tmp_path), "node2")
    assert mailed["Messages received"] == 3, mailed
    page = logged_in_page(fed, browser)
    # The mailed report (and any alert mail) is itself received by a node: the total moves
    # on, so the page must show a figure between the API's just before and just after it.
    before = fed.api(admin, "GET", "/api/v1/reports?period=daily")[1]["total"]["received"]
    page.goto(fed.url + "/reports?period=daily")
    shown = int(page.inner_text("#report-received"))
    after = fed.api(admin, "GET", "/api/v1/reports?period=daily")[1]["total"]["received"]
    assert report["total"]["received"] <= before <= shown <= after, (report["total"], before, shown, after)
    page.screenshot(path=str(shots / "report.png"), full_page=True)


def release_link(fed, recipient: str, subject: str) -> str:
    status, sent = fed.api(fed_admin_token(fed), "POST", "/api/v1/digests/send")
    assert status == 200, sent
    mine = [s for s in sent if s["recipient"] == recipient]
    assert mine and "Ok" in mine[0]["outcome"], sent
    wait_until(lambda: with_subject(fed, recipient, "quarantined message"), 60, what="digest mail")
    digest = with_subject(fed, recipient, "quarantined message")[-1]
    text = digest.get_body(("plain",)).get_content()
    block = text.split(f"Subject: {subject}", 1)[1]
    return re.search(r"Release: (\S+)", block).group(1)


_tokens: dict = {}


def fed_admin_token(fed) -> str:
    if "admin" not in _tokens:
        _tokens["admin"] = fed.token("admin", totp_now(fed.admin_totp))
    return _tokens["admin"]


def test_a_digest_link_releases_once_in_chromium(fed, browser, shots):
    node2 = fed.nodes[1]
    assert send_mail(node2.port, "bill@other.org", ["bob@example.net"], make_message(subject="invoice 42"))[0] == 250
    link = release_link(fed, "bob@example.net", "invoice 42")
    assert link.startswith(fed.url + "/digest/release?t=")
    assert not with_subject(fed, "bob@example.net", "invoice 42"), "held until released"
    context = browser.new_context(ignore_https_errors=True)
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(link)
    assert "bill@other.org" in page.inner_text("#held")
    page.screenshot(path=str(shots / "digest-release.png"), full_page=True)
    page.click("#release")
    page.wait_for_selector("#verdict")
    assert "Released to bob@example.net" in page.inner_text("#verdict")
    page.screenshot(path=str(shots / "digest-released.png"), full_page=True)
    wait_until(lambda: with_subject(fed, "bob@example.net", "invoice 42"), 60, what="released message delivered")
    # The same link again: refused, and nothing is delivered twice.
    response = page.goto(link)
    assert response.status == 410 and "already been used" in page.inner_text("#verdict")
    status, _, body = fed.request("POST", "/digest/release", form={"t": link.split("t=", 1)[1]})
    assert status == 410, body
    time.sleep(1)
    assert len(with_subject(fed, "bob@example.net", "invoice 42")) == 1


def sign(key: bytes, grant: dict) -> str:
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    payload = b64(json.dumps(grant, separators=(",", ":")).encode())
    return payload + "." + b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())


def test_tampered_and_expired_links_are_refused(fed, browser, shots):
    node2 = fed.nodes[1]
    assert send_mail(node2.port, "bill@other.org", ["erin@example.net"], make_message(subject="invoice 43"))[0] == 250
    link = release_link(fed, "erin@example.net", "invoice 43")
    token = link.split("t=", 1)[1]
    payload, signature = token.split(".")
    grant = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert grant["r"] == "erin@example.net"
    # Another recipient in the payload, the old signature: refused.
    forged = dict(grant, r="mallory@example.net")
    tampered = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode() + "." + signature
    for bad in [tampered, token[:-2], "nonsense"]:
        status, _, body = fed.request("POST", "/digest/release", form={"t": bad})
        assert status == 403 and b"not valid" in body, (status, body)
    # Signed with the console's own key but past its expiry: refused as expired.
    key = (Path(str(fed.users_file) + ".state") / "digest.key").read_bytes()
    expired = sign(key, dict(grant, e=int(time.time()) - 1))
    page = browser.new_context(ignore_https_errors=True).new_page()
    response = page.goto(fed.url + "/digest/release?t=" + expired)
    assert response.status == 410 and "expired" in page.inner_text("#verdict")
    page.screenshot(path=str(shots / "digest-expired.png"), full_page=True)
    status, _, _ = fed.request("POST", "/digest/release", form={"t": expired})
    assert status == 410
    time.sleep(1)
    assert not with_subject(fed, "erin@example.net", "invoice 43"), "nothing was released"
    assert not with_subject(fed, "mallory@example.net", "invoice 43")
