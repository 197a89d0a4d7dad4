#!/usr/bin/env python3
"""Writes nasdaq-itch-5-packets-sequence-0.pcap: five real Nasdaq TotalView-ITCH 5.0 MoldUDP64
packets (from ../Nasdaq.Equities.TotalView.Itch.v5.0) in capture order, with their session
and sequence number fields zeroed as sanitized public samples have them, and their UDP
checksums recomputed. Run from this directory."""
import struct

SOURCES = [
    "OrderReplaceMessage.pcap",
    "AddOrderNoMpidAttributionMessage.pcap",
    "OrderDeleteMessage.pcap",
    "OrderExecutedMessage.pcap",
    "NetOrderImbalanceIndicatorMessage.pcap",
]


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s & 0xFFFF) or 0xFFFF


out = None
for name in SOURCES:
    b = open("../Nasdaq.Equities.TotalView.Itch.v5.0/" + name, "rb").read()
    if out is None:
        out = bytearray(b[:24])
    rec = bytearray(b[24:])
    incl = struct.unpack("<I", rec[8:12])[0]
    assert len(rec) == 16 + incl, name
    frame = rec[16:]
    ip = 14 + 4  # Ethernet with one 802.1Q tag
    assert frame[ip - 2 : ip] == b"\x08\x00" and frame[ip + 9] == 17, name
    udp = ip + (frame[ip] & 0x0F) * 4
    mold = udp + 8
    frame[mold : mold + 18] = bytes(18)  # session (10) and sequence number (8)
    udp_len = struct.unpack("!H", frame[udp + 4 : udp + 6])[0]
    frame[udp + 6 : udp + 8] = b"\0\0"
    pseudo = bytes(frame[ip + 12 : ip + 20]) + struct.pack("!BBH", 0, 17, udp_len)
    frame[udp + 6 : udp + 8] = struct.pack("!H", csum(pseudo + bytes(frame[udp : udp + udp_len])))
    out += rec[:16] + frame
open("nasdaq-itch-5-packets-sequence-0.pcap", "wb").write(out)
