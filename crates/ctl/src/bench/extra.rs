//! The figures `vxnet bench` measures on request beside TCP and ping: small UDP datagrams
//! (`--udp SIZE`: offered and delivered packets per second, loss, as fast as the sender can and
//! paced at the kernel pair's sustainable rate) and request/response latency
//! (`--rr`), with the transmit path each vxnet engine used; their medians, ratios and table.

use std::fmt::Write as _;

use serde::Serialize;

use super::measure::UdpStats;
use super::report::{median, PairResult, Ratios};
use super::rr::RrStats;

/// One pair's extra figures (one round, the median of the rounds, or a ratio); each `None`
/// when not measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(super) struct Extra {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp_offered_pps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp_delivered_pps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp_loss_percent: Option<f64>,
    /// The same datagrams paced at the rate the kernel pair carried with < 1 % loss.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp_paced_offered_pps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp_paced_delivered_pps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp_paced_loss_percent: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rr_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rr_p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rr_p99_ms: Option<f64>,
    /// CPU time of the pair's vxnet processes per round trip, microseconds (what busy-polling
    /// costs shows here).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rr_vxnet_cpu_us: Option<f64>,
}

/// Each figure's name and how to read it from an [`Extra`].
type Field = (&'static str, fn(&Extra) -> Option<f64>);
const FIELDS: [Field; 10] = [
    ("udp_offered_pps", |e| e.udp_offered_pps),
    ("udp_delivered_pps", |e| e.udp_delivered_pps),
    ("udp_loss_percent", |e| e.udp_loss_percent),
    ("udp_paced_offered_pps", |e| e.udp_paced_offered_pps),
    ("udp_paced_delivered_pps", |e| e.udp_paced_delivered_pps),
    ("udp_paced_loss_percent", |e| e.udp_paced_loss_percent),
    ("rr_per_s", |e| e.rr_per_s),
    ("rr_p50_ms", |e| e.rr_p50_ms),
    ("rr_p99_ms", |e| e.rr_p99_ms),
    ("rr_vxnet_cpu_us", |e| e.rr_vxnet_cpu_us),
];

impl Extra {
    pub(super) fn new(udp: Option<UdpStats>, paced: Option<UdpStats>, rr: Option<RrStats>) -> Self {
        Extra {
            udp_offered_pps: udp.map(|u| u.offered_pps),
            udp_delivered_pps: udp.map(|u| u.delivered_pps),
            udp_loss_percent: udp.map(|u| u.loss_percent),
            udp_paced_offered_pps: paced.map(|u| u.offered_pps),
            udp_paced_delivered_pps: paced.map(|u| u.delivered_pps),
            udp_paced_loss_percent: paced.map(|u| u.loss_percent),
            rr_per_s: rr.map(|r| r.per_s),
            rr_p50_ms: rr.map(|r| r.p50_ms),
            rr_p99_ms: rr.map(|r| r.p99_ms),
            rr_vxnet_cpu_us: None,
        }
    }

    fn from_fields(mut value: impl FnMut(fn(&Extra) -> Option<f64>) -> Option<f64>) -> Self {
        let [a, b, c, d, e, f, g, h, i, j] = FIELDS.map(|(_, get)| value(get));
        Extra {
            udp_offered_pps: a,
            udp_delivered_pps: b,
            udp_loss_percent: c,
            udp_paced_offered_pps: d,
            udp_paced_delivered_pps: e,
            udp_paced_loss_percent: f,
            rr_per_s: g,
            rr_p50_ms: h,
            rr_p99_ms: i,
            rr_vxnet_cpu_us: j,
        }
    }

    /// The median of each figure over the rounds that have it.
    pub(super) fn median_of<'a>(rounds: impl Iterator<Item = &'a Extra> + Clone) -> Self {
        Extra::from_fields(|get| median(rounds.clone().filter_map(get).collect()))
    }

    /// Each figure of `pair` divided by the kernel pair's. Loss is a difference of percentage
    /// points instead: the kernel pair's loss is often 0.
    pub(super) fn ratio(pair: &Extra, kernel: &Extra) -> Self {
        let mut ratio = Extra::from_fields(|get| match (get(pair), get(kernel)) {
            (Some(a), Some(b)) if b != 0.0 => Some(a / b),
            _ => None,
        });
        ratio.udp_loss_percent = None;
        ratio.udp_paced_loss_percent = None;
        ratio
    }

    fn any(&self) -> bool {
        FIELDS.iter().any(|(_, get)| get(self).is_some())
    }
}

