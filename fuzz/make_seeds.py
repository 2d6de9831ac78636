#!/usr/bin/env python3
"""Regenerates the seed corpora in fuzz/seeds/<target>/. Run from the repository root.

- decap: the kernel fixtures' packets cut at each layer (Ethernet frame, IP packet, VXLAN
  payload) plus hand-made edge cases.
- gro_receive, control, config, store_records: see seeds_gro.py and seeds_text.py.
"""
import os, struct, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
out = "fuzz/seeds/decap"
os.makedirs(out, exist_ok=True)

def packets(path):
    data = open(path, "rb").read()
    off = 24
    while off + 16 <= len(data):
        caplen = struct.unpack("<I", data[off + 8:off + 12])[0]
        yield data[off + 16:off + 16 + caplen]
        off += 16 + caplen

def write(name, data):
    open(os.path.join(out, name), "wb").write(bytes(data))

for fam, udp_at in (("ipv4", 14 + 20), ("ipv6", 14 + 40)):
    for i, p in enumerate(packets(f"crates/encap/tests/fixtures/kernel-vxlan-{fam}.pcap"), 1):
        write(f"kernel-{fam}-{i}-ethernet", p)
        write(f"kernel-{fam}-{i}-ip", p[14:])
        write(f"kernel-{fam}-{i}-vxlan", p[udp_at + 8:])

ping = open(os.path.join(out, "kernel-ipv4-3-vxlan"), "rb").read()
v4 = open(os.path.join(out, "kernel-ipv4-3-ip"), "rb").read()
v6 = open(os.path.join(out, "kernel-ipv6-3-ip"), "rb").read()
write("empty", b"")
write("vxlan-header-only", ping[:8])
write("vxlan-inner-13-bytes", ping[:8 + 13])
write("vxlan-i-flag-clear", b"\x00" + ping[1:])
write("vxlan-all-flags-and-reserved", b"\xff\xff\xff\xff" + ping[4:7] + b"\xff" + ping[8:])
write("vxlan-max-vni", ping[:4] + b"\xff\xff\xff" + ping[7:])
write("inner-vlan-tag-truncated", ping[:8] + ping[8:20] + b"\x81\x00\x00")
write("inner-qinq", ping[:8] + ping[8:20] + b"\x88\xa8\x00\x05\x81\x00\x00\x2a\x08\x00" + ping[22:])
write("ipv4-ihl-4", b"\x44" + v4[1:])
write("ipv4-ihl-15", b"\x4f" + v4[1:])
write("ipv4-total-len-huge", v4[:2] + b"\xff\xff" + v4[4:])
write("ipv4-more-fragments", v4[:6] + b"\x20\x00" + v4[8:])
write("udp-len-short", v4[:24] + b"\x00\x07" + v4[26:])
write("ipv6-zero-udp-checksum", v6[:46] + b"\x00\x00" + v6[48:])
write("ipv6-payload-len-huge", v6[:4] + b"\xff\xff" + v6[6:])
write("version-0", b"\x00" * 60)

import seeds_gro, seeds_text
seeds_gro.main()
seeds_text.main()
