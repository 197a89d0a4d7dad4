#!/usr/bin/env python3
"""Builds the seed corpora in corpus-seed/<target>/ from the real data in ../testdata.

Run from codecs/fuzz: python3 make_seeds.py. The output is committed; it is small (a few KB).
"""
import hashlib
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "testdata")
OUT = os.path.join(HERE, "corpus-seed")


def put(target, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def itch_records(buf):
    pos = 0
    while pos + 2 <= len(buf):
        (n,) = struct.unpack_from(">H", buf, pos)
        yield pos, buf[pos + 2 : pos + 2 + n]
        pos += 2 + n


def pcap_records(buf):
    (magic,) = struct.unpack_from("<I", buf, 0)
    e = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    pos = 24
    while pos + 16 <= len(buf):
        _, _, incl, _ = struct.unpack_from(e + "IIII", buf, pos)
        yield buf[pos + 16 : pos + 16 + incl]
        pos += 16 + incl


def udp_payload(frame):
    off = 12
    (et,) = struct.unpack_from(">H", frame, off)
    while et in (0x8100, 0x88A8, 0x9100):
        off += 4
        (et,) = struct.unpack_from(">H", frame, off)
    ip = off + 2
    ihl = (frame[ip] & 0x0F) * 4
    (udp_len,) = struct.unpack_from(">H", frame, ip + ihl + 4)
    start = ip + ihl + 8
    return frame[start : start + udp_len - 8]


def pcap_to_pcapng(buf):
    """The same packets as little-endian pcapng with nanosecond timestamps."""

    def block(t, body):
        body += b"\0" * ((4 - len(body) % 4) % 4)
        n = 12 + len(body)
        return struct.pack("<II", t, n) + body + struct.pack("<I", n)

    out = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    out += block(1, struct.pack("<HHI", 1, 0, 0) + struct.pack("<HHB3x", 9, 1, 9) + b"\0" * 4)
    (magic,) = struct.unpack_from("<I", buf, 0)
    pos = 24
    while pos + 16 <= len(buf):
        sec, frac, incl, orig = struct.unpack_from("<IIII", buf, pos)
        ns = sec * 10**9 + (frac if magic == 0xA1B23C4D else frac * 1000)
        data = buf[pos + 16 : pos + 16 + incl]
        out += block(6, struct.pack("<IIIII", 0, ns >> 32, ns & 0xFFFFFFFF, incl, orig) + data)
        pos += 16 + incl
    return out


def main():
    itch = open(os.path.join(DATA, "itch", "aapl-2020-01-30-10k.itch"), "rb").read()
    seen = set()
    for _, msg in itch_records(itch):
        if msg[:1] not in seen:
            seen.add(msg[:1])
            put("itch_decode", msg)
    # A short framed stream, and the same cut inside its last record.
    head = itch[:200]
    put("itch_decode", head)
    put("capture_read", itch[:300])

    pcaps = []
    for venue in sorted(os.listdir(os.path.join(DATA, "pcap"))):
        d = os.path.join(DATA, "pcap", venue)
        for name in sorted(os.listdir(d)):
            pcaps.append(open(os.path.join(d, name), "rb").read())
    for buf in pcaps:
        for frame in pcap_records(buf):
            put("moldudp64_parse", udp_payload(frame))
    for buf in pcaps[:3]:
        put("capture_read", buf)
    put("capture_read", pcap_to_pcapng(pcaps[0]))

    # SoupBinTCP: a login, an accept, sequenced ITCH messages, heartbeats, end of session.
    def soup(t, payload=b""):
        return struct.pack(">H", 1 + len(payload)) + t + payload

    msgs = [m for _, m in itch_records(itch[:400])]
    stream = soup(b"L", b"user  " + b"secret    " + b"          " + b"1".rjust(20))
    stream += soup(b"A", b"000010059B" + b"1".rjust(20))
    for m in msgs:
        stream += soup(b"S", m)
    stream += soup(b"H") + soup(b"R") + soup(b"+", b"debug") + soup(b"U", b"x") + soup(b"Z")
    put("soupbintcp_decode", stream)
    put("soupbintcp_decode", soup(b"J", b"A") + soup(b"O"))


if __name__ == "__main__":
    main()
