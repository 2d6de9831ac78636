//! The figures `vxnet bench` measures on request beside TCP and ping: small UDP datagrams
//! (`--udp SIZE`: offered and delivered packets per second, loss) and request/response latency
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rr_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rr_p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rr_p99_ms: Option<f64>,
}

/// Each figure's name and how to read it from an [`Extra`].
type Field = (&'static str, fn(&Extra) -> Option<f64>);
const FIELDS: [Field; 6] = [
    ("udp_offered_pps", |e| e.udp_offered_pps),
    ("udp_delivered_pps", |e| e.udp_delivered_pps),
    ("udp_loss_percent", |e| e.udp_loss_percent),
    ("rr_per_s", |e| e.rr_per_s),
    ("rr_p50_ms", |e| e.rr_p50_ms),
    ("rr_p99_ms", |e| e.rr_p99_ms),
];

impl Extra {
    pub(super) fn new(udp: Option<UdpStats>, rr: Option<RrStats>) -> Self {
        Extra {
            udp_offered_pps: udp.map(|u| u.offered_pps),
            udp_delivered_pps: udp.map(|u| u.delivered_pps),
            udp_loss_percent: udp.map(|u| u.loss_percent),
            rr_per_s: rr.map(|r| r.per_s),
            rr_p50_ms: rr.map(|r| r.p50_ms),
            rr_p99_ms: rr.map(|r| r.p99_ms),
        }
    }

    fn from_fields(mut value: impl FnMut(fn(&Extra) -> Option<f64>) -> Option<f64>) -> Self {
        let [a, b, c, d, e, f] = FIELDS.map(|(_, get)| value(get));
        Extra {
            udp_offered_pps: a,
            udp_delivered_pps: b,
            udp_loss_percent: c,
            rr_per_s: d,
            rr_p50_ms: e,
            rr_p99_ms: f,
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
        ratio
    }

    fn any(&self) -> bool {
        FIELDS.iter().any(|(_, get)| get(self).is_some())
    }
}

const COLUMNS: [(&str, usize); 7] = [
    ("UDP offered kpps", 17),
    ("UDP delivered kpps", 19),
    ("UDP loss %", 11),
    ("RR p50 ms", 10),
    ("RR p99 ms", 10),
    ("RR trans/s", 11),
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
            num(e.rr_p50_ms, 1.0, if ratio { 2 } else { 3 }),
            num(e.rr_p99_ms, 1.0, if ratio { 2 } else { 3 }),
            num(e.rr_per_s, 1.0, if ratio { 2 } else { 0 }),
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
            Extra::new(Some(udp(100.0)), None),
            Extra::new(Some(udp(300.0)), None),
            Extra::new(Some(udp(200.0)), None),
        ];
        let m = Extra::median_of(rounds.iter());
        assert_eq!(m.udp_delivered_pps, Some(200.0));
        assert_eq!(m.udp_offered_pps, Some(400.0));
        assert_eq!(m.rr_p50_ms, None);
        let kernel = Extra::new(Some(udp(100.0)), None);
        let r = Extra::ratio(&m, &kernel);
        assert_eq!(r.udp_delivered_pps, Some(2.0));
        assert_eq!(r.udp_loss_percent, None);
        assert!(!Extra::default().any() && m.any());
    }
}
