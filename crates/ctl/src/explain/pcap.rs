//! Reads pcap and pcapng captures (tcpdump writes the former by default, tshark the latter) and
//! explains every VXLAN packet in them; everything else is listed as skipped, with the reason.

use std::fs::File;
use std::path::Path;

use pcap_parser::pcapng::Block;
use pcap_parser::traits::PcapNGPacketBlock;
use pcap_parser::{create_reader, Linktype, PcapBlockOwned, PcapError};

use super::decode::{explain_frame, LinkType, Skip};
use super::esp::EspContext;
use super::model::{Packet, SkipTally, Skipped};
use super::ExplainError;

/// Room for the largest record: a 64 KiB packet plus headers, with margin for jumbo snaplens.
const READ_BUFFER: usize = 1 << 20;

const PCAP_MAGICS: [[u8; 4]; 4] = [
    [0xd4, 0xc3, 0xb2, 0xa1],
    [0xa1, 0xb2, 0xc3, 0xd4],
    [0x4d, 0x3c, 0xb2, 0xa1],
    [0xa1, 0xb2, 0x3c, 0x4d],
];
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

fn link_type(linktype: Linktype) -> Result<LinkType, String> {
    match linktype {
        Linktype::ETHERNET => Ok(LinkType::Ethernet),
        Linktype::LINUX_SLL => Ok(LinkType::LinuxSll),
        Linktype::LINUX_SLL2 => Ok(LinkType::LinuxSll2),
        Linktype::RAW | Linktype::IPV4 | Linktype::IPV6 => Ok(LinkType::RawIp),
        other => Err(format!(
            "link type {} ({other}) is not supported (Ethernet, Linux cooked SLL/SLL2, raw IP are)",
            other.0
        )),
    }
}

/// What a capture held besides the packets handed out: where it came from and what was skipped.
pub(super) struct CaptureRun {
    pub format: &'static str,
    /// Every record that held a frame.
    pub total: usize,
    pub explained: usize,
    /// Explained packets that were ESP-in-UDP.
    pub encrypted: usize,
    pub skipped: SkipTally,
    /// Set when the file ends in the middle of a record: where, and after which packet.
    pub truncated: Option<String>,
}

/// Hands each explained packet to the sink as its record is read, and tallies the rest, so memory
/// stays bounded by one record and the ESP state whatever the capture's size.
struct Streamer<'p, 's> {
    ports: &'p [u16],
    esp: &'p mut EspContext,
    sink: &'s mut dyn FnMut(Packet) -> Result<bool, ExplainError>,
    run: CaptureRun,
    /// The first frame's timestamp: packet times are relative to it, as Wireshark shows them.
    first_time: Option<f64>,
    /// The sink's reader has gone (`| head`): stop reading.
    closed: bool,
}

impl Streamer<'_, '_> {
    fn frame(
        &mut self,
        link: Result<LinkType, String>,
        data: &[u8],
        original_len: usize,
        time: f64,
    ) -> Result<(), ExplainError> {
        self.run.total += 1;
        let frame = self.run.total;
        let since_first = time - *self.first_time.get_or_insert(time);
        let result = link
            .map_err(Skip::plain)
            .and_then(|link| explain_frame(frame, link, data, original_len, self.ports, self.esp));
        match result {
            Ok(mut packet) => {
                packet.time = Some(since_first);
                self.run.explained += 1;
                self.run.encrypted += usize::from(packet.esp.is_some());
                self.closed = !(self.sink)(packet)?;
            }
            Err(Skip { reason, kind }) => self.run.skipped.push(Skipped {
                frame,
                reason,
                kind,
            }),
        }
        Ok(())
    }
}

