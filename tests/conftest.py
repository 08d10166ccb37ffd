"""Shared fixtures for the Bulwark black-box tests.

These tests drive the real binaries (`bulwarkd`, `bulwarkctl`) over TCP and the control
socket; they never build anything. Set BULWARKD / BULWARKCTL to test other binaries, otherwise
`<repo>/target/$BULWARK_PROFILE/{bulwarkd,bulwarkctl}` are used (debug unless set;
tests/run-all.sh builds and tests release).

Everything here is bounded: every socket has a timeout, every subprocess.run has a timeout,
every wait loop has a deadline.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterable

import pytest

# Counts the abuse tests of a run (run / passed / failed) in the terminal summary.
pytest_plugins = ["abuse_tally"]

REPO = Path(__file__).resolve().parent.parent
# The cargo profile whose binaries the tests run (tests/run-all.sh exports release).
BUILD = REPO / "target" / (os.environ.get("BULWARK_PROFILE") or "debug")
BULWARKD = os.environ.get("BULWARKD") or str(BUILD / "bulwarkd")
BULWARKCTL = os.environ.get("BULWARKCTL") or str(BUILD / "bulwarkctl")

HOSTNAME = "mx.test"
CRLF = b"\r\n"
QUEUED_RE = re.compile(r"queued as <?([0-9A-Fa-f]{16})>?")
ENHANCED_RE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")

# Untrusted by default: tests connect from 127.0.0.1, which is NOT in this (documentation) net.
DEFAULT_TRUSTED = ["192.0.2.0/24"]


# --------------------------------------------------------------------------------------------
# Binaries
# --------------------------------------------------------------------------------------------


def require_binaries() -> None:
    for path in (BULWARKD, BULWARKCTL):
        if not os.access(path, os.X_OK):
            pytest.fail(
                f"{path} does not exist or is not executable: build the workspace first "
                f"(the test runner does that) or set BULWARKD / BULWARKCTL",
                pytrace=False,
            )


def run(args: list, timeout: float = 20, **kw) -> subprocess.CompletedProcess:
    """subprocess.run with text output captured and a timeout, never raising on exit status."""
    return subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        **kw,
    )


# --------------------------------------------------------------------------------------------
# TOML writing (tomllib can only read)
# --------------------------------------------------------------------------------------------


def toml_string(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else toml_string(k)


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, os.PathLike):
        v = os.fspath(v)
    if isinstance(v, str):
        return toml_string(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {v!r} as TOML")


def to_toml(doc: dict) -> str:
    """Writes {section: dict} as [section], {section: [dict, ...]} as [[section]] tables,
    and plain values as top-level keys. A section whose value is None is left out."""
    lines: list[str] = []
    for key, value in doc.items():
        if value is not None and not isinstance(value, (dict, list)):
            lines.append(f"{toml_key(key)} = {toml_value(value)}")
    for key, value in doc.items():
        if isinstance(value, dict):
            lines.append("")
            lines.append(f"[{toml_key(key)}]")
            for k, v in value.items():
                if v is not None:
                    lines.append(f"{toml_key(k)} = {toml_value(v)}")
        elif isinstance(value, list) and all(isinstance(x, dict) for x in value):
            for item in value:
                lines.append("")
                lines.append(f"[[{toml_key(key)}]]")
                for k, v in item.items():
                    if v is not None:
                        lines.append(f"{toml_key(k)} = {toml_value(v)}")
        elif isinstance(value, list):
            lines.insert(0, f"{toml_key(key)} = {toml_value(value)}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Certificates, users
# --------------------------------------------------------------------------------------------


def make_cert(directory: Path, cn: str = HOSTNAME, name: str = "cert") -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    cert = directory / f"{name}.pem"
    key = directory / f"{name}.key"
    cp = run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
         "-days", "2", "-keyout", key, "-out", cert],
        timeout=60,
    )
    assert cp.returncode == 0, f"openssl req failed: {cp.stderr}"
    return cert, key


def cert_der(cert_path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(Path(cert_path).read_text())


def hash_password(password: str) -> str:
    cp = run(["openssl", "passwd", "-6", password], timeout=20)
    assert cp.returncode == 0, cp.stderr
    return cp.stdout.strip()


def write_users_file(path: Path, users: dict[str, str]) -> Path:
    path.write_text("".join(f"{u}:{hash_password(p)}\n" for u, p in users.items()))
    return path


def client_tls_context() -> ssl.SSLContext:
    """A client context that accepts the self-signed test certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory) -> tuple[Path, Path]:
    """(certificate, private_key) of a self-signed cert for CN=mx.test."""
    return make_cert(tmp_path_factory.mktemp("tls"))


# --------------------------------------------------------------------------------------------
# Raw SMTP client
# --------------------------------------------------------------------------------------------


class ConnectionClosed(ConnectionError):
    pass


