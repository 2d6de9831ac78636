#!/usr/bin/env bash
# Throughput of vxnet against the kernel's vxlan, in ONE run on ONE topology
# (method: ../shared/notes/benchmark-method.md). Needs root, iperf3, and a release build:
#   cargo build --release -p vxnet && sudo ./scripts/bench-netns.sh [SECONDS] [ROUNDS]
# Two namespaces joined by a veth; three overlays on it at once:
#   kernel pair  VNI 42 port 4789   kernel vxlan on both sides
#   vxnet pair   VNI 43 port 4790   vxnet on both sides
#   mixed pair   VNI 44 port 4791   vxnet on A, kernel vxlan on B
# Pairs are alternated each round. Everything created is removed on exit, also on Ctrl-C.
set -euo pipefail
secs=${1:-4}; rounds=${2:-2}
bin=${VXNET:-$(dirname "$0")/../target/release/vxnet}
[ -x "$bin" ] || { echo "error: $bin not built (cargo build --release -p vxnet)" >&2; exit 1; }
command -v iperf3 >/dev/null || { echo "error: iperf3 not installed" >&2; exit 1; }
a=vxbenchA$$ b=vxbenchB$$ dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for ns in "$a" "$b"; do ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true; ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM
ip netns add "$a"; ip netns add "$b"
ip link add veth0 netns "$a" type veth peer name veth0 netns "$b"
for ns in "$a" "$b"; do ip -n "$ns" link set lo up; ip -n "$ns" link set veth0 up; done
ip -n "$a" addr add 192.168.250.1/24 dev veth0; ip -n "$b" addr add 192.168.250.2/24 dev veth0
# Kernel vxlan over veth leaves inner checksums partial; a userspace receiver needs them complete.
ip netns exec "$b" ethtool -K veth0 tx off >/dev/null
kvx() { # ns vni port local remote addr
  ip -n "$1" link add "k$2" type vxlan id "$2" dstport "$3" local "$4" remote "$5" dev veth0
  ip -n "$1" addr add "$6" dev "k$2"; ip -n "$1" link set "k$2" up
}
vvx() { # ns vni port local remote addr name
  ip netns exec "$1" "$bin" run --vni "$2" --dev "v$2" --port "$3" --local "$4" --remote "$5" \
     --address "$6" --control "$dir/$7.sock" ${VXNET_ARGS:-} >"$dir/$7.log" 2>&1 &
  pids+=($!); eval "pid_$7=$!"
}
kvx "$a" 42 4789 192.168.250.1 192.168.250.2 10.42.0.1/24
kvx "$b" 42 4789 192.168.250.2 192.168.250.1 10.42.0.2/24
vvx "$a" 43 4790 192.168.250.1 192.168.250.2 10.43.0.1/24 va
vvx "$b" 43 4790 192.168.250.2 192.168.250.1 10.43.0.2/24 vb
vvx "$a" 44 4791 192.168.250.1 192.168.250.2 10.44.0.1/24 vm
kvx "$b" 44 4791 192.168.250.2 192.168.250.1 10.44.0.2/24
sleep 2
ip netns exec "$b" iperf3 -s -D -p 5201 >/dev/null
cpu() { awk '{print $14+$15}' /proc/"$1"/stat; }  # utime+stime, clock ticks
hz=$(getconf CLK_TCK)
iperf() { # target streams -> Gbit/s and GB moved
  ip netns exec "$a" iperf3 -c "$1" -p 5201 -t "$secs" -P "$2" -J 2>/dev/null |
    python3 -c 'import json,sys;d=json.load(sys.stdin)["end"]["sum_received"];print("%.2f %.4f"%(d["bits_per_second"]/1e9,d["bytes"]/1e9))'
}
pings() { # target -> p50 p99 in ms
  ip netns exec "$a" ping -q -c 300 -i 0.005 "$1" >/dev/null 2>&1 || true
  ip netns exec "$a" ping -c 300 -i 0.005 "$1" 2>/dev/null | sed -n 's/.*time=\([0-9.]*\).*/\1/p' | sort -n |
    awk '{v[NR]=$1} END{printf "%.3f %.3f\n", v[int(NR*0.5)], v[int(NR*0.99)]}'
}
declare -A single multi p50 p99 cpugb
for r in $(seq "$rounds"); do
  for pair in kernel vxnet mixed; do
    case $pair in kernel) t=10.42.0.2;; vxnet) t=10.43.0.2;; mixed) t=10.44.0.2;; esac
    echo "round $r/$rounds: $pair ..." >&2
    c0=0; [ $pair = vxnet ] && c0=$(( $(cpu $pid_va) + $(cpu $pid_vb) )); [ $pair = mixed ] && c0=$(cpu $pid_vm)
    read -r g1 gb1 < <(iperf $t 1)
    c1=0; [ $pair = vxnet ] && c1=$(( $(cpu $pid_va) + $(cpu $pid_vb) )); [ $pair = mixed ] && c1=$(cpu $pid_vm)
    read -r g4 _ < <(iperf $t 4)
    read -r l50 l99 < <(pings $t)
    single[$pair]="${single[$pair]:-} $g1"; multi[$pair]="${multi[$pair]:-} $g4"
    p50[$pair]="${p50[$pair]:-} $l50"; p99[$pair]="${p99[$pair]:-} $l99"
    cpugb[$pair]="${cpugb[$pair]:-} $(python3 -c "print('%.2f'%(($c1-$c0)/$hz/$gb1) if $gb1>0 else 0)")"
  done
done
python3 - "$secs" "$rounds" <<PY
import statistics as s, sys
def m(x): v=[float(t) for t in x.split()]; return s.median(v)
single={'kernel':"${single[kernel]}",'vxnet':"${single[vxnet]}",'mixed':"${single[mixed]}"}
multi={'kernel':"${multi[kernel]}",'vxnet':"${multi[vxnet]}",'mixed':"${multi[mixed]}"}
p50={'kernel':"${p50[kernel]}",'vxnet':"${p50[vxnet]}",'mixed':"${p50[mixed]}"}
p99={'kernel':"${p99[kernel]}",'vxnet':"${p99[vxnet]}",'mixed':"${p99[mixed]}"}
cpu={'kernel':"${cpugb[kernel]}",'vxnet':"${cpugb[vxnet]}",'mixed':"${cpugb[mixed]}"}
print(f"{sys.argv[2]} rounds x {sys.argv[1]} s, medians")
print(f"{'pair':8} {'TCP x1 Gbit/s':>14} {'TCP x4 Gbit/s':>14} {'ping p50 ms':>12} {'ping p99 ms':>12} {'vxnet CPU s/GB':>15}")
for p in ['kernel','vxnet','mixed']:
    c = '-' if p=='kernel' else '%.2f'%m(cpu[p])
    print(f"{p:8} {m(single[p]):14.2f} {m(multi[p]):14.2f} {m(p50[p]):12.3f} {m(p99[p]):12.3f} {c:>15}")
k=m(single['kernel'])
print(f"ratios vs kernel (x1): vxnet {m(single['vxnet'])/k:.2f}  mixed {m(single['mixed'])/k:.2f};"
      f"  (x4): vxnet {m(multi['vxnet'])/m(multi['kernel']):.2f}  mixed {m(multi['mixed'])/m(multi['kernel']):.2f};"
      f"  p50 latency vxnet/kernel {m(p50['vxnet'])/m(p50['kernel']):.2f}")
PY
