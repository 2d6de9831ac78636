//! The EXAMPLES and FILES sections of the man pages, by page name. Every example is a command
//! line the real CLI parses (`tests/man_pages.rs` checks), so the pages cannot teach a command
//! that no longer exists.

/// One example: what it does, then the command line.
pub(crate) type Example = (&'static str, &'static str);

pub(crate) fn examples(page: &str) -> &'static [Example] {
    match page {
        "vxnet" => &[
            ("A two-host overlay in network namespaces, used and removed again (as root):", "vxnet demo"),
            (
                "Serve VNI 42 on TAP vx42 with one peer, the overlay address 10.1.0.1/24:",
                "vxnet run --vni 42 --dev vx42 --local 10.0.0.1 --remote 10.0.0.2 --address 10.1.0.1/24",
            ),
            ("Counters and drops by reason of the running engine:", "vxnet stats"),
            ("The VXLAN double wrap, layer by layer:", "vxnet explain"),
        ],
        "vxnet-run" => &[
            (
                "One network with one peer:",
                "vxnet run --vni 42 --dev vx42 --local 10.0.0.1 --remote 10.0.0.2 --address 10.1.0.1/24",
            ),
            (
                "The networks of a configuration file (see vxnet.toml(5)), with Prometheus metrics:",
                "vxnet run --config /etc/vxnet/vxnet.toml --metrics 127.0.0.1:9109",
            ),
            (
                "An encrypted network (every host needs the same key file):",
                "vxnet run --vni 42 --dev vx42 --local 10.0.0.1 --remote 10.0.0.2 --key-file /etc/vxnet/blue.key",
            ),
            (
                "Join a cluster with a token and serve its networks:",
                "vxnet run --token VXNET-1-example --local 10.0.0.2",
            ),
            ("Resume cluster membership after a restart:", "vxnet run --local 10.0.0.2"),
        ],
        "vxnet-fdb" | "vxnet-fdb-show" => &[
            ("The forwarding database of every network:", "vxnet fdb show"),
            ("One network's, as JSON:", "vxnet fdb show --vni 42 --json"),
        ],
        "vxnet-fdb-add" => &[
            ("A static entry:", "vxnet fdb add 02:00:00:00:00:01 --dst 10.0.0.2"),
            (
                "The flood entry's first destination:",
                "vxnet fdb add 00:00:00:00:00:00 --dst 10.0.0.4",
            ),
        ],
        "vxnet-fdb-append" => &[(
            "Another destination of the flood entry:",
            "vxnet fdb append 00:00:00:00:00:00 --dst 10.0.0.5",
        )],
        "vxnet-fdb-replace" => &[(
            "Move a static entry to another VTEP:",
            "vxnet fdb replace 02:00:00:00:00:01 --dst 10.0.0.3",
        )],
        "vxnet-fdb-del" => &[
            ("Remove an entry:", "vxnet fdb del 02:00:00:00:00:01"),
            (
                "Remove one destination of the flood entry:",
                "vxnet fdb del 00:00:00:00:00:00 --dst 10.0.0.5",
            ),
        ],
        "vxnet-peers" => &[("Remote VTEPs with their counters:", "vxnet peers --json")],
        "vxnet-stats" => &[
            ("Counters, drops by reason, offloads in use:", "vxnet stats"),
            (
                "The same from an engine with its own control socket:",
                "vxnet stats --control /run/vxnet/blue.sock --json",
            ),
        ],
        "vxnet-networks" => &[("The networks served:", "vxnet networks")],
        "vxnet-reload" => &[("Re-read the configuration file:", "vxnet reload")],
        "vxnet-sa" | "vxnet-sa-show" => &[
            ("Security associations of encrypted networks:", "vxnet sa show"),
            (
                "With key material, for explain --keys or Wireshark:",
                "vxnet sa show --json --keys",
            ),
        ],
        "vxnet-cluster" | "vxnet-cluster-init" => &[(
            "Create a cluster in an etcd store; prints the join tokens:",
            "vxnet cluster init --store etcd://10.0.0.4:2379 --local 10.0.0.1",
        )],
        "vxnet-cluster-join" => &[(
            "Join with a token printed by cluster init:",
            "vxnet cluster join VXNET-1-example --local 10.0.0.2",
        )],
        "vxnet-cluster-rotate" => &[("New worker token only:", "vxnet cluster rotate --worker")],
        "vxnet-cluster-status" => &[("Members and their liveness:", "vxnet cluster status")],
        "vxnet-cluster-leave" => &[("Leave for good (engine stopped):", "vxnet cluster leave")],
        "vxnet-cluster-rm" => &[(
            "Remove a node that is gone, on a manager:",
            "vxnet cluster rm 4f1c2a9e",
        )],
        "vxnet-cluster-watch" => &[("Follow the cluster view:", "vxnet cluster watch")],
        "vxnet-network" | "vxnet-network-create" => &[
            (
                "A network whose hosts get addresses from 10.1.0.0/24:",
                "vxnet network create blue --subnet 10.1.0.0/24",
            ),
            (
                "An encrypted network, keys rotated every 12 hours:",
                "vxnet network create sec --encrypted --key-rotation 12h",
            ),
        ],
        "vxnet-network-ls" => &[("The cluster's networks:", "vxnet network ls")],
        "vxnet-network-rm" => &[("Remove a network:", "vxnet network rm blue")],
        "vxnet-network-rotate-key" => &[("Rotate a key now:", "vxnet network rotate-key sec")],
        "vxnet-cni" | "vxnet-cni-install" => &[(
            "The CNI plugin and a conflist for the network blue, for podman or containerd:",
            "vxnet cni install --network blue",
        )],
        "vxnet-firewall" | "vxnet-firewall-apply" => &[
            ("What would be done:", "vxnet firewall apply --dry-run"),
            (
                "Open the ports to two static peers with nftables:",
                "vxnet firewall apply --backend nftables --peer 10.0.0.2 --peer 10.0.0.3",
            ),
        ],
        "vxnet-firewall-remove" => &[("Close them again:", "vxnet firewall remove")],
        "vxnet-firewall-list" => &[("Who the ports are open to:", "vxnet firewall list")],
        "vxnet-explain" => &[
            ("The worked example:", "vxnet explain"),
            ("The same, encrypted:", "vxnet explain --encrypted"),
            ("A capture:", "vxnet explain --pcap capture.pcap"),
            (
                "An encrypted capture, with the engine's keys:",
                "vxnet explain --pcap capture.pcap --keys keys.json",
            ),
            ("Five packets as they pass:", "vxnet explain --live eth0 --count 5"),
            ("A capture, one line per packet:", "vxnet explain --pcap capture.pcap --brief"),
            ("One packet drawn as nested boxes:", "vxnet explain --svg packet.svg"),
        ],
        "vxnet-demo" => &[
            ("The demo, summary as JSON:", "vxnet demo --json"),
            (
                "Beside another run, with names and addresses of its own:",
                "vxnet demo --prefix lab1 --subnet 10.99.0.0/24",
            ),
        ],
        "vxnet-bench" => &[
            ("Three rounds against the kernel's vxlan:", "vxnet bench --seconds 4 --repeat 3"),
            (
                "On a jumbo underlay, with the encrypted pair:",
                "vxnet bench --underlay-mtu 9000 --encrypted",
            ),
            (
                "Container to container beside host to host, over bridge-mode endpoints:",
                "vxnet bench --containers --seconds 4 --repeat 3",
            ),
        ],
        "vxnet-key" | "vxnet-key-generate" => &[(
            "A new network key file:",
            "vxnet key generate --out /etc/vxnet/blue.key",
        )],
        "vxnet-key-check" => &[("Check a key file:", "vxnet key check /etc/vxnet/blue.key")],
        "vxnet-completions" => &[(
            "Completions for bash:",
            "vxnet completions bash > /etc/bash_completion.d/vxnet",
        )],
        "vxnet-man" => &[(
            "Install the man pages:",
            "vxnet man --dir /usr/local/share/man/man1",
        )],
        _ => &[],
    }
}

