"""A DNSSEC-signed zone on a loopback port, for the DANE tests (tests/test_tls_policy.py).

    zone = SignedZone(tmp_path / "dns", "example.net")      # one KSK, made by ldns-keygen
    zone.sign(["@ IN MX 10 mx", "mx IN A 127.0.0.1", "_2525._tcp.mx IN TLSA 3 1 1 ab..."],
              corrupt=("_2525._tcp.mx.example.net.", "TLSA"))   # optional: a bogus RRSIG
    server = Nsd(tmp_path / "nsd", zone).start()             # Debian's nsd, authoritative
    server.address -> "127.0.0.1:PORT"; zone.trust_anchor -> the KSK as a DNSKEY file
    server.stop()

The zone is signed by ldns-signzone (Debian's ldnsutils) with NSEC, so denials are real
proofs; a single key (flags 257) signs every RRset, so the trust anchor is the whole DNSKEY
set and a validator needs no DS from a parent. `corrupt` flips bits of one RRset's signature
after signing: the records stay as they were, their proof becomes bogus.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import time
from pathlib import Path

from conftest import free_port, run, wait_until

LDNS_KEYGEN = shutil.which("ldns-keygen") or "/usr/bin/ldns-keygen"
LDNS_SIGNZONE = shutil.which("ldns-signzone") or "/usr/bin/ldns-signzone"
NSD = shutil.which("nsd") or "/usr/sbin/nsd"


def missing_tools() -> list[str]:
    return [p for p in (LDNS_KEYGEN, LDNS_SIGNZONE, NSD) if not Path(p).is_file()]


class SignedZone:
    def __init__(self, directory: Path, origin: str):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.origin = origin.rstrip(".")
        cp = run([LDNS_KEYGEN, "-a", "ECDSAP256SHA256", "-k", self.origin], timeout=30, cwd=self.dir)
        assert cp.returncode == 0, f"ldns-keygen failed: {cp.stderr}"
        self.key_base = cp.stdout.strip().splitlines()[-1]
        key_line = (self.dir / f"{self.key_base}.key").read_text().split(";", 1)[0].strip()
        assert " DNSKEY" in key_line.replace("\t", " ") and " 257 " in key_line.replace("\t", " "), key_line
        self.trust_anchor = self.dir / "trust-anchor.key"
        self.trust_anchor.write_text(key_line + "\n")
        self.signed = self.dir / f"{self.origin}.signed"

    def sign(self, records: list[str], corrupt: tuple[str, str] | None = None) -> Path:
        """Writes and signs the zone (SOA, NS ns, ns A 127.0.0.1 and `records`, relative to
        the origin); `corrupt` = (owner with trailing dot, type) makes that RRSIG bogus."""
        origin = self.origin + "."
        text = [f"$ORIGIN {origin}", "$TTL 60",
                f"@ IN SOA ns.{origin} hostmaster.{origin} 1 60 60 600 1",
                f"@ IN NS ns.{origin}", "ns IN A 127.0.0.1", *records]
        unsigned = self.dir / f"{self.origin}.zone"
        unsigned.write_text("\n".join(text) + "\n")
        cp = run([LDNS_SIGNZONE, "-o", self.origin, "-f", self.signed, unsigned, self.key_base],
                 timeout=30, cwd=self.dir)
        assert cp.returncode == 0, f"ldns-signzone failed: {cp.stderr}{cp.stdout}"
        if corrupt is not None:
            self._corrupt(*corrupt)
        return self.signed

    def _corrupt(self, owner: str, rtype: str) -> None:
        lines = self.signed.read_text().splitlines()
        hit = 0
        for i, line in enumerate(lines):
            fields = line.split()
            if len(fields) > 5 and fields[0].lower() == owner.lower() and fields[3] == "RRSIG" \
                    and fields[4] == rtype:
                signature = bytearray(base64.b64decode("".join(fields[12:])))
                signature[len(signature) // 2] ^= 0xFF
                lines[i] = "\t".join(fields[:12] + [base64.b64encode(bytes(signature)).decode()])
                hit += 1
        assert hit == 1, f"expected one RRSIG {rtype} at {owner} to corrupt, found {hit}"
        self.signed.write_text("\n".join(lines) + "\n")


class Nsd:
    """nsd in the foreground, authoritative for one signed zone on 127.0.0.1:PORT (UDP, TCP)."""

    def __init__(self, directory: Path, zone: SignedZone):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.zone = zone
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = self.dir / "nsd.log"
        self.conf = self.dir / "nsd.conf"
        d = self.dir
        self.conf.write_text(f"""server:
  ip-address: 127.0.0.1
  port: {self.port}
  database: ""
  zonelistfile: "{d}/zone.list"
  xfrdfile: "{d}/xfrd.state"
  xfrdir: "{d}"
  pidfile: "{d}/nsd.pid"
  username: ""
  chroot: ""
  zonesdir: "{zone.dir}"
  logfile: "{self.log_path}"
  server-count: 1
  reuseport: no
  verbosity: 1
remote-control:
  control-enable: no
zone:
  name: "{zone.origin}"
  zonefile: "{zone.signed}"
""")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> "Nsd":
        self.proc = subprocess.Popen([NSD, "-d", "-c", str(self.conf)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                     start_new_session=True)

        def serving():
            if self.proc.poll() is not None:
                raise AssertionError(f"nsd exited ({self.proc.returncode}): {self.log()}")
            return re.search(rf"zone {re.escape(self.zone.origin)} read with success", self.log()) \
                and "nsd started" in self.log()
        wait_until(serving, timeout, interval=0.1, what=lambda: f"nsd serving the zone; log: {self.log()}")
        time.sleep(0.2)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