/// Explains every packet of the capture at `path`, handing each to `sink` as it is read (the
/// sink returns `false` when its reader has gone, which ends the reading). A file that ends in
/// the middle of a record (tcpdump killed, a copy cut short) still gives the packets before the
/// cut, with [`CaptureRun::truncated`] saying where it ends; zero VXLAN packets is for the
/// caller to judge.
pub(super) fn stream_file(
    path: &Path,
    ports: &[u16],
    esp: &mut EspContext,
    sink: &mut dyn FnMut(Packet) -> Result<bool, ExplainError>,
) -> Result<CaptureRun, ExplainError> {
    let name = path.display().to_string();
    let file = File::open(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => ExplainError::NotFound { path: name.clone() },
        _ => ExplainError::Read {
            path: name.clone(),
            source,
        },
    })?;
    let file_len = file.metadata().map(|m| m.len()).ok();
    let mut reader = match create_reader(READ_BUFFER, file) {
        Ok(reader) => reader,
        Err(e) => return Err(open_error(path, &name, &e)),
    };

    let mut streamer = Streamer {
        ports,
        esp,
        sink,
        run: CaptureRun {
            format: "pcap",
            total: 0,
            explained: 0,
            encrypted: 0,
            skipped: SkipTally::default(),
            truncated: None,
        },
        first_time: None,
        closed: false,
    };
    let mut legacy_link: Result<LinkType, String> = Err("no file header".into());
    let mut nanoseconds = false;
    // pcapng: one link type and timestamp resolution per interface, numbered in order of
    // appearance within a section.
    let mut interfaces: Vec<Interface> = Vec::new();
    // Bytes of the file consumed so far: where the next record starts.
    let mut offset: u64 = 0;
    while !streamer.closed {
        match reader.next() {
            Ok((len, block)) => {
                match block {
                    PcapBlockOwned::LegacyHeader(header) => {
                        legacy_link = link_type(header.network);
                        nanoseconds = header.is_nanosecond_precision();
                    }
                    PcapBlockOwned::Legacy(record) => {
                        let fraction = if nanoseconds { 1e-9 } else { 1e-6 };
                        let time = f64::from(record.ts_sec) + f64::from(record.ts_usec) * fraction;
                        streamer.frame(
                            legacy_link.clone(),
                            record.data,
                            record.origlen as usize,
                            time,
                        )?;
                    }
                    PcapBlockOwned::NG(Block::SectionHeader(_)) => {
                        streamer.run.format = "pcapng";
                        interfaces.clear();
                    }
                    PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                        interfaces.push(Interface {
                            link: link_type(idb.linktype),
                            // if_tsresol: microseconds unless the block says otherwise.
                            resolution: idb.ts_resolution().unwrap_or(1_000_000),
                            offset: idb.if_tsoffset as u64,
                        });
                    }
                    PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                        let (link, time) = match interfaces.get(epb.if_id as usize) {
                            Some(i) => (i.link.clone(), epb.decode_ts_f64(i.offset, i.resolution)),
                            None => (Err(undescribed(epb.if_id as usize)), 0.0),
                        };
                        streamer.frame(link, epb.packet_data(), epb.origlen as usize, time)?;
                    }
                    PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                        let data = &spb.data[..spb.data.len().min(spb.origlen as usize)];
                        let link = interfaces
                            .first()
                            .map_or_else(|| Err(undescribed(0)), |i| i.link.clone());
                        // Simple packet blocks carry no timestamp.
                        let time = streamer.first_time.unwrap_or(0.0);
                        streamer.frame(link, data, spb.origlen as usize, time)?;
                    }
                    // Statistics, name resolution, comments: nothing to explain.
                    PcapBlockOwned::NG(_) => {}
                }
                reader.consume(len);
                offset += len as u64;
            }
            Err(PcapError::Eof) => break,
            Err(PcapError::Incomplete(_)) => {
                if reader.refill().is_err() {
                    return Err(ExplainError::Read {
                        path: name,
                        source: std::io::Error::other("read failed"),
                    });
                }
            }
            Err(PcapError::UnexpectedEof) => {
                let size = file_len.map_or(String::new(), |n| format!(" of {n}"));
                streamer.run.truncated = Some(format!(
                    "the file ends in the middle of the record that starts at byte {offset}{size}, \
                     after packet {}: the packets before the cut are explained",
                    streamer.run.total
                ));
                break;
            }
            Err(PcapError::BufferTooSmall) => {
                return Err(ExplainError::Malformed {
                    path: name,
                    detail: format!(
                        "the record at byte {offset} (after packet {}) is larger than \
                         {READ_BUFFER} bytes",
                        streamer.run.total
                    ),
                })
            }
            Err(e) => {
                let detail = malformed_record(path, offset, streamer.run.format, &e);
                return Err(ExplainError::Malformed {
                    path: name,
                    detail: format!("{detail} (after packet {})", streamer.run.total),
                });
            }
        }
    }
    Ok(streamer.run)
}

