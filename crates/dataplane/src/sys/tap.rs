//! TAP devices through `/dev/net/tun`.
//!
//! Lifetime: a TAP that this process *creates* is non-persistent, so the kernel deletes it when
//! the last queue fd closes — dropping the [`Tap`] (or every [`TapQueue`]) is how vxnet removes
//! it on exit, even after a crash. A TAP that already existed (made persistent with
//! `ip tuntap add`) is only attached to and stays; [`Tap::existed`] tells the two apart. A TAP
//! another process has open (another engine, a VM) is never joined: [`TapError::InUse`].

use std::fs::OpenOptions;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use std::sync::Arc;

use super::claim::Claim;
use super::{cvt, cvt_size, ifreq_name, ifreq_named, validate_ifname, InvalidIfName};

const TUN_PATH: &str = "/dev/net/tun";

/// Size of the virtio-net header in front of every frame when `vnet_hdr` is on.
///
/// We use the plain 10-byte `struct virtio_net_hdr` (the kernel's default for IFF_VNET_HDR) and
/// set it explicitly, because the size is a per-device setting a previous user of a persistent TAP
/// may have changed. The 12-byte `virtio_net_hdr_mrg_rxbuf` only adds `num_buffers`, which means
/// nothing to a TAP reader that always supplies one large buffer.
pub const VNET_HDR_LEN: usize = 10;

/// Errors opening or configuring a TAP; each prints as one line naming the device.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error(transparent)]
    InvalidName(#[from] InvalidIfName),
    #[error("{TUN_PATH} does not exist (is the tun module loaded? try `modprobe tun`)")]
    NoTunDevice,
    #[error("not permitted to open {TUN_PATH} or create TAP devices (run as root or with CAP_NET_ADMIN)")]
    NotPermitted,
    #[error("invalid TAP configuration for {name:?}: {reason}")]
    InvalidConfig { name: String, reason: &'static str },
    #[error("cannot open TAP {name:?}: {source}{hint}", hint = open_hint(source))]
    Open { name: String, source: io::Error },
    #[error("TAP {name:?} is in use by {by}; refusing to share it (use another --dev)")]
    InUse { name: String, by: &'static str },
    #[error("cannot configure TAP {name:?} ({what}): {source}")]
    Configure {
        name: String,
        what: &'static str,
        source: io::Error,
    },
}

fn open_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EBUSY) => " (already attached by another process, or queue count differs)",
        Some(libc::EINVAL) => {
            " (an interface with this name exists but is not a TAP with the same flags)"
        }
        _ => "",
    }
}

/// What is asked of [`Tap::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapConfig {
    /// Interface name, at most 15 bytes; a `%d` in it lets the kernel pick a number.
    pub name: String,
    /// Put a [`VirtioNetHdr`] in front of every frame read and written (IFF_VNET_HDR); needed for
    /// any offload.
    pub vnet_hdr: bool,
    /// Number of queues; 1 opens a single-queue TAP, more sets IFF_MULTI_QUEUE and opens one fd per
    /// queue.
    pub queues: usize,
}

/// An open TAP device: one [`TapQueue`] per queue.
#[derive(Debug)]
pub struct Tap {
    name: String,
    existed: bool,
    vnet_hdr: bool,
    queues: Vec<TapQueue>,
}

