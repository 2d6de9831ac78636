//! `vxnet reload`: asks the running engine to re-read its `--config`, as SIGHUP does, and
//! prints what changed. Exits non-zero when the file was refused or a network failed to apply.

use vxnet_dataplane::control::client::request;
use vxnet_dataplane::control::proto::{ReloadReport, Request};

use crate::show::{ControlArgs, ShowError};

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Show(#[from] ShowError),
    #[error("reload applied only in part: {0}")]
    Partial(String),
}

pub fn run(control: ControlArgs) -> Result<(), ReloadError> {
    let value = request(&control.control, &Request::Reload).map_err(ShowError::from)?;
    let report: ReloadReport = serde_json::from_value(value.clone()).map_err(ShowError::from)?;
    if control.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&value).map_err(ShowError::from)?
        );
    } else {
        print!("{}", render(&report));
    }
    if report.failed.is_empty() {
        Ok(())
    } else {
        Err(ReloadError::Partial(report.failed.join("; ")))
    }
}

fn render(report: &ReloadReport) -> String {
    let mut out = String::new();
    for (what, names) in [
        ("added", &report.added),
        ("removed", &report.removed),
        ("changed", &report.changed),
    ] {
        if !names.is_empty() {
            out.push_str(&format!("{what}: {}\n", names.join(", ")));
        }
    }
    for setting in &report.needs_restart {
        out.push_str(&format!("needs a restart: {setting}\n"));
    }
    if out.is_empty() {
        out.push_str("no change\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_lists_changes_or_says_none() {
        assert_eq!(render(&ReloadReport::default()), "no change\n");
        let report = ReloadReport {
            added: vec!["red".into()],
            removed: vec!["blue".into(), "green".into()],
            needs_restart: vec!["port 4789 -> 4790".into()],
            ..ReloadReport::default()
        };
        assert_eq!(
            render(&report),
            "added: red\nremoved: blue, green\nneeds a restart: port 4789 -> 4790\n"
        );
    }
}
