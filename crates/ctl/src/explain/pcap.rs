//! Reads pcap and pcapng captures (tcpdump writes the former by default, tshark the latter) and
//! explains every VXLAN packet in them; everything else is listed as skipped, with the reason.

use std::fs::File;
use std::path::Path;

use pcap_parser::pcapng::Block;
use pcap_parser::traits::PcapNGPacketBlock;
use pcap_parser::{create_reader, Linktype, PcapBlockOwned, PcapError};

use super::decode::{explain_frame, LinkType, Skip};
use super::esp::EspContext;
use super::model::{count_reasons, Explanation, Overhead, Packet, Skipped, Source};
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

/// Collects explanations and skip reasons as records stream past.
struct Collector<'p> {
    ports: &'p [u16],
    esp: &'p mut EspContext,
    packets: Vec<Packet>,
    skipped: Vec<Skipped>,
    total: usize,
}

impl Collector<'_> {
    fn frame(&mut self, link: Result<LinkType, String>, data: &[u8], original_len: usize) {
        self.total += 1;
        let frame = self.total;
        let result = link
            .map_err(Skip::plain)
            .and_then(|link| explain_frame(frame, link, data, original_len, self.ports, self.esp));
        match result {
            Ok(packet) => self.packets.push(packet),
            Err(Skip { reason, kind }) => self.skipped.push(Skipped {
                frame,
                reason,
                kind,
            }),
        }
    }
}

/// Explains every packet of the capture at `path`. A file that ends in the middle of a record
/// (tcpdump killed, a copy cut short) still gives the packets before the cut, with
/// [`Explanation::truncated`] saying where it ends; zero VXLAN packets is for the caller to judge.
pub(super) fn explain_file(
    path: &Path,
    ports: &[u16],
    esp: &mut EspContext,
) -> Result<Explanation, ExplainError> {
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

    let mut collector = Collector {
        ports,
        esp,
        packets: Vec::new(),
        skipped: Vec::new(),
        total: 0,
    };
    let mut format = "pcap";
    let mut legacy_link: Result<LinkType, String> = Err("no file header".into());
    // pcapng: one link type per interface, numbered in order of appearance within a section.
    let mut interfaces: Vec<Result<LinkType, String>> = Vec::new();
    // Bytes of the file consumed so far: where the next record starts.
    let mut offset: u64 = 0;
    let mut truncated = None;
    loop {
        match reader.next() {
            Ok((len, block)) => {
                match block {
                    PcapBlockOwned::LegacyHeader(header) => {
                        legacy_link = link_type(header.network);
                    }
                    PcapBlockOwned::Legacy(record) => {
                        collector.frame(legacy_link.clone(), record.data, record.origlen as usize);
                    }
                    PcapBlockOwned::NG(Block::SectionHeader(_)) => {
                        format = "pcapng";
                        interfaces.clear();
                    }
                    PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                        interfaces.push(link_type(idb.linktype));
                    }
                    PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                        let link = interface(&interfaces, epb.if_id as usize);
                        collector.frame(link, epb.packet_data(), epb.origlen as usize);
                    }
                    PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                        let data = &spb.data[..spb.data.len().min(spb.origlen as usize)];
                        collector.frame(interface(&interfaces, 0), data, spb.origlen as usize);
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
                truncated = Some(format!(
                    "the file ends in the middle of the record that starts at byte {offset}{size}, \
                     after packet {}: the packets before the cut are explained",
                    collector.total
                ));
                break;
            }
            Err(PcapError::BufferTooSmall) => {
                return Err(ExplainError::Malformed {
                    path: name,
                    detail: format!(
                        "record after packet {} is larger than {READ_BUFFER} bytes",
                        collector.total
                    ),
                })
            }
            Err(e) => {
                return Err(ExplainError::Malformed {
                    path: name,
                    detail: format!("unreadable record after packet {}: {e:?}", collector.total),
                })
            }
        }
    }

    Ok(Explanation {
        source: Source::Capture {
            path: name,
            format,
            total_packets: collector.total,
            vxlan_ports: ports.to_vec(),
            esp_ports: collector.esp.ports.clone(),
            keys: collector.esp.keys.as_ref().map(|k| k.path.clone()),
        },
        overhead: if collector.packets.iter().any(|p| p.esp.is_some()) {
            Overhead::encrypted()
        } else {
            Overhead::standard()
        },
        packets: collector.packets,
        skipped_by_reason: count_reasons(&collector.skipped),
        skipped: collector.skipped,
        truncated,
    })
}

fn interface(interfaces: &[Result<LinkType, String>], id: usize) -> Result<LinkType, String> {
    interfaces.get(id).cloned().unwrap_or_else(|| {
        Err(format!(
            "packet names interface {id}, which was never described"
        ))
    })
}

/// Why the file could not even be opened as a capture: a capture magic with too few bytes behind
/// it is a truncated capture; anything else is not a capture at all.
fn open_error(path: &Path, name: &str, error: &PcapError<&[u8]>) -> ExplainError {
    let mut magic = [0u8; 4];
    let head = std::fs::read(path).unwrap_or_default();
    let known = head.len() >= 4 && {
        magic.copy_from_slice(&head[..4]);
        PCAP_MAGICS.contains(&magic) || magic == PCAPNG_MAGIC
    };
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
        PcapError::ReadError => ExplainError::Read {
            path,
            source: std::io::Error::other("read failed"),
        },
        _ => ExplainError::NotPcap {
            path,
            detail: "unrecognised file header".into(),
        },
    }
}
