# DNS helper for the names tests; standard library only, DNS packets built by hand on purpose
# (the engine's side uses hickory; the tests should not share its code).
#   upstream IP      answer every A query under example.test with 192.0.2.53, others NXDOMAIN
#   sink IP          read queries on IP:53 and never answer
#   wait SERVER MODE TIMEOUT NAME...   poll NAMEs (A) until each one appears (MODE=appear) or
#                    is NXDOMAIN (MODE=vanish); print "NAME UNIX_TIME" when it does. A NAME
#                    "arp/IP" asks ARP for IP on eth0 instead: answered, or not answered
#   raw SERVER HEX   send one datagram, print the reply's hex (or "none")
#   flood SERVER N   send N queries as fast as possible, print how many were answered
#   arpreply DEV IP MAC   broadcast an unsolicited ARP reply: IP is at MAC (a spoof)
import socket, struct, sys, time, random

def qname(name):
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"

def query(name, qtype=1, qid=None):
    qid = random.randrange(65536) if qid is None else qid
    return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname(name) + struct.pack(">HH", qtype, 1)

def parse_question(pkt):
    i, labels = 12, []
    while pkt[i]:
        labels.append(pkt[i + 1:i + 1 + pkt[i]].decode(errors="replace"))
        i += 1 + pkt[i]
    return ".".join(labels), i + 5

def serve(ip, answer):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((ip, 53))
    while True:
        pkt, peer = s.recvfrom(4096)
        if not answer or len(pkt) < 12:
            continue
        name, end = parse_question(pkt)
        qtype = struct.unpack(">H", pkt[end - 4:end - 2])[0]
        ok = name.lower().endswith("example.test")
        flags = 0x8180 if ok else 0x8183
        head = struct.pack(">HHHHHH", struct.unpack(">H", pkt[:2])[0], flags, 1, 1 if ok and qtype == 1 else 0, 0, 0)
        body = pkt[12:end]
        if ok and qtype == 1:
            body += b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 30, 4) + socket.inet_aton("192.0.2.53")
        s.sendto(head + body, peer)

def ask(s, server, name):
    pkt = query(name)
    s.sendto(pkt, (server, 53))
    deadline = time.time() + 0.3
    while time.time() < deadline:
        try:
            s.settimeout(max(0.01, deadline - time.time()))
            reply, _ = s.recvfrom(4096)
        except socket.timeout:
            return None
        if reply[:2] != pkt[:2]:
            continue
        rcode = reply[3] & 0x0F
        answers = struct.unpack(">H", reply[6:8])[0]
        return "nxdomain" if rcode == 3 else ("found" if answers > 0 else "empty")
    return None

def arp_ask(ip, dev="eth0"):
    # Our MAC from the packet socket, our address from a route lookup: /sys may show another
    # namespace (nsenter --net does not remount it).
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
    s.bind((dev, 0))
    mac = s.getsockname()[4]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.connect((ip, 9))
    own = socket.inet_aton(u.getsockname()[0])
    target = socket.inet_aton(ip)
    arp = struct.pack(">HHBBH", 1, 0x0800, 6, 4, 1) + mac + own + b"\0" * 6 + target
    s.send(b"\xff" * 6 + mac + b"\x08\x06" + arp)
    deadline = time.time() + 0.3
    while time.time() < deadline:
        s.settimeout(max(0.01, deadline - time.time()))
        try:
            frame = s.recv(128)
        except socket.timeout:
            break
        # A reply (opcode 2) from the address we asked for.
        if frame[20:22] == b"\0\2" and frame[28:32] == target:
            return "found"
    return "nxdomain"

def wait(server, mode, timeout, names):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pending = list(names)
    end = time.time() + timeout
    while pending and time.time() < end:
        started = time.time()
        for name in list(pending):
            got = arp_ask(name[4:]) if name.startswith("arp/") else ask(s, server, name)
            if (mode == "appear" and got == "found") or (mode == "vanish" and got == "nxdomain"):
                print(name, "%.6f" % time.time(), flush=True)
                pending.remove(name)
        # The service limits each source to 200 queries/s: stay well under it.
        time.sleep(max(0.0, 0.05 - (time.time() - started)))
    for name in pending:
        print(name, "timeout", flush=True)

def raw(server, hexdata):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1.0)
    s.sendto(bytes.fromhex(hexdata), (server, 53))
    try:
        print(s.recvfrom(65535)[0].hex())
    except socket.timeout:
        print("none")

def flood(server, n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    for i in range(n):
        s.sendto(query("flood%d.blue" % i), (server, 53))
    answered, end = 0, time.time() + 2
    while time.time() < end:
        try:
            s.recvfrom(4096)
            answered += 1
        except BlockingIOError:
            time.sleep(0.01)
    print(answered)

def arpreply(dev, ip, mac):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((dev, 0))
    src = bytes.fromhex(mac.replace(":", ""))
    arp = struct.pack(">HHBBH", 1, 0x0800, 6, 4, 2) + src + socket.inet_aton(ip) + b"\xff" * 6 + socket.inet_aton(ip)
    s.send(b"\xff" * 6 + src + b"\x08\x06" + arp)

cmd = sys.argv[1]
if cmd == "upstream":
    serve(sys.argv[2], True)
elif cmd == "sink":
    serve(sys.argv[2], False)
elif cmd == "wait":
    wait(sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5:])
elif cmd == "raw":
    raw(sys.argv[2], sys.argv[3])
elif cmd == "flood":
    flood(sys.argv[2], int(sys.argv[3]))
elif cmd == "arpreply":
    arpreply(sys.argv[2], sys.argv[3], sys.argv[4])
