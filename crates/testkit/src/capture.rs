//! Packet captures for the netns tests: tcpdump in a host's namespace, its pcap read back.

use std::path::PathBuf;
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
        let pcap = lab.dir.join(format!("{name}.pcap"));
        let log = lab.dir.join(format!("{name}.log"));
        let proc = lab.spawn(
            i,
            &log,
            &format!(
                "tcpdump -i {dev} -n -U --immediate-mode -B 16384 -s {snaplen} -c {count} -w {} {filter}",
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

    /// Stops the capture (after a moment for the last packets) and returns the frames, each
    /// cut at the snap length, from the Ethernet header on.
    pub fn frames(mut self) -> Vec<Vec<u8>> {
        // Until the pcap stops growing (tcpdump is still writing a burst out), at most 10 s.
        let mut last = None;
        let _ = wait_for(Duration::from_secs(10), || {
            std::thread::sleep(Duration::from_millis(250));
            let len = std::fs::metadata(&self.pcap).map(|m| m.len()).ok();
            std::mem::replace(&mut last, len) == len && len.is_some()
        });
        self.proc.terminate(Duration::from_secs(3));
        let data = std::fs::read(&self.pcap).unwrap_or_default();
        read_pcap(&data)
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
