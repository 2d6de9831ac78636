//! Where a capture's packets go as they are decoded: the full text view, `--brief` lines or one
//! JSON document, written packet by packet so nothing but the current packet is held.

use serde::Serialize;

use super::model::{Overhead, Packet, ReasonCount, Skipped, Source};
use super::pcap::CaptureRun;
use super::render::{self, CaptureSource};
use super::{json, write_stdout_while_read, ExplainError};

/// How packets are shown.
#[derive(Debug, Clone, Copy)]
pub(super) enum View {
    /// Layer diagram, tables and hex dump, within `width` columns.
    Full { colour: bool, width: usize },
    /// One line per packet.
    Brief,
    /// One JSON document for the whole capture.
    Json,
}

/// Writes packets as they come; the introduction goes out with the first one, so a capture
/// without VXLAN prints nothing but its error.
pub(super) struct PacketOutput<'a> {
    view: View,
    source: CaptureSource<'a>,
    written: usize,
    /// The reader is still there (no broken pipe).
    open: bool,
}

/// The part of the `--json` document that follows the packets: known only at the end.
#[derive(Serialize)]
struct CaptureTail<'r> {
    source: Source,
    skipped: &'r [Skipped],
    skipped_by_reason: Vec<ReasonCount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    truncated: &'r Option<String>,
    overhead: &'r Overhead,
}

impl<'a> PacketOutput<'a> {
    pub(super) fn new(view: View, source: CaptureSource<'a>) -> Self {
        PacketOutput {
            view,
            source,
            written: 0,
            open: true,
        }
    }

    /// Writes one packet; `false` once the reader has gone (`| head`), which ends the capture.
    pub(super) fn packet(&mut self, packet: &Packet) -> Result<bool, ExplainError> {
        let mut text = String::new();
        match self.view {
            View::Full { colour, width } => {
                if self.written == 0 {
                    text.push_str(&render::capture_intro(&self.source, colour));
                }
                text.push('\n');
                text.push_str(&render::render_one(packet, colour, width));
            }
            View::Brief => {
                if self.written == 0 {
                    text.push_str(BRIEF_HEADER);
                }
                text.push_str(&render::brief_line(packet));
            }
            View::Json => {
                text.push_str(if self.written == 0 {
                    "{\n\"packets\": [\n"
                } else {
                    ",\n"
                });
                text.push_str(json::to_string(packet).trim_end());
            }
        }
        self.written += 1;
        self.open = write_stdout_while_read(text.as_bytes())?;
        Ok(self.open)
    }

    /// The counts, skipped frames and overhead after the last packet.
    pub(super) fn finish(
        self,
        run: &CaptureRun,
        source: Source,
        overhead: &Overhead,
    ) -> Result<(), ExplainError> {
        if !self.open {
            return Ok(());
        }
        let text = match self.view {
            View::Full { colour, .. } => {
                render::capture_end(run, &self.source, overhead, colour, false)
            }
            View::Brief => render::capture_end(run, &self.source, overhead, false, true),
            View::Json => {
                let tail = json::to_string(&CaptureTail {
                    source,
                    skipped: &run.skipped.listed,
                    skipped_by_reason: run.skipped.by_reason(),
                    truncated: &run.truncated,
                    overhead,
                });
                // The tail is a JSON object; its members continue the document the packets
                // opened, so the whole is one object.
                let members = tail.trim_start().strip_prefix('{').unwrap_or(&tail);
                format!("\n],{members}")
            }
        };
        write_stdout_while_read(text.as_bytes()).map(|_| ())
    }
}

/// The columns of `--brief`.
pub(super) const BRIEF_HEADER: &str =
    "    #        time  outer (underlay) flow  network  inner frame  size\n";
