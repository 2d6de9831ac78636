//! Wire -> TAP: merge consecutive TCP segments of one flow back into a superframe, the way the
//! kernel's GRO does, so the TAP takes one ~64 KB write instead of ~44 small ones.
//!
//! Merge rules (a segment joins the pending superframe only if all hold):
//! - it parses as Ethernet [+ one 802.1Q tag] + IPv4 without options (not a fragment) or IPv6
//!   with TCP as next header, and carries payload;
//! - its IPv4 header checksum and its TCP checksum verify. This matters: the superframe goes to
//!   the TAP with `NEEDS_CSUM`, so the kernel would *compute* rather than check the checksum and
//!   a segment corrupted on a path with a zero outer UDP checksum would be delivered silently;
//! - TCP flags are ACK, optionally with PSH and/or ECE (no SYN/FIN/RST/URG/CWR). PSH ends the
//!   superframe (it is kept on it), ECE must match the first segment;
//! - same Ethernet header, same IP header except length/ID/checksum (so same addresses, TOS/
//!   traffic class, flow label, TTL/hop limit, DF); IPv4 ID either fixed (DF set) or increasing
//!   by one per segment, consistently within the superframe;
//! - same ports, ACK number, data offset, urgent pointer and *byte-identical TCP options* (the
//!   kernel's rule too: a changed timestamp ends the superframe; within one sender TSO burst the
//!   timestamps are identical, so this costs nothing where it matters). The window may differ;
//!   the superframe carries the last one;
//! - sequence number equal to the end of the pending data; payload size equal to the first
//!   segment's (`gso_size`); a shorter one is the last of the superframe (or, with
//!   `short_tail: false`, starts its own);
//! - the superframe stays within `max_ip_len` (65535) bytes of IP packet and `max_segments`.
//!
//! The superframe gets a virtio-net header with `NEEDS_CSUM`, `TCPV4`/`TCPV6`, `gso_size`,
//! `hdr_len`, `csum_start` = TCP offset, `csum_offset` = 16, and its TCP checksum field holds the
//! folded, *not* complemented pseudo-header sum over the superframe's TCP length (what Linux puts
//! there for `CHECKSUM_PARTIAL`: `~tcp_v4_check(len, saddr, daddr, 0)`). A run of one segment is
//! returned untouched behind an all-zero header.

use std::ops::Range;

use crate::wire::tcp::{field as tcp_field, flags as tcp_flags};
use crate::wire::{TcpPacket, IPV6_HEADER_LEN, TAGGED_HEADER_LEN, TCP_MAX_HEADER_LEN};

use super::frame::{at, IpFrame, TcpFrame, Transport};
use super::merge::{
    ipv4_checksum_verifies, ipv4_eligible, ipv4_header, same_link_and_ip, CoalesceConfig,
    CoalesceStats, Merge, Push, Reject, Seal,
};
use super::pending::Pending;
use super::vnet::VirtioNetHdr;

/// Largest header run of a coalescable segment: Ethernet + tag, IPv6 (IPv4 with options is not
/// merged), TCP with options.
const MAX_TEMPLATE: usize = TAGGED_HEADER_LEN + IPV6_HEADER_LEN + TCP_MAX_HEADER_LEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IpIdMode {
    Unknown,
    Fixed,
    Incrementing,
}

#[derive(Debug, Clone, Copy)]
struct Run {
    tf: TcpFrame,
    gso_size: usize,
    segments: usize,
    next_seq: u32,
    first_id: u16,
    id_mode: IpIdMode,
    /// First segment's TCP flags (no PSH: a PSH segment seals the run).
    flags: u8,
    /// PSH seen or a short segment taken: nothing more may follow.
    sealed: bool,
}

/// Merges TCP segments into superframes. One pending superframe at a time, built in an internal
/// buffer allocated once (~64 KB); steady state allocates nothing.
#[derive(Debug)]
pub struct Coalescer {
    /// The pending superframe; its template is the headers (`..hdr_len`) as every further segment
    /// must repeat them, masked by [`mask_per_segment_fields`].
    pending: Pending<Run, MAX_TEMPLATE>,
}

/// Zeroes what legitimately differs between the segments of one superframe: IPv4 total length,
/// ID and header checksum (IPv6 payload length), TCP sequence number, window and checksum, and
/// the PSH flag. Whatever is left must be byte-identical (see the merge rules above).
fn mask_per_segment_fields(tf: &TcpFrame, headers: &mut [u8]) {
    tf.ip.clear_per_segment_fields(headers);
    let mut tcp = TcpPacket::new_unchecked(&mut headers[tf.ip.l4..]);
    let flags = tcp.flags();
    tcp.set_seq_number(0);
    tcp.set_flags(flags & !tcp_flags::PSH);
    tcp.set_window_len(0);
    tcp.set_checksum(0);
}

