//! `vxnet explain --live DEV`: explains VXLAN packets as they cross an interface, with the
//! AF_PACKET capture the demo uses (`vxnet_dataplane::sys::packet`), so no tcpdump or libpcap is
//! needed. Both directions are seen; frames that are not VXLAN are counted by reason.

use std::io::ErrorKind;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vxnet_dataplane::sys::packet::{CaptureError, PacketSocket};

use super::decode::{explain_frame, port_list, LinkType, Skip};
use super::esp::EspContext;
use super::model::{reasons_line, SkipTally, Skipped};
use super::output::{View, BRIEF_HEADER};
use super::svg::SvgTarget;
use super::{json, render, write_stdout_while_read, ExplainError};

/// How often the capture loop looks for Ctrl-C while no frame arrives.
const POLL: Duration = Duration::from_millis(200);

fn open(dev: &str) -> Result<PacketSocket, ExplainError> {
    PacketSocket::open(dev).map_err(|e| match e {
        CaptureError::NoSuchInterface(_) => ExplainError::NoInterface { dev: dev.into() },
        CaptureError::Socket { source, .. } if source.kind() == ErrorKind::PermissionDenied => {
            ExplainError::NotPermitted {
                dev: dev.into(),
                source,
            }
        }
        other => ExplainError::Capture {
            dev: dev.into(),
            detail: other.to_string(),
        },
    })
}

/// Captures on `dev` until `count` VXLAN packets were explained (0: no limit) or Ctrl-C. Packets
/// are numbered by the VXLAN/ESP packets shown, not by every frame the socket saw.
pub(super) fn run(
    dev: &str,
    ports: &[u16],
    esp: &mut EspContext,
    count: usize,
    view: View,
    svg: Option<&SvgTarget>,
) -> Result<(), ExplainError> {
    let mut socket = open(dev)?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        // Ctrl-C ends the capture like tcpdump's: what was seen is summarised, exit status 0.
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst)).map_err(|e| {
            ExplainError::Capture {
                dev: dev.into(),
                detail: format!("cannot handle Ctrl-C: {e}"),
            }
        })?;
    }
    let limit = match count {
        0 => String::from("Ctrl-C"),
        n => format!("{n} VXLAN packets or Ctrl-C"),
    };
    let json_lines = matches!(view, View::Json);
    if !json_lines {
        let mut intro = format!(
            "Capturing on {dev}: VXLAN on UDP ports {}, ESP-in-UDP on {}{}; stops after {limit}\n",
            port_list(ports),
            port_list(&esp.ports),
            esp.keys
                .as_ref()
                .map_or(String::new(), |k| format!(" (decrypted with {})", k.path))
        );
        if matches!(view, View::Brief) {
            intro.push_str(BRIEF_HEADER);
        }
        if !write(intro.as_bytes())? {
            return Ok(());
        }
    }

    let started = Instant::now();
    let mut frames = 0usize;
    let mut explained = 0usize;
    let mut skipped = SkipTally::default();
    while !stop.load(Ordering::SeqCst) && (count == 0 || explained < count) {
        let captured = match socket.next_frame(POLL) {
            Ok(Some(captured)) => captured,
            Ok(None) => continue,
            Err(e) => {
                return Err(ExplainError::Capture {
                    dev: dev.into(),
                    detail: e.to_string(),
                })
            }
        };
        frames += 1;
        // A frame cut by the capture buffer is reported as such by the decoder.
        let original_len = captured.frame.len() + usize::from(captured.truncated);
        match explain_frame(
            explained + 1,
            LinkType::Ethernet,
            &captured.frame,
            original_len,
            ports,
            esp,
        ) {
            Ok(mut packet) => {
                explained += 1;
                packet.time = Some(started.elapsed().as_secs_f64());
                if let Some(target) = svg.filter(|_| explained == 1) {
                    target.write(&packet)?;
                }
                let text = match view {
                    View::Json => json::to_line(&packet),
                    View::Brief => render::brief_line(&packet),
                    View::Full { colour, width } => render::render_one(&packet, colour, width),
                };
                if !write(text.as_bytes())? {
                    return Ok(());
                }
            }
            Err(Skip { reason, kind }) => skipped.push(Skipped {
                frame: frames,
                reason,
                kind,
            }),
        }
    }
    if !json_lines {
        let mut summary = format!(
            "{explained} VXLAN packets explained, {} other frames skipped",
            skipped.total
        );
        if skipped.total > 0 {
            summary.push_str(&format!(": {}", reasons_line(&skipped.by_reason(), 6)));
        }
        summary.push('\n');
        write(summary.as_bytes())?;
    }
    Ok(())
}

/// Writes to stdout; `false` once the reader has gone (`| head`), which ends the capture.
fn write(bytes: &[u8]) -> Result<bool, ExplainError> {
    write_stdout_while_read(bytes)
}
