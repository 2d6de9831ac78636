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

use crate::checksum::{self, Sum};
use crate::error::OffloadError;
use crate::wire::{ETHERNET_HEADER_LEN, IPV4_HEADER_LEN};

use super::copy_csum::copy_and_sum;
use super::vnet::{VirtioNetHdr, VIRTIO_NET_HDR_LEN, ZERO_VNET_HDR};
use super::{be16, tcp, TcpFrame, TCP_CHECKSUM_OFFSET};

/// Largest L2 header the coalescer handles (Ethernet + one 802.1Q tag).
const MAX_L2_LEN: usize = ETHERNET_HEADER_LEN + 4;
/// Largest header run of a coalescable segment: Ethernet + tag, IPv6 (IPv4 with options is not
/// merged), TCP with options.
const MAX_TEMPLATE: usize = MAX_L2_LEN + 40 + 60;
/// Largest IP packet a superframe may be (IPv4 total length / IPv6 payload length are 16 bits).
pub const MAX_SUPERFRAME_IP_LEN: usize = 65_535;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoalesceConfig {
    /// Largest IP packet (IP + TCP headers + payload) of a superframe, at most 65535.
    pub max_ip_len: usize,
    /// Most segments merged into one superframe.
    pub max_segments: usize,
    /// Whether the last segment of a superframe may be shorter than `gso_size`. Some kernels
    /// (6.6.44 and backports) reject such TAP writes with EINVAL: the engine probes and clears it.
    pub short_tail: bool,
}

impl Default for CoalesceConfig {
    fn default() -> Self {
        CoalesceConfig {
            max_ip_len: MAX_SUPERFRAME_IP_LEN,
            max_segments: 64,
            short_tail: true,
        }
    }
}

/// Why a frame is written to the TAP as it came (behind [`ZERO_VNET_HDR`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Not Ethernet/IP/TCP, or truncated/malformed (the kernel will judge it).
    Malformed(OffloadError),
    /// IPv4 header with options.
    Ipv4Options,
    /// Pure ACK / window update: nothing to merge.
    NoPayload,
    /// Flags other than ACK, PSH, ECE (SYN, FIN, RST, URG, CWR) or no ACK.
    Flags {
        flags: u8,
    },
    BadIpv4Checksum,
    BadTcpChecksum,
    /// Longer than `max_ip_len` on its own.
    TooLong {
        ip_len: usize,
    },
}

/// What [`Coalescer::push`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Merged into (or started) the pending superframe; nothing to write yet.
    Absorbed,
    /// The frame does not continue the pending superframe (or belongs to its flow but cannot be
    /// merged, and must not overtake it). Write [`Coalescer::finish`], then push the frame again;
    /// with nothing pending, `push` never returns `Flush`.
    Flush,
    /// Write the frame as it is, behind [`ZERO_VNET_HDR`]. It is of another flow than the pending
    /// superframe (or unparseable), so it may overtake it; the pending superframe stays pending.
    PassThrough(Reject),
}

/// What [`Coalescer::coalesce`] hands to its callback, in the order to write them to the TAP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emit<'a> {
    /// Virtio-net header + frame, ready for one TAP `write`.
    Write(&'a [u8]),
    /// An input frame to write unchanged behind [`ZERO_VNET_HDR`] (e.g. `writev`).
    AsIs(&'a [u8]),
}

/// Counters for `vxnet stats`; never reset by the coalescer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoalesceStats {
    /// Superframes of two or more segments written.
    pub superframes: u64,
    /// Segments that went into those superframes.
    pub merged_segments: u64,
    /// Coalescable segments that found no partner (written untouched, zero header).
    pub singles: u64,
    /// Frames passed through as-is, all reasons (including bad checksums).
    pub passed_through: u64,
    /// Frames whose IPv4 header or TCP checksum failed (passed through for the kernel to drop).
    pub bad_checksum: u64,
}

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
    /// `[virtio-net header][superframe]`, so a superframe leaves with a single write.
    buf: Box<[u8]>,
    /// Superframe bytes after the virtio-net header.
    len: usize,
    run: Option<Run>,
    config: CoalesceConfig,
    stats: CoalesceStats,
    /// The pending superframe's headers (`..hdr_len`) as every further segment must repeat
    /// them, with the fields that change per segment zeroed (see [`mask_per_segment_fields`]).
    template: [u8; MAX_TEMPLATE],
    /// Off only in tests that compare the fast path with the full checks.
    fast_path: bool,
}

