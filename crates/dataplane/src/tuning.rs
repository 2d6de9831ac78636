//! Data-plane options set by `vxnet run` flags or the config file, with their parsing and
//! valid ranges in one place: the outer header policy (`df`, `ttl`, `tos`), the source-port
//! range (`srcport`), storm control (`bum_rate`), the path-MTU floor (`min_pmtu`) and the
//! workers' busy-poll window (`busy_poll`). Names follow iproute2's
//! `ip link add type vxlan` where it has the option.

use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;

use serde::Deserialize;
use vxnet_encap::outer::{DfPolicy, OuterPolicy, TosPolicy, TtlPolicy};

/// The outer UDP source ports flows are spread over (`srcport MIN-MAX`; iproute2 writes
/// `srcport MIN MAX`). Default 49152–65535 (RFC 7348 §5: the dynamic range).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourcePortRange {
    pub min: u16,
    pub max: u16,
}

impl Default for SourcePortRange {
    fn default() -> Self {
        SourcePortRange {
            min: *vxnet_encap::SOURCE_PORT_RANGE.start(),
            max: *vxnet_encap::SOURCE_PORT_RANGE.end(),
        }
    }
}

/// Lowest port a source-port range may start at: below are the well-known ports.
pub const MIN_SOURCE_PORT: u16 = *crate::validate::SRCPORT.start();

impl SourcePortRange {
    pub fn new(min: u16, max: u16) -> Result<Self, String> {
        if min < MIN_SOURCE_PORT || min > max {
            return Err(format!(
                "invalid srcport {min}-{max}: need {MIN_SOURCE_PORT} <= MIN <= MAX <= 65535"
            ));
        }
        Ok(SourcePortRange { min, max })
    }

    /// How many ports the range holds.
    pub fn len(&self) -> usize {
        usize::from(self.max - self.min) + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn contains(&self, port: u16) -> bool {
        (self.min..=self.max).contains(&port)
    }

    pub fn as_range(&self) -> RangeInclusive<u16> {
        self.min..=self.max
    }

    /// The larger stretch of ports from 1024 up outside the range (for sockets that must not
    /// take a source port); the range itself when it covers everything.
    pub fn outside(&self) -> RangeInclusive<u16> {
        let below = self.min - MIN_SOURCE_PORT;
        let above = u16::MAX - self.max;
        if below == 0 && above == 0 {
            self.as_range()
        } else if below >= above {
            MIN_SOURCE_PORT..=self.min - 1
        } else {
            self.max + 1..=u16::MAX
        }
    }

    /// The port of a flow with this hash: multiply-shift onto the range (as the kernel's
    /// `udp_flow_src_port` does), uniform without a division.
    pub fn port_for(&self, hash: u32) -> u16 {
        let span = self.len() as u64;
        self.min + ((u64::from(hash) * span) >> 32) as u16
    }
}

impl FromStr for SourcePortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let parse = |p: &str| p.trim().parse::<u16>().ok();
        let (min, max) = s
            .split_once('-')
            .and_then(|(a, b)| Some((parse(a)?, parse(b)?)))
            .ok_or_else(|| format!("invalid srcport {s:?}: expected MIN-MAX, e.g. 49152-65535"))?;
        SourcePortRange::new(min, max)
    }
}

impl fmt::Display for SourcePortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.min, self.max)
    }
}

/// Largest `bum_rate` ([`crate::validate::BUM_RATE`]).
pub const MAX_BUM_RATE: u32 = *crate::validate::BUM_RATE.end();

/// Checks a `--bum-rate` / `bum_rate` value: frames per second, 1 to [`MAX_BUM_RATE`].
pub fn check_bum_rate(rate: u64) -> Result<u32, String> {
    match u32::try_from(rate) {
        Ok(r) if crate::validate::BUM_RATE.contains(&r) => Ok(r),
        _ => Err(format!(
            "invalid bum_rate {rate}: expected 1-{MAX_BUM_RATE} frames per second (omit it for no limit)"
        )),
    }
}

/// `--bum-rate PPS` for clap.
pub fn parse_bum_rate(s: &str) -> Result<u32, String> {
    let rate = s.parse::<u64>().map_err(|_| {
        format!("invalid bum rate {s:?}: expected frames per second, 1-{MAX_BUM_RATE}")
    })?;
    check_bum_rate(rate)
}

