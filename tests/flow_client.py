#!/usr/bin/env python3
"""SMTP client for the flow-control tests; runs inside a client network namespace
(`ip netns exec NS python3 flow_client.py MODE ...`) and prints one JSON line.

Every loop is bounded in count and every socket has a timeout below the 1 s SYN retransmit,
so one attempt is exactly one SYN.

  flood HOST PORT COUNT TIMEOUT      connection attempts as fast as possible; counts greetings
  deliver HOST PORT COUNT INTERVAL   sends COUNT messages, one per INTERVAL seconds
  harvest HOST PORT COUNT            one session, RCPT TO COUNT unknown users
  probe HOST PORT TIMEOUT            one attempt: did we get a 220?
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


def probe(host, port, timeout):
    return {"result": greeted(host, int(port), float(timeout))}


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    print(json.dumps({"flood": flood, "deliver": deliver, "harvest": harvest, "probe": probe}[mode](*args)))