/// Zeroes what legitimately differs between the segments of one superframe: IPv4 total length,
/// ID and header checksum (IPv6 payload length), TCP sequence number, window and checksum, and
/// the PSH flag. Whatever is left must be byte-identical (see the merge rules above).
fn mask_per_segment_fields(tf: &TcpFrame, headers: &mut [u8]) {
    let (l3, l4) = (tf.l3, tf.l4);
    if tf.ipv6 {
        headers[l3 + 4..l3 + 6].fill(0);
    } else {
        headers[l3 + 2..l3 + 6].fill(0);
        headers[l3 + 10..l3 + 12].fill(0);
    }
    headers[l4 + tcp::SEQ.start..l4 + tcp::SEQ.end].fill(0);
    headers[l4 + tcp::FLAGS] &= !tcp::PSH;
    headers[l4 + tcp::WINDOW.start..l4 + tcp::CHECKSUM.end].fill(0);
}

impl Default for Coalescer {
    fn default() -> Self {
        Self::new(CoalesceConfig::default())
    }
}

impl Coalescer {
    pub fn new(mut config: CoalesceConfig) -> Self {
        config.max_ip_len = config.max_ip_len.min(MAX_SUPERFRAME_IP_LEN);
        config.max_segments = config.max_segments.max(1);
        Coalescer {
            buf: vec![0u8; VIRTIO_NET_HDR_LEN + MAX_L2_LEN + MAX_SUPERFRAME_IP_LEN]
                .into_boxed_slice(),
            len: 0,
            run: None,
            config,
            stats: CoalesceStats::default(),
            template: [0; MAX_TEMPLATE],
            fast_path: true,
        }
    }

    /// Test hook: decide every frame with the full checks only (the fast path must agree).
    #[doc(hidden)]
    pub fn set_fast_path(&mut self, on: bool) {
        self.fast_path = on;
    }

    pub fn config(&self) -> &CoalesceConfig {
        &self.config
    }

    /// Applies a new configuration (e.g. after probing); finish the pending superframe first.
    pub fn set_config(&mut self, config: CoalesceConfig) {
        let stats = self.stats;
        *self = Coalescer {
            stats,
            ..Self::new(config)
        };
    }

    pub fn stats(&self) -> CoalesceStats {
        self.stats
    }

    /// True while a superframe is pending.
    pub fn is_pending(&self) -> bool {
        self.run.is_some()
    }

    /// Offers one decapsulated inner Ethernet frame. See [`Push`] for what the caller must do.
    pub fn push(&mut self, frame: &[u8]) -> Push {
        if let (Some(run), true) = (self.run, self.fast_path) {
            if let Some(next) = self.continue_fast(run, frame) {
                return self.extend(run, frame, &next);
            }
        }
        let tf = match TcpFrame::parse(frame) {
            Ok(tf) => tf,
            Err(e) => return self.pass(Reject::Malformed(e)),
        };
        let same_flow = match &self.run {
            Some(run) => self.same_flow(run, frame, &tf),
            None => false,
        };
        if let Err(reject) = self.eligible(frame, &tf) {
            // A same-flow frame (e.g. the FIN after the data) must not overtake the superframe.
            return if same_flow {
                Push::Flush
            } else {
                self.pass(reject)
            };
        }
        match self.run {
            None => self.start(frame, tf),
            Some(run) => {
                if !same_flow || !self.continues(&run, frame, &tf) {
                    return Push::Flush;
                }
                self.extend(run, frame, &tf)
            }
        }
    }