/// One file: its path and what it is to this command.
pub(crate) type File = (&'static str, &'static str);

const CONTROL: File = (
    "/run/vxnet/vxnet.sock",
    "the control socket of the running engine (--control)",
);
const STATE: File = (
    "/var/lib/vxnet",
    "the node state directory of cluster mode (--state-dir, VXNET_STATE_DIR)",
);
const CONFIG: File = (
    "/etc/vxnet/vxnet.toml",
    "the configuration file the systemd unit gives to --config; see vxnet.toml(5)",
);

pub(crate) fn files(page: &str) -> &'static [File] {
    let group = page.split('-').nth(1).unwrap_or("");
    match group {
        "" => &[CONFIG, CONTROL, STATE],
        "run" => &[
            CONFIG,
            CONTROL,
            STATE,
            (
                "/dev/net/tun",
                "the TUN/TAP device the engine opens its TAPs through",
            ),
        ],
        "fdb" | "peers" | "stats" | "networks" | "reload" | "sa" => &[CONTROL],
        "cluster" | "network" | "firewall" => &[STATE],
        "key" => &[("/etc/vxnet/*.key", "network key files, mode 0600")],
        "cni" => &[
            (
                "/opt/cni/bin/vxnet-cni",
                "the CNI plugin runtimes execute (--dir)",
            ),
            (
                "/etc/cni/net.d",
                "where the network's conflist goes (--conf-dir)",
            ),
            CONTROL,
        ],
        _ => &[],
    }
}