class RawSession:
    """A tiny SMTP client on a raw socket: you choose every byte that goes out.

    read_reply() returns (code, text) where text is the lines after the code joined with
    "\\n" (for `250-a` / `250 b` it is "a\\nb"). Every read has a deadline.
    """

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0,
                 tls: bool = False, server_hostname: str = HOSTNAME):
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.transcript: list[bytes] = []
        if tls:
            self.sock = client_tls_context().wrap_socket(self.sock, server_hostname=server_hostname)

    # -- context manager
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    # -- writing
    def send(self, data) -> None:
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.transcript.append(b"C: " + data)
        self.sock.sendall(data)

    def cmd(self, line, timeout: float | None = None) -> tuple[int, str]:
        """Sends one command line (CRLF added) and reads its reply."""
        if isinstance(line, str):
            line = line.encode("utf-8")
        self.send(line + CRLF)
        return self.read_reply(timeout)

    # -- reading
    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no complete reply within the deadline; got so far {self.buf!r}")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError, ssl.SSLZeroReturnError) as e:
            raise ConnectionClosed(f"connection closed ({e}); unread {self.buf!r}") from e
        except socket.timeout as e:
            raise TimeoutError(f"no complete reply within the deadline; got so far {self.buf!r}") from e
        if not chunk:
            raise ConnectionClosed(f"connection closed by server; unread {self.buf!r}")
        self.buf += chunk

    def read_line(self, timeout: float | None = None) -> bytes:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while b"\n" not in self.buf:
            self._fill(deadline)
        line, self.buf = self.buf.split(b"\n", 1)
        self.transcript.append(b"S: " + line + b"\n")
        return line.rstrip(b"\r")

    def read_reply(self, timeout: float | None = None) -> tuple[int, str]:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        texts = []
        while True:
            line = self.read_line(max(0.001, deadline - time.monotonic())).decode("utf-8", "replace")
            if len(line) < 3 or not line[:3].isdigit():
                raise AssertionError(f"malformed reply line {line!r}")
            code = int(line[:3])
            sep = line[3:4]
            texts.append(line[4:])
            if sep != "-":
                return code, "\n".join(texts)

    def read_replies(self, n: int, timeout: float | None = None) -> list[tuple[int, str]]:
        return [self.read_reply(timeout) for _ in range(n)]

    def read_until_close(self, timeout: float = 10.0) -> list[tuple[int, str]]:
        """All replies until the server closes the connection (or the deadline passes)."""
        deadline = time.monotonic() + timeout
        replies = []
        while time.monotonic() < deadline:
            try:
                replies.append(self.read_reply(max(0.001, deadline - time.monotonic())))
            except (ConnectionClosed, TimeoutError, OSError):
                break
        return replies

    def is_closed(self, timeout: float = 5.0) -> bool:
        """True if the server closes the connection within `timeout` (unread data is discarded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.sock.settimeout(max(0.001, deadline - time.monotonic()))
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return False
            except (ConnectionResetError, BrokenPipeError, ssl.SSLError, OSError):
                return True
            if not chunk:
                return True
            self.buf += chunk
        return False

    # -- conveniences
    def greeting(self) -> tuple[int, str]:
        return self.read_reply()

    def ehlo(self, name: str = "client.test") -> tuple[int, str]:
        return self.cmd(f"EHLO {name}")

    def starttls(self, server_hostname: str = HOSTNAME) -> tuple[int, str]:
        code, text = self.cmd("STARTTLS")
        if code == 220:
            assert self.buf == b"", f"server sent data after 220 to STARTTLS: {self.buf!r}"
            self.sock.settimeout(self.timeout)
            self.sock = client_tls_context().wrap_socket(self.sock, server_hostname=server_hostname)
        return code, text

    def auth_plain(self, user: str, password: str) -> tuple[int, str]:
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        return self.cmd(f"AUTH PLAIN {token}")

    def auth_login(self, user: str, password: str) -> tuple[int, str]:
        code, text = self.cmd("AUTH LOGIN")
        if code != 334:
            return code, text
        code, text = self.cmd(base64.b64encode(user.encode()).decode())
        if code != 334:
            return code, text
        return self.cmd(base64.b64encode(password.encode()).decode())

    def data(self, message: bytes) -> tuple[int, str]:
        """DATA + dot-stuffed message + final dot; returns the reply to the final dot
        (or the refusal of DATA itself)."""
        code, text = self.cmd("DATA")
        if code != 354:
            return code, text
        self.send(dot_stuff(message))
        return self.read_reply()

    def mail_transaction(self, sender: str, rcpts: Iterable[str], message: bytes,
                         mail_params: str = "") -> tuple[int, str]:
        code, text = self.cmd(f"MAIL FROM:<{sender}>{' ' + mail_params if mail_params else ''}")
        if code != 250:
            return code, text
        accepted = 0
        for r in rcpts:
            c, t = self.cmd(f"RCPT TO:<{r}>")
            if c in (250, 251):
                accepted += 1
        if not accepted:
            return c, t
        return self.data(message)


def raw_session(port: int, **kw) -> RawSession:
    return RawSession(port, **kw)


def enhanced(text: str) -> str | None:
    """The enhanced status code that starts a reply text, e.g. '5.7.1'."""
    m = ENHANCED_RE.match(text)
    return m.group(0) if m else None


def expect(reply: tuple[int, str], code: int, enh: str | None = None, what: str = "") -> None:
    got_code, text = reply
    assert got_code == code, f"{what}: expected {code} {enh or ''}, got {got_code} {text!r}"
    if enh is not None:
        assert enhanced(text) == enh, f"{what}: expected enhanced code {enh}, got {got_code} {text!r}"


def queue_id_of(reply: tuple[int, str]) -> str:
    code, text = reply
    assert code == 250, f"message not accepted: {code} {text!r}"
    m = QUEUED_RE.search(text)
    assert m, f"250 reply has no 'queued as <16 hex digits>': {text!r}"
    return m.group(1)


# --------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------


def make_message(subject: str = "hello", body: str = "hello world", message_id: str | None = None,
                 sender: str = "sender@other.org", to: str = "alice@example.com",
                 extra_headers: Iterable[str] = ()) -> bytes:
    headers = [f"From: <{sender}>", f"To: <{to}>", f"Subject: {subject}",
               "Date: Mon, 01 Jan 2024 00:00:00 +0000"]
    if message_id:
        headers.append(f"Message-ID: {message_id}")
    headers = list(extra_headers) + headers
    text = "\r\n".join(headers) + "\r\n\r\n" + body.replace("\r\n", "\n").replace("\n", "\r\n")
    if not text.endswith("\r\n"):
        text += "\r\n"
    return text.encode("utf-8")


def send_large(port: int, size: int, subject: str = "large", sender: str = "a@other.org",
               rcpt: str = "alice@example.com") -> tuple[int, str]:
    """One message of about `size` bytes (76-character lines), streamed a megabyte at a time;
    returns the reply to the final dot."""
    line = b"m" * 76 + CRLF
    body = line * (size // len(line))
    with RawSession(port, timeout=60) as s:
        s.greeting()
        s.ehlo()
        expect(s.cmd(f"MAIL FROM:<{sender}> SIZE={size + 1000}"), 250)
        expect(s.cmd(f"RCPT TO:<{rcpt}>"), 250)
        expect(s.cmd("DATA"), 354)
        s.send(f"Subject: {subject}\r\n\r\n".encode())
        for off in range(0, len(body), 1 << 20):
            s.sock.sendall(body[off:off + (1 << 20)])
        s.send(b".\r\n")
        return s.read_reply(timeout=60)


def dot_stuff(message: bytes) -> bytes:
    """Wire form of a message for DATA: leading dots doubled, CRLF at the end, then '.'CRLF."""
    if not message.endswith(CRLF):
        message += CRLF
    lines = message.split(CRLF)
    stuffed = CRLF.join((b"." + line) if line.startswith(b".") else line for line in lines)
    return stuffed + b"." + CRLF


def send_mail(port: int, sender: str = "sender@other.org", rcpts: Iterable[str] = ("alice@example.com",),
              message: bytes | None = None, **kw) -> tuple[int, str]:
    """One whole session: greeting, EHLO, one transaction, QUIT. Returns the final reply."""
    with RawSession(port) as s:
        expect(s.greeting(), 220, what="greeting")
        expect(s.ehlo(), 250, what="EHLO")
        reply = s.mail_transaction(sender, rcpts, message if message is not None else make_message(), **kw)
        try:
            s.cmd("QUIT", timeout=3)
        except (ConnectionError, TimeoutError, OSError):
            pass
        return reply


def ehlo_keywords(ehlo_text: str) -> dict[str, str]:
    """EHLO reply text -> {KEYWORD: params} (the first line, the greeting name, is skipped)."""
    out = {}
    for line in ehlo_text.split("\n")[1:]:
        parts = line.strip().split(None, 1)
        if parts:
            out[parts[0].upper()] = parts[1] if len(parts) > 1 else ""
    return out


# --------------------------------------------------------------------------------------------
# The daemon
# --------------------------------------------------------------------------------------------


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


def tcp_accepts(port: int, host: str = "127.0.0.1", talk: bool = False) -> bool:
    """True if a TCP connection succeeds. With talk=True the probe says QUIT at once: a probe
    that hangs up silently could otherwise count as a client that passed the greet delay."""
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            if talk:
                try:
                    s.sendall(b"QUIT\r\n")
                except OSError:
                    pass
            return True
    except OSError:
        return False


def control_answers(path: Path) -> bool:
    """True once the daemon answers a status request on its control socket: it is served only
    after start-up is complete (privileges dropped, signal handlers in place), unlike the
    sockets, which are bound and accept connections early."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(str(path))
        s.sendall(b'{"command":"status"}\n')
        return s.recv(1) != b""
    except OSError:
        return False
    finally:
        s.close()


