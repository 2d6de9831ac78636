#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `vxnet man --dir DIR`: every page shows the version and carries SEE ALSO; the main pages have
//! EXAMPLES and FILES, and every example is a command line the real CLI parses; the
//! configuration file's page vxnet.toml(5) lists every key of docs/config.md and lands where
//! `man 5` finds it; groff renders every page without a warning.

mod docs_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::CommandFactory;

fn write_pages(name: &str, leaf: &str) -> (PathBuf, Vec<PathBuf>) {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("man_pages_{name}"));
    let _ = std::fs::remove_dir_all(&base);
    let dir = base.join(leaf);
    vxnet_testkit::must(&format!(
        "{} man --dir {}",
        env!("CARGO_BIN_EXE_vxnet"),
        dir.display()
    ));
    let mut pages: Vec<PathBuf> = Vec::new();
    for sub in std::fs::read_dir(&base).unwrap() {
        for page in std::fs::read_dir(sub.unwrap().path()).unwrap() {
            pages.push(page.unwrap().path());
        }
    }
    pages.sort();
    (dir, pages)
}

/// The body of `.SH NAME` (roff quotes a name with a space: `.SH "SEE ALSO"`).
fn section<'a>(page: &'a str, name: &str) -> Option<&'a str> {
    let heading = if name.contains(' ') {
        format!(".SH \"{name}\"\n")
    } else {
        format!(".SH {name}\n")
    };
    let start = page.find(&heading)?;
    let body = &page[start + heading.len()..];
    Some(&body[..body.find("\n.SH ").unwrap_or(body.len())])
}

/// roff text back to what a reader sees (enough for the command lines of EXAMPLES).
fn unroff(line: &str) -> String {
    line.replace("\\fB", "")
        .replace("\\fR", "")
        .replace("\\fI", "")
        .replace("\\-", "-")
        .replace("\\*(Aq", "'")
        .replace("\\\\", "\\")
}

#[test]
fn pages_have_version_examples_files_and_see_also() {
    let version = env!("CARGO_PKG_VERSION");
    let (dir, pages) = write_pages("sections", "man1");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    for page in pages.iter().filter(|p| p.extension().unwrap() == "1") {
        let text = std::fs::read_to_string(page).unwrap();
        let name = page.file_stem().unwrap().to_str().unwrap();
        let th = text.lines().find(|l| l.starts_with(".TH ")).unwrap();
        assert!(th.contains(&format!("\"vxnet {version}\"")), "{name}: {th}");
        let v = section(&text, "VERSION").unwrap_or_else(|| panic!("{name}: no VERSION"));
        assert!(v.contains(version), "{name}: {v}");
        assert!(section(&text, "SEE ALSO").is_some(), "{name}");
    }
    for name in [
        "vxnet.1",
        "vxnet-run.1",
        "vxnet-stats.1",
        "vxnet-cluster-init.1",
        "vxnet-explain.1",
        "vxnet-key-generate.1",
    ] {
        let text = read(name);
        let examples = section(&text, "EXAMPLES").unwrap_or_else(|| panic!("{name}: no EXAMPLES"));
        assert!(examples.contains("vxnet"), "{name}: {examples}");
        // explain reads only what it is given; the others have files of their own.
        if name != "vxnet-explain.1" {
            let files = section(&text, "FILES").unwrap_or_else(|| panic!("{name}: no FILES"));
            assert!(files.contains('/'), "{name}: {files}");
        }
    }
    let top = read("vxnet.1");
    let name = section(&top, "NAME").unwrap();
    assert_eq!(name.matches("vxnet").count(), 1, "{name}");
    let run = read("vxnet-run.1");
    assert!(section(&run, "FILES")
        .unwrap()
        .contains("/etc/vxnet/vxnet.toml"));
    assert!(section(&run, "SEE ALSO").unwrap().contains("vxnet.toml(5)"));
    // Sections in the order man-pages(7) gives: EXAMPLES, FILES, SEE ALSO, then clap's VERSION.
    let order: Vec<usize> = ["EXAMPLES", "FILES", "SEE ALSO", "VERSION"]
        .iter()
        .map(|s| run.find(section(&run, s).unwrap()).unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
}

#[test]
fn every_example_parses_with_the_real_cli() {
    let (_, pages) = write_pages("examples", "man1");
    let mut checked = 0;
    let mut wrong = Vec::new();
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        let Some(examples) = section(&text, "EXAMPLES") else {
            continue;
        };
        let mut in_code = false;
        for line in examples.lines() {
            match line {
                ".nf" => in_code = true,
                ".fi" => in_code = false,
                l if in_code => {
                    let line = unroff(l);
                    // A shell redirection ends the command's arguments.
                    let argv: Vec<&str> =
                        line.split('>').next().unwrap().split_whitespace().collect();
                    checked += 1;
                    if let Err(e) = vxnet::cli::Cli::command().try_get_matches_from(&argv) {
                        let why = e.to_string();
                        wrong.push(format!(
                            "{}: `{line}`: {}",
                            page.display(),
                            why.lines().next().unwrap_or("")
                        ));
                    }
                }
                _ => {}
            }
        }
    }
    assert!(checked >= 40, "only {checked} examples");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn config_file_page_lists_every_documented_key() {
    let (dir, pages) = write_pages("config", "man1");
    let page = dir.parent().unwrap().join("man5/vxnet.toml.5");
    assert!(pages.contains(&page), "{pages:?}");
    let text = std::fs::read_to_string(&page).unwrap();
    assert!(text.contains(".TH VXNET.TOML 5"), "{text}");
    assert!(section(&text, "NAME").unwrap().contains("vxnet.toml"));
    let reference = docs_support::page("docs/config.md");
    let mut keys = 0;
    for table in docs_support::tables(&reference.text) {
        if table.header.first().map(String::as_str) != Some("key") {
            continue;
        }
        for row in &table.rows {
            let key = docs_support::unquote(&row[0]).replace('-', "\\-");
            assert!(
                text.contains(&format!(".TP\n\\fB{key}\\fR\n")),
                "vxnet.toml(5) lacks the key {key}"
            );
            keys += 1;
        }
    }
    assert!(keys >= 20, "{keys}");
    assert!(text.contains(".SH FILES"), "{text}");
    assert!(text.contains("key_file = \"red.key\""), "the full example");

    // Not a man1 directory: everything in DIR.
    let (dir, _) = write_pages("flat", "pages");
    assert!(dir.join("vxnet.toml.5").exists() && dir.join("vxnet.1").exists());
}

/// groff (Debian's groff-base, which man-db uses) renders every page with all warnings on and
/// says nothing.
#[test]
fn groff_renders_every_page_without_warnings() {
    if !vxnet_testkit::have_tool("groff_renders_every_page_without_warnings", "groff") {
        return;
    }
    let (_, pages) = write_pages("groff", "man1");
    for page in &pages {
        let out = Command::new("groff")
            // -k: through preconv, as man-db does, so UTF-8 text is read as such.
            .args(["-k", "-man", "-Tutf8", "-ww", "-z"])
            .arg(page)
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{}: {}",
            page.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // And the configuration page reads as text a person can use.
    let text = Command::new("groff")
        .args(["-k", "-man", "-Tutf8", "-P", "-cbou"])
        .arg(pages.iter().find(|p| p.ends_with("vxnet.toml.5")).unwrap())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("max_fdb") && text.contains("16384"), "{text}");
}
