//! Packet captures for the netns tests: tcpdump in a host's namespace, its pcap read back.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{wait_for, Lab, Proc};

/// A tcpdump running in a host's namespace, writing a pcap; [`Capture::frames`] stops it and
/// returns what it saw.
pub struct Capture {
    proc: Proc,
    pcap: PathBuf,
}

impl Capture {
    /// Starts `tcpdump -i DEV -s SNAPLEN FILTER` in host `i` (named `name` in the lab dir) and
    /// waits until it listens. At most `count` packets are kept. Immediate mode and a 16 MB
    /// buffer, so that a burst is neither held in a TPACKET_V3 block when the capture stops
    /// nor dropped by a capture that a loaded machine schedules late.
    pub fn start(
        lab: &Lab,
        i: usize,
        name: &str,
        dev: &str,
        snaplen: u32,
        count: u32,
        filter: &str,
    ) -> Capture {
        let options = format!("-s {snaplen} -c {count}");
        Self::spawn(&lab.host(i).ns, &lab.dir, name, dev, &options, filter)
    }

    /// [`Capture::start`] keeping whole packets, as many as come, for a test that reads the
    /// pcap file itself ([`Capture::finish`]): `vxnet explain`, tshark.
    pub fn file(lab: &Lab, i: usize, name: &str, dev: &str, filter: &str) -> Capture {
        Self::spawn(&lab.host(i).ns, &lab.dir, name, dev, "-s 0", filter)
    }

    /// [`Capture::file`] in any namespace `ns`, written into `dir`: for a test that builds its
    /// own topology (a NAT between hosts) rather than a [`Lab`].
    pub fn file_in(ns: &str, dir: &Path, name: &str, dev: &str, filter: &str) -> Capture {
        Self::spawn(ns, dir, name, dev, "-s 0", filter)
    }

    /// The one place tests start tcpdump. `-Z root`: tcpdump otherwise drops to its own user,
    /// which may not write into the lab dir.
    fn spawn(ns: &str, dir: &Path, name: &str, dev: &str, options: &str, filter: &str) -> Capture {
        let pcap = dir.join(format!("{name}.pcap"));
        let log = dir.join(format!("{name}.log"));
        let proc = Proc::spawn_in(
            ns,
            &log,
            &[],
            &format!(
                "tcpdump -Z root -i {dev} -n -U --immediate-mode -B 16384 {options} -w {} {filter}",
                pcap.display()
            ),
        );
        assert!(
            wait_for(Duration::from_secs(5), || proc
                .log_text()
                .contains("listening on")),
            "tcpdump did not start: {}",
            proc.log_text()
        );
        Capture { proc, pcap }
    }

    /// Where the capture is written.
    pub fn path(&self) -> &std::path::Path {
        &self.pcap
    }

    /// Stops the capture once it has written what it saw and returns the pcap file's path.
    pub fn finish(mut self) -> PathBuf {
        self.settle();
        self.proc.terminate(Duration::from_secs(3));
        self.pcap.clone()
    }

    /// Stops the capture (after a moment for the last packets) and returns the frames, each
    /// cut at the snap length, from the Ethernet header on.
    pub fn frames(self) -> Vec<Vec<u8>> {
        let data = std::fs::read(self.finish()).unwrap_or_default();
        read_pcap(&data)
    }

    /// Waits until the pcap stops growing (tcpdump is still writing a burst out), at most 10 s.
    fn settle(&self) {
        let mut last = None;
        let _ = wait_for(Duration::from_secs(10), || {
            std::thread::sleep(Duration::from_millis(250));
            let len = std::fs::metadata(&self.pcap).map(|m| m.len()).ok();
            std::mem::replace(&mut last, len) == len && len.is_some()
        });
    }
}

/// The frames of a classic pcap file (any byte order, microsecond or nanosecond stamps).
pub fn read_pcap(data: &[u8]) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    if data.len() < 24 {
        return frames;
    }
    let little = matches!(
        data[..4],
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1]
    );
    let word = |b: &[u8]| {
        let b = [b[0], b[1], b[2], b[3]];
        if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let mut at = 24;
    while at + 16 <= data.len() {
        let caplen = word(&data[at + 8..at + 12]) as usize;
        let start = at + 16;
        let Some(frame) = data.get(start..start + caplen) else {
            break;
        };
        frames.push(frame.to_vec());
        at = start + caplen;
    }
    frames
}