impl Tap {
    /// Opens (or creates) the TAP described by `cfg`. All queues are nonblocking and close-on-exec.
    pub fn open(cfg: &TapConfig) -> Result<Tap, TapError> {
        validate_ifname(&cfg.name)?;
        if cfg.queues == 0 {
            return Err(TapError::InvalidConfig {
                name: cfg.name.clone(),
                reason: "queues must be at least 1",
            });
        }
        // Checked before TUNSETIFF, which creates the device if missing. A `%d` pattern never names an
        // existing device, and a racing creator only makes us report "created" for a device that
        // will then be persistent (or not) on its own terms.
        let existed = !cfg.name.contains('%') && super::iface::if_index(&cfg.name).is_ok();
        let claim = claim(&cfg.name)?;
        // TUNSETIFF on a multi-queue TAP someone else has open just adds a queue (and the
        // kernel then spreads that process's traffic over ours): its carrier tells first.
        if existed {
            if let Ok(state) = super::iface::link_state(&cfg.name) {
                if state.carrier && state.kind.as_deref() == Some("tun") {
                    return Err(TapError::InUse {
                        name: cfg.name.clone(),
                        by: "another process (a queue is attached)",
                    });
                }
            }
        }

        let mut flags = libc::IFF_TAP | libc::IFF_NO_PI;
        if cfg.vnet_hdr {
            flags |= libc::IFF_VNET_HDR;
        }
        if cfg.queues > 1 {
            flags |= libc::IFF_MULTI_QUEUE;
        }

        let mut name = cfg.name.clone();
        let mut queues = Vec::with_capacity(cfg.queues);
        for _ in 0..cfg.queues {
            // Later queues use the name the kernel reported for the first one (resolves `%d`).
            let (fd, actual) = open_queue(&name, flags)?;
            name = actual;
            let q = TapQueue {
                fd,
                _claim: claim.clone(),
            };
            if cfg.vnet_hdr {
                q.set_vnet_hdr_len(VNET_HDR_LEN)
                    .map_err(|source| TapError::Configure {
                        name: name.clone(),
                        what: "TUNSETVNETHDRSZ",
                        source,
                    })?;
            }
            queues.push(q);
        }
        Ok(Tap {
            name,
            existed,
            vnet_hdr: cfg.vnet_hdr,
            queues,
        })
    }

    /// The interface name as the kernel knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True if the device existed before `open` (a persistent TAP we attached to): it will not be
    /// deleted when we close it. False means we created it and it vanishes with our last fd.
    pub fn existed(&self) -> bool {
        self.existed
    }

    pub fn queues(&self) -> &[TapQueue] {
        &self.queues
    }

    /// Hands the queues to the workers; the device lives as long as any of them.
    pub(crate) fn into_queues(self) -> Vec<TapQueue> {
        self.queues
    }

    /// Sets exactly `offloads` (TUNSETOFFLOAD is per device, so any queue will do).
    pub fn set_offloads(&self, offloads: Offloads) -> Result<(), TapError> {
        self.first_queue()
            .set_offloads(offloads)
            .map_err(|source| TapError::Configure {
                name: self.name.clone(),
                what: "TUNSETOFFLOAD",
                source,
            })
    }

    /// Enables the offloads the kernel accepts, best first, and returns what is in force:
    /// CSUM|TSO4|TSO6 (which the kernel only accepts together with CSUM), plus USO4|USO6 (both at
    /// once) where supported. A kernel that refuses a set answers EINVAL without changing
    /// anything, so each step down is a clean retry. Without a vnet header no offload can be
    /// described per frame, so this turns them all off and returns [`Offloads::NONE`].
    pub fn probe_offloads(&self) -> Result<Offloads, TapError> {
        if !self.vnet_hdr {
            self.set_offloads(Offloads::NONE)?;
            return Ok(Offloads::NONE);
        }
        let base = Offloads::CSUM | Offloads::TSO4 | Offloads::TSO6;
        let candidates = [base | Offloads::USO4 | Offloads::USO6, base, Offloads::CSUM];
        let q = self.first_queue();
        for want in candidates {
            match q.set_offloads(want) {
                Ok(()) => return Ok(want),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => continue,
                Err(source) => {
                    return Err(TapError::Configure {
                        name: self.name.clone(),
                        what: "TUNSETOFFLOAD",
                        source,
                    })
                }
            }
        }
        self.set_offloads(Offloads::NONE)?;
        Ok(Offloads::NONE)
    }

    fn first_queue(&self) -> &TapQueue {
        // `open` refuses zero queues and the Vec is never shrunk while `self` exists.
        &self.queues[0]
    }
}

/// One engine per TAP name in a namespace (see [`super::claim`]); a `%d` pattern names a new
/// device, which nobody else can hold.
fn claim(name: &str) -> Result<Option<Arc<Claim>>, TapError> {
    if name.contains('%') {
        return Ok(None);
    }
    match Claim::take("tap", name) {
        Ok(claim) => Ok(Some(Arc::new(claim))),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(TapError::InUse {
            name: name.to_owned(),
            by: "another vxnet engine",
        }),
        Err(source) => Err(TapError::Configure {
            name: name.to_owned(),
            what: "claiming the name",
            source,
        }),
    }
}

