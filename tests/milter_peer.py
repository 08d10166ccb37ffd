#!/usr/bin/env python3
"""A small milter (protocol v6, MTA-facing side) for black-box tests of Bulwark's milter client.

It speaks the real wire protocol on a TCP port or a unix socket and behaves as --mode says:
  continue     answer continue everywhere
  modify       at end of message ask for every modification (see MODIFICATIONS), then continue
  quarantine   at end of message ask for quarantine with a reason, then continue
  reject       at end of message a multi-line 550 reply code
  tempfail     at end of message SMFIR_TEMPFAIL
  discard      at end of message SMFIR_DISCARD
  hang         negotiate, then never answer anything again (the connection stays open)
  close        close the connection when the body arrives (a milter that dies mid-message)
--steps sets the SMFIP_* flags it negotiates (e.g. 0x342: no HELO, EOH, DATA, unknown).
Every command it receives is appended to --log as one JSON line {"conn", "cmd", "data"} (data
hex), so a test can check what was (not) sent, which macros came, and connection reuse.
"""
import argparse
import json
import os
import socket
import struct
import sys
import threading

SMFIC_OPTNEG, SMFIC_MACRO, SMFIC_BODY, SMFIC_BODYEOB = b"O", b"D", b"B", b"E"
SMFIC_QUIT, SMFIC_QUIT_NC, SMFIC_ABORT, SMFIC_HEADER = b"Q", b"K", b"A", b"L"
NR = {b"C": 0x1000, b"H": 0x2000, b"M": 0x4000, b"R": 0x8000, b"T": 0x10000, b"L": 0x80,
      b"N": 0x40000, b"B": 0x80000}
ALL_ACTIONS = 0x1FF


def packet(cmd: bytes, data: bytes = b"") -> bytes:
    return struct.pack(">I", len(data) + 1) + cmd + data


def cstrings(*parts: str) -> bytes:
    return b"".join(p.encode() + b"\0" for p in parts)


MODIFICATIONS = [
    packet(b"h", cstrings("X-Peer-Added", "added by milter_peer")),
    packet(b"i", struct.pack(">I", 0) + cstrings("X-Peer-First", "inserted first")),
    packet(b"m", struct.pack(">I", 1) + cstrings("Subject", "changed subject")),
    packet(b"m", struct.pack(">I", 1) + cstrings("X-Remove-Me", "")),
    packet(b"+", cstrings("<added@example.com>")),
    packet(b"2", cstrings("<added-args@example.com>", "NOTIFY=NEVER")),
    packet(b"-", cstrings("<dropped@example.com>")),
    packet(b"e", cstrings("<new-sender@example.org>", "")),
    packet(b"b", b"replaced body line 1\r\n"),
    packet(b"b", b"replaced body line 2\r\n"),
]


def read_exact(conn: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


class Peer:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.counter = 0

    def log(self, conn_no: int, cmd: bytes, data: bytes) -> None:
        if not self.args.log:
            return
        line = json.dumps({"conn": conn_no, "cmd": cmd.decode("latin-1"), "data": data.hex()})
        with self.lock, open(self.args.log, "a") as out:
            out.write(line + "\n")

    def serve(self, conn: socket.socket) -> None:
        with self.lock:
            self.counter += 1
            conn_no = self.counter
        try:
            self.talk(conn, conn_no)
        except (EOFError, OSError):
            pass
        finally:
            conn.close()

    def talk(self, conn: socket.socket, conn_no: int) -> None:
        mode, steps = self.args.mode, self.args.steps
        while True:
            length = struct.unpack(">I", read_exact(conn, 4))[0]
            body = read_exact(conn, length)
            cmd, data = body[:1], body[1:]
            self.log(conn_no, cmd, data)
            if cmd == SMFIC_OPTNEG:
                conn.sendall(packet(b"O", struct.pack(">III", 6, ALL_ACTIONS, steps)))
                if mode == "hang":
                    threading.Event().wait(3600)
                continue
            if cmd in (SMFIC_MACRO, SMFIC_ABORT, SMFIC_QUIT_NC):
                continue
            if cmd == SMFIC_QUIT:
                return
            if cmd == SMFIC_BODY and mode == "close":
                conn.shutdown(socket.SHUT_RDWR)
                return
            if cmd == SMFIC_BODYEOB:
                conn.sendall(self.end_of_message(mode))
                continue
            if steps & NR.get(cmd, 0):
                continue
            conn.sendall(packet(b"c"))

    @staticmethod
    def end_of_message(mode: str) -> bytes:
        if mode == "modify":
            return b"".join(MODIFICATIONS) + packet(b"p") + packet(b"c")
        if mode == "quarantine":
            return packet(b"q", cstrings("held by milter_peer")) + packet(b"c")
        if mode == "reject":
            return packet(b"y", cstrings("550-5.7.1 rejected by milter_peer\r\n550 5.7.1 second line"))
        if mode == "tempfail":
            return packet(b"t")
        if mode == "discard":
            return packet(b"d")
        return packet(b"c")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int)
    parser.add_argument("--unix")
    parser.add_argument("--mode", default="continue",
                        choices=["continue", "modify", "quarantine", "reject", "tempfail",
                                 "discard", "hang", "close"])
    parser.add_argument("--steps", type=lambda s: int(s, 0), default=0)
    parser.add_argument("--log")
    args = parser.parse_args()
    if args.unix:
        if os.path.exists(args.unix):
            os.unlink(args.unix)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(args.unix)
    else:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", args.port))
    server.listen(64)
    print("ready", flush=True)
    peer = Peer(args)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=peer.serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