    /// Completes the pending superframe and returns `[virtio-net header][frame]` for one TAP
    /// write, or `None` when nothing is pending.
    pub fn finish(&mut self) -> Option<&[u8]> {
        let run = self.run.take()?;
        let len = std::mem::take(&mut self.len);
        let (hdr_bytes, rest) = self.buf.split_at_mut(VIRTIO_NET_HDR_LEN);
        let sf = rest.get_mut(..len)?;
        if run.segments == 1 {
            hdr_bytes.copy_from_slice(&ZERO_VNET_HDR);
            self.stats.singles += 1;
            return self.buf.get(..VIRTIO_NET_HDR_LEN + len);
        }
        let TcpFrame {
            l3,
            l4,
            ipv6,
            tcp_hlen,
            ..
        } = run.tf;
        let tcp_len = len - l4;
        if ipv6 {
            sf[l3 + 4..l3 + 6].copy_from_slice(&(tcp_len as u16).to_be_bytes());
        } else {
            sf[l3 + 2..l3 + 4].copy_from_slice(&((len - l3) as u16).to_be_bytes());
            sf[l3 + 10..l3 + 12].fill(0);
            let c = checksum::checksum(&sf[l3..l4]);
            sf[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
        }
        let pseudo = run.tf.pseudo_header(sf, tcp_len).fold();
        sf[l4 + tcp::CHECKSUM.start..l4 + tcp::CHECKSUM.end].copy_from_slice(&pseudo.to_be_bytes());
        let hdr = VirtioNetHdr {
            flags: VirtioNetHdr::FLAG_NEEDS_CSUM,
            gso_type: if ipv6 {
                VirtioNetHdr::GSO_TCPV6
            } else {
                VirtioNetHdr::GSO_TCPV4
            },
            hdr_len: (l4 + tcp_hlen) as u16,
            gso_size: run.gso_size as u16,
            csum_start: l4 as u16,
            csum_offset: TCP_CHECKSUM_OFFSET,
        };
        hdr_bytes.copy_from_slice(&hdr.to_bytes());
        self.stats.superframes += 1;
        self.stats.merged_segments += run.segments as u64;
        self.buf.get(..VIRTIO_NET_HDR_LEN + len)
    }

    /// Convenience over [`push`](Self::push)/[`finish`](Self::finish): runs a whole batch (e.g.
    /// one `recvmmsg` with UDP GRO, decapsulated) and hands every TAP write to `emit` in order.
    /// Ends with nothing pending, so nothing waits for a timer between batches.
    pub fn coalesce<'f, I>(&mut self, frames: I, mut emit: impl FnMut(Emit<'_>))
    where
        I: IntoIterator<Item = &'f [u8]>,
    {
        for frame in frames {
            match self.push(frame) {
                Push::Absorbed => {}
                Push::PassThrough(_) => emit(Emit::AsIs(frame)),
                Push::Flush => {
                    if let Some(b) = self.finish() {
                        emit(Emit::Write(b));
                    }
                    match self.push(frame) {
                        Push::Absorbed => {}
                        // Flush cannot recur with nothing pending; pass through if it ever did.
                        Push::PassThrough(_) | Push::Flush => emit(Emit::AsIs(frame)),
                    }
                }
            }
        }
        if let Some(b) = self.finish() {
            emit(Emit::Write(b));
        }
    }

    fn pass(&mut self, reject: Reject) -> Push {
        self.stats.passed_through += 1;
        if matches!(reject, Reject::BadIpv4Checksum | Reject::BadTcpChecksum) {
            self.stats.bad_checksum += 1;
        }
        Push::PassThrough(reject)
    }

    /// Static checks that do not depend on the pending superframe.
    fn eligible(&self, frame: &[u8], tf: &TcpFrame) -> Result<(), Reject> {
        if !tf.ipv6 {
            if tf.l4 - tf.l3 != IPV4_HEADER_LEN {
                return Err(Reject::Ipv4Options);
            }
            if !checksum::verifies(Sum::new().add_bytes(&frame[tf.l3..tf.l4])) {
                return Err(Reject::BadIpv4Checksum);
            }
        }
        let flags = frame[tf.l4 + tcp::FLAGS];
        if flags & tcp::ACK_FLAG == 0 || flags & !(tcp::ACK_FLAG | tcp::PSH | tcp::ECE) != 0 {
            return Err(Reject::Flags { flags });
        }
        if tf.payload_len() == 0 {
            return Err(Reject::NoPayload);
        }
        let ip_len = tf.end - tf.l3;
        if ip_len > self.config.max_ip_len {
            return Err(Reject::TooLong { ip_len });
        }
        Ok(())
    }

    fn pending(&self) -> &[u8] {
        self.buf
            .get(VIRTIO_NET_HDR_LEN..VIRTIO_NET_HDR_LEN + self.len)
            .unwrap_or(&[])
    }

    /// Same layout, addresses and ports as the pending superframe.
    fn same_flow(&self, run: &Run, frame: &[u8], tf: &TcpFrame) -> bool {
        let cur = self.pending();
        let (a, b) = (&run.tf, tf);
        if a.l3 != b.l3 || a.l4 != b.l4 || a.ipv6 != b.ipv6 {
            return false;
        }
        let addrs = if a.ipv6 {
            a.l3 + 8..a.l3 + 40
        } else {
            a.l3 + 12..a.l3 + 20
        };
        let ports = a.l4 + tcp::PORTS.start..a.l4 + tcp::PORTS.end;
        cur.get(addrs.clone()) == frame.get(addrs) && cur.get(ports.clone()) == frame.get(ports)
    }

    /// The merge rules beyond the flow (see the module docs). `tf` has the run's layout.
    fn continues(&self, run: &Run, frame: &[u8], tf: &TcpFrame) -> bool {
        if run.sealed || run.segments >= self.config.max_segments || tf.tcp_hlen != run.tf.tcp_hlen
        {
            return false;
        }
        let payload = tf.payload_len();
        if payload > run.gso_size || (payload < run.gso_size && !self.config.short_tail) {
            return false;
        }
        if self.len - run.tf.l3 + payload > self.config.max_ip_len {
            return false;
        }
        let cur = self.pending();
        let (l3, l4) = (tf.l3, tf.l4);
        let same = |r: std::ops::Range<usize>| cur.get(r.clone()) == frame.get(r);
        if !same(0..l3) {
            return false;
        }
        if tf.ipv6 {
            if !same(l3..l3 + 4) || !same(l3 + 6..l3 + 8) {
                return false;
            }
        } else {
            // TOS, flags/fragment (DF), TTL, protocol must match; ID is checked below.
            if !same(l3..l3 + 2) || !same(l3 + 6..l3 + 10) {
                return false;
            }
            if self.next_id_mode(run, frame, tf).is_none() {
                return false;
            }
        }
        let flags = frame[l4 + tcp::FLAGS];
        u32::from_be_bytes(read4(frame, l4 + tcp::SEQ.start)) == run.next_seq
            && same(l4 + tcp::ACK.start..l4 + tcp::ACK.end)
            && same(l4 + tcp::DATA_OFFSET..l4 + tcp::DATA_OFFSET + 1)
            && flags & !tcp::PSH == run.flags & !tcp::PSH
            && same(l4 + tcp::URGENT.start..l4 + tcp::URGENT.end)
            && same(l4 + tcp::OPTIONS_START..l4 + tf.tcp_hlen)
    }

    /// The common case in one comparison: `frame` repeats the pending superframe's headers
    /// (masked, see [`mask_per_segment_fields`]) and satisfies the per-segment rules, so it
    /// continues the superframe exactly as the full checks (`parse`, `eligible`, `same_flow`,
    /// `continues`) would decide. Returns the frame's layout, or `None` to leave the decision
    /// to the full checks.
    fn continue_fast(&self, run: Run, frame: &[u8]) -> Option<TcpFrame> {
        let tf = run.tf;
        let hl = tf.hdr_len();
        if run.sealed || run.segments >= self.config.max_segments || hl > MAX_TEMPLATE {
            return None;
        }
        let mut headers = [0u8; MAX_TEMPLATE];
        let headers = &mut headers[..hl];
        headers.copy_from_slice(frame.get(..hl)?);
        mask_per_segment_fields(&tf, headers);
        if *headers != self.template[..hl] {
            return None;
        }
        // Same layout as the first segment: only the length is new.
        let (l3, l4) = (tf.l3, tf.l4);
        let end = if tf.ipv6 {
            l3 + 40 + be16(frame, l3 + 4) as usize
        } else {
            l3 + be16(frame, l3 + 2) as usize
        };
        if end > frame.len() || end <= hl {
            return None;
        }
        let next = TcpFrame { end, ..tf };
        let payload = next.payload_len();
        if payload > run.gso_size
            || (payload < run.gso_size && !self.config.short_tail)
            || self.len - l3 + payload > self.config.max_ip_len
            || u32::from_be_bytes(read4(frame, l4 + tcp::SEQ.start)) != run.next_seq
        {
            return None;
        }
        if !tf.ipv6
            && (!checksum::verifies(Sum::new().add_bytes(&frame[l3..l4]))
                || self.next_id_mode(&run, frame, &next).is_none())
        {
            return None;
        }
        Some(next)
    }

    /// IPv4 ID rule: fixed (only with DF) or first + segment index, consistently.
    fn next_id_mode(&self, run: &Run, frame: &[u8], tf: &TcpFrame) -> Option<IpIdMode> {
        let id = be16(frame, tf.l3 + 4);
        let df = be16(frame, tf.l3 + 6) & 0x4000 != 0;
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
        let Some(dst) = self
            .buf
            .get_mut(VIRTIO_NET_HDR_LEN..VIRTIO_NET_HDR_LEN + tf.end)
        else {
            return self.pass(Reject::TooLong {
                ip_len: tf.end - tf.l3,
            });
        };
        dst[..tf.l4].copy_from_slice(&frame[..tf.l4]);
        let sum = copy_and_sum(&mut dst[tf.l4..], &frame[tf.l4..tf.end]);
        if !checksum::verifies(tf.pseudo_header(frame, tf.end - tf.l4).add_sum(sum)) {
            return self.pass(Reject::BadTcpChecksum);
        }
        let flags = frame[tf.l4 + tcp::FLAGS];
        self.len = tf.end;
        let hl = tf.hdr_len();
        if let Some(template) = self.template.get_mut(..hl) {
            template.copy_from_slice(&frame[..hl]);
            mask_per_segment_fields(&tf, template);
        }
        self.run = Some(Run {
            tf,
            gso_size: tf.payload_len(),
            segments: 1,
            next_seq: u32::from_be_bytes(read4(frame, tf.l4 + tcp::SEQ.start))
                .wrapping_add(tf.payload_len() as u32),
            first_id: be16(frame, tf.l3 + 4),
            id_mode: IpIdMode::Unknown,
            flags,
            sealed: flags & tcp::PSH != 0,
        });
        Push::Absorbed
    }

    fn extend(&mut self, mut run: Run, frame: &[u8], tf: &TcpFrame) -> Push {
        let payload = &frame[tf.hdr_len()..tf.end];
        let at = VIRTIO_NET_HDR_LEN + self.len;
        let Some(dst) = self.buf.get_mut(at..at + payload.len()) else {
            return Push::Flush;
        };
        let tcp_hdr = &frame[tf.l4..tf.hdr_len()];
        let sum = tf
            .pseudo_header(frame, tf.end - tf.l4)
            .add_bytes(tcp_hdr)
            .add_sum(copy_and_sum(dst, payload));
        if !checksum::verifies(sum) {
            // Same flow: let it go out after the superframe, where `start` rejects it again.
            return Push::Flush;
        }
        if !tf.ipv6 {
            run.id_mode = self.next_id_mode(&run, frame, tf).unwrap_or(run.id_mode);
        }
        let flags = frame[tf.l4 + tcp::FLAGS];
        let l4 = VIRTIO_NET_HDR_LEN + run.tf.l4;
        // The superframe carries the newest window and, if this segment had it, PSH.
        if let Some(w) = self
            .buf
            .get_mut(l4 + tcp::WINDOW.start..l4 + tcp::WINDOW.end)
        {
            w.copy_from_slice(&frame[tf.l4 + tcp::WINDOW.start..tf.l4 + tcp::WINDOW.end]);
        }
        if let Some(f) = self.buf.get_mut(l4 + tcp::FLAGS) {
            *f |= flags & tcp::PSH;
        }
        self.len += payload.len();
        run.segments += 1;
        run.next_seq = run.next_seq.wrapping_add(payload.len() as u32);
        run.sealed = flags & tcp::PSH != 0 || payload.len() < run.gso_size;
        self.run = Some(run);
        Push::Absorbed
    }
}

fn read4(b: &[u8], at: usize) -> [u8; 4] {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    a
}
