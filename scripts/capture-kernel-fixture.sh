#!/usr/bin/env bash
# Regenerates crates/encap/tests/fixtures/kernel-vxlan-*.pcap: packets written by the Linux
# kernel's own vxlan driver, captured on the underlay between two network namespaces.
# Needs root, iproute2, ethtool and tcpdump. Note the kernel (6.x) defaults to `udpcsum`, so
# its IPv4 packets carry a real outer UDP checksum, not the zero RFC 7348 recommends. Everything it creates is removed on exit.
set -euo pipefail
out=${1:-crates/encap/tests/fixtures}
a=vxfixA$$ b=vxfixB$$
cleanup() { ip netns del "$a" 2>/dev/null || true; ip netns del "$b" 2>/dev/null || true; }
trap cleanup EXIT
ip netns add "$a"; ip netns add "$b"
ip link add veth0 netns "$a" type veth peer name veth0 netns "$b"
for ns in "$a" "$b"; do
  ip -n "$ns" link set lo up; ip -n "$ns" link set veth0 up
  # veth hands packets over with CHECKSUM_PARTIAL, so a capture would hold only the pseudo-header
  # sum; with TX checksum offload off the kernel writes complete outer UDP checksums.
  ip netns exec "$ns" ethtool -K veth0 tx off >/dev/null
done
ip -n "$a" addr add 192.168.205.10/24 dev veth0; ip -n "$b" addr add 192.168.205.11/24 dev veth0
ip -n "$a" addr add fd00:205::10/64 dev veth0 nodad; ip -n "$b" addr add fd00:205::11/64 dev veth0 nodad
capture() { # $1 name, $2 family: kernel vxlan on both sides, one ping, capture on B's underlay
  local name=$1 fam=$2 la lb
  if [ "$fam" = 4 ]; then la=192.168.205.10 lb=192.168.205.11; else la=fd00:205::10 lb=fd00:205::11; fi
  ip -n "$a" link add vx0 type vxlan id 42 dstport 4789 local $la remote $lb dev veth0
  ip -n "$b" link add vx0 type vxlan id 42 dstport 4789 local $lb remote $la dev veth0
  ip -n "$a" link set vx0 address 02:42:ac:11:00:02; ip -n "$b" link set vx0 address 02:42:ac:11:00:03
  ip -n "$a" addr add 172.17.0.2/24 dev vx0; ip -n "$b" addr add 172.17.0.3/24 dev vx0
  # No IPv6 on the overlay: keeps MLD/ND chatter out of the fixture (ARP + one ping only).
  for ns in "$a" "$b"; do ip netns exec "$ns" sysctl -qw net.ipv6.conf.vx0.disable_ipv6=1; done
  ip -n "$a" link set vx0 up; ip -n "$b" link set vx0 up
  ip netns exec "$b" tcpdump -i veth0 -U -c 4 -w "$out/$name.pcap" udp port 4789 2>/dev/null &
  local dump=$!; sleep 1
  ip netns exec "$a" ping -c 1 -W 2 172.17.0.3 >/dev/null
  wait $dump
  ip -n "$a" link del vx0; ip -n "$b" link del vx0
}
capture kernel-vxlan-ipv4 4
capture kernel-vxlan-ipv6 6
echo "wrote $out/kernel-vxlan-ipv4.pcap $out/kernel-vxlan-ipv6.pcap"