def unix_accepts(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(0.5)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


class DaemonError(RuntimeError):
    pass


class Daemon:
    """One bulwarkd with its own config, spool and control socket under `base/name`.

    Section overrides are merged into the defaults; pass a section as None to leave it out.
    `listeners` is a list of dicts (address filled with a free port when missing);
    `tls=True` uses the session certificate; `users={"alice": "pw"}` writes a users file and
    the [auth] section; `extra_toml` is appended verbatim.
    """

    _counter = 0

    def __init__(self, base: Path, name: str | None = None, *, tls_cert=None, listeners=None,
                 server=None, relay=None, limits=None, smtp=None, tls=None, auth=None,
                 users=None, recipients=None, quarantine=None, extra_toml: str = "", env=None):
        Daemon._counter += 1
        self.name = name or f"d{Daemon._counter}"
        self.dir = Path(base) / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.spool_dir = self.dir / "spool"
        sock = self.dir / "ctl.sock"
        if len(str(sock)) > 100:  # AF_UNIX path limit is 108 bytes
            sock = Path(tempfile.mkdtemp(prefix="bw", dir="/tmp")) / "ctl.sock"
        self.control_socket = sock
        self.config_path = self.dir / "bulwark.toml"
        self.stderr_path = self.dir / "bulwarkd.stderr"
        self.stdout_path = self.dir / "bulwarkd.stdout"
        self.proc: subprocess.Popen | None = None
        self.env = dict(os.environ, **(env or {}))

        listeners = [dict(l) for l in (listeners or [{"role": "mx"}])]
        missing = [l for l in listeners if "address" not in l]
        for l, p in zip(missing, free_ports(len(missing))):
            l["address"] = f"127.0.0.1:{p}"
        self.listeners = listeners
        self.ports = [int(m.group(1)) if (m := re.search(r":(\d+)$", str(l["address"]))) else 0
                      for l in listeners]
        self.port = self.ports[0]
        # Where each listener can be reached ("[::1]:25" -> "::1"), for the readiness probe.
        self.hosts = [str(l["address"]).rsplit(":", 1)[0].strip("[]") for l in listeners]

        if tls is True:
            assert tls_cert is not None, "tls=True needs the tls_cert fixture"
            tls = {"certificate": str(tls_cert[0]), "private_key": str(tls_cert[1])}
        if users is not None:
            users_file = write_users_file(self.dir / "users", users)
            auth = dict(auth or {}, users_file=str(users_file))

        self.doc = {
            "server": {"hostname": HOSTNAME, "spool_dir": str(self.spool_dir),
                       "control_socket": str(self.control_socket), **(server or {})},
            "listener": listeners,
            "tls": tls,
            "auth": auth,
            "relay": {"domains": ["example.com"], "trusted_networks": DEFAULT_TRUSTED, **(relay or {})},
            "recipients": recipients or None,
            "limits": {"command_timeout": "30s", "data_timeout": "30s", **(limits or {})},
            "smtp": {"greet_delay": "0s", **(smtp or {})},
            # Each daemon its own store: the default (/var/lib/bulwark/quarantine) is the host's.
            "quarantine": {"dir": str(self.dir / "quarantine"), **(quarantine or {})},
        }
        self.extra_toml = extra_toml
        if "[tracking]" not in (extra_toml or ""):
            self.doc["tracking"] = {"dir": str(self.dir / "tracking")}
        # MTA-STS cache and TLS-RPT counters: the default (/var/lib/bulwark/tls) is the host's.
        if "[tls_policy]" not in (extra_toml or ""):
            self.doc["tls_policy"] = {"state_dir": str(self.dir / "tls")}
        self._hold_mail_unless_routed(extra_toml or "")
        self.write_config()

    def _hold_mail_unless_routed(self, extra: str) -> None:
        """Receiving tests expect accepted mail to stay queued, and no test may ever ask the
        real Internet's DNS: unless the test routes mail itself, route everything to a closed
        loopback port, retry only after an hour, and point DNS at a dead loopback address."""
        if "[[route]]" not in extra:
            self.doc["route"] = [{"domains": ["*"], "next_hops": ["127.0.0.1:9"], "tls": "none"}]
        if "[delivery]" not in extra:
            self.doc["delivery"] = {"retry_initial": "1h", "retry_max": "2h"}
        if "[dns]" not in extra:
            self.doc["dns"] = {"servers": ["127.0.0.1:9"], "timeout": "1s"}

    def port_of(self, role: str) -> int:
        for l, p in zip(self.listeners, self.ports):
            if l["role"] == role:
                return p
        raise KeyError(role)

    def write_config(self) -> None:
        text = to_toml(self.doc)
        if self.extra_toml:
            text += "\n" + self.extra_toml + "\n"
        self.config_path.write_text(text)

    # -- lifecycle
    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 10.0) -> "Daemon":
        require_binaries()
        assert not self.running(), "already running"
        with open(self.stderr_path, "ab") as err, open(self.stdout_path, "ab") as out:
            self.proc = subprocess.Popen(
                [BULWARKD, "--config", str(self.config_path)],
                stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=self.env, cwd="/",
                start_new_session=True,
            )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DaemonError(f"bulwarkd exited with status {self.proc.returncode} while starting;"
                                  f" config:\n{self.config_path.read_text()}\nlog:\n{self.log()}")
            if control_answers(self.control_socket) and all(tcp_accepts(p, h, talk=True) for p, h in zip(self.ports, self.hosts)):
                return
            time.sleep(0.05)
        raise DaemonError(f"bulwarkd not ready within {timeout}s (control socket {self.control_socket},"
                          f" ports {self.ports}); log:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def kill9(self) -> None:
        assert self.running(), "bulwarkd is not running"
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)

    def restart(self, timeout: float = 10.0) -> "Daemon":
        self.stop()
        return self.start(timeout)

    def hup(self) -> None:
        assert self.running(), "bulwarkd is not running"
        os.kill(self.proc.pid, signal.SIGHUP)

    def log(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def output(self) -> str:
        """stderr and stdout together."""
        try:
            out = self.stdout_path.read_text(errors="replace")
        except FileNotFoundError:
            out = ""
        return self.log() + out

    def vm_hwm_kb(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM in /proc status")

    # -- control
    def ctl(self, *args, timeout: float = 20) -> subprocess.CompletedProcess:
        return run([BULWARKCTL, "--socket", self.control_socket, *args], timeout=timeout)

    def queue_list(self) -> list[dict]:
        cp = self.ctl("queue", "list", "--json")
        assert cp.returncode == 0, f"queue list --json failed ({cp.returncode}): {cp.stderr}{cp.stdout}"
        try:
            data = json.loads(cp.stdout)
        except json.JSONDecodeError as e:
            raise AssertionError(f"queue list --json printed no JSON ({e}): {cp.stdout!r}") from e
        assert isinstance(data, list), f"queue list --json is not an array: {data!r}"
        return data

    def queue_ids(self) -> list[str]:
        return [entry["id"] for entry in self.queue_list()]

    def queue_entry(self, queue_id: str) -> dict | None:
        for entry in self.queue_list():
            if entry.get("id", "").lower() == queue_id.lower():
                return entry
        return None

    def queue_show(self, queue_id: str, body: bool = False) -> str:
        args = ["queue", "show", queue_id] + (["--body"] if body else [])
        cp = self.ctl(*args)
        assert cp.returncode == 0, f"queue show failed ({cp.returncode}): {cp.stderr}{cp.stdout}"
        return cp.stdout

    def session(self, port: int | None = None, **kw) -> RawSession:
        return RawSession(port or self.port, **kw)


@pytest.fixture
def start_daemon(tls_cert):
    """Factory: start_daemon(tmp_path, **overrides) -> running Daemon; all are stopped at teardown."""
    started: list[Daemon] = []

    def _start(base: Path, **overrides) -> Daemon:
        overrides.setdefault("tls_cert", tls_cert)
        d = Daemon(base, **overrides)
        started.append(d)
        d.start()
        return d

    yield _start
    for d in started:
        try:
            d.stop()
        finally:
            tail = d.log()[-3000:]
            if tail:
                print(f"--- bulwarkd {d.name} stderr (tail) ---\n{tail}")


@pytest.fixture
def daemon(start_daemon, tmp_path) -> Daemon:
    """A default mx daemon: relay domain example.com, 127.0.0.1 untrusted."""
    return start_daemon(tmp_path)


def module_daemon(tmp_path_factory, tls_cert, name: str, **overrides):
    """Generator body for module-scoped daemon fixtures."""
    d = Daemon(tmp_path_factory.mktemp(name), name, tls_cert=tls_cert, **overrides)
    try:
        d.start()
        yield d
    finally:
        d.stop()


# ============================================================================================
# Delivery-side helpers: test DNS server, smtp-sink next hops, a raw capturing SMTP server,
# delivery configs, DSN parsing. (Added for tests/test_delivery.py and tests/test_dsn.py.)
# ============================================================================================

import email
import email.policy
import pwd
import shutil
import threading

from dns_server import DNSServer  # noqa: E402  (tests/ is on sys.path: conftest lives there)

SMTP_SINK = os.environ.get("SMTP_SINK") or shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"


def require_smtp_sink() -> None:
    if not os.access(SMTP_SINK, os.X_OK):
        pytest.fail(f"{SMTP_SINK} not found: install postfix (smtp-sink) or set SMTP_SINK", pytrace=False)


def wait_until(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):
    """Polls predicate() until it returns something truthy (returned) or the deadline passes
    (AssertionError naming `what`; `what` may be a callable producing the text)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for "
                                 f"{what() if callable(what) else what}")
        time.sleep(interval)


def port_listening(port: int, host: str = "127.0.0.1") -> bool:
    """True if some socket LISTENs on host:port (read from /proc/net/tcp, so the check itself
    opens no SMTP session). A wildcard listener (0.0.0.0) counts for every host."""
    import ipaddress as _ip
    want = {f"{int.from_bytes(_ip.IPv4Address(host).packed, 'little'):08X}:{port:04X}",
            f"00000000:{port:04X}"}
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return tcp_accepts(port, host)
    for line in lines:
        fields = line.split()
        if len(fields) > 3 and fields[3] == "0A" and fields[1].upper() in want:
            return True
    return False


# --------------------------------------------------------------------------------------------
# smtp-sink
# --------------------------------------------------------------------------------------------


class SinkMessage:
    """One transaction dumped by smtp-sink -d. smtp-sink writes LF line ends (it strips CR),
    its own X-* envelope records and a 3-line Received header first, and an empty line last."""

    def __init__(self, path: Path, raw: bytes):
        self.path = path
        self.raw = raw
        lines = raw.split(b"\n")
        self.client_addr = self.helo = self.mail_args = None
        self.rcpt_args: list[str] = []
        i = 0
        while i < len(lines):
            line = lines[i].decode("utf-8", "replace")
            i += 1
            if line.startswith("X-Client-Addr: "):
                self.client_addr = line.split(": ", 1)[1]
            elif line.startswith("X-Helo-Args: "):
                self.helo = line.split(": ", 1)[1]
            elif line.startswith("X-Mail-Args: "):
                self.mail_args = line.split(": ", 1)[1]
            elif line.startswith("X-Rcpt-Args: "):
                self.rcpt_args.append(line.split(": ", 1)[1])
            elif line.startswith("Received: "):
                while i < len(lines) and lines[i].startswith(b"\t"):
                    i += 1
                break
        body = b"\n".join(lines[i:])
        if body.endswith(b"\n\n"):
            body = body[:-1]  # the empty line smtp-sink appends
        self.content = body  # the message as received, LF line ends
        self.msg = email.message_from_bytes(body, policy=email.policy.compat32)

    @staticmethod
    def _addr(args: str | None) -> str | None:
        if args is None:
            return None
        m = re.match(r"\s*<([^>]*)>", args)
        return m.group(1) if m else args.split()[0] if args.split() else ""

    @property
    def mail_from(self) -> str | None:
        """The envelope sender ('' for the null sender <>)."""
        return self._addr(self.mail_args)

    @property
    def rcpts(self) -> list[str]:
        return [self._addr(a) for a in self.rcpt_args]

    @property
    def message_id(self) -> str | None:
        mid = self.msg.get("Message-ID")
        return mid.strip() if mid else None

    @property
    def subject(self) -> str | None:
        return self.msg.get("Subject")

    def __repr__(self):
        return (f"<SinkMessage {self.path.name} from=<{self.mail_from}> rcpts={self.rcpts} "
                f"mid={self.message_id} subject={self.subject!r}>")


class Sink:
    """A Postfix smtp-sink on host:port dumping each transaction to a file in dump_dir.
    stop()/start() keep the port and the dump dir, so a test can take the next hop away and
    bring it back; start() may be given other options (e.g. drop `-r RCPT`)."""

    def __init__(self, base: Path, name: str, host: str = "127.0.0.1", port: int | None = None,
                 options: Iterable[str] = ()):
        self.name = name
        self.host = host
        self.port = port or free_port()
        self.options = [str(o) for o in options]
        self.dir = Path(base) / f"sink-{name}"
        self.dump_dir = self.dir / "dump"
        self.dump_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "smtp-sink.log"
        self.proc: subprocess.Popen | None = None
        if os.geteuid() == 0:
            os.chmod(self.dump_dir, 0o777)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, options: Iterable[str] | None = None, timeout: float = 10.0) -> "Sink":
        """options=None keeps the options of the last start (or the constructor's)."""
        require_smtp_sink()
        assert not self.running(), f"sink {self.name} already running"
        if options is not None:
            self.options = [str(o) for o in options]
        args = [SMTP_SINK]
        if os.geteuid() == 0:
            args += ["-u", pwd.getpwuid(os.geteuid()).pw_name]
        args += ["-d", f"{self.dump_dir}/%Y%m%d%H%M%S.", *self.options, f"{self.host}:{self.port}", "256"]
        deadline = time.monotonic() + timeout
        while True:
            with open(self.log_path, "ab") as log:
                log.write(f"--- start {' '.join(args)}\n".encode())
                log.flush()
                self.proc = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                             start_new_session=True)
            while time.monotonic() < deadline and self.proc.poll() is None:
                if port_listening(self.port, self.host):
                    return self
                time.sleep(0.05)
            if self.proc.poll() is None or time.monotonic() >= deadline:
                self.stop()
                raise AssertionError(f"smtp-sink {self.name} not listening on {self.address} within "
                                     f"{timeout}s; log:\n{self.log()}")
            time.sleep(0.2)  # exited (port still busy from a previous run?): try again

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        deadline = time.monotonic() + 5
        while port_listening(self.port, self.host) and time.monotonic() < deadline:
            time.sleep(0.05)

    def restart(self, options: Iterable[str] | None = None) -> "Sink":
        self.stop()
        return self.start(options)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except FileNotFoundError:
            return ""

    # -- what it received
    def messages(self) -> list[SinkMessage]:
        """Completed transactions, oldest first. (A transaction in progress has an empty or
        partly written file; a complete one ends with the empty line smtp-sink appends.)"""
        out = []
        for path in self.dump_dir.iterdir():
            try:
                raw = path.read_bytes()
                # smtp-sink deletes the file of an aborted transaction at any moment.
                mtime = path.stat().st_mtime_ns
            except OSError:
                continue
            if raw.endswith(b"\n\n") and b"\nReceived: " in raw:
                out.append((mtime, path.name, SinkMessage(path, raw)))
        return [m for _, _, m in sorted(out, key=lambda t: (t[0], t[1]))]

    def count(self) -> int:
        return len(self.messages())

    def message_ids(self) -> list[str]:
        return [m.message_id for m in self.messages()]

    def wait_for(self, n: int, timeout: float = 30.0, settle: float = 0.3) -> list[SinkMessage]:
        """Waits (bounded) until at least n messages arrived; returns all of them after a short
        settle pause (so 'exactly n' assertions also see a late extra one)."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.messages()
            if len(got) >= n:
                time.sleep(settle)
                return self.messages()
            if time.monotonic() >= deadline:
                raise AssertionError(f"sink {self.name} ({self.address}) got {len(got)} of {n} messages "
                                     f"within {timeout}s: {got}; sink log:\n{self.log()}")
            time.sleep(0.1)

    def wait_for_ids(self, ids: Iterable[str], timeout: float = 30.0) -> list[SinkMessage]:
        want = set(ids)
        deadline = time.monotonic() + timeout
        while True:
            got = self.messages()
            missing = want - {m.message_id for m in got}
            if not missing:
                return got
            if time.monotonic() >= deadline:
                raise AssertionError(f"sink {self.name}: {len(missing)} of {len(want)} Message-IDs never "
                                     f"arrived within {timeout}s, e.g. {sorted(missing)[:5]}")
            time.sleep(0.2)


@pytest.fixture
def sink(tmp_path):
    """Factory: sink(name="s", host="127.0.0.1", port=None, options=(), start=True) -> Sink.
    All sinks are stopped at teardown."""
    made: list[Sink] = []

    def _make(name: str | None = None, host: str = "127.0.0.1", port: int | None = None,
              options: Iterable[str] = (), start: bool = True) -> Sink:
        s = Sink(tmp_path, name or f"s{len(made) + 1}", host=host, port=port, options=options)
        made.append(s)
        if start:
            s.start()
        return s

    yield _make
    for s in made:
        s.stop()


# --------------------------------------------------------------------------------------------
# A raw capturing SMTP server (smtp-sink normalises line ends; this one keeps every byte)
# --------------------------------------------------------------------------------------------


class ThreadedServer:
    """A listening socket on host:port (IPv4) that runs `_session(conn)` in a thread of its
    own for every connection it accepts; `connections` counts them. stop() ends the accept
    loop and closes every connection. Subclasses write `_session` and watch `_stop`."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None):
        self.host = host
        self.port = port or free_port()
        self.connections = 0
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._open: list[socket.socket] = []
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self.port))
        s.listen(16)
        s.settimeout(0.2)
        self._sock = s
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(3)
        with self.lock:
            for conn in self._open:
                conn.close()
        if self._sock:
            self._sock.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self._open.append(conn)
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        raise NotImplementedError


