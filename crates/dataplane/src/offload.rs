//! The fast-path features the engine uses: probed once at start, and for UDP GSO followed at
//! run time, in one place (as quinn-udp keeps a socket's capabilities and their fall-back
//! together), so what `vxnet stats` reports is what the workers do.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// One offload in use, as `vxnet stats` and the metrics endpoint name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Offload {
    /// The TAPs were opened with IFF_VNET_HDR: frames carry a virtio-net header both ways.
    TapVnetHdr,
    /// Received TCP segments are coalesced into superframes for the TAP (needs the vnet header).
    GroCoalescing,
    /// Every TAP hands over TCP superframes, which vxnet segments.
    Tso,
    /// Every TAP hands over UDP superframes too (Linux 6.2+).
    Uso,
    /// Segments leave in `UDP_SEGMENT` sends.
    UdpGso,
    /// Runs of datagrams arrive in `UDP_GRO` reads.
    UdpGro,
    /// TCP superframes leave whole, as one VXLAN superframe through an underlay TAP.
    TunnelGso,
}

impl Offload {
    pub const fn name(self) -> &'static str {
        match self {
            Offload::TapVnetHdr => "tap-vnet-hdr",
            Offload::GroCoalescing => "gro-coalescing",
            Offload::Tso => "tso",
            Offload::Uso => "uso",
            Offload::UdpGso => "udp-gso",
            Offload::UdpGro => "udp-gro",
            Offload::TunnelGso => "tunnel-gso",
        }
    }
}

impl std::fmt::Display for Offload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether segments leave in `UDP_SEGMENT` sends. Set by the start-up probe, switched off for
/// good the first time the kernel refuses such a send (see [`is_gso_refusal`]). One per engine:
/// every worker of every generation and `vxnet stats` read the same flag, so a refusal seen by
/// one worker moves them all to single datagrams and is reported at once.
#[derive(Debug)]
pub(crate) struct UdpGso {
    in_use: AtomicBool,
}

impl UdpGso {
    pub(crate) fn new(probed: bool) -> Arc<UdpGso> {
        Arc::new(UdpGso {
            in_use: AtomicBool::new(probed),
        })
    }

    pub(crate) fn in_use(&self) -> bool {
        // Relaxed: a worker that reads a stale `true` just has one more send refused.
        self.in_use.load(Ordering::Relaxed)
    }

    /// Switches GSO off after a refused send; logs once, for whichever worker saw it first.
    pub(crate) fn refused(&self) {
        if self.in_use.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                "UDP GSO refused by the kernel at run time; falling back to one datagram per segment"
            );
        }
    }
}

/// Whether `error`, returned for a message that carried a `UDP_SEGMENT` size, is the kernel
/// refusing segmentation offload (rather than the datagram): EIO when the route goes through
/// an xfrm (IPsec) transform, EINVAL when the socket sends without UDP checksums (SO_NO_CHECK)
/// or exceeds the segment limit, and on kernels before 6.11 EIO when the egress device has no
/// checksum offload. A message without a segment size never counts.
pub(crate) fn is_gso_refusal(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EIO) | Some(libc::EINVAL))
}

/// What the workers of a generation use, decided by the engine's probes.
#[derive(Debug, Clone)]
pub(crate) struct Offloads {
    /// The TAP was opened with IFF_VNET_HDR: frames carry a virtio-net header both ways.
    pub(crate) vnet_hdr: bool,
    /// UDP_SEGMENT sends, for as long as the kernel takes them.
    pub(crate) gso: Arc<UdpGso>,
    /// UDP_GRO receives (the socket option is set by the engine).
    pub(crate) gro: bool,
    /// The tunnel-GSO path, when the start-up probe found it works.
    pub(crate) tunnel: Option<Arc<crate::underlay::Underlay>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every offload, in the order they are reported.
    const ALL: [Offload; 7] = [
        Offload::TapVnetHdr,
        Offload::GroCoalescing,
        Offload::Tso,
        Offload::Uso,
        Offload::UdpGso,
        Offload::UdpGro,
        Offload::TunnelGso,
    ];

    #[test]
    fn names_are_the_reported_strings() {
        let names: Vec<String> = ALL
            .iter()
            .map(|o| {
                serde_json::to_value(o)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        let expected: Vec<&str> = ALL.iter().map(|o| o.name()).collect();
        assert_eq!(names, expected);
        assert_eq!(
            expected,
            [
                "tap-vnet-hdr",
                "gro-coalescing",
                "tso",
                "uso",
                "udp-gso",
                "udp-gro",
                "tunnel-gso"
            ]
        );
        let back: Offload = serde_json::from_str("\"udp-gso\"").unwrap();
        assert_eq!(back, Offload::UdpGso);
    }

    #[test]
    fn a_refusal_switches_gso_off_for_good() {
        let gso = UdpGso::new(true);
        assert!(gso.in_use());
        gso.refused();
        assert!(!gso.in_use());
        gso.refused();
        assert!(!gso.in_use());
        assert!(!UdpGso::new(false).in_use());
    }

    #[test]
    fn only_eio_and_einval_are_refusals() {
        for (errno, refusal) in [
            (libc::EIO, true),
            (libc::EINVAL, true),
            (libc::EMSGSIZE, false),
            (libc::ENOBUFS, false),
            (libc::ECONNREFUSED, false),
        ] {
            assert_eq!(
                is_gso_refusal(&io::Error::from_raw_os_error(errno)),
                refusal,
                "errno {errno}"
            );
        }
        assert!(!is_gso_refusal(&io::Error::from(io::ErrorKind::WouldBlock)));
    }
}