impl Default for Coalescer {
    fn default() -> Self {
        Self::new(CoalesceConfig::default())
    }
}

impl Coalescer {
    pub fn new(config: CoalesceConfig) -> Self {
        Coalescer {
            pending: Pending::new(Transport::Tcp, config),
        }
    }

    /// Test hook: decide every frame with the full checks only (the fast path must agree).
    #[doc(hidden)]
    pub fn set_fast_path(&mut self, on: bool) {
        self.pending.fast_path = on;
    }

    pub fn config(&self) -> &CoalesceConfig {
        &self.pending.config
    }

    /// Applies a new configuration (e.g. after probing); finish the pending superframe first.
    pub fn set_config(&mut self, config: CoalesceConfig) {
        let stats = self.pending.stats;
        *self = Self::new(config);
        self.pending.stats = stats;
    }

    pub fn stats(&self) -> CoalesceStats {
        self.pending.stats
    }

    /// True while a superframe is pending.
    pub fn is_pending(&self) -> bool {
        self.pending.run.is_some()
    }

    /// Static checks that do not depend on the pending superframe.
    fn eligible(&self, frame: &[u8], tf: &TcpFrame) -> Result<(), Reject> {
        let ip = &tf.ip;
        ipv4_eligible(frame, ip)?;
        let flags = tf.tcp(frame).flags();
        if flags & tcp_flags::ACK == 0
            || flags & !(tcp_flags::ACK | tcp_flags::PSH | tcp_flags::ECE) != 0
        {
            return Err(Reject::Flags { flags });
        }
        if tf.payload_len() == 0 {
            return Err(Reject::NoPayload);
        }
        let ip_len = ip.end - ip.l3;
        if ip_len > self.pending.config.max_ip_len {
            return Err(Reject::TooLong { ip_len });
        }
        Ok(())
    }

    /// The merge rules beyond the flow (see the module docs). `tf` has the run's layout.
    fn continues(&self, run: &Run, frame: &[u8], tf: &TcpFrame) -> bool {
        let config = &self.pending.config;
        if run.sealed || run.segments >= config.max_segments || tf.tcp_hlen != run.tf.tcp_hlen {
            return false;
        }
        let payload = tf.payload_len();
        if payload > run.gso_size || (payload < run.gso_size && !config.short_tail) {
            return false;
        }
        if self.pending.ip_len(&run.tf.ip) + payload > config.max_ip_len {
            return false;
        }
        let cur = self.pending.bytes();
        let l4 = tf.ip.l4;
        let same = |r: Range<usize>| cur.get(r.clone()) == frame.get(r);
        if !same_link_and_ip(cur, frame, &tf.ip)
            || (!tf.ip.ipv6 && self.next_id_mode(run, frame, tf).is_none())
        {
            return false;
        }
        let tcp = tf.tcp(frame);
        let data_offset = tcp_field::DATA_OFFSET..tcp_field::DATA_OFFSET + 1;
        tcp.seq_number() == run.next_seq
            && same(at(l4, tcp_field::ACK_NUM))
            && same(at(l4, data_offset))
            && tcp.flags() & !tcp_flags::PSH == run.flags & !tcp_flags::PSH
            && same(at(l4, tcp_field::URGENT))
            && same(at(l4, tcp_field::OPTIONS..tf.tcp_hlen))
    }

    /// The common case in one comparison: `frame` repeats the pending superframe's headers
    /// (masked, see [`mask_per_segment_fields`]) and satisfies the per-segment rules, so it
    /// continues the superframe exactly as the full checks (`parse`, `eligible`, `same_flow`,
    /// `continues`) would decide. Returns the frame's layout, or `None` to leave the decision
    /// to the full checks.
    fn continue_fast(&self, run: Run, frame: &[u8]) -> Option<TcpFrame> {
        let tf = run.tf;
        let hl = tf.hdr_len();
        let config = &self.pending.config;
        if run.sealed
            || run.segments >= config.max_segments
            || !self
                .pending
                .repeats_template(frame, hl, |h| mask_per_segment_fields(&tf, h))
        {
            return None;
        }
        // Same layout as the first segment: only the length is new.
        let end = tf.ip.end_in(frame)?;
        if end > frame.len() || end <= hl {
            return None;
        }
        let next = TcpFrame {
            ip: IpFrame { end, ..tf.ip },
            ..tf
        };
        let payload = next.payload_len();
        if payload > run.gso_size
            || (payload < run.gso_size && !config.short_tail)
            || self.pending.ip_len(&tf.ip) + payload > config.max_ip_len
            || tf.tcp(frame).seq_number() != run.next_seq
        {
            return None;
        }
        if !tf.ip.ipv6
            && (!ipv4_checksum_verifies(frame, &tf.ip)
                || self.next_id_mode(&run, frame, &next).is_none())
        {
            return None;
        }
        Some(next)
    }

