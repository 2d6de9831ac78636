"""Seeds for the text-input targets: control (control-socket request lines), config_file
(`vxnet run --config` TOML) and store_records (cluster store keys and values)."""
import json, os, struct


def write(target, name, data):
    out = f"fuzz/seeds/{target}"
    os.makedirs(out, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    open(os.path.join(out, name), "wb").write(data)


CONFIGS = {
    "two-networks": '''
local = "10.0.0.1"
port = 4789
ageing = 300
learning = true
max_fdb = 16384
accept_any = false
control = "/run/vxnet/vxnet.sock"
threads = 2
offloads = true

[[network]]
name = "blue"
vni = 42
dev = "vx42"
address = "10.1.0.1/24"
remotes = ["10.0.0.2", "10.0.0.3"]
mtu = 1450
allow_vlan = true
mac = "02:00:00:00:00:2a"

[[network]]
vni = 43
dev = "vx43"
''',
    "minimal": '[[network]]\nvni = 1\ndev = "vx1"\n',
    "ipv6": 'local = "fd00::1"\n[[network]]\nvni = 7\ndev = "vx7"\naddress = "fd01::1/64"\nremotes = ["fd00::2", "10.0.0.2"]\n',
    "hostname-remote": 'local = "10.0.0.1"\n[[network]]\nvni = 9\ndev = "vx9"\nremotes = ["peer.example"]\n',
    "duplicate-vni": '[[network]]\nvni = 5\ndev = "a"\n[[network]]\nvni = 5\ndev = "b"\n',
    "duplicate-dev": '[[network]]\nvni = 5\ndev = "a"\n[[network]]\nvni = 6\ndev = "a"\n',
    "vni-out-of-range": '[[network]]\nvni = 16777216\ndev = "vx"\n',
    "multicast-mac": '[[network]]\nvni = 2\ndev = "vx2"\nmac = "01:00:5e:00:00:01"\n',
    "bad-mac": '[[network]]\nvni = 2\ndev = "vx2"\nmac = "02:00:00:00:00"\n',
    "unknown-key": '[[network]]\nvni = 2\ndev = "vx2"\nremote = ["10.0.0.2"]\n',
    "wrong-type": 'port = "4789"\n[[network]]\nvni = 2\ndev = "vx2"\n',
    "port-out-of-range": 'port = 70000\n',
    "bad-cidr": '[[network]]\nvni = 2\ndev = "vx2"\naddress = "10.1.0.1/33"\n',
    "zero-threads": 'threads = 0\n[[network]]\nvni = 2\ndev = "vx2"\n',
    "no-networks": 'local = "10.0.0.1"\n',
    "inline-tables": 'network = [{ vni = 3, dev = "vx3", remotes = [] }, { vni = 4, dev = "vx4" }]\n',
    "unicode-name": '[[network]]\nname = "réseau-é"\nvni = 8\ndev = "vx8"\n',
    "unterminated": '[[network]\nvni = 2\n',
    "empty": "",
    "deep-array": "a = " + "[" * 64 + "]" * 64 + "\n",
}


def config():
    for name, text in CONFIGS.items():
        write("config_file", name, text)


KINDS = {"nodes": 0, "members": 1, "networks": 2, "macs": 3, "vni": 4, "ipam": 5, "meta": 6, "other": 7}


def record(kind, key, value):
    key = key.encode()
    if not isinstance(value, bytes):
        value = json.dumps(value).encode()
    return struct.pack("!BB", KINDS[kind], len(key)) + key + struct.pack("!H", len(value)) + value


def node(i, role="manager", local=True):
    return record("nodes", f"n{i}", {"node_id": f"n{i}", "role": role,
                                      "local": f"10.0.0.{i}" if local else None, "joined": 1700000000})


def member(i, nets=("blue",), key=None):
    return record("members", key or f"n{i}", {"node_id": f"n{i}", "vtep": f"10.0.0.{i}",
                                             "networks": list(nets), "role": "worker", "updated": 1700000001})


def network(name, vni, subnet="10.1.0.0/24"):
    return record("networks", name, {"name": name, "vni": vni, "subnet": subnet})


def mac(vni, mac, i):
    return record("macs", f"{vni}/{mac}", {"node_id": f"n{i}", "vtep": f"10.0.0.{i}"})


def store():
    cluster = (node(1) + node(2, "worker") + node(3, "worker") + member(1) + member(2)
               + network("blue", 42) + record("vni", "42", b"blue")
               + mac(42, "02:00:00:00:00:01", 1) + mac(42, "02:00:00:00:00:02", 2)
               + record("ipam", "blue/10.1.0.1", b"n1"))
    write("store_records", "three-nodes-two-alive", cluster)
    write("store_records", "meta", record("meta", "", {
        "cluster_id": "c1", "created": 1, "manager_secret_sha256": "00", "worker_secret_sha256": "11"}))
    write("store_records", "two-networks-ipv6", network("blue", 42) + network("red", 43, "fd01::/64")
          + member(1, ("blue", "red")) + member(2, ("red",)) + mac(43, "02:00:00:00:00:09", 2))
    write("store_records", "network-without-subnet", record("networks", "green", {"name": "green", "vni": 7, "subnet": None}))
    write("store_records", "network-long-name", network("a-very-long-network-name", 4096))
    write("store_records", "corrupt-json", record("members", "n1", b'{"node_id": "n1", "vtep": ') + member(2))
    write("store_records", "wrong-types", record("members", "n1", {"node_id": 1, "vtep": "x"}) + network("blue", -1))
    write("store_records", "mac-group-address", mac(42, "01:00:5e:00:00:01", 2) + mac(42, "ff:ff:ff:ff:ff:ff", 2)
          + network("blue", 42) + member(2))
    write("store_records", "mac-bad-keys", mac(42, "zz", 2) + record("macs", "x/02:00:00:00:00:01", {"node_id": "n2", "vtep": "10.0.0.2"})
          + record("macs", "4202:00:00:00:00:01", {"node_id": "n2", "vtep": "10.0.0.2"}))
    write("store_records", "other-cluster", record("other", "n9", {"node_id": "n9", "vtep": "10.0.0.9",
                                                                   "networks": ["blue"], "role": "worker", "updated": 1}))
    write("store_records", "vni-out-of-range", network("big", 1 << 24) + member(1, ("big",)))
    # Names no interface can carry (the TAP is named after the network).
    write("store_records", "network-name-not-an-ifname", network("u ble", 42) + network("réseau-très-long", 43)
          + network("a/b", 44) + member(1, ("u ble", "réseau-très-long", "a/b")))
    write("store_records", "network-under-another-key", record("networks", "blue", {"name": "red", "vni": 42, "subnet": None})
          + network("red", 43))
    write("store_records", "mac-non-canonical-keys", network("blue", 42) + member(2)
          + mac("042", "02:00:00:00:00:01", 2) + mac(42, "02:00:00:00:00:01", 3) + mac(42, "02:AA:00:00:00:01", 2))
    write("store_records", "member-under-another-key", member(1) + member(2, key="n1x") + node(2) + record(
        "nodes", "n3", {"node_id": "n2", "role": "worker", "local": "10.0.0.9", "joined": 1}))
    write("store_records", "empty", b"")


def req(cmd, **fields):
    return json.dumps(dict(cmd=cmd, **fields)) + "\n"


def control():
    z = "00:00:00:00:00:00"
    m = "02:00:00:00:00:07"
    seeds = {
        "flood-add-append-del": [req("fdb_add", mac=z, dst="10.0.0.3", vni=43),
                                 req("fdb_add", mac=z, dst="10.0.0.4", vni=43),
                                 req("fdb_append", mac=z, dst="10.0.0.4", vni=43),
                                 req("fdb_append", mac=z, dst="10.0.0.4", vni=43),
                                 req("fdb_append", mac=z, dst="10.0.0.5", vni=43),
                                 req("fdb_del", mac=z, dst="10.0.0.4", vni=43),
                                 req("fdb_show", vni=43),
                                 req("fdb_del", mac=z, vni=43),
                                 req("fdb_del", mac=z, vni=43)],
        "flood-configured-remote": [req("fdb_add", mac=z, dst="10.0.0.3", vni=42),
                                    req("fdb_append", mac=z, dst="10.0.0.3", vni=42),
                                    req("fdb_del", mac=z, dst="10.0.0.2", vni=42),
                                    req("fdb_del", mac=z, dst="10.0.0.3", vni=42)],
        "unicast-add-replace-del": [req("fdb_add", mac=m, dst="10.0.0.7", vni=42),
                                    req("fdb_add", mac=m, dst="10.0.0.8", vni=42),
                                    req("fdb_replace", mac=m, dst="10.0.0.8", vni=42),
                                    req("fdb_append", mac=m, dst="10.0.0.9", vni=42),
                                    req("fdb_del", mac=m, dst="10.0.0.7", vni=42),
                                    req("fdb_del", mac=m, dst="10.0.0.8", vni=42),
                                    req("fdb_del", mac=m, vni=42)],
        "learned-then-static": ["learn 42 02:00:00:00:00:08 10.0.0.2\n",
                                "learn 42 02:00:00:00:00:08 10.0.0.3\n",
                                req("fdb_add", mac="02:00:00:00:00:08", dst="10.0.0.9", vni=42),
                                req("fdb_replace", mac="02:00:00:00:00:08", dst="10.0.0.9", vni=42),
                                "learn 42 02:00:00:00:00:08 10.0.0.2\n",
                                req("fdb_show")],
        "static-limit": [req("fdb_add", mac=f"02:00:00:00:00:0{i}", dst="10.0.0.7", vni=42) for i in range(5)]
                        + ["learn 42 02:00:00:00:00:0a 10.0.0.2\n", "learn 42 02:00:00:00:00:0b 10.0.0.2\n",
                           "learn 42 02:00:00:00:00:0c 10.0.0.2\n", "learn 42 02:00:00:00:00:0d 10.0.0.2\n",
                           req("fdb_replace", mac="02:00:00:00:00:0a", dst="10.0.0.7", vni=42)],
        "flood-limit": [req("fdb_append", mac=z, dst=f"10.0.0.{i}", vni=43) for i in range(3, 9)],
        "bad-destinations": [req("fdb_add", mac=m, dst="fd00::2", vni=42),
                             req("fdb_add", mac=m, dst="224.0.0.1", vni=42),
                             req("fdb_add", mac=m, dst="255.255.255.255", vni=42),
                             req("fdb_append", mac=z, dst="0.0.0.0", vni=42),
                             req("fdb_add", mac=m, dst="10.0.0.1", vni=42),
                             req("fdb_add", mac="01:00:5e:00:00:01", dst="10.0.0.2", vni=42),
                             req("fdb_add", mac="02:00:00:00:01", dst="10.0.0.2", vni=42),
                             req("fdb_add", mac=m, dst="10.0.0.2"),
                             req("fdb_add", mac=m, dst="10.0.0.2", vni=7)],
        "malformed": ['{"cmd": "fdb_add"}\n', '{"cmd": "reboot"}\n', "not json\n", '{"cmd": "fdb_del", "mac": 5}\n',
                      '{"cmd": "fdb_show", "vni": -1}\n', b'\xff\xfe\n', '{"cmd":"fdb_show","vni":42,"extra":1}\n'],
        "other-requests": [req("peers"), req("stats"), req("networks")],
    }
    for name, lines in seeds.items():
        write("control_request", name, b"".join(l if isinstance(l, bytes) else l.encode() for l in lines))


def main():
    config()
    store()
    control()
