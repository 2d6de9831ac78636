//! The table `vxnet bench` prints: the run's settings, a row per pair and per ratio, and how
//! each figure was measured.

use std::fmt::Write as _;

use super::{Report, PLAIN_PAIR};
use crate::bench::extra;

const COLUMNS: [(&str, usize); 6] = [
    ("TCP x1 Gbit/s", 14),
    ("TCP x4 Gbit/s", 14),
    ("ping p50 ms", 12),
    ("ping p99 ms", 12),
    ("vxnet CPU s/GB", 15),
    ("machine CPU s/GB", 17),
];
/// Fits the longest row name, "ratio vxnet_encrypted/kernel" (`--encrypted`).
const NAME_WIDTH: usize = 28;

fn row(out: &mut String, name: &str, cells: [String; 6]) {
    let _ = write!(out, "{name:<NAME_WIDTH$}");
    for (cell, (_, width)) in cells.iter().zip(COLUMNS) {
        let _ = write!(out, " {cell:>width$}");
    }
    out.push('\n');
}

fn num(v: Option<f64>, decimals: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.decimals$}"))
}

impl Report {
    /// One figure when every overlay device has the same MTU (a fair comparison), else each pair's.
    pub(super) fn overlay_mtus(&self) -> String {
        let mut all = self.pairs.iter().flat_map(|p| p.overlay_mtu);
        if let Some(first) = all.next() {
            if all.all(|m| m == first) {
                return first.to_string();
            }
        }
        let each: Vec<String> = self
            .pairs
            .iter()
            .map(|p| format!("{} {}/{}", p.spec.name, p.overlay_mtu[0], p.overlay_mtu[1]))
            .collect();
        format!("differs: {}", each.join(", "))
    }

    pub(in crate::bench) fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "vxnet bench: the kernel's vxlan and vxnet on one topology ({} / {})",
            self.namespaces[0], self.namespaces[1]
        );
        let _ = writeln!(out, "{}", self.run.describe("", "pair"));
        let reported = match (&self.engine_workers, &self.engine_offloads) {
            (Some(w), Some(o)) if o.is_empty() => {
                format!("; engine reports {w} workers, no offloads")
            }
            (Some(w), Some(o)) => format!("; engine reports {w} workers, offloads {}", o.join(",")),
            _ => String::new(),
        };
        let _ = writeln!(out, "engine: {}{reported}", self.engine.describe());
        let _ = writeln!(
            out,
            "underlay: veth MTU {}; overlay MTU {}",
            self.underlay_mtu,
            self.overlay_mtus()
        );
        if let Some(us) = self.wakeup_round_trip_us {
            let _ = writeln!(out, "machine: thread wake-up round trip {us:.1} µs");
        }
        out.push('\n');
        let _ = write!(out, "{:<NAME_WIDTH$}", "pair");
        for (title, width) in COLUMNS {
            let _ = write!(out, " {title:>width$}");
        }
        out.push('\n');
        for p in &self.pairs {
            let f = &p.figures;
            row(
                &mut out,
                p.spec.label,
                [
                    num(Some(f.tcp_x1_gbit_per_s), 2),
                    num(Some(f.tcp_x4_gbit_per_s), 2),
                    num(Some(f.ping_p50_ms), 3),
                    num(Some(f.ping_p99_ms), 3),
                    num(f.vxnet_cpu_s_per_gb, 2),
                    num(f.machine_cpu_s_per_gb, 2),
                ],
            );
        }
        for r in &self.ratios {
            row(
                &mut out,
                &format!("ratio {}/kernel", r.pair),
                [
                    num(r.tcp_x1_gbit_per_s, 2),
                    num(r.tcp_x4_gbit_per_s, 2),
                    num(r.ping_p50_ms, 2),
                    num(r.ping_p99_ms, 2),
                    "-".into(),
                    num(r.machine_cpu_s_per_gb, 2),
                ],
            );
        }
        if let Some(r) = &self.encrypted_vs_vxnet {
            row(
                &mut out,
                &format!("ratio {}/{PLAIN_PAIR}", r.pair),
                [
                    num(r.tcp_x1_gbit_per_s, 2),
                    num(r.tcp_x4_gbit_per_s, 2),
                    num(r.ping_p50_ms, 2),
                    num(r.ping_p99_ms, 2),
                    num(r.vxnet_cpu_s_per_gb, 2),
                    num(r.machine_cpu_s_per_gb, 2),
                ],
            );
        }
        extra::render(&mut out, NAME_WIDTH, &self.pairs, &self.ratios);
        out.push('\n');
        let m = &self.method;
        for (what, how) in [
            ("TCP", &m.throughput),
            ("ping", &m.latency),
            ("vxnet CPU", &m.vxnet_cpu),
            ("machine CPU", &m.machine_cpu),
            ("ratio", &m.ratios),
            ("wake-up round trip", &m.wakeup),
        ] {
            out.push_str(&wrap(&format!("{what}: {how}."), NOTE_WIDTH, "  "));
        }
        for (what, how) in [("UDP", &m.udp), ("RR", &m.rr)] {
            if let Some(how) = how {
                out.push_str(&wrap(&format!("{what}: {how}."), NOTE_WIDTH, "  "));
            }
        }
        out
    }
}

const NOTE_WIDTH: usize = 100;

/// Breaks `text` at spaces into lines of at most `width` characters (a longer word stays whole);
/// lines after the first start with `indent`.
fn wrap(text: &str, width: usize, indent: &str) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.trim_start().is_empty() && line.chars().count() + 1 + word.chars().count() > width
        {
            out.push_str(&line);
            out.push('\n');
            line = indent.to_string();
        }
        if !line.trim_start().is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_wrap_at_spaces() {
        assert_eq!(wrap("aa bb cc dd", 5, "  "), "aa bb\n  cc\n  dd\n");
        assert_eq!(wrap("averylongword x", 5, ""), "averylongword\nx\n");
        assert_eq!(wrap("short", 50, "  "), "short\n");
    }
}