    /// IPv4 ID rule: fixed (only with DF) or first + segment index, consistently.
    fn next_id_mode(&self, run: &Run, frame: &[u8], tf: &TcpFrame) -> Option<IpIdMode> {
        let ip = ipv4_header(frame, &tf.ip);
        let (id, df) = (ip.ident(), ip.dont_fragment());
        let delta = id.wrapping_sub(run.first_id);
        let fixed = delta == 0 && df && run.id_mode != IpIdMode::Incrementing;
        let incrementing = delta == run.segments as u16 && run.id_mode != IpIdMode::Fixed;
        if fixed {
            Some(IpIdMode::Fixed)
        } else if incrementing {
            Some(IpIdMode::Incrementing)
        } else {
            None
        }
    }

    fn start(&mut self, frame: &[u8], tf: TcpFrame) -> Push {
        let tcp = tf.tcp(frame);
        let flags = tcp.flags();
        let run = Run {
            tf,
            gso_size: tf.payload_len(),
            segments: 1,
            next_seq: tcp.seq_number().wrapping_add(tf.payload_len() as u32),
            first_id: tf.ip.ipv4_ident(frame),
            id_mode: IpIdMode::Unknown,
            flags,
            sealed: flags & tcp_flags::PSH != 0,
        };
        self.pending.start(frame, &tf.ip, tf.hdr_len(), run, |h| {
            mask_per_segment_fields(&tf, h)
        })
    }

    fn extend(&mut self, mut run: Run, frame: &[u8], tf: &TcpFrame) -> Push {
        let Some(payload) = self.pending.append(frame, &tf.ip, tf.hdr_len()) else {
            // Same flow: let it go out after the superframe, where `start` rejects it again.
            return Push::Flush;
        };
        if !tf.ip.ipv6 {
            run.id_mode = self.next_id_mode(&run, frame, tf).unwrap_or(run.id_mode);
        }
        let tcp = tf.tcp(frame);
        let flags = tcp.flags();
        // The superframe carries the newest window and, if this segment had it, PSH.
        if let Some(header) = self.pending.bytes_mut_from(run.tf.ip.l4) {
            let mut sf = TcpPacket::new_unchecked(header);
            sf.set_window_len(tcp.window_len());
            sf.set_flags(sf.flags() | flags & tcp_flags::PSH);
        }
        run.segments += 1;
        run.next_seq = run.next_seq.wrapping_add(payload as u32);
        run.sealed = flags & tcp_flags::PSH != 0 || payload < run.gso_size;
        self.pending.run = Some(run);
        Push::Absorbed
    }
}

impl Merge for Coalescer {
    fn push(&mut self, frame: &[u8]) -> Push {
        if let (Some(run), true) = (self.pending.run, self.pending.fast_path) {
            if let Some(next) = self.continue_fast(run, frame) {
                return self.extend(run, frame, &next);
            }
        }
        let tf = match TcpFrame::parse(frame) {
            Ok(tf) => tf,
            Err(e) => return self.pending.pass(Reject::Malformed(e)),
        };
        let same_flow = match &self.pending.run {
            Some(run) => self.pending.same_flow(&run.tf.ip, frame, &tf.ip),
            None => false,
        };
        if let Err(reject) = self.eligible(frame, &tf) {
            // A same-flow frame (e.g. the FIN after the data) must not overtake the superframe.
            return if same_flow {
                Push::Flush
            } else {
                self.pending.pass(reject)
            };
        }
        match self.pending.run {
            None => self.start(frame, tf),
            Some(run) => {
                if !same_flow || !self.continues(&run, frame, &tf) {
                    return Push::Flush;
                }
                self.extend(run, frame, &tf)
            }
        }
    }

    fn finish(&mut self) -> Option<&[u8]> {
        self.pending.finish(|run| {
            let ip = run.tf.ip;
            let seal_as = Seal {
                ip,
                transport: Transport::Tcp,
                hdr_len: run.tf.hdr_len(),
                gso_size: run.gso_size,
                gso_type: if ip.ipv6 {
                    VirtioNetHdr::GSO_TCPV6
                } else {
                    VirtioNetHdr::GSO_TCPV4
                },
            };
            (seal_as, run.segments)
        })
    }
}
