"""Seeds for the gro_receive target: UDP GRO reads and tunnel superframes as the worker gets
them, behind the target's 4-byte option header (see fuzz_targets/gro_receive_checks.rs)."""
import os, struct

OUT = "fuzz/seeds/gro_receive"

# Option bits of the first byte.
VNET, FIX, PARTIAL, SHORT_TAIL, ACCEPT_ANY, STRANGER, WHOLE, NO_LEARNING = (1 << i for i in range(8))

SRC_MAC = bytes([0x02, 0, 0, 0, 0, 0x02])
DST_MAC = bytes([0x02, 0, 0, 0, 0, 0x01])


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return s  # folded, not complemented


def ipv4(payload, proto, ident=1, df=True, options=b""):
    ihl = 5 + len(options) // 4
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 20 + len(options) + len(payload), ident,
                      0x4000 if df else 0, 64, proto, 0, bytes([10, 1, 0, 2]), bytes([10, 1, 0, 1]))
    hdr += options
    c = 0xFFFF - csum(hdr)
    return hdr[:10] + struct.pack("!H", c) + hdr[12:]


def pseudo(v6, proto, l4len):
    if v6:
        return bytes([0xfd] + [0] * 14 + [2]) + bytes([0xfd] + [0] * 14 + [1]) + struct.pack("!IxxxB", l4len, proto)
    return bytes([10, 1, 0, 2, 10, 1, 0, 1]) + struct.pack("!xBH", proto, l4len)


def l4_checksum(v6, proto, segment, partial):
    """The segment with its checksum field filled: complete, or the kernel's partial sum."""
    field = 16 if proto == 6 else 6
    segment = segment[:field] + b"\0\0" + segment[field + 2:]
    p = pseudo(v6, proto, len(segment))
    value = csum(p) if partial else 0xFFFF - csum(p + segment)
    if proto == 17 and value == 0 and not partial:
        value = 0xFFFF
    return segment[:field] + struct.pack("!H", value) + segment[field + 2:]


def tcp(seq, payload, flags=0x10, window=1000, options=b"", sport=40000):
    off = (20 + len(options)) // 4
    return struct.pack("!HHIIBBHHH", sport, 5201, seq, 7, off << 4, flags, window, 0, 0) + options + payload


def udp(payload, sport=5000):
    return struct.pack("!HHHH", sport, 6000, 8 + len(payload), 0) + payload


def frame(l4, proto, v6=False, partial=False, ident=1, df=True, vlan=None, ip_options=b""):
    l4 = l4_checksum(v6, proto, l4, partial)
    eth = DST_MAC + SRC_MAC
    if vlan is not None:
        eth += struct.pack("!HH", 0x8100, vlan)
    if v6:
        ip = struct.pack("!IHBB", 0x60000000, len(l4), proto, 64)
        ip += bytes([0xfd] + [0] * 14 + [2]) + bytes([0xfd] + [0] * 14 + [1])
        return eth + struct.pack("!H", 0x86DD) + ip + l4
    return eth + struct.pack("!H", 0x0800) + ipv4(l4, proto, ident, df, ip_options) + l4


def vxlan(inner, vni=42, flags=0x08):
    return struct.pack("!BxxxI", flags, vni << 8) + inner


def data(n, seed=0):
    return bytes((i * 7 + seed) % 251 for i in range(n))


def header(options, gro, mtu):
    step = (mtu - 68) // 6
    return struct.pack("!BHB", options, gro, step)


def write(name, options, gro, mtu, datagrams):
    body = b"".join(datagrams)
    open(os.path.join(OUT, name), "wb").write(header(options, gro, mtu) + body)


