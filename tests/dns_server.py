"""A tiny authoritative DNS responder for the delivery tests (stdlib only).

    dns = DNSServer({"example.net": {"MX": [(10, "mx1.example.net")]},
                     "mx1.example.net": {"A": ["127.0.0.2"]}}).start()
    dns.address  -> "127.0.0.1:PORT"   (UDP and TCP on the same port)
    dns.stop()

Records: {name: {TYPE: [values]}} with TYPE one of A, AAAA, MX, TXT, CNAME.
  A/AAAA: address strings; MX: (preference, exchange) tuples -- exchange "." is the null MX
  (RFC 7505); TXT: strings (split into 255-byte character-strings); CNAME: a name.
Names are matched case-insensitively, with or without the trailing dot. A name that is not in
the table gets NXDOMAIN; a name that is there without the asked type gets NOERROR with no
answers (NODATA). Both negative answers carry an SOA in the authority section (TTL 1).
Every query is appended to `queries` as (name, type-name, transport).
`records` may be changed while the server runs (set_records / add).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import threading

TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28,
         "SRV": 33, "OPT": 41, "ANY": 255}
TYPE_NAMES = {v: k for k, v in TYPES.items()}
CLASS_IN = 1
RCODE_NOERROR, RCODE_FORMERR, RCODE_SERVFAIL, RCODE_NXDOMAIN, RCODE_NOTIMP = 0, 1, 2, 3, 4


def normalize(name: str) -> str:
    name = name.strip().lower()
    return name[:-1] if name.endswith(".") and name != "." else name


def encode_name(name: str) -> bytes:
    """Wire form of a domain name, no compression. "." and "" are the root."""
    name = name.strip()
    if name in ("", "."):
        return b"\x00"
    out = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode("idna") if any(ord(c) > 127 for c in label) else label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise ValueError(f"bad label in {name!r}")
        out += bytes([len(raw)]) + raw
    return out + b"\x00"


def decode_name(packet: bytes, offset: int) -> tuple[str, int]:
    """(dotted name, offset after the name), following compression pointers (bounded)."""
    labels = []
    end = None
    jumps = 0
    while True:
        if offset >= len(packet):
            raise ValueError("name runs past the packet")
        length = packet[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(packet):
                raise ValueError("truncated pointer")
            if end is None:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | packet[offset + 1]
            jumps += 1
            if jumps > 32:
                raise ValueError("compression loop")
            continue
        if length & 0xC0:
            raise ValueError("bad label type")
        offset += 1
        if length == 0:
            break
        labels.append(packet[offset:offset + length].decode("ascii", "replace"))
        offset += length
    return (".".join(labels) or "."), (end if end is not None else offset)


def encode_rdata(rtype: str, value) -> bytes:
    if rtype == "A":
        return ipaddress.IPv4Address(value).packed
    if rtype == "AAAA":
        return ipaddress.IPv6Address(value).packed
    if rtype == "MX":
        pref, exchange = value
        return struct.pack("!H", int(pref)) + encode_name(exchange)
    if rtype in ("CNAME", "NS", "PTR"):
        return encode_name(value)
    if rtype == "TXT":
        raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        chunks = [raw[i:i + 255] for i in range(0, len(raw), 255)] or [b""]
        return b"".join(bytes([len(c)]) + c for c in chunks)
    raise ValueError(f"unsupported record type {rtype}")


def soa_rdata(zone: str) -> bytes:
    return (encode_name("ns." + zone) + encode_name("hostmaster." + zone) +
            struct.pack("!IIIII", 1, 60, 60, 600, 1))


def build_query(name: str, rtype: str | int, qid: int = 0x1234, rd: bool = True) -> bytes:
    """A query packet (for the unit test and for anyone poking at the server by hand)."""
    code = TYPES[rtype] if isinstance(rtype, str) else rtype
    flags = 0x0100 if rd else 0
    return struct.pack("!HHHHHH", qid, flags, 1, 0, 0, 0) + encode_name(name) + struct.pack("!HH", code, CLASS_IN)


def parse_response(packet: bytes) -> dict:
    """Decodes a response: {"id", "flags", "rcode", "aa", "tc", "question", "answers",
    "authority"}; each record is (name, type-name, ttl, value) with value decoded for A, AAAA,
    MX (pref, exchange), TXT (joined str), CNAME/NS/PTR (name), else raw bytes."""
    qid, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", packet[:12])
    off = 12
    question = []
    for _ in range(qd):
        name, off = decode_name(packet, off)
        qtype, qclass = struct.unpack("!HH", packet[off:off + 4])
        off += 4
        question.append((name, TYPE_NAMES.get(qtype, qtype)))

    def records(count, off):
        out = []
        for _ in range(count):
            name, off = decode_name(packet, off)
            rtype, rclass, ttl, rdlen = struct.unpack("!HHIH", packet[off:off + 10])
            off += 10
            rdata = packet[off:off + rdlen]
            tname = TYPE_NAMES.get(rtype, rtype)
            if tname == "A":
                value = str(ipaddress.IPv4Address(rdata))
            elif tname == "AAAA":
                value = str(ipaddress.IPv6Address(rdata))
            elif tname == "MX":
                value = (struct.unpack("!H", rdata[:2])[0], decode_name(packet, off + 2)[0])
            elif tname in ("CNAME", "NS", "PTR"):
                value = decode_name(packet, off)[0]
            elif tname == "TXT":
                parts, i = [], 0
                while i < len(rdata):
                    parts.append(rdata[i + 1:i + 1 + rdata[i]])
                    i += 1 + rdata[i]
                value = b"".join(parts).decode("utf-8", "replace")
            else:
                value = rdata
            out.append((name, tname, ttl, value))
            off += rdlen
        return out, off

    answers, off = records(an, off)
    authority, off = records(ns, off)
    return {"id": qid, "flags": flags, "rcode": flags & 0xF, "aa": bool(flags & 0x0400),
            "tc": bool(flags & 0x0200), "question": question, "answers": answers,
            "authority": authority}


class DNSServer:
    def __init__(self, records: dict | None = None, host: str = "127.0.0.1", ttl: int = 1):
        self.host = host
        self.ttl = ttl
        self.lock = threading.Lock()
        self.records: dict[str, dict[str, list]] = {}
        self.set_records(records or {})
        self.queries: list[tuple[str, str, str]] = []
        self.port = 0
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- records
    def set_records(self, records: dict) -> None:
        table = {}
        for name, types in records.items():
            table[normalize(name)] = {t.upper(): list(v) for t, v in types.items()}
        with self.lock:
            self.records = table

    def add(self, name: str, rtype: str, *values) -> None:
        with self.lock:
            self.records.setdefault(normalize(name), {}).setdefault(rtype.upper(), []).extend(values)

    def remove(self, name: str) -> None:
        with self.lock:
            self.records.pop(normalize(name), None)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # -- lifecycle
    def start(self) -> "DNSServer":
        for _ in range(50):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind((self.host, 0))
            port = udp.getsockname()[1]
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind((self.host, port))
            except OSError:
                udp.close()
                tcp.close()
                continue
            tcp.listen(16)
            break
        else:
            raise RuntimeError("no port free for both UDP and TCP")
        udp.settimeout(0.2)
        tcp.settimeout(0.2)
        self._udp, self._tcp, self.port = udp, tcp, port
        for target in (self._serve_udp, self._serve_tcp):
            t = threading.Thread(target=target, daemon=True, name=f"dns-{target.__name__}")
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(2)
        for s in (self._udp, self._tcp):
            if s is not None:
                s.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- serving
    def _serve_udp(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self._udp.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            reply = self.handle(data, "udp")
            if reply is not None:
                try:
                    self._udp.sendto(reply, peer)
                except OSError:
                    pass

    def _serve_tcp(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._tcp.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._tcp_conn, args=(conn,), daemon=True).start()

    def _tcp_conn(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        buf = b""
        try:
            while not self._stop.is_set():
                while len(buf) < 2 or len(buf) < 2 + struct.unpack("!H", buf[:2])[0]:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    buf += chunk
                n = struct.unpack("!H", buf[:2])[0]
                msg, buf = buf[2:2 + n], buf[2 + n:]
                reply = self.handle(msg, "tcp")
                if reply is not None:
                    conn.sendall(struct.pack("!H", len(reply)) + reply)
        except OSError:
            return
        finally:
            conn.close()

    def handle(self, data: bytes, transport: str = "udp") -> bytes | None:
        if len(data) < 12:
            return None
        qid, flags, qd, _an, _ns, ar = struct.unpack("!HHHHHH", data[:12])
        if flags & 0x8000:  # a response: ignore
            return None
        opcode = (flags >> 11) & 0xF
        rd = flags & 0x0100
        try:
            if qd != 1:
                raise ValueError("want exactly one question")
            qname, off = decode_name(data, 12)
            qtype, qclass = struct.unpack("!HH", data[off:off + 4])
            question = data[12:off + 4]
        except (ValueError, struct.error):
            return struct.pack("!HHHHHH", qid, 0x8000 | rd | RCODE_FORMERR, 0, 0, 0, 0)
        tname = TYPE_NAMES.get(qtype, str(qtype))
        self.queries.append((normalize(qname), tname, transport))
        if opcode != 0:
            return struct.pack("!HHHHHH", qid, 0x8000 | (opcode << 11) | rd | RCODE_NOTIMP, 1, 0, 0, 0) + question

        name = normalize(qname)
        with self.lock:
            entry = self.records.get(name)
            entry = {t: list(v) for t, v in entry.items()} if entry is not None else None
        answers: list[bytes] = []
        authority: list[bytes] = []
        rcode = RCODE_NOERROR
        owner = encode_name(qname)
        if entry is None:
            rcode = RCODE_NXDOMAIN
        else:
            wanted = [tname] if tname != "ANY" else [t for t in entry if t in TYPES]
            if tname not in entry and "CNAME" in entry and tname != "CNAME":
                wanted = ["CNAME"]
            for t in wanted:
                for value in entry.get(t, []):
                    rdata = encode_rdata(t, value)
                    answers.append(owner + struct.pack("!HHIH", TYPES[t], CLASS_IN, self.ttl, len(rdata)) + rdata)
        if not answers:
            labels = name.split(".")
            zone = ".".join(labels[-2:]) if len(labels) >= 2 else name
            rdata = soa_rdata(zone)
            authority.append(encode_name(zone) + struct.pack("!HHIH", TYPES["SOA"], CLASS_IN, 1, len(rdata)) + rdata)
        # answer EDNS queries with an OPT record of our own (4096-byte UDP payload)
        additional = []
        if ar:
            additional.append(b"\x00" + struct.pack("!HHIH", TYPES["OPT"], 4096, 0, 0))
        rflags = 0x8000 | 0x0400 | rd | 0x0080 | rcode  # QR, AA, RD copied, RA
        body = (question + b"".join(answers) + b"".join(authority) + b"".join(additional))
        packet = struct.pack("!HHHHHH", qid, rflags, 1, len(answers), len(authority), len(additional)) + body
        limit = 4096 if ar else 512
        if transport == "udp" and len(packet) > limit:
            packet = struct.pack("!HHHHHH", qid, rflags | 0x0200, 1, 0, 0, 0) + question
        return packet