/// The default path-MTU floor: IPv6's minimum link MTU (RFC 8200 §5). Every link that carries
/// IPv6 carries 1280-byte packets, so an ICMP message claiming a smaller path is far more
/// likely forged (or broken) than true; and above it the MTU vxnet reports into its TAPs
/// (1280 less 50 or 70 bytes) stays above what inner IPv4 hosts heed (552), so following the
/// path down to the floor never makes a black hole.
pub const DEFAULT_MIN_PMTU: u32 = 1280;

/// A u32 setting in `range`, or the error both its forms give: `invalid KEY VALUE: expected
/// A-B HINT` for a number out of range (the file, or a flag's checked value), `invalid LABEL
/// "TEXT": expected UNIT, A-B` for a flag that is no number at all.
struct Bounded {
    key: &'static str,
    label: &'static str,
    unit: &'static str,
    hint: &'static str,
    range: std::ops::RangeInclusive<u32>,
}

impl Bounded {
    fn check(&self, value: u64) -> Result<u32, String> {
        match u32::try_from(value) {
            Ok(v) if self.range.contains(&v) => Ok(v),
            _ => Err(format!(
                "invalid {} {value}: expected {}-{} {}",
                self.key,
                self.range.start(),
                self.range.end(),
                self.hint
            )),
        }
    }

    fn parse(&self, s: &str) -> Result<u32, String> {
        let value = s.parse::<u64>().map_err(|_| {
            format!(
                "invalid {} {s:?}: expected {}, {}-{}",
                self.label,
                self.unit,
                self.range.start(),
                self.range.end()
            )
        })?;
        self.check(value)
    }
}

const MIN_PMTU: Bounded = Bounded {
    key: "min_pmtu",
    label: "min pmtu",
    unit: "bytes",
    hint: "bytes (an outer IP packet's size)",
    range: crate::validate::MIN_PMTU,
};

/// Checks a `--min-pmtu` / `min_pmtu` value: bytes, 552 to 65535.
pub fn check_min_pmtu(bytes: u64) -> Result<u32, String> {
    MIN_PMTU.check(bytes)
}

/// `--min-pmtu BYTES` for clap.
pub fn parse_min_pmtu(s: &str) -> Result<u32, String> {
    MIN_PMTU.parse(s)
}

/// The default busy-poll window, microseconds: none. Measured on a 2-core machine (see
/// docs/performance.md), spinning took at most a sixth off a round trip, within the noise:
/// the thread a spinning worker waits for often needs the very CPU it spins on.
pub const DEFAULT_BUSY_POLL_US: u32 = 0;

const BUSY_POLL: Bounded = Bounded {
    key: "busy_poll",
    label: "busy poll",
    unit: "microseconds",
    hint: "microseconds (0: never spin)",
    range: crate::validate::BUSY_POLL_US,
};

/// Checks a `--busy-poll` / `busy_poll` value: microseconds, 0 to 10000.
pub fn check_busy_poll(us: u64) -> Result<u32, String> {
    BUSY_POLL.check(us)
}

/// `--busy-poll USEC` for clap.
pub fn parse_busy_poll(s: &str) -> Result<u32, String> {
    BUSY_POLL.parse(s)
}

/// What the engine applies to every network's sending side, and how its workers wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    pub outer: OuterPolicy,
    pub srcport: SourcePortRange,
    /// Default storm-control rate for networks that do not set their own.
    pub bum_rate: Option<u32>,
    /// The path-MTU floor: a path MTU the kernel learnt below it (from ICMP) is not followed.
    pub min_pmtu: u32,
    /// After traffic, workers poll this many microseconds without sleeping (0: never).
    pub busy_poll_us: u32,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            outer: OuterPolicy::default(),
            srcport: SourcePortRange::default(),
            bum_rate: None,
            min_pmtu: DEFAULT_MIN_PMTU,
            busy_poll_us: DEFAULT_BUSY_POLL_US,
        }
    }
}

/// A TOML value given either as a string or as an integer (`ttl = 64`, `ttl = "inherit"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum TextOrNumber {
    Number(i64),
    Text(String),
}

impl TextOrNumber {
    fn text(&self) -> String {
        match self {
            TextOrNumber::Number(n) => n.to_string(),
            TextOrNumber::Text(t) => t.clone(),
        }
    }
}

/// The tuning keys of the config file, as read.
#[derive(Debug, Default)]
pub struct FileTuning {
    pub df: Option<DfPolicy>,
    pub ttl: Option<TtlPolicy>,
    pub tos: Option<TosPolicy>,
    pub srcport: Option<SourcePortRange>,
    pub bum_rate: Option<u32>,
    pub min_pmtu: Option<u32>,
    pub busy_poll_us: Option<u32>,
}

