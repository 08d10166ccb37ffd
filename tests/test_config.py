"""The configuration file: --check-config, error locations, relative paths, built-in default."""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (BULWARKCTL, BULWARKD, Daemon, RawSession, expect, require_binaries, run,
                      tcp_accepts, unix_accepts)


def check_config(path: Path) -> subprocess.CompletedProcess:
    require_binaries()
    return run([BULWARKD, "--check-config", "--config", path], timeout=20)


def test_check_config_valid(tmp_path, tls_cert):
    listfile = tmp_path / "list.txt"
    listfile.write_text("alice@example.com\n")
    d = Daemon(tmp_path, "valid", tls_cert=tls_cert, tls=True, users={"alice": "pw"},
               listeners=[{"role": "mx"}, {"role": "submission"}, {"role": "submissions"}],
               recipients=[{"domains": ["example.com"], "check": "list", "file": str(listfile)}],
               limits={"max_message_size": 1000000, "command_timeout": "5m", "data_timeout": 180})
    cp = check_config(d.config_path)
    assert cp.returncode == 0, f"valid config refused:\n{d.config_path.read_text()}\n{cp.stdout}{cp.stderr}"


TWO_TYPOS = """\
[server]
hostname = "mx.test"
spool_dir = "spool"
control_socket = "ctl.sock"

[[listener]]
address = "127.0.0.1:2525"
role = "mx"
adress = "127.0.0.1:25"

[relay]
domains = ["example.com"]

[limits]
max_mesage_size = 5
"""


def test_check_config_reports_every_unknown_key_with_position(tmp_path):
    path = tmp_path / "bulwark.toml"
    path.write_text(TWO_TYPOS)
    cp = check_config(path)
    out = cp.stdout + cp.stderr
    assert cp.returncode == 1, out
    assert re.search(r"bulwark\.toml:9:1: listener\[0\]\.adress: ", out), out
    assert re.search(r"bulwark\.toml:15:1: limits\.max_mesage_size: ", out), out


# (what is wrong, section overrides for Daemon, key path that must be named)
INVALID = [
    ("trusts the whole IPv4 Internet", {"relay": {"trusted_networks": ["0.0.0.0/0"]}}, "relay.trusted_networks[0]"),
    ("trusts the whole IPv6 Internet", {"relay": {"trusted_networks": ["::/0"]}}, "relay.trusted_networks[0]"),
    ("wildcard relay domain", {"relay": {"domains": ["*"]}}, "relay.domains[0]"),
    ("submission without tls and auth", {"listeners": [{"role": "submission"}]}, "listener[0].role"),
    ("list check without a file", {"recipients": [{"domains": ["example.com"], "check": "list"}]},
     "recipients[0].check"),
    ("list file missing", {"recipients": [{"domains": ["example.com"], "check": "list", "file": "nope.txt"}]},
     "recipients[0].file"),
    ("callout without next hops", {"recipients": [{"domains": ["example.com"], "check": "callout"}]},
     "recipients[0].check"),
    ("recipient check for a foreign domain",
     {"recipients": [{"domains": ["example.org"], "check": "accept-all"}]}, "recipients[0].domains"),
    ("zero recipients allowed", {"limits": {"max_recipients": 0}}, "limits.max_recipients"),
    ("zero errors allowed", {"limits": {"max_errors": 0}}, "limits.max_errors"),
    ("zero sessions per client", {"limits": {"max_sessions_per_client": 0}}, "limits.max_sessions_per_client"),
    ("zero command timeout", {"limits": {"command_timeout": "0s"}}, "limits.command_timeout"),
    ("zero listener sessions", {"listeners": [{"role": "mx", "max_sessions": 0}]}, "listener[0].max_sessions"),
    ("zero delivery connections", {"extra_toml": "[delivery]\nmax_connections = 0\n"}, "delivery.max_connections"),
    ("relay domain with a space", {"relay": {"domains": ["exa mple.com"]}}, "relay.domains[0]"),
    ("relay domain that is an address", {"relay": {"domains": ["postmaster@example.com"]}}, "relay.domains[0]"),
    ("recipient check for subdomains relay does not accept",
     {"recipients": [{"domains": [".example.com"], "check": "accept-all"}]}, "recipients[0].domains"),
    ("route domain with a wildcard label",
     {"extra_toml": '[[route]]\ndomains = ["*.example.com"]\nnext_hops = ["127.0.0.1:9"]\n'}, "route[0].domains[0]"),
    ("unknown listener role", {"listeners": [{"role": "relay"}]}, None),
    ("bad listener address", {"listeners": [{"role": "mx", "address": "not an address"}]}, None),
    ("bad duration", {"limits": {"command_timeout": "5 parsecs"}}, None),
    ("unknown check kind", {"recipients": [{"domains": ["example.com"], "check": "ldap"}]}, None),
    ("bad bare_newline", {"smtp": {"bare_newline": "ignore"}}, None),
]


