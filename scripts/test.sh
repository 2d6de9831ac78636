#!/usr/bin/env bash
# Installs what the tests need (Debian/Ubuntu packages, as root) and runs every test.
# CI runs exactly this (.ci/run). Tests that need root or network namespaces FAIL under CI=true
# when they cannot run, rather than skip.
set -euo pipefail
cd "$(dirname "$0")/.."

# No protobuf-compiler: the build gets protoc from a registry crate (scripts/protoc), and CI
# proves it by building without one. util-linux: setpriv, for the test that explain --live is
# refused without CAP_NET_RAW. python3 (3.9+, for os.pidfd_open): offload_fallback makes the
# kernel refuse an engine's UDP GSO. groff-base: the man pages are rendered with all warnings on.
# chromium: explain --svg is opened in a real headless browser.
# The container tests drive vxnet's CNI plugin with real clients: podman (runc, conmon, the CNI
# backend), containerd's ctr, and cnitool, which Debian ships only as source: dpkg-dev,
# golang-go and golang-github-appc-cni-dev build it offline (scripts/cnitool.sh). The stock
# plugins (bridge, host-local) are the control and the delegated IPAM; busybox-static is the
# image's whole content (no registry is reachable). dnsutils: dig, the names tests' resolver.
# gdb: worker_gone ends one engine thread the way a kernel BUG does.
packages=(iproute2 iputils-ping ethtool tcpdump tshark iperf3 etcd-server etcd-client
          nftables procps util-linux openssl python3 python3-scapy python3-cryptography passwd
          systemd groff-base chromium podman runc conmon containerd containernetworking-plugins
          busybox-static golang-go golang-github-appc-cni-dev dpkg-dev dnsutils gdb)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: missing packages ${missing[*]}; run as root (or install them) first" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # tshark asks whether non-root users may capture; the default answer is fine here.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo build --workspace --all-targets --locked
scripts/cnitool.sh "${CARGO_TARGET_DIR:-target}/tools/cnitool"
cargo test --workspace --locked -- --test-threads="${TEST_THREADS:-4}"