fn open_tun() -> Result<OwnedFd, TapError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(TUN_PATH)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ENXIO) => TapError::NoTunDevice,
            Some(libc::EPERM) | Some(libc::EACCES) => TapError::NotPermitted,
            _ => TapError::Open {
                name: TUN_PATH.to_owned(),
                source: e,
            },
        })?;
    Ok(OwnedFd::from(file))
}

fn open_queue(name: &str, flags: libc::c_int) -> Result<(OwnedFd, String), TapError> {
    let fd = open_tun()?;
    let mut ifr = ifreq_named(name);
    ifr.ifr_ifru.ifru_flags = flags as libc::c_short;
    // SAFETY: `fd` is an open /dev/net/tun descriptor and TUNSETIFF reads and writes one `ifreq`,
    // which `ifr` is and which outlives the call.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
    cvt(ret).map_err(|source| match source.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => TapError::NotPermitted,
        _ => TapError::Open {
            name: name.to_owned(),
            source,
        },
    })?;
    Ok((fd, ifreq_name(&ifr)))
}

/// Flags the running kernel's TUN driver supports (TUNGETFEATURES), e.g. to check for
/// IFF_MULTI_QUEUE or IFF_VNET_HDR before asking for them.
pub fn tun_features() -> Result<TunFeatures, TapError> {
    let fd = open_tun()?;
    let mut features: libc::c_uint = 0;
    // SAFETY: TUNGETFEATURES writes one `unsigned int` through the pointer, which points at a live
    // local of that type.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNGETFEATURES, &mut features) };
    cvt(ret).map_err(|source| TapError::Configure {
        name: TUN_PATH.to_owned(),
        what: "TUNGETFEATURES",
        source,
    })?;
    Ok(TunFeatures(features))
}

/// The IFF_* flags reported by TUNGETFEATURES.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunFeatures(pub u32);

impl TunFeatures {
    pub fn tap(self) -> bool {
        self.0 & libc::IFF_TAP as u32 != 0
    }
    pub fn vnet_hdr(self) -> bool {
        self.0 & libc::IFF_VNET_HDR as u32 != 0
    }
    pub fn multi_queue(self) -> bool {
        self.0 & libc::IFF_MULTI_QUEUE as u32 != 0
    }
}

/// One queue of a TAP: a nonblocking fd that reads and writes whole Ethernet frames (each preceded
/// by a [`VirtioNetHdr`] when the TAP has `vnet_hdr`). Reads return `WouldBlock` when empty.
#[derive(Debug)]
pub struct TapQueue {
    fd: OwnedFd,
    /// Held as long as any of the queues `Tap::open` made is open (not by clones).
    _claim: Option<Arc<Claim>>,
}

impl TapQueue {
    /// Another fd for the same queue. The engine keeps the original and hands clones to each
    /// generation of workers, so restarting workers never closes (and so never destroys) a TAP.
    /// A clone does not hold the TAP's name claim: the originals do, and outlive their clones
    /// (the engine stops a generation's workers before it drops a network's queues, and closes
    /// the clones of a worker the kernel ended, which could never release a claim it held).
    pub(crate) fn try_clone(&self) -> io::Result<TapQueue> {
        Ok(TapQueue {
            fd: self.fd.try_clone()?,
            _claim: None,
        })
    }

    /// Reads one frame (or TSO superframe); a buffer shorter than the frame gets it truncated, so
    /// with offloads on use at least 65550 bytes (64 KiB + headers).
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of the call and
        // the fd is owned by `self`.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        cvt_size(n)
    }

    /// Writes one frame.
    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the duration of the call.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
        cvt_size(n)
    }

    /// Writes one frame gathered from `parts` (e.g. a virtio header and the frame) without copying
    /// them together; the TAP treats one writev as one frame.
    pub fn writev(&self, parts: &[IoSlice<'_>]) -> io::Result<usize> {
        let count = parts.len().min(libc::c_int::MAX as usize) as libc::c_int;
        // SAFETY: `IoSlice` is documented to be ABI compatible with `struct iovec` on Unix, and every
        // slice it refers to stays borrowed (valid for reads) for the duration of the call.
        let n = unsafe { libc::writev(self.fd.as_raw_fd(), parts.as_ptr().cast(), count) };
        cvt_size(n)
    }

    /// Sets the virtio-net header size (24 for the tunnel GSO header; see `underlay`).
    pub(crate) fn set_vnet_hdr_len(&self, len: usize) -> io::Result<()> {
        let len = len as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one `int` through the pointer, which points at a live local.
        let ret = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::TUNSETVNETHDRSZ, &len) };
        cvt(ret).map(drop)
    }

    fn set_offloads(&self, offloads: Offloads) -> io::Result<()> {
        // TUNSETOFFLOAD takes the flags by value, not through a pointer.
        let arg = offloads.bits() as libc::c_ulong;
        // SAFETY: the ioctl takes an integer argument and touches no user memory.
        let ret = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::TUNSETOFFLOAD, arg) };
        cvt(ret).map(drop)
    }
}

