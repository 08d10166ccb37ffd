#!/usr/bin/env python3
"""SMTP client for the flow-control tests; runs inside a client network namespace
(`ip netns exec NS python3 flow_client.py MODE ...`) and prints one JSON line.

Every loop is bounded in count and every socket has a timeout below the 1 s SYN retransmit,
so one attempt is exactly one SYN.

  flood HOST PORT COUNT TIMEOUT      connection attempts as fast as possible; counts greetings
  deliver HOST PORT COUNT INTERVAL   sends COUNT messages, one per INTERVAL seconds
  harvest HOST PORT COUNT            one session, RCPT TO COUNT unknown users
  probe HOST PORT TIMEOUT            one attempt: did we get a 220?
  rate HOST PORT SECONDS             messages back to back for SECONDS, 50 per connection
  flood_for HOST PORT SECONDS THREADS  THREADS connection loops for SECONDS (bench only)
  syns HOST PORT COUNT               COUNT raw SYNs from this namespace (bench only)
"""

import json
import smtplib
import socket
import sys
import time


def greeted(host: str, port: int, timeout: float) -> str:
    """'220', 'refused' (a 4xx/5xx greeting), or 'timeout' (SYN dropped or no answer)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(max(timeout, 2.0))
            line = s.recv(512)
            if line.startswith(b"220"):
                s.sendall(b"QUIT\r\n")
                return "220"
            return "refused"
    except (socket.timeout, TimeoutError):
        return "timeout"
    except OSError:
        return "error"


def flood(host, port, count, timeout):
    start = time.monotonic()
    results = [greeted(host, int(port), float(timeout)) for _ in range(int(count))]
    return {
        "attempts": len(results),
        "accepted": results.count("220"),
        "refused": results.count("refused"),
        "timeout": results.count("timeout"),
        "error": results.count("error"),
        "elapsed": time.monotonic() - start,
    }


def deliver(host, port, count, interval):
    delivered, failures = 0, []
    start = time.monotonic()
    for i in range(int(count)):
        try:
            with smtplib.SMTP(host, int(port), timeout=5) as smtp:
                smtp.sendmail("good@sender.test", ["alice@example.com"],
                              f"Subject: good {i}\r\n\r\nhello\r\n")
                delivered += 1
        except (OSError, smtplib.SMTPException) as e:
            failures.append(repr(e))
        time.sleep(float(interval))
    return {"delivered": delivered, "failures": failures, "elapsed": time.monotonic() - start}


def harvest(host, port, count):
    codes = []
    try:
        with smtplib.SMTP(host, int(port), timeout=5) as smtp:
            smtp.ehlo("harvester.test")
            smtp.mail("h@harvester.test")
            for i in range(int(count)):
                codes.append(smtp.rcpt(f"nobody{i}@example.com")[0])
    except (OSError, smtplib.SMTPException) as e:
        codes.append(repr(e))
    return {"codes": codes}


def pregreet(host, port, count):
    """COUNT sessions that talk before the greeting; the first reply code of each."""
    codes = []
    for _ in range(int(count)):
        try:
            with socket.create_connection((host, int(port)), timeout=5) as s:
                s.sendall(b"EHLO early.test\r\n")
                codes.append(int(s.recv(512)[:3] or b"0"))
        except (OSError, ValueError) as e:
            codes.append(repr(e))
    return {"codes": codes}


def errors(host, port, count):
    """COUNT sessions that send bad commands until the server hangs up; its last code."""
    last = []
    for _ in range(int(count)):
        code = None
        try:
            with socket.create_connection((host, int(port)), timeout=5) as s:
                s.recv(512)
                for _ in range(50):
                    s.sendall(b"BOGUS\r\n")
                    reply = s.recv(512)
                    if not reply:
                        break
                    # The last error reply and the 421 may arrive in one read.
                    code = int(reply.rstrip(b"\r\n").split(b"\r\n")[-1][:3])
                    if code == 421:
                        break
        except (OSError, ValueError):
            pass
        last.append(code)
    return {"last": last}


def authfail(host, port, count):
    """COUNT wrong passwords, one session each (STARTTLS first, certificate not checked)."""
    import ssl
    codes = []
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    for i in range(int(count)):
        try:
            with smtplib.SMTP(host, int(port), timeout=5) as smtp:
                smtp.starttls(context=context)
                try:
                    smtp.login("alice", f"wrong-{i}")
                    codes.append(235)
                except smtplib.SMTPAuthenticationError as e:
                    codes.append(e.smtp_code)
        except (OSError, smtplib.SMTPException) as e:
            codes.append(repr(e))
    return {"codes": codes}


def probe(host, port, timeout):
    return {"result": greeted(host, int(port), float(timeout))}


def rate(host, port, seconds):
    """Messages back to back, 50 per connection (as an MTA reuses its connections)."""
    deadline = time.monotonic() + float(seconds)
    delivered = 0
    for _ in range(10_000):
        if time.monotonic() >= deadline:
            break
        try:
            with smtplib.SMTP(host, int(port), timeout=2) as smtp:
                for _ in range(50):
                    if time.monotonic() >= deadline:
                        break
                    smtp.sendmail("good@sender.test", ["alice@example.com"], "Subject: r\r\n\r\nhi\r\n")
                    delivered += 1
        except (OSError, smtplib.SMTPException):
            time.sleep(0.05)
    return {"delivered": delivered, "per_second": delivered / float(seconds)}


def flood_for(host, port, seconds, threads):
    import threading
    deadline = time.monotonic() + float(seconds)
    counts = []

    def loop():
        n = {"220": 0, "other": 0}
        for _ in range(200_000):
            if time.monotonic() >= deadline:
                break
            n["220" if greeted(host, int(port), 0.1) == "220" else "other"] += 1
        counts.append(n)

    workers = [threading.Thread(target=loop) for _ in range(int(threads))]
    for w in workers:
        w.start()
    for w in workers:
        w.join(float(seconds) + 10)
    return {"accepted": sum(c["220"] for c in counts), "other": sum(c["other"] for c in counts)}


def syns(host, port, count):
    """Raw TCP SYNs (IP header by the kernel, checksum left to offload-free veth: computed)."""
    import random
    import struct
    src = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    src.connect((host, int(port)))
    saddr = socket.inet_aton(src.getsockname()[0])
    src.close()
    daddr = socket.inet_aton(host)
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)

    def checksum(data):
        if len(data) % 2:
            data += b"\0"
        total = sum(struct.unpack(f"!{len(data) // 2}H", data))
        total = (total >> 16) + (total & 0xFFFF)
        total += total >> 16
        return ~total & 0xFFFF

    sport = random.randint(20000, 60000)
    header = struct.pack("!HHIIBBHHH", sport, int(port), 1, 0, 5 << 4, 0x02, 65535, 0, 0)
    pseudo = saddr + daddr + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(header))
    packet = header[:16] + struct.pack("!H", checksum(pseudo + header)) + header[18:]
    start = time.monotonic()
    for _ in range(int(count)):
        s.sendto(packet, (host, 0))
    return {"sent": int(count), "elapsed": time.monotonic() - start}


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    print(json.dumps({"flood": flood, "deliver": deliver, "harvest": harvest, "probe": probe,
                      "rate": rate, "flood_for": flood_for, "syns": syns,
                      "pregreet": pregreet, "errors": errors, "authfail": authfail}[mode](*args)))