class CaptureServer(ThreadedServer):
    """A minimal threaded SMTP server that records each transaction's DATA exactly as sent on
    the wire (still dot-stuffed, up to and including the CRLF.CRLF terminator), in
    `transactions`: dicts with mail, rcpts (the command lines) and data (bytes).
    EHLO offers PIPELINING, 8BITMIME, SIZE, ENHANCEDSTATUSCODES; it accepts everything.
    With `idle_close` set, a connection that sends nothing for that many seconds gets 421
    and is closed (as real servers' idle timeouts do)."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None,
                 idle_close: float | None = None):
        super().__init__(host, port)
        self.idle_close = idle_close
        self.transactions: list[dict] = []

    def _session(self, conn: socket.socket) -> None:
        conn.settimeout(self.idle_close or 30)
        buf = b""

        def line() -> bytes | None:
            nonlocal buf
            while b"\r\n" not in buf:
                chunk = conn.recv(65536)
                if not chunk:
                    return None
                buf += chunk
            out, buf = buf.split(b"\r\n", 1)
            return out

        try:
            conn.sendall(b"220 capture.test ESMTP\r\n")
            mail, rcpts = None, []
            while not self._stop.is_set():
                try:
                    cmd = line()
                except socket.timeout:
                    conn.sendall(b"421 4.4.2 capture.test idle too long\r\n")
                    return
                if cmd is None:
                    return
                verb = cmd[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    conn.sendall(b"250-capture.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
                                 b"250-SIZE 100000000\r\n250 ENHANCEDSTATUSCODES\r\n")
                elif verb == b"MAIL":
                    mail, rcpts = cmd, []
                    conn.sendall(b"250 2.1.0 Ok\r\n")
                elif verb == b"RCPT":
                    rcpts.append(cmd)
                    conn.sendall(b"250 2.1.5 Ok\r\n")
                elif verb == b"DATA":
                    conn.sendall(b"354 go ahead\r\n")
                    while True:
                        if buf.startswith(b".\r\n"):
                            end = 0
                            break
                        end = buf.find(b"\r\n.\r\n")
                        if end >= 0:
                            end += 2
                            break
                        chunk = conn.recv(65536)
                        if not chunk:
                            return
                        buf += chunk
                    data, buf = buf[:end + 3], buf[end + 3:]
                    with self.lock:
                        self.transactions.append({"mail": mail, "rcpts": rcpts, "data": data})
                    conn.sendall(b"250 2.0.0 Ok captured\r\n")
                elif verb == b"RSET":
                    mail, rcpts = None, []
                    conn.sendall(b"250 2.0.0 Ok\r\n")
                elif verb == b"QUIT":
                    conn.sendall(b"221 2.0.0 Bye\r\n")
                    return
                else:
                    conn.sendall(b"250 2.0.0 Ok\r\n")
        except OSError:
            return
        finally:
            conn.close()

    def wait_for(self, n: int, timeout: float = 30.0) -> list[dict]:
        wait_until(lambda: len(self.transactions) >= n, timeout,
                   what=lambda: f"{n} transactions at the capture server (got {len(self.transactions)})")
        return list(self.transactions)


@pytest.fixture
def capture_server():
    """Factory: capture_server(host="127.0.0.1", port=None) -> running CaptureServer."""
    made: list[CaptureServer] = []

    def _make(host: str = "127.0.0.1", port: int | None = None,
              idle_close: float | None = None) -> CaptureServer:
        c = CaptureServer(host, port, idle_close).start()
        made.append(c)
        return c

    yield _make
    for c in made:
        c.stop()


# --------------------------------------------------------------------------------------------
# Test DNS server, delivery daemons
# --------------------------------------------------------------------------------------------


@pytest.fixture
def dns():
    """A running DNSServer with no records (set them with dns.set_records / dns.add)."""
    server = DNSServer({}).start()
    yield server
    server.stop()


DELIVERY_DEFAULTS = {
    "retry_initial": "1s",
    "retry_max": "2s",
    "max_queue_lifetime": "5d",
    "delay_warning": "0s",
    "dead_destination_failures": 1000,
    "connect_timeout": "3s",
    "command_timeout": "10s",
    "double_bounce": "",
}


def route(domains, hops=None, smart_host=None, tls: str = "none", **extra) -> dict:
    """A [[route]] table. `hops` is a list of "host:port" (or Sink/CaptureServer objects)."""
    def addr(h):
        return h if isinstance(h, str) else h.address
    r = {"domains": list(domains) if not isinstance(domains, str) else [domains]}
    if hops is not None:
        r["next_hops"] = [addr(h) for h in hops]
    if smart_host is not None:
        r["smart_host"] = addr(smart_host)
    r["tls"] = tls
    r.update(extra)
    return r


def delivery_toml(routes: list[dict], delivery: dict | None = None, dns_servers: Iterable[str] = (),
                  dns_timeout: str = "2s") -> str:
    return to_toml({"route": list(routes),
                    "delivery": {**DELIVERY_DEFAULTS, **(delivery or {})},
                    "dns": {"servers": list(dns_servers), "timeout": dns_timeout}})


@pytest.fixture
def start_mta(start_daemon, dns):
    """Factory: start_mta(base, routes=[...], delivery={...}, relay_anywhere=False, **daemon_kw)
    -> a running Daemon with [[route]], [delivery] (short retry timings, see DELIVERY_DEFAULTS)
    and [dns] pointing at the test DNS server (always). relay_anywhere=True makes 127.0.0.1 a
    trusted network so the test may relay to foreign domains."""

    def _start(base: Path, routes: list[dict], delivery: dict | None = None, relay_anywhere: bool = False,
               extra_toml: str = "", **kw) -> Daemon:
        if relay_anywhere:
            kw["relay"] = {"trusted_networks": ["127.0.0.1/32"], **(kw.get("relay") or {})}
        text = delivery_toml(routes, delivery, [dns.address])
        return start_daemon(base, extra_toml=text + ("\n" + extra_toml if extra_toml else ""), **kw)

    return _start


def wait_queue_empty(daemon: Daemon, timeout: float = 30.0) -> None:
    last = []

    def empty():
        nonlocal last
        last = daemon.queue_list()
        return not last
    wait_until(empty, timeout, interval=0.2, what=lambda: f"an empty queue; still queued: {last}")


def assert_every_entry_scheduled(daemon: Daemon, timeout: float = 10.0, grace: float = 5.0) -> list[dict]:
    """Walks the queue index: every entry must have a next attempt that is not overdue (by
    more than `grace` seconds) or a state that explains why it has none (hold). A message
    with neither waits forever: it never delivers, never expires, never bounces. Polls for
    `timeout` so an attempt that is running right now may finish."""
    last: list[dict] = []
    unscheduled: list[dict] = []

    def check():
        nonlocal last, unscheduled
        now = time.time()
        last = daemon.queue_list()
        unscheduled = [e for e in last if e.get("state") != "hold"
                       and not (isinstance(e.get("next_attempt"), int)
                                and e["next_attempt"] >= now - grace)]
        return not unscheduled
    wait_until(check, timeout, interval=0.2,
               what=lambda: f"every queue entry scheduled or held; with nothing scheduled: {unscheduled}")
    return last


def wait_queue_len(daemon: Daemon, n: int, timeout: float = 30.0) -> list[dict]:
    last = []

    def check():
        nonlocal last
        last = daemon.queue_list()
        return len(last) == n
    wait_until(check, timeout, interval=0.2, what=lambda: f"{n} queue entries; have {len(last)}: {last}")
    return last


def assert_no_new_messages(sink_obj: Sink, seconds: float, already: int = 0, what: str = "") -> None:
    """Watches the sink for `seconds`: fails as soon as it holds more than `already` messages."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = sink_obj.messages()
        assert len(got) <= already, f"{what or 'unexpected message'} at sink {sink_obj.name}: {got[already:]}"
        time.sleep(0.2)