def tcp_run(count, size, v6=False, partial=False, fixed_id=False, last_flags=0x10, last_size=None,
            vlan=None, vni=42, windows=None):
    out = []
    for i in range(count):
        n = last_size if (last_size and i == count - 1) else size
        flags = last_flags if i == count - 1 else 0x10
        window = windows[i] if windows else 1000
        seg = tcp(1000 + i * size, data(n, i), flags, window)
        out.append(vxlan(frame(seg, 6, v6, partial, ident=1 if fixed_id else 1 + i, vlan=vlan), vni))
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    mtu = 1268
    run = tcp_run(3, 1000)
    gro = len(run[0])
    write("tcp4-run-coalesced", VNET | SHORT_TAIL, gro, mtu, run)
    write("tcp6-run-coalesced", VNET, len(tcp_run(1, 1000, v6=True)[0]), mtu, tcp_run(3, 1000, v6=True))
    write("tcp4-run-windows-differ", VNET, gro, mtu, tcp_run(3, 1000, windows=[1000, 900, 800]))
    write("tcp4-run-fixed-id", VNET, gro, mtu, tcp_run(4, 1000, fixed_id=True))
    write("tcp4-run-psh-short-tail", VNET | SHORT_TAIL, gro, mtu,
          tcp_run(3, 1000, last_flags=0x18, last_size=300))
    write("tcp4-run-short-tail-refused", VNET, gro, mtu, tcp_run(3, 1000, last_size=300))
    write("tcp4-run-fin-after-data", VNET, gro, mtu, tcp_run(3, 1000, last_flags=0x11))
    # A local kernel VTEP: inner checksums left for a NIC, completed, then merged.
    write("tcp4-run-partial", VNET, gro, mtu, tcp_run(3, 1000, partial=True))
    write("tcp4-run-partial-plain-tap", 0, gro, mtu, tcp_run(3, 1000, partial=True))
    # Random checksums made valid / partial by the harness.
    write("tcp4-run-fixed-by-harness", VNET | FIX, gro, mtu,
          [p[:-1] + b"\x55" for p in tcp_run(3, 1000)])
    write("tcp4-run-partial-by-harness", VNET | FIX | PARTIAL, gro, mtu, tcp_run(3, 1000))
    # Two flows interleaved: the second passes the first's pending superframe.
    a = tcp_run(2, 1000)
    b = [vxlan(frame(tcp(5000 + i * 1000, data(1000, 9), sport=40001), 6)) for i in range(2)]
    write("tcp4-two-flows", VNET, gro, mtu, [a[0], b[0], a[1], b[1]])
    write("tcp4-vlan-run-vni43", VNET, gro + 4, mtu, tcp_run(3, 1000, vlan=7, vni=43))
    write("tcp4-vlan-on-untagged-network", VNET, gro + 4, mtu, tcp_run(2, 1000, vlan=7, vni=42))
    opts = frame(tcp(1000, data(1000)), 6, ip_options=b"\x01\x01\x01\x00")
    write("tcp4-ipv4-options", VNET, len(vxlan(opts)), mtu, [vxlan(opts)] * 2)
    udp_frames = [vxlan(frame(udp(data(500, i)), 17)) for i in range(3)]
    write("udp4-run", VNET, len(udp_frames[0]), mtu, udp_frames)
    # A connected socket's datagrams (IPv4 ID + 1 each, the last shorter): one UDP superframe.
    udp_run = [vxlan(frame(udp(data(500 if i < 3 else 200, i)), 17, ident=1 + i)) for i in range(4)]
    write("udp4-run-coalesced", VNET, len(udp_run[0]), mtu, udp_run)
    write("udp4-run-partial", 0, len(udp_frames[0]), mtu,
          [vxlan(frame(udp(data(500, i)), 17, partial=True)) for i in range(3)])
    write("tcp4-from-stranger", VNET | STRANGER, gro, mtu, run)
    write("tcp4-from-stranger-accept-any", VNET | STRANGER | ACCEPT_ANY | NO_LEARNING, gro, mtu, run)
    write("unknown-vni", VNET, gro, mtu, [vxlan(frame(tcp(1, data(1000)), 6), vni=99)] * 2)
    write("i-flag-clear", VNET, gro, mtu, [vxlan(frame(tcp(1, data(1000)), 6), flags=0)] * 2)
    write("runt-last-piece", VNET, gro, mtu, run[:2] + [run[2][:20]])
    # Tunnel superframes: one datagram holding a whole inner superframe (partial checksum).
    big = vxlan(frame(tcp(1000, data(6000)), 6, partial=True))
    write("tunnel-tcp4-superframe", VNET, 1000, mtu, [big])
    write("tunnel-tcp4-superframe-plain-tap", 0, 1000, mtu, [big])
    write("tunnel-tcp4-superframe-no-gro-size", 0, 0, 576, [big])
    big6 = vxlan(frame(tcp(1000, data(5000)), 6, v6=True, partial=True))
    write("tunnel-tcp6-superframe-plain-tap", 0, 1200, mtu, [big6])
    bigu = vxlan(frame(udp(data(4000)), 17, partial=True))
    write("tunnel-udp4-superframe", VNET, 1000, mtu, [bigu])
    write("tunnel-udp4-superframe-plain-tap", 0, 1000, mtu, [bigu])
    write("tunnel-udp4-superframe-too-big", 0, 1400, mtu, [bigu])
    # Complete checksum: a reassembled oversize datagram, not a superframe.
    write("oversize-complete-checksum", VNET, 0, mtu, [vxlan(frame(tcp(1000, data(3000)), 6))])
    write("tunnel-superframe-fixed-by-harness", FIX | PARTIAL | WHOLE, 1000, mtu, [big])
