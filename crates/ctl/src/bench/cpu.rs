//! CPU time spent during a measurement, two ways: by the vxnet processes (utime + stime from
//! `/proc/PID/stat`, all their threads), and by the whole machine (busy time from `/proc/stat`).
//! The kernel's vxlan runs in softirq context on whichever CPU the packet is on, charged to no
//! process, so only the machine-wide figure compares the kernel pair with the others.

use nix::unistd::{sysconf, SysconfVar};

/// What /proc counts in when sysconf cannot say: USER_HZ, 100 on the common architectures.
const FALLBACK_TICKS_PER_SECOND: f64 = 100.0;

/// Cumulative CPU ticks at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Snapshot {
    /// utime + stime of the vxnet processes; `None` for a pair without any.
    processes: Option<u64>,
    /// Busy ticks of all CPUs together.
    machine: u64,
}

/// CPU seconds used between two snapshots.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Usage {
    pub vxnet_s: Option<f64>,
    pub machine_s: f64,
}

impl Snapshot {
    pub(super) fn take(pids: &[u32]) -> Result<Self, String> {
        let processes = if pids.is_empty() {
            None
        } else {
            let mut sum = 0;
            for pid in pids {
                let path = format!("/proc/{pid}/stat");
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("vxnet process {pid} is gone ({path}: {e})"))?;
                sum += process_ticks(&text).ok_or_else(|| format!("cannot read {path}"))?;
            }
            Some(sum)
        };
        let text = std::fs::read_to_string("/proc/stat")
            .map_err(|e| format!("cannot read /proc/stat: {e}"))?;
        let machine = machine_busy_ticks(&text).ok_or("cannot read /proc/stat")?;
        Ok(Snapshot { processes, machine })
    }

    pub(super) fn since(&self, earlier: &Snapshot) -> Usage {
        let hz = ticks_per_second();
        let seconds = |now: u64, then: u64| now.saturating_sub(then) as f64 / hz;
        Usage {
            vxnet_s: self
                .processes
                .zip(earlier.processes)
                .map(|(now, then)| seconds(now, then)),
            machine_s: seconds(self.machine, earlier.machine),
        }
    }
}

fn ticks_per_second() -> f64 {
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(hz)) if hz > 0 => hz as f64,
        _ => FALLBACK_TICKS_PER_SECOND,
    }
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line. The command name (field 2) may
/// hold spaces and parentheses, so fields are counted from the last `)`.
fn process_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // `fields[0]` is field 3 (state).
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

/// Busy ticks of the `cpu` line of `/proc/stat`: user, nice, system, irq, softirq and steal —
/// everything but idle and iowait. guest and guest_nice are left out: user already holds them.
fn machine_busy_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    if v.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (older kernels stop after idle or iowait)
    let field = |i: usize| v.get(i).copied().unwrap_or(0);
    Some(field(0) + field(1) + field(2) + field(5) + field(6) + field(7))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_ticks_skip_odd_command_names() {
        let stat = "4242 (vx (net) 1) S 1 4242 4242 0 -1 4194560 120 0 0 0 \
                    250 75 0 0 20 0 3 0 1000 1000000 500 18446744073709551615";
        assert_eq!(process_ticks(stat), Some(325));
        assert_eq!(process_ticks("4242 (short) S 1"), None);
    }

    #[test]
    fn machine_busy_is_all_but_idle_and_iowait() {
        let stat = "cpu  100 5 50 1000 7 3 11 2 40 0\ncpu0 50 2 25 500 3 1 5 1 20 0\nintr 1 2\n";
        assert_eq!(machine_busy_ticks(stat), Some(100 + 5 + 50 + 3 + 11 + 2));
        assert_eq!(machine_busy_ticks("intr 1 2\n"), None);
    }

    #[test]
    fn usage_is_the_difference_in_seconds() {
        let hz = ticks_per_second();
        let then = Snapshot {
            processes: Some(100),
            machine: 1000,
        };
        let now = Snapshot {
            processes: Some(100 + hz as u64),
            machine: 1000 + 3 * hz as u64,
        };
        let used = now.since(&then);
        assert_eq!(used.vxnet_s, Some(1.0));
        assert_eq!(used.machine_s, 3.0);
        let kernel = Snapshot {
            processes: None,
            machine: 5,
        };
        assert_eq!(kernel.since(&kernel).vxnet_s, None);
    }
}
