#!/usr/bin/python3
"""Crafted SYNs for the flow-control tests (scapy, Debian's python3-scapy: run it with
/usr/bin/python3). Runs inside a client network namespace and prints one JSON line.

  syn IFACE DST_MAC SRC DST PORT COUNT [--vlan ID[:PROTO]]... [--ext NAME]...

sends COUNT pure SYNs (distinct source ports) from SRC to DST:PORT out of IFACE, wrapped in
the given VLAN tags (outermost first; PROTO 8100 = 802.1Q, 88a8 = 802.1ad) and, for IPv6,
the given extension headers in order (hop, dst, rt, frag, ah), and counts the SYN-ACKs that
come back within one second of the last SYN. Bounded: COUNT <= 100, one listen of 1 s.
"""

import json
import sys

from scapy.all import (AsyncSniffer, Dot1AD, Dot1Q, Ether, IP, IPv6, IPv6ExtHdrDestOpt,
                       IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, TCP, conf,
                       sendp)
from scapy.layers.ipsec import AH

EXT = {
    "hop": lambda: IPv6ExtHdrHopByHop(),
    "dst": lambda: IPv6ExtHdrDestOpt(),
    # Type 0 with no segments left: the receiver only skips it.
    "rt": lambda: IPv6ExtHdrRouting(type=0, segleft=0, addresses=[]),
    # An atomic fragment (offset 0, no more fragments): the whole TCP header follows.
    "frag": lambda: IPv6ExtHdrFragment(offset=0, m=0, id=0x1234),
    # scapy fills neither: next header TCP, length in 32-bit words minus 2 (24 octets).
    "ah": lambda: AH(nh=6, payloadlen=4, spi=1, seq=1, icv=b"\x00" * 12),
}


def frame(args, sport):
    layer = Ether(dst=args["mac"])
    for vid, proto in args["vlans"]:
        layer = layer / (Dot1AD(vlan=vid) if proto == 0x88A8 else Dot1Q(vlan=vid))
    if ":" in args["dst"]:
        ip = IPv6(src=args["src"], dst=args["dst"])
        for name in args["ext"]:
            ip = ip / EXT[name]()
    else:
        ip = IP(src=args["src"], dst=args["dst"])
    return layer / ip / TCP(sport=sport, dport=args["port"], flags="S", seq=1000 + sport)


def parse(argv):
    iface, mac, src, dst, port, count = argv[:6]
    args = {"iface": iface, "mac": mac, "src": src, "dst": dst, "port": int(port),
            "count": min(int(count), 100), "vlans": [], "ext": []}
    rest = argv[6:]
    for flag, value in zip(rest[::2], rest[1::2]):
        if flag == "--vlan":
            vid, _, proto = value.partition(":")
            args["vlans"].append((int(vid), int(proto or "8100", 16)))
        elif flag == "--ext":
            args["ext"].append(value)
        else:
            raise SystemExit(f"unknown option {flag}")
    return args


def syn(argv):
    args = parse(argv)
    conf.verb = 0
    sports = set(range(40000, 40000 + args["count"]))
    sniffer = AsyncSniffer(
        iface=args["iface"], store=True,
        lfilter=lambda p: p.haslayer(TCP) and p[TCP].sport == args["port"]
        and p[TCP].dport in sports and (p[TCP].flags & 0x12) == 0x12)
    sniffer.start()
    import time
    time.sleep(0.3)
    sendp([frame(args, s) for s in sorted(sports)], iface=args["iface"])
    time.sleep(1.0)
    got = sniffer.stop()
    answered = {p[TCP].dport for p in got}
    return {"sent": len(sports), "synack": len(answered)}


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "syn":
        raise SystemExit(__doc__)
    print(json.dumps(syn(sys.argv[2:])))
