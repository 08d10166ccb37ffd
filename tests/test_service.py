"""Service integration without systemd: sd_notify against a datagram socket standing in for
the service manager, journald's native protocol against a socket at
/run/systemd/journal/socket in a private mount namespace, the privilege drop when started as
root, and the sendmail compatibility front end (-t -i -f -F -bs -bp, mailq)."""

from __future__ import annotations

import os
import re
import signal
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import (BUILD, BULWARKD, REPO, Daemon, free_port, make_message, queue_id_of, run,
                      send_mail, tcp_accepts, wait_until)

SENDMAIL = os.environ.get("BULWARK_SENDMAIL") or str(BUILD / "bulwark-sendmail")


def need_root(what: str) -> None:
    if os.geteuid() != 0:
        print(f"SKIP REASON: {what} needs root (CI runs as root)")
        pytest.skip(f"{what} needs root")


# --------------------------------------------------------------------------------------------
# sd_notify
# --------------------------------------------------------------------------------------------


class NotifyListener:
    """The service manager's end of NOTIFY_SOCKET: collects (pid, fields) per datagram."""

    def __init__(self, directory: Path):
        self.path = str(directory / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.messages: list[tuple[int, dict[str, str]]] = []

    def poll(self, timeout: float = 0.1) -> None:
        self.sock.settimeout(timeout)
        while True:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except (socket.timeout, BlockingIOError):
                return
            pid = -1
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", payload[:12])[0]
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((pid, fields))
            self.sock.settimeout(0.01)

    def wait_for(self, key: str, value: str | None = None, after: int = 0, timeout: float = 10) -> int:
        """Index of the first message from `after` on with key (=value)."""
        def found():
            self.poll()
            for i, (_, fields) in enumerate(self.messages[after:], after):
                if key in fields and (value is None or fields[key] == value):
                    return i + 1
            return None
        return wait_until(found, timeout, what=lambda: f"{key}={value} in {self.messages[after:]}") - 1

    def close(self):
        self.sock.close()


def test_sd_notify_ready_status_watchdog_reload_and_stopping(tmp_path):
    manager = NotifyListener(tmp_path)
    d = Daemon(tmp_path, env={"NOTIFY_SOCKET": manager.path, "WATCHDOG_USEC": "400000"})
    try:
        d.start()
        ready = manager.wait_for("READY", "1")
        pid, fields = manager.messages[ready]
        # NotifyAccess=main: the daemon itself sends, not a helper process.
        assert pid == d.pid
        assert "sessions" in fields.get("STATUS", ""), fields
        # READY comes only after the listener is bound (start() saw it accept, READY is after).
        assert tcp_accepts(d.port)

        first = manager.wait_for("WATCHDOG", "1", after=ready)
        manager.wait_for("WATCHDOG", "1", after=first + 1, timeout=2)

        send_mail(d.port)
        wait_until(lambda: (manager.poll(), any("accepted" in f.get("STATUS", "") and
                                                re.search(r"1 accepted", f.get("STATUS", ""))
                                                for _, f in manager.messages))[1], 5,
                   what="STATUS with 1 accepted message")

        # A good reload: RELOADING=1, then READY=1.
        mark = len(manager.messages)
        d.hup()
        reloading = manager.wait_for("RELOADING", "1", after=mark)
        back = manager.wait_for("READY", "1", after=reloading)
        assert manager.messages[back][1].get("STATUS") == "configuration reloaded"

        # A bad config is refused: still RELOADING/READY, the status says so, the old one runs.
        d.config_path.write_text(d.config_path.read_text() + "\n[bogus]\nx = 1\n")
        mark = len(manager.messages)
        d.hup()
        reloading = manager.wait_for("RELOADING", "1", after=mark)
        back = manager.wait_for("READY", "1", after=reloading)
        assert "refused" in manager.messages[back][1].get("STATUS", "")
        assert d.running()
        send_mail(d.port)

        mark = len(manager.messages)
        d.proc.send_signal(signal.SIGTERM)
        manager.wait_for("STOPPING", "1", after=mark)
        d.proc.wait(10)
        assert d.proc.returncode == 0
    finally:
        d.stop()
        manager.close()


def test_without_notify_socket_nothing_is_sent_and_it_runs(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    d = Daemon(tmp_path)
    d.env = env
    try:
        d.start()
        send_mail(d.port)
    finally:
        d.stop()
    assert "sd_notify" not in d.log()


# --------------------------------------------------------------------------------------------
# journald
# --------------------------------------------------------------------------------------------


def parse_journal_datagram(data: bytes) -> dict[str, str]:
    """The native journal protocol: KEY=value lines, or KEY\\n + 64-bit LE length + value."""
    fields, i = {}, 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            key, value = line.split(b"=", 1)
            i = nl + 1
        else:
            key = line
            size = struct.unpack("<Q", data[nl + 1:nl + 9])[0]
            value = data[nl + 9:nl + 9 + size]
            i = nl + 9 + size + 1
        fields[key.decode()] = value.decode(errors="replace")
    return fields


def start_in_namespace(d: Daemon, journal_dir: Path, *args: str) -> None:
    """Starts d's bulwarkd in a private mount namespace where /run/systemd is `journal_dir`."""
    script = ('mount -t tmpfs tmpfs /run && mkdir -p /run/systemd && '
              'mount --bind "$0" /run/systemd && exec "$@"')
    with open(d.stderr_path, "ab") as err, open(d.stdout_path, "ab") as out:
        d.proc = subprocess.Popen(
            ["unshare", "-m", "sh", "-c", script, str(journal_dir), BULWARKD, "--config",
             str(d.config_path), *args],
            stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=d.env, cwd="/",
            start_new_session=True,
        )
    d.wait_ready()


@pytest.mark.parametrize("how", ["explicit", "auto"])
def test_journald_gets_structured_fields(tmp_path, how):
    need_root("a private mount namespace (unshare -m) over /run/systemd")
    journal_dir = Path(tempfile.mkdtemp(prefix="bwj", dir="/tmp"))
    (journal_dir / "journal").mkdir()
    journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    journal.bind(str(journal_dir / "journal" / "socket"))
    journal.settimeout(0.2)
    d = Daemon(tmp_path)
    args: tuple[str, ...] = ("--log", "journal")
    if how == "auto":
        # systemd tells a service its stderr is the journal through JOURNAL_STREAM=dev:ino.
        d.stderr_path.touch()
        st = os.stat(d.stderr_path)
        d.env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        args = ()
    entries: list[dict[str, str]] = []

    def drain():
        while True:
            try:
                entries.append(parse_journal_datagram(journal.recv(65536)))
            except socket.timeout:
                return entries

    try:
        start_in_namespace(d, journal_dir, *args)
        qid = queue_id_of(send_mail(d.port, rcpts=["alice@example.com"]))

        def queued():
            drain()
            return [e for e in entries if e.get("MESSAGE", "").startswith("queued:")]
        found = wait_until(queued, 10, what=lambda: f"a queued: entry in {entries}")
        entry = found[0]
        assert entry["QUEUE_ID"] == qid
        assert entry["CLIENT_ADDR"] == "127.0.0.1"
        assert entry["PRIORITY"] in ("5", "6")  # the logger maps info to notice
        assert entry["SYSLOG_IDENTIFIER"] == "bulwarkd"
        assert any(e.get("MESSAGE", "").startswith("bulwarkd ready") for e in entries)
        # Nothing went to stderr: the journal got it all.
        assert "queued:" not in d.log()
    finally:
        d.stop()
        journal.close()


# --------------------------------------------------------------------------------------------
# Privilege drop
# --------------------------------------------------------------------------------------------


def low_free_port() -> int:
    for port in range(1000, 1024):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    pytest.skip("no free port below 1024")


def proc_status(pid: int) -> dict[str, str]:
    return dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())


def test_started_as_root_it_drops_to_the_configured_user(tmp_path):
    need_root("starting bulwarkd as root")
    # pytest's tmp dirs are 0700 root: the service user could not reach its spool there.
    base = Path(tempfile.mkdtemp(prefix="bwroot", dir="/tmp"))
    base.chmod(0o755)
    port = low_free_port()
    d = Daemon(base, server={"user": "nobody", "group": "nogroup"},
               listeners=[{"role": "mx", "address": f"127.0.0.1:{port}"}])
    d.dir.chmod(0o755)
    try:
        d.start()
        status = proc_status(d.pid)
        assert status["Uid"].split() == ["65534"] * 4, status["Uid"]
        assert status["Gid"].split() == ["65534"] * 4, status["Gid"]
        assert int(status["CapEff"].strip(), 16) == 0
        assert int(status["CapPrm"].strip(), 16) == 0
        # The port below 1024 was bound before the drop; the spool is writable after it.
        qid = queue_id_of(send_mail(port))
        assert qid in d.queue_ids()
        assert os.stat(d.spool_dir).st_uid == 65534
        d.hup()
        wait_until(lambda: "configuration reloaded" in d.log(), 5, what="reload after the drop")
        assert "dropped privileges to nobody" in d.log()
    finally:
        d.stop()


def test_root_with_an_unknown_user_refuses_to_start(tmp_path):
    need_root("starting bulwarkd as root")
    d = Daemon(tmp_path, server={"user": "no-such-user-bulwark"})
    cp = run([BULWARKD, "--config", d.config_path], timeout=20)
    assert cp.returncode != 0
    assert "no such user" in cp.stderr


# --------------------------------------------------------------------------------------------
# sendmail front end
# --------------------------------------------------------------------------------------------


@pytest.fixture
def local_daemon(start_daemon, tmp_path) -> Daemon:
    """Loopback is trusted (as in the shipped config), so local senders may relay."""
    return start_daemon(tmp_path, relay={"trusted_networks": ["127.0.0.1/32"]})


def sendmail(d: Daemon, args: list[str], stdin: str, argv0: str | None = None,
             env: dict | None = None) -> subprocess.CompletedProcess:
    exe = argv0 or SENDMAIL
    return subprocess.run([exe, "-C", str(d.config_path), *args], input=stdin, text=True,
                          capture_output=True, timeout=20, env=dict(os.environ, **(env or {})))


def new_id(d: Daemon, before: set[str]) -> str:
    ids = wait_until(lambda: set(d.queue_ids()) - before, 5, what="a new queue entry")
    assert len(ids) == 1, ids
    return ids.pop()


def test_sendmail_t_i_f_F(local_daemon):
    d = local_daemon
    before = set(d.queue_ids())
    message = ("To: Alice <alice@example.com>\nCc: carol@partner.org\nBcc: secret@example.com,\n"
               "  hidden@example.com\nSubject: cron output\n\nline one\n.\n..two dots\nlast\n")
    cp = sendmail(d, ["-t", "-i", "-f", "cron@mx.test", "-F", "Cron Daemon"], message)
    assert cp.returncode == 0, cp.stderr
    qid = new_id(d, before)
    entry = d.queue_entry(qid)
    assert entry["sender"] == "cron@mx.test"
    assert sorted(entry["recipients"]) == sorted(["alice@example.com", "carol@partner.org",
                                                  "secret@example.com", "hidden@example.com"])
    body = d.queue_show(qid, body=True)
    assert 'From: "Cron Daemon" <cron@mx.test>' in body
    assert "Bcc" not in body and "hidden@" not in body.split("Subject")[1]
    # -i: the lone dot and the dot-leading line survive unchanged.
    assert "\n.\n" in body.replace("\r", "") and "\n..two dots\n" in body.replace("\r", "")


def test_sendmail_lone_dot_ends_input_without_i_and_oi_is_i(local_daemon):
    d = local_daemon
    before = set(d.queue_ids())
    cp = sendmail(d, ["-f", "a@mx.test", "bob@example.com"],
                  "Subject: dot\n\nbefore\n.\nafter the dot\n")
    assert cp.returncode == 0, cp.stderr
    qid = new_id(d, before)
    body = d.queue_show(qid, body=True)
    assert "before" in body and "after the dot" not in body
    before.add(qid)
    cp = sendmail(d, ["-oi", "-f", "a@mx.test", "bob@example.com"],
                  "Subject: dot\n\nbefore\n.\nafter the dot\n")
    assert cp.returncode == 0, cp.stderr
    assert "after the dot" in d.queue_show(new_id(d, before), body=True)


def test_sendmail_bs_speaks_smtp_on_stdio(local_daemon):
    d = local_daemon
    dialogue = ("EHLO local\r\nMAIL FROM:<s@mx.test>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n"
                "Subject: bs\r\n\r\nhi\r\n.\r\nQUIT\r\n")
    cp = sendmail(d, ["-bs"], dialogue)
    assert cp.returncode == 0, cp.stderr
    codes = [line[:3] for line in cp.stdout.splitlines() if line[3:4] == " "]
    assert codes[0] == "220" and codes[-1] == "221", cp.stdout
    assert re.search(r"^250 .*queued as", cp.stdout, re.M), cp.stdout


def test_sendmail_bp_and_mailq_list_the_queue(local_daemon, tmp_path):
    d = local_daemon
    qid = queue_id_of(send_mail(d.port, rcpts=["alice@example.com"]))
    cp = sendmail(d, ["-bp"], "")
    assert cp.returncode == 0, cp.stderr
    assert qid in cp.stdout and "alice@example.com" in cp.stdout
    mailq = tmp_path / "mailq"
    mailq.symlink_to(SENDMAIL)
    cp = sendmail(d, [], "", argv0=str(mailq))
    assert cp.returncode == 0, cp.stderr
    assert qid in cp.stdout and "1 Request" in cp.stdout


def test_sendmail_exit_codes(local_daemon, tmp_path):
    d = local_daemon
    # No recipients: usage error.
    assert sendmail(d, [], "Subject: x\n\n").returncode == 64
    # The daemon is not there: EX_TEMPFAIL, so callers retry.
    cp = sendmail(d, ["a@example.com"], "Subject: x\n\nbody\n",
                  env={"BULWARK_SUBMIT": f"127.0.0.1:{free_port()}"})
    assert cp.returncode == 75, (cp.returncode, cp.stderr)
    assert "cannot reach" in cp.stderr
