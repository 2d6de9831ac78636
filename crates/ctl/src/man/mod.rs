//! `vxnet man --dir DIR`: a man page per command and subcommand (section 1), made by clap_mangen
//! from the clap definitions, with EXAMPLES, FILES and SEE ALSO added, the version on every
//! page; and vxnet.toml(5), the configuration file's page, made from docs/config.md.

mod examples;
mod markdown;

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use roff::{bold, italic, roman, Roff};

use crate::cli::{documented, Cli};

use examples::examples;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The `.TH` date: none (a build date would make the pages differ between identical builds).
/// Written as `""` because roff writes an empty argument as nothing, which would shift the
/// source and manual into the date's place.
pub(crate) const NO_DATE: &str = "\"\"";

/// The configuration reference, compiled in: the man page and the book say the same.
const CONFIG_MD: &str = include_str!("../../../../docs/config.md");

/// The name of the configuration file's page (section 5).
const CONFIG_PAGE: &str = "vxnet.toml";

/// Writes every page; returns their paths, in order. The section-1 pages go into `dir`; the
/// section-5 page into the sibling `man5` when `dir` is a `man1` directory (so `man 5
/// vxnet.toml` finds it after `vxnet man --dir /usr/local/share/man/man1`), else into `dir`.
pub fn write_pages(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = Cli::command();
    cmd.build();
    let mut written = Vec::new();
    write_command(&cmd, "vxnet", dir, &mut written)?;
    let section5 = match (dir.file_name(), dir.parent()) {
        (Some(name), Some(parent)) if name == "man1" => parent.join("man5"),
        _ => dir.to_path_buf(),
    };
    std::fs::create_dir_all(&section5)?;
    let path = section5.join(format!("{CONFIG_PAGE}.5"));
    std::fs::write(&path, config_page())?;
    written.push(path);
    Ok(written)
}

fn write_command(
    cmd: &clap::Command,
    name: &str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, command_page(cmd, name)?)?;
    written.push(path);
    for sub in documented(cmd) {
        write_command(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}

/// One command's page: clap_mangen's sections, then EXAMPLES, FILES and SEE ALSO before its
/// VERSION section.
fn command_page(cmd: &clap::Command, name: &str) -> std::io::Result<Vec<u8>> {
    // After `build`, a subcommand's display name is its full name (`vxnet-fdb-show`), which
    // clap_mangen puts in the title and NAME. Subcommands carry no version of their own; the
    // page shows the program's.
    let mut cmd = cmd.clone().version(VERSION);
    // NAME reads "vxnet - about": an about that starts with the name would say it twice.
    if let Some(about) = cmd.get_about().map(ToString::to_string) {
        if let Some(rest) = about.strip_prefix(&format!("{name}: ")) {
            cmd = cmd.about(rest.to_owned());
        }
    }
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .date(NO_DATE)
        .source(format!("vxnet {VERSION}"))
        .manual("vxnet manual")
        .render(&mut page)?;
    let extra = extra_sections(&cmd, name).to_roff();
    let text = String::from_utf8_lossy(&page).into_owned();
    let text = match text.find(".SH VERSION") {
        Some(at) => format!("{}{extra}{}", &text[..at], &text[at..]),
        None => format!("{text}{extra}"),
    };
    Ok(text.into_bytes())
}

fn extra_sections(cmd: &clap::Command, name: &str) -> Roff {
    let mut doc = Roff::new();
    let examples = examples(name);
    if !examples.is_empty() {
        doc.control("SH", ["EXAMPLES"]);
        for (what, line) in examples {
            doc.control("PP", []).text([roman(*what)]);
            doc.control("RS", ["4"]).control("nf", []);
            doc.text([bold(*line)]);
            doc.control("fi", []).control("RE", []);
        }
    }
    let files = examples::files(name);
    if !files.is_empty() {
        doc.control("SH", ["FILES"]);
        for (path, what) in files {
            doc.control("TP", [])
                .text([italic(*path)])
                .text([roman(*what)]);
        }
    }
    doc.control("SH", ["SEE ALSO"]);
    // Page names are not to be hyphenated across lines (vxnet-net-works(1)).
    doc.control("nh", []);
    let mut see: Vec<String> = Vec::new();
    // The parent command's page, then the subcommands' pages.
    if let Some((parent, _)) = name.rsplit_once('-') {
        see.push(format!("{parent}(1)"));
    }
    see.extend(documented(cmd).map(|s| format!("{name}-{}(1)", s.get_name())));
    if matches!(name, "vxnet" | "vxnet-run" | "vxnet-reload") {
        see.push(format!("{CONFIG_PAGE}(5)"));
    }
    see.push("the vxnet book: docs/README.md in the source".into());
    doc.text([roman(see.join(", "))]);
    doc
}

/// vxnet.toml(5).
fn config_page() -> String {
    markdown::page(
        CONFIG_PAGE,
        "the configuration file of vxnet run --config",
        &format!("vxnet {VERSION}"),
        CONFIG_MD,
    )
}