/// A pcapng interface as its description block declares it.
struct Interface {
    link: Result<LinkType, String>,
    /// Timestamp units per second.
    resolution: u64,
    /// Seconds added to every timestamp (if_tsoffset).
    offset: u64,
}

fn undescribed(id: usize) -> String {
    format!("packet names interface {id}, which was never described")
}

/// Names what is wrong with the record at `offset` from its own header bytes (read again from the
/// file: the parser's error holds only its raw input), rather than printing the parser's debug
/// bytes.
fn malformed_record(path: &Path, offset: u64, format: &str, error: &PcapError<&[u8]>) -> String {
    let what = match error {
        PcapError::NomError(_, kind) | PcapError::OwnedNomError(_, kind) => {
            format!("its contents do not parse ({})", kind.description())
        }
        PcapError::HeaderNotRecognized => "its header is not recognised".to_owned(),
        PcapError::ReadError => "it cannot be read".to_owned(),
        other => other.to_string(),
    };
    let mut head = [0u8; 8];
    let read = File::open(path).and_then(|mut f| {
        use std::io::{Read, Seek, SeekFrom};
        f.seek(SeekFrom::Start(offset))?;
        f.read(&mut head)
    });
    let header = match (read, format) {
        (Ok(8), "pcapng") => {
            // Either byte order: the section header said which; both are shown plainly.
            let kind = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
            let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
            format!(
                "the pcapng block at byte {offset} (type {kind:#010x}: {}, total length {len})",
                block_name(kind)
            )
        }
        (Ok(8), _) => format!("the pcap record at byte {offset}"),
        _ => format!("the {format} record at byte {offset}"),
    };
    format!("{header}: {what}")
}

/// The block types of the pcapng specification (draft-ietf-opsawg-pcapng), by name.
fn block_name(kind: u32) -> &'static str {
    match kind {
        0x0a0d_0d0a => "section header",
        0x0000_0001 => "interface description",
        0x0000_0002 => "packet (obsolete)",
        0x0000_0003 => "simple packet",
        0x0000_0004 => "name resolution",
        0x0000_0005 => "interface statistics",
        0x0000_0006 => "enhanced packet",
        0x0000_0009 => "systemd journal export",
        0x0000_000a => "decryption secrets",
        _ => "unknown block type",
    }
}

/// Why the file could not even be opened as a capture: a capture magic with too few bytes behind
/// it is a truncated capture; anything else is not a capture at all.
fn open_error(path: &Path, name: &str, error: &PcapError<&[u8]>) -> ExplainError {
    // Only the magic: the file may be endless (`--pcap /dev/zero`) or huge.
    let mut magic = [0u8; 4];
    let head = File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic));
    let known = head.is_ok() && (PCAP_MAGICS.contains(&magic) || magic == PCAPNG_MAGIC);
    let path = name.to_owned();
    match error {
        PcapError::Eof => ExplainError::NotPcap {
            path,
            detail: "the file is empty".into(),
        },
        _ if known => ExplainError::Truncated {
            path,
            detail: "the file ends inside its header".into(),
        },
        // The reader keeps no cause; reading again gives the system's (a directory: EISDIR).
        PcapError::ReadError => ExplainError::Read {
            path,
            source: head
                .err()
                .unwrap_or_else(|| std::io::Error::other("read failed")),
        },
        _ => ExplainError::NotPcap {
            path,
            detail: "unrecognised file header".into(),
        },
    }
}
