//! How each figure of `vxnet bench` was measured, in words: printed under the table and kept in
//! the JSON report.

use serde::Serialize;

/// How each figure was measured, in words; printed under the table and kept in the JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct Method {
    pub throughput: String,
    pub latency: String,
    pub vxnet_cpu: String,
    pub machine_cpu: String,
    pub ratios: String,
    pub wakeup: String,
    /// With `--udp SIZE`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp: Option<String>,
    /// With `--rr`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rr: Option<String>,
}

impl Method {
    pub(super) fn new(tool: &str, seconds: u64, pings: u32, warmup: u32) -> Self {
        Method {
            throughput: format!(
                "from host a to host b for {seconds} s, 1 and 4 streams, rate at the receiver \
                 ({tool})"
            ),
            latency: format!(
                "{pings} pings 2 ms apart after {warmup} unrecorded ones; nearest-rank p50 and p99"
            ),
            vxnet_cpu: "utime+stime of the pair's vxnet processes (/proc/PID/stat, all threads) \
                        during the TCP x1 run, per GB received; none for the kernel pair, whose \
                        work is softirq time charged to no process"
                .into(),
            machine_cpu: "busy time of all CPUs (/proc/stat: user+nice+system+irq+softirq+steal) \
                          during the TCP x1 run, per GB received; it holds the kernel's softirq \
                          work, the traffic tool at both ends and anything else on the machine, \
                          and is the CPU figure comparable across all pairs"
                .into(),
            ratios: "the pair's figure divided by the kernel pair's (throughput: higher is \
                     better; latency and CPU: lower is better)"
                .into(),
            wakeup: "median of 2000 round trips between two threads of this process, each \
                     asleep until the other wakes it; a ping through the vxnet pair wakes three \
                     engine threads the kernel pair's does not, so this bounds how close its \
                     latency can come"
                .into(),
            udp: None,
            rr: None,
        }
    }
}