# --------------------------------------------------------------------------------------------
# DSNs (RFC 3464)
# --------------------------------------------------------------------------------------------


class DSN:
    """A parsed delivery status notification: .msg (the whole message), .report_type,
    .text (the human part), .per_message (dict), .recipients (list of dicts of per-recipient
    fields, keys lower-case), .returned (the third part: a Message for message/rfc822, the
    header text for text/rfc822-headers, else None), .returned_type."""

    def __init__(self, msg: email.message.Message):
        self.msg = msg
        assert msg.get_content_type() == "multipart/report", \
            f"DSN is {msg.get_content_type()}, not multipart/report:\n{msg.as_string()[:3000]}"
        self.report_type = (msg.get_param("report-type") or "").lower()
        parts = msg.get_payload()
        assert isinstance(parts, list) and len(parts) >= 2, f"DSN has {len(parts) if isinstance(parts, list) else 0} parts"
        self.parts = parts
        self.text = parts[0].get_payload(decode=True).decode("utf-8", "replace") \
            if parts[0].get_content_maintype() == "text" else ""
        status = [p for p in parts if p.get_content_type() == "message/delivery-status"]
        assert status, f"no message/delivery-status part: {[p.get_content_type() for p in parts]}"
        blocks = status[0].get_payload()
        if isinstance(blocks, str):  # not parsed as blocks: do it by hand
            blocks = [email.message_from_string(b.strip() + "\n") for b in re.split(r"\n\s*\n", blocks.strip())]
        blocks = [b for b in blocks if len(b.keys())]
        assert blocks, "empty message/delivery-status part"

        def fields(block):
            return {k.lower(): " ".join(str(v).split()) for k, v in block.items()}
        self.per_message = fields(blocks[0])
        self.recipients = [fields(b) for b in blocks[1:]]
        self.returned = None
        self.returned_type = None
        for p in parts[2:]:
            ct = p.get_content_type()
            if ct == "message/rfc822":
                self.returned_type = ct
                payload = p.get_payload()
                self.returned = payload[0] if isinstance(payload, list) else payload
            elif ct == "text/rfc822-headers":
                self.returned_type = ct
                self.returned = p.get_payload(decode=True).decode("utf-8", "replace")

    def recipient(self, addr: str) -> dict | None:
        for r in self.recipients:
            fr = r.get("final-recipient", "")
            if fr.lower().split(";", 1)[-1].strip().strip("<>") == addr.lower():
                return r
        return None

    def final_recipients(self) -> list[str]:
        return [r.get("final-recipient", "").split(";", 1)[-1].strip().strip("<>").lower() for r in self.recipients]