const COLUMNS: [(&str, usize); 11] = [
    ("UDP offered kpps", 17),
    ("UDP delivered kpps", 19),
    ("UDP loss %", 11),
    ("paced kpps", 11),
    ("paced delivered", 16),
    ("paced loss %", 13),
    ("RR p50 ms", 10),
    ("RR p99 ms", 10),
    ("RR trans/s", 11),
    ("RR vxnet CPU µs", 16),
    ("tx path", 22),
];

/// The second table: UDP and request/response figures, and each pair's transmit path; nothing
/// when neither was measured and no pair has a vxnet engine.
pub(super) fn render(out: &mut String, name_width: usize, pairs: &[PairResult], ratios: &[Ratios]) {
    let any = pairs
        .iter()
        .any(|p| p.figures.extra.any() || !p.tx_paths.is_empty());
    if !any {
        return;
    }
    let _ = write!(out, "\n{:<name_width$}", "pair");
    for (title, width) in COLUMNS {
        let _ = write!(out, " {title:>width$}");
    }
    out.push('\n');
    let num = |v: Option<f64>, scale: f64, decimals: usize| {
        v.map_or("-".to_string(), |v| format!("{:.decimals$}", v * scale))
    };
    let mut row = |name: &str, e: &Extra, path: String, ratio: bool| {
        let scale = if ratio { 1.0 } else { 1e-3 };
        let cells = [
            num(e.udp_offered_pps, scale, 1),
            num(e.udp_delivered_pps, scale, if ratio { 2 } else { 1 }),
            num(e.udp_loss_percent, 1.0, 2),
            num(e.udp_paced_offered_pps, scale, if ratio { 2 } else { 1 }),
            num(e.udp_paced_delivered_pps, scale, if ratio { 2 } else { 1 }),
            num(e.udp_paced_loss_percent, 1.0, 2),
            num(e.rr_p50_ms, 1.0, if ratio { 2 } else { 3 }),
            num(e.rr_p99_ms, 1.0, if ratio { 2 } else { 3 }),
            num(e.rr_per_s, 1.0, if ratio { 2 } else { 0 }),
            num(e.rr_vxnet_cpu_us, 1.0, if ratio { 2 } else { 1 }),
            path,
        ];
        let _ = write!(out, "{name:<name_width$}");
        for (cell, (_, width)) in cells.iter().zip(COLUMNS) {
            let _ = write!(out, " {cell:>width$}");
        }
        out.push('\n');
    };
    for p in pairs {
        let path = match p.tx_paths.as_slice() {
            [] => "kernel".to_string(),
            paths => paths.join("/"),
        };
        row(p.spec.label, &p.figures.extra, path, false);
    }
    for r in ratios.iter().filter(|r| r.extra.any()) {
        row(
            &format!("ratio {}/kernel", r.pair),
            &r.extra,
            String::new(),
            true,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ratios_per_figure() {
        let udp = |pps: f64| UdpStats {
            offered_pps: 2.0 * pps,
            delivered_pps: pps,
            loss_percent: 50.0,
        };
        let rounds = [
            Extra::new(Some(udp(100.0)), None, None),
            Extra::new(Some(udp(300.0)), Some(udp(50.0)), None),
            Extra::new(Some(udp(200.0)), None, None),
        ];
        let m = Extra::median_of(rounds.iter());
        assert_eq!(m.udp_delivered_pps, Some(200.0));
        assert_eq!(m.udp_offered_pps, Some(400.0));
        assert_eq!(m.rr_p50_ms, None);
        assert_eq!(m.udp_paced_delivered_pps, Some(50.0));
        let kernel = Extra::new(Some(udp(100.0)), Some(udp(25.0)), None);
        let r = Extra::ratio(&m, &kernel);
        assert_eq!(r.udp_delivered_pps, Some(2.0));
        assert_eq!(r.udp_loss_percent, None);
        assert_eq!(r.udp_paced_delivered_pps, Some(2.0));
        assert_eq!(r.udp_paced_loss_percent, None);
        assert!(!Extra::default().any() && m.any());
    }
}