impl FileTuning {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn parse(
        df: Option<&str>,
        ttl: Option<&TextOrNumber>,
        tos: Option<&TextOrNumber>,
        srcport: Option<&str>,
        bum_rate: Option<u64>,
        min_pmtu: Option<u64>,
        busy_poll: Option<u64>,
    ) -> Result<FileTuning, String> {
        let err = |e: vxnet_encap::outer::PolicyParseError| e.to_string();
        Ok(FileTuning {
            df: df.map(str::parse).transpose().map_err(err)?,
            ttl: ttl.map(|v| v.text().parse()).transpose().map_err(err)?,
            tos: tos.map(|v| v.text().parse()).transpose().map_err(err)?,
            srcport: srcport.map(str::parse).transpose()?,
            bum_rate: bum_rate.map(check_bum_rate).transpose()?,
            min_pmtu: min_pmtu.map(check_min_pmtu).transpose()?,
            busy_poll_us: busy_poll.map(check_busy_poll).transpose()?,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn srcport_ranges_parse_and_map_hashes_inside() {
        let r: SourcePortRange = "40000-40009".parse().unwrap();
        assert_eq!(r.len(), 10);
        assert_eq!(r.port_for(0), 40000);
        assert_eq!(r.port_for(u32::MAX), 40009);
        let d = SourcePortRange::default();
        assert_eq!((d.min, d.max, d.len()), (49152, 65535, 16384));
        assert_eq!(d.port_for(u32::MAX / 2), 49152 + 8191);
        let single: SourcePortRange = "5000-5000".parse().unwrap();
        assert_eq!(single.port_for(12345), 5000);
        for bad in ["100-200", "60000-50000", "49152", "a-b", "49152-70000"] {
            let e = bad.parse::<SourcePortRange>().unwrap_err();
            assert!(e.contains("srcport"), "{bad}: {e}");
        }
        assert_eq!(d.to_string(), "49152-65535");
        assert_eq!(d.outside(), 1024..=49151);
        let high: SourcePortRange = "1024-60000".parse().unwrap();
        assert_eq!(high.outside(), 60001..=65535);
        let all: SourcePortRange = "1024-65535".parse().unwrap();
        assert_eq!(all.outside(), 1024..=65535);
    }

    #[test]
    fn bum_rate_range() {
        assert_eq!(parse_bum_rate("1000"), Ok(1000));
        for bad in ["0", "-1", "x", "100000001"] {
            let e = parse_bum_rate(bad).unwrap_err();
            assert!(e.contains("1-100000000"), "{bad}: {e}");
        }
    }

    #[test]
    fn min_pmtu_range() {
        assert_eq!(parse_min_pmtu("1280"), Ok(1280));
        assert_eq!(Tuning::default().min_pmtu, DEFAULT_MIN_PMTU);
        for bad in ["551", "0", "65536", "x"] {
            let e = parse_min_pmtu(bad).unwrap_err();
            assert!(e.contains("552-65535"), "{bad}: {e}");
        }
    }

    #[test]
    fn busy_poll_range() {
        assert_eq!(parse_busy_poll("0"), Ok(0));
        assert_eq!(parse_busy_poll("10000"), Ok(10_000));
        for bad in ["10001", "-1", "x", "1e3"] {
            let e = parse_busy_poll(bad).unwrap_err();
            assert!(e.contains("0-10000"), "{bad}: {e}");
        }
    }

    #[test]
    fn file_values_take_strings_or_numbers() {
        let t = FileTuning::parse(
            Some("inherit"),
            Some(&TextOrNumber::Number(9)),
            Some(&TextOrNumber::Text("inherit".into())),
            Some("50000-50100"),
            Some(200),
            Some(1400),
            Some(50),
        )
        .unwrap();
        assert_eq!(t.df, Some(DfPolicy::Inherit));
        assert_eq!(t.ttl, Some(TtlPolicy::Fixed(9)));
        assert_eq!(t.tos, Some(TosPolicy::Inherit));
        assert_eq!(t.srcport.unwrap().len(), 101);
        assert_eq!(t.bum_rate, Some(200));
        assert_eq!(t.min_pmtu, Some(1400));
        assert_eq!(t.busy_poll_us, Some(50));
        let e = FileTuning::parse(
            None,
            Some(&TextOrNumber::Number(300)),
            None,
            None,
            None,
            None,
            None,
        )
        .unwrap_err();
        assert!(e.contains("1-255"), "{e}");
    }
}