def parse_dsn(m) -> DSN:
    """m: a SinkMessage, an email Message, or bytes."""
    if isinstance(m, SinkMessage):
        m = m.msg
    elif isinstance(m, (bytes, bytearray)):
        m = email.message_from_bytes(bytes(m), policy=email.policy.compat32)
    return DSN(m)


# --------------------------------------------------------------------------------------------
# One message through a daemon (delivery and DSN tests)
# --------------------------------------------------------------------------------------------

DEFAULT_SENDER = "sender@other.org"


def mid(tag: str, i: int = 0) -> str:
    """A Message-ID unique to this test run."""
    return f"<{tag}-{i}-{os.getpid()}@other.org>"


def send_message(d, rcpts=("alice@example.com",), sender=DEFAULT_SENDER, subject="hello",
                 body="hello world", message_id=None, mail_params="", rcpt_params=""):
    """One message in one session; returns the queue id."""
    msg = make_message(subject=subject, body=body, message_id=message_id, sender=sender or "x@other.org",
                       to=rcpts[0])
    with RawSession(d.port) as s:
        expect(s.greeting(), 220, what="greeting")
        expect(s.ehlo(), 250, what="EHLO")
        expect(s.cmd(f"MAIL FROM:<{sender}>" + (f" {mail_params}" if mail_params else "")), 250, what="MAIL")
        for r in rcpts:
            expect(s.cmd(f"RCPT TO:<{r}>" + (f" {rcpt_params}" if rcpt_params else "")), 250, what=f"RCPT {r}")
        qid = queue_id_of(s.data(msg))
        s.cmd("QUIT")
    return qid
