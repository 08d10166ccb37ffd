"""A real boot: systemd-nspawn boots systemd in a container whose /usr is the host's (read-only)
with the bulwark RPM's /usr layered over it; bulwark is started, takes a message over SMTP
(swaks inside the container, loopback only: --private-network), logs it to journald with its
structured fields, reloads, and stops cleanly. The container is torn down on every path."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import QUEUED_RE, REPO, run
from test_packaging import PACKAGING, build_rpms

CAPS = "CAP_BPF,CAP_PERFMON,CAP_NET_ADMIN"


def skip(reason: str) -> None:
    print(f"SKIP REASON: {reason}")
    pytest.skip(reason)


class Container:
    def __init__(self, root: Path, usr_overlay: Path, name: str, log: Path):
        self.root, self.name, self.log = root, name, log
        self.proc = subprocess.Popen(
            ["systemd-nspawn", "-q", "-D", str(root), f"--machine={name}", "--register=no",
             # No machined and no systemd on the host: run in this process's own cgroup.
             "--keep-unit",
             "--private-network", "--console=passive", f"--capability={CAPS}",
             # The host's /usr read-only, the package's files (from the RPM) layered on top.
             f"--overlay-ro=/usr:{usr_overlay}:/usr", "-b"],
            stdin=subprocess.DEVNULL, stdout=log.open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True)
        self.leader = None

    def find_leader(self) -> int | None:
        """The container's PID 1: the child of systemd-nspawn."""
        try:
            kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        except OSError:
            return None
        return int(kids[0]) if kids else None

    def sh(self, command: str, timeout: float = 20) -> subprocess.CompletedProcess:
        assert self.leader, "container not up"
        return run(["nsenter", "-t", self.leader, "-a", "/bin/sh", "-c", command], timeout=timeout)

    def wait_booted(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            self.leader = self.leader or self.find_leader()
            if self.leader:
                cp = self.sh("systemctl is-system-running 2>/dev/null", timeout=5)
                state = cp.stdout.strip()
                if state in ("running", "degraded"):
                    return state
            time.sleep(0.2)
        raise AssertionError(f"container did not boot in {timeout} s (state {state!r}): "
                             + self.log.read_text(errors="replace")[-3000:])

    def terminate(self) -> None:
        if self.proc.poll() is None:
            # SIGTERM asks the container's systemd to power off; SIGKILL after a bounded wait.
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def make_root(root: Path, rpm: Path) -> Path:
    """The container root: the RPM installed with rpm --root after systemd-sysusers --root; its
    /usr moved aside to be overlaid on the host's /usr. Returns that overlay directory."""
    root.mkdir(mode=0o755)
    os.chmod(root, 0o755)  # nspawn refuses (or misbehaves with) a 0700 root
    for d in ["etc", "var/lib/rpm", "var/log/journal", "run", "tmp", "root", "proc", "sys", "dev", "usr"]:
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    for link, target in [("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")]:
        (root / link).symlink_to(target)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    (root / "etc/shadow").write_text("root:*:19000:0:99999:7:::\n")
    (root / "etc/hostname").write_text("bulwark-boot\n")
    (root / "etc/resolv.conf").write_text("nameserver 127.0.0.1\n")
    # A machine id (not a first boot: no presets enabling the host's units, e.g. postfix on
    # port 25) and no first-boot wizard waiting for a key.
    (root / "etc/machine-id").write_text(os.urandom(16).hex() + "\n")
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/systemd-firstboot.service").symlink_to("/dev/null")
    (root / "etc/systemd/system/default.target").symlink_to("/usr/lib/systemd/system/multi-user.target")
    shutil.copy("/usr/lib/os-release", root / "etc/os-release")
    # swaks (perl's getprotobyname) needs these.
    for f in ("protocols", "services", "nsswitch.conf"):
        shutil.copy(f"/etc/{f}", root / "etc" / f)
    (root / "etc/hosts").write_text("127.0.0.1 localhost bulwark-boot\n::1 localhost\n")
    cp = run(["systemd-sysusers", f"--root={root}", PACKAGING / "bulwark.sysusers"])
    assert cp.returncode == 0, cp.stderr
    cp = run(["rpm", "--root", root, "--dbpath", "/var/lib/rpm", "--nodeps", "--noscripts", "-ivh", rpm],
             timeout=120)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    overlay = root.parent / "usr-pkg"
    (root / "usr").rename(overlay)
    (root / "usr").mkdir()
    return overlay


@pytest.fixture
def container(tmp_path):
    if os.geteuid() != 0:
        skip("booting a container needs root (CI runs as root)")
    missing = [c for c in ("systemd-nspawn", "nsenter", "rpm", "rpmbuild", "systemd-sysusers")
               if not shutil.which(c)]
    if missing or not shutil.which("swaks"):
        skip(f"missing {missing or ['swaks']}: .ci/run installs systemd-container, rpm, swaks")
    if "overlay" not in Path("/proc/filesystems").read_text():
        skip("the kernel has no overlayfs (needed to layer the package's /usr on the host's)")
    rpms = build_rpms(tmp_path / "rpms")
    rpm = next(r for r in rpms if re.match(r"bulwark-\d", r.name))
    base = tmp_path / "boot"
    base.mkdir()
    root = base / "root"
    overlay = make_root(root, rpm)
    c = Container(root, overlay, f"bulwark-test-{os.getpid()}", tmp_path / "nspawn.log")
    try:
        yield c
    finally:
        c.terminate()
        # Nothing may stay mounted under the root before it is removed.
        mounts = [l.split()[1] for l in Path("/proc/mounts").read_text().splitlines()
                  if l.split()[1].startswith(str(base))]
        for m in sorted(mounts, reverse=True):
            run(["umount", "-l", m])
        shutil.rmtree(base, ignore_errors=True)


def test_boot_start_send_reload_journal_stop(container):
    c = container
    t0 = time.monotonic()
    state = c.wait_booted(timeout=20)
    boot_seconds = time.monotonic() - t0
    print(f"booted to {state} in {boot_seconds:.1f} s")
    assert boot_seconds < 15, boot_seconds

    cp = c.sh("systemctl start bulwark", timeout=30)
    assert cp.returncode == 0, cp.stdout + cp.stderr + c.sh("journalctl -u bulwark --no-pager").stdout
    assert c.sh("systemctl is-active bulwark").stdout.strip() == "active"
    # It runs as its user, with its capabilities.
    show = c.sh("systemctl show -p MainPID --value bulwark").stdout.strip()
    status = c.sh(f"cat /proc/{show}/status").stdout
    assert re.search(r"^Uid:\s+(\d+)", status, re.M).group(1) != "0", status
    capamb = int(re.search(r"^CapAmb:\s+([0-9a-f]+)", status, re.M).group(1), 16)
    for bit in (10, 12, 38, 39):  # NET_BIND_SERVICE, NET_ADMIN, PERFMON, BPF
        assert capamb & (1 << bit), (bit, hex(capamb))

    # A message to the shipped config's listener (port 25), from inside the container.
    cp = c.sh("swaks --server 127.0.0.1:25 --from sender@other.org --to alice@example.com "
              "--h-Subject boot-test --body hello --timeout 15", timeout=30)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    m = re.search(r"<-\s+250 .*" + QUEUED_RE.pattern, cp.stdout)
    assert m, cp.stdout
    queue_id = m.group(1)

    # journald holds the structured fields: the message is found by its queue id.
    def queued_line():
        out = c.sh(f"journalctl -u bulwark QUEUE_ID={queue_id} -o verbose --no-pager").stdout
        return out if f"QUEUE_ID={queue_id}" in out else None
    verbose = wait_for(queued_line, 10, f"journal entries with QUEUE_ID={queue_id}")
    assert "CLIENT_ADDR=" in verbose or "RECIPIENT=" in verbose, verbose

    # Reload: still active, the journal shows it.
    cp = c.sh("systemctl reload bulwark", timeout=30)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert c.sh("systemctl is-active bulwark").stdout.strip() == "active"
    wait_for(lambda: "Reloaded" in c.sh("journalctl -u bulwark --no-pager -o cat").stdout, 10,
             "the reload in the journal")

    # Stop drains and exits cleanly.
    cp = c.sh("systemctl stop bulwark", timeout=90)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert c.sh("systemctl is-active bulwark").stdout.strip() == "inactive"
    props = c.sh("systemctl show -p Result -p ExecMainStatus -p ExecMainCode bulwark").stdout
    assert "Result=success" in props and "ExecMainStatus=0" in props, props