@pytest.mark.parametrize("what,overrides,key_path", INVALID, ids=[c[0] for c in INVALID])
def test_check_config_refuses(tmp_path, what, overrides, key_path):
    d = Daemon(tmp_path, "bad", **overrides)
    cp = check_config(d.config_path)
    out = cp.stdout + cp.stderr
    assert cp.returncode == 1, f"{what}: accepted\n{d.config_path.read_text()}\n{out}"
    assert re.search(r"bulwark\.toml:\d+:\d+: ", out), f"{what}: no FILE:LINE:COL in {out!r}"
    if key_path:
        assert f": {key_path}: " in out, f"{what}: {key_path} not named in {out!r}"


def test_check_config_points_at_the_right_line(tmp_path):
    d = Daemon(tmp_path, "bad", limits={"command_timeout": "5 parsecs"})
    lines = d.config_path.read_text().splitlines()
    lineno = next(i + 1 for i, l in enumerate(lines) if l.startswith("command_timeout"))
    cp = check_config(d.config_path)
    assert re.search(rf"bulwark\.toml:{lineno}:\d+: ", cp.stdout + cp.stderr), (lineno, cp.stdout + cp.stderr)


def test_check_config_syntax_error(tmp_path):
    path = tmp_path / "bulwark.toml"
    path.write_text('[server]\nhostname = "mx.test\n')
    cp = check_config(path)
    assert cp.returncode == 1
    assert re.search(r"bulwark\.toml:2:\d+: ", cp.stdout + cp.stderr), cp.stdout + cp.stderr


def test_check_config_missing_file(tmp_path):
    cp = check_config(tmp_path / "absent.toml")
    assert cp.returncode != 0
    assert "absent.toml" in cp.stdout + cp.stderr


def test_daemon_refuses_to_start_on_invalid_config(tmp_path):
    require_binaries()
    d = Daemon(tmp_path, "bad", relay={"trusted_networks": ["0.0.0.0/0"]})
    cp = run([BULWARKD, "--config", d.config_path], timeout=15)
    assert cp.returncode != 0
    assert "relay.trusted_networks[0]" in cp.stdout + cp.stderr
    assert not tcp_accepts(d.port)


def test_relative_paths_are_relative_to_the_config_file(start_daemon, tmp_path):
    (tmp_path / "rel").mkdir()
    (tmp_path / "rel" / "list.txt").write_text("alice@example.com\n")
    d = Daemon(tmp_path, "rel", server={"spool_dir": "spool", "control_socket": "ctl.sock"},
               recipients=[{"domains": ["example.com"], "check": "list", "file": "list.txt"}])
    assert check_config(d.config_path).returncode == 0
    d.control_socket = d.dir / "ctl.sock"
    try:
        d.start()  # Daemon runs bulwarkd with cwd=/
        assert unix_accepts(d.dir / "ctl.sock")
        assert (d.dir / "spool").is_dir()
        with RawSession(d.port) as s:
            s.greeting()
            s.ehlo()
            s.cmd("MAIL FROM:<a@other.org>")
            assert s.cmd("RCPT TO:<alice@example.com>")[0] == 250
            assert s.cmd("RCPT TO:<bob@example.com>")[0] == 550
    finally:
        d.stop()


