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

    sequencer_seeds()
    retransmit_seeds()


# The sequencer and retransmit targets read their input as a program (see `Input` in
# src/entries.rs): little-endian numbers, then one operation after another.


def u16(n):
    return struct.pack("<H", n)


def u64(n):
    return struct.pack("<Q", n)


def seq_near(d):
    """A sequence number `d` past the sequencer's next expected one (-32 <= d < 224)."""
    return bytes([1, 32 + d])


def seq_raw(n):
    return bytes([3]) + u64(n)


def seq_top(d):
    """u64::MAX - d."""
    return bytes([2, d])


def seq_small(n):
    return bytes([0, n])


def sequencer_config(live=True, max_gap=1, late=b""):
    flags = 2 if live else 0
    cfg = bytes([flags]) + u16(1000) + u16(10000) + bytes([2, 1]) + u16(20000)
    cfg += bytes([2, 16, 2]) + u16(2047) + bytes([127, 6])
    if not live:
        cfg += late
    return cfg + bytes([max_gap])


def packet(seq, count, line=0, lens=b"", cut=0):
    """Data (count 1..5), or kind 0 heartbeat / 1 end of session (count None, kind given)."""
    if count is None:
        kind, body = lens[0], b""
    else:
        kind, body = count + 1, bytes(lens or [0] * count)
    return bytes([0, line, 1]) + seq + bytes([kind]) + body + bytes([cut])


def hb(seq, line=0):
    return bytes([0, line, 1]) + seq + bytes([0, 0])


def eos(seq, line=0):
    return bytes([0, line, 1]) + seq + bytes([1, 0])


STEP = bytes([4, 0]) + u16(2000)  # 2 us later
TIMEOUT = bytes([5])
POLL = bytes([6])
DEADLINE = bytes([7, 0])


def sequencer_seeds():
    # In order, a loss, its re-request and recovery, the end.
    p = sequencer_config()
    p += packet(seq_small(1), 3) + packet(seq_near(0), 2) + packet(seq_near(3), 2)
    p += STEP + TIMEOUT + POLL + packet(seq_near(0), 3, line=2) + STEP + TIMEOUT
    p += packet(seq_near(0), 1, line=1) + eos(seq_near(0)) + TIMEOUT
    put("sequencer", p)
    # A forged packet far ahead, a heartbeat at 10^18, an end below what was seen, sequence 0.
    p = sequencer_config()
    p += packet(seq_small(5), 4) + packet(seq_raw(10**12), 1) + hb(seq_raw(10**18))
    p += eos(seq_small(2)) + packet(seq_small(0), 2) + packet(seq_near(0), 3)
    p += POLL + STEP + TIMEOUT + DEADLINE + TIMEOUT
    put("sequencer", p)
    # u64::MAX: packets that would wrap, the last valid sequence number, a heartbeat at MAX.
    p = sequencer_config()
    p += packet(seq_small(9), 2) + packet(seq_top(0), 1) + packet(seq_top(1), 2)
    p += packet(seq_top(1), 1) + hb(seq_top(0)) + packet(seq_near(0), 2) + POLL + TIMEOUT
    put("sequencer", p)
    # A genuine jump, corroborated; from a configured start; damaged packets.
    p = sequencer_config(live=False, late=seq_small(1))
    p += packet(seq_small(1), 2) + packet(seq_raw(10**7), 2) + packet(seq_raw(10**7 + 2), 2)
    p += POLL + STEP + bytes([4, 1]) + u16(60000) + TIMEOUT + POLL
    p += packet(seq_near(0), 5, lens=[8, 8, 8, 8, 8], cut=250) + DEADLINE + TIMEOUT
    put("sequencer", p)
    # A forged first packet far ahead, then the real session far below.
    p = sequencer_config()
    p += packet(seq_raw(10**12), 1) + packet(seq_small(50), 2) + packet(seq_near(0), 2)
    p += packet(seq_raw(10**12), 1) + STEP + TIMEOUT
    put("sequencer", p)


def retransmit_config(first=seq_small(1), rate=100):
    cfg = first + bytes([31]) + u16(600) + u16(200) + bytes([63, 3])
    return cfg + u16(rate) + u16(20) + bytes([3, 1])


def push(n, fill):
    return bytes([0]) + u16(n) + bytes([fill])


def request(seq, count, host=1, port=4000):
    """A request for `count` (< 256) messages from `seq`, from IPv4 host 0.0.0.`host`."""
    return bytes([5, 1, 1]) + seq + bytes([0, count]) + u16(port) + bytes([0, host])


def retransmit_seeds():
    p = retransmit_config()
    for i in range(40):
        p += push(10 + i % 7, i)
    p += request(seq_small(1), 5) + request(seq_small(30), 20) + request(seq_small(60), 3)
    p += bytes([4]) + u16(1000) + bytes([10]) + request(seq_small(20), 200)
    put("retransmit", p)
    # Near u64::MAX; a restart; a malformed request; many ports of one host.
    p = retransmit_config(first=seq_top(3), rate=5)
    p += push(5, 1) + push(5, 2) + push(5, 3) + push(5, 4)
    p += request(seq_top(5), 255) + request(seq_top(0), 9)
    p += bytes([3, 1]) + seq_small(1) + push(3, 9) + request(seq_small(1), 1)
    p += bytes([5, 0]) + b"FUZZSESS01" + bytes(10) + bytes([20]) + u16(9) + bytes([1, 7])
    for port in range(20):
        p += request(seq_small(1), 1, port=port)
    put("retransmit", p)


def iex_tp_seeds():
    """IEX-TP: each DEEP+ segment alone, and all of them framed as the entry reads a stream
    (each datagram preceded by its 2-byte little-endian length)."""
    with open(os.path.join(DATA, "iex", "deepplus-all-message-types.pcap"), "rb") as f:
        buf = f.read()
    stream = b""
    for frame in pcap_records(buf):
        seg = udp_payload(frame)
        put("iex_tp", seg)
        stream += struct.pack("<H", len(seg)) + seg
    put("iex_tp", stream)


def iex_feed_seeds():
    """IEX TOPS and DEEP messages: the first three of each type in the DEEP 1.0 sample (the
    types TOPS shares with DEEP seed TOPS too), a TOPS quote update and a DEEP+ order, which
    each of them refuses."""
    import gzip

    with gzip.open(os.path.join(DATA, "iex", "deep10-2017-04-25.pcap.gz"), "rb") as f:
        buf = f.read()
    seen = {}
    for i, frame in enumerate(pcap_records(buf)):
        if i >= 20000:
            break
        seg = udp_payload(frame)
        if len(seg) < 40:
            continue
        pos = 40
        while pos + 2 <= len(seg):
            (n,) = struct.unpack_from("<H", seg, pos)
            msg = seg[pos + 2 : pos + 2 + n]
            pos += 2 + n
            if len(msg) != n or n == 0:
                break
            t = msg[0:1]
            if seen.get(t, 0) < 3:
                seen[t] = seen.get(t, 0) + 1
                put("iex_deep", msg)
                if t in b"SHOPTBDXAEI":
                    put("iex_tops", msg)
    quote = b"Q" + b"\x00" + struct.pack("<q", 1493133134377072859) + b"ZIEXT   "
    quote += struct.pack("<I", 100) + struct.pack("<q", 1000000) + struct.pack("<q", 1001000)
    quote += struct.pack("<I", 200)
    for target in ("iex_tops", "iex_deep"):
        put(target, quote)
        put(target, b"a" + bytes(41))


if __name__ == "__main__":
    main()
    iex_tp_seeds()
    iex_feed_seeds()