impl AsFd for TapQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for TapQueue {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// TUN_F_* offload flags accepted by TUNSETOFFLOAD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Offloads(u32);

impl Offloads {
    pub const NONE: Offloads = Offloads(0);
    /// The reader/writer handles partial checksums (NEEDS_CSUM).
    pub const CSUM: Offloads = Offloads(libc::TUN_F_CSUM);
    pub const TSO4: Offloads = Offloads(libc::TUN_F_TSO4);
    pub const TSO6: Offloads = Offloads(libc::TUN_F_TSO6);
    pub(crate) const TSO_ECN: Offloads = Offloads(libc::TUN_F_TSO_ECN);
    pub const USO4: Offloads = Offloads(libc::TUN_F_USO4);
    pub const USO6: Offloads = Offloads(libc::TUN_F_USO6);

    pub(crate) const fn bits(self) -> u32 {
        self.0
    }
    pub const fn contains(self, other: Offloads) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Offloads {
    type Output = Offloads;
    fn bitor(self, rhs: Offloads) -> Offloads {
        Offloads(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for Offloads {
    fn bitor_assign(&mut self, rhs: Offloads) {
        self.0 |= rhs.0;
    }
}

impl std::fmt::Display for Offloads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const NAMES: [(Offloads, &str); 6] = [
            (Offloads::CSUM, "CSUM"),
            (Offloads::TSO4, "TSO4"),
            (Offloads::TSO6, "TSO6"),
            (Offloads::TSO_ECN, "TSO_ECN"),
            (Offloads::USO4, "USO4"),
            (Offloads::USO6, "USO6"),
        ];
        let mut first = true;
        for (flag, name) in NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

/// `struct virtio_net_hdr`: the format lives in the sans-IO encap crate (it builds and reads
/// these headers for segmentation and coalescing); re-exported here next to the TAP that uses it.
pub use vxnet_encap::offload::VirtioNetHdr;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn offloads_flags_match_kernel_abi() {
        assert_eq!(Offloads::CSUM.bits(), 0x01);
        assert_eq!(Offloads::TSO4.bits(), 0x02);
        assert_eq!(Offloads::TSO6.bits(), 0x04);
        assert_eq!(Offloads::USO4.bits(), 0x20);
        assert_eq!(Offloads::USO6.bits(), 0x40);
        let o = Offloads::CSUM | Offloads::TSO4;
        assert!(o.contains(Offloads::TSO4));
        assert!(!o.contains(Offloads::TSO6));
        assert_eq!(o.to_string(), "CSUM|TSO4");
        assert_eq!(Offloads::NONE.to_string(), "none");
    }

    #[test]
    fn ioctl_numbers_match_notes() {
        assert_eq!(libc::TUNSETIFF, 0x400454ca);
        assert_eq!(libc::TUNSETOFFLOAD, 0x400454d0);
        assert_eq!(libc::TUNSETVNETHDRSZ, 0x400454d8);
        assert_eq!(libc::TUNGETFEATURES, 0x800454cf);
    }

    #[test]
    fn rejects_bad_config_before_touching_the_kernel() {
        let long = TapConfig {
            name: "abcdefghijklmnop".into(),
            vnet_hdr: false,
            queues: 1,
        };
        assert!(matches!(Tap::open(&long), Err(TapError::InvalidName(_))));
        let zero = TapConfig {
            name: "vxt0".into(),
            vnet_hdr: false,
            queues: 0,
        };
        assert!(matches!(
            Tap::open(&zero),
            Err(TapError::InvalidConfig { .. })
        ));
    }
}