def test_builtin_default_without_config(tmp_path):
    require_binaries()
    if Path("/etc/bulwark/bulwark.toml").exists():
        pytest.skip("/etc/bulwark/bulwark.toml exists, so the built-in default is not used")
    if tcp_accepts(2525):
        pytest.skip("port 2525 is busy")
    env = dict(os.environ, HOME=str(tmp_path / "home"), XDG_STATE_HOME=str(tmp_path / "state"),
               XDG_RUNTIME_DIR=str(tmp_path / "run"))
    for k in ("home", "state", "run"):
        (tmp_path / k).mkdir()
    err = tmp_path / "stderr"
    with open(err, "wb") as f:
        proc = subprocess.Popen([BULWARKD], stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=tmp_path, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not tcp_accepts(2525) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert proc.poll() is None, f"bulwarkd exited {proc.returncode}: {err.read_text()}"
        with RawSession(2525) as s:
            expect(s.greeting(), 220)
        log = err.read_text(errors="replace")
        assert "built-in default" in log, log
        sock = tmp_path / "run" / "bulwark" / "control.sock"
        assert unix_accepts(sock), f"control socket not at {sock}"
        cp = run([BULWARKCTL, "--socket", sock, "status"], timeout=10)
        assert cp.returncode == 0, cp.stdout + cp.stderr
        assert (tmp_path / "state" / "bulwark" / "spool").is_dir()
        # Mail to localhost arrives in a Maildir under the state directory, and the log says where.
        maildir = tmp_path / "state" / "bulwark" / "Maildir"
        assert str(maildir) in log, log
        with RawSession(2525) as s:
            s.greeting()
            s.ehlo()
            expect(s.mail_transaction("me@localhost", ["me@localhost"],
                                      b"Subject: first message\r\n\r\nit arrived\r\n"), 250)
        new = maildir / "new"
        deadline = time.monotonic() + 15
        while not (new.is_dir() and any(new.iterdir())) and time.monotonic() < deadline:
            time.sleep(0.1)
        files = list(new.iterdir()) if new.is_dir() else []
        assert len(files) == 1, f"no message in {new}: {err.read_text(errors='replace')[-2000:]}"
        text = files[0].read_text()
        assert text.startswith("Delivered-To: <me@localhost>\n") and "it arrived\n" in text, text
        assert "\r" not in text
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def test_maildir_route_delivers_locally(start_daemon, tmp_path):
    """`[[route]] maildir = DIR`: each recipient's copy lands in DIR/new (what the built-in
    default does for localhost), and the start log names the directory."""
    maildir = tmp_path / "Maildir"
    d = start_daemon(tmp_path, relay={"domains": ["localhost"]},
                     extra_toml=f'[[route]]\ndomains = ["localhost"]\nmaildir = "{maildir}"\n')
    assert str(maildir) in d.log()
    with RawSession(d.port) as s:
        s.greeting()
        s.ehlo()
        expect(s.mail_transaction("a@other.org", ["me@localhost", "you@localhost"],
                                  b"Subject: local\r\n\r\nhello\r\n"), 250)
    new = maildir / "new"
    deadline = time.monotonic() + 15
    while len(list(new.iterdir()) if new.is_dir() else []) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    texts = sorted(p.read_text() for p in new.iterdir())
    assert [t.splitlines()[0] for t in texts] == ["Delivered-To: <me@localhost>",
                                                  "Delivered-To: <you@localhost>"], texts
    assert all("hello\n" in t and "\r" not in t for t in texts)
    deadline = time.monotonic() + 10
    while d.queue_list() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert d.queue_list() == []
