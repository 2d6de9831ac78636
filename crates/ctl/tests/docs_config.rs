#![allow(clippy::unwrap_used, clippy::expect_used)]
//! docs/config.md, the configuration reference, checked against the parser: it lists exactly
//! the keys the parser accepts in each table; each default it gives as a literal is the value the
//! engine uses when the key is absent; each integer range it gives holds at both ends and is
//! refused one past them; and every TOML example in the book loads.

mod docs_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::Parser;
use docs_support::*;
use vxnet::cli::{Cli, Cmd};
use vxnet_dataplane::config::parse_file;
use vxnet_dataplane::EngineConfig;

/// One documented table: its path (`[]` for the top level; `["network"]` for `[[network]]`)
/// with whether each level is an array of tables, and its rows.
struct Documented {
    path: Vec<String>,
    arrays: Vec<bool>,
    rows: Vec<Row>,
}

struct Row {
    key: String,
    ty: String,
    values: String,
    default: String,
}

impl Row {
    /// The default when the page gives it as one TOML literal (`` `4789` ``, `` `"set"` ``).
    fn literal_default(&self) -> Option<&str> {
        let d = self.default.trim();
        let inner = d.strip_prefix('`')?.strip_suffix('`')?;
        (!inner.contains('`')).then_some(inner)
    }

    /// The integer range the values column starts with (`1–65535`), for integer keys.
    fn range(&self) -> Option<(u64, u64)> {
        if !self.ty.starts_with("integer") {
            return None;
        }
        let first = self.values.split([',', ' ']).next()?;
        let (lo, hi) = first.split_once('–')?;
        Some((lo.parse().ok()?, hi.parse().ok()?))
    }
}

fn reference() -> Vec<Documented> {
    let page = page("docs/config.md");
    let mut out = Vec::new();
    for t in tables(&page.text) {
        let header: Vec<&str> = t.header.iter().map(String::as_str).collect();
        if header.get(..4) != Some(&["key", "type", "values", "default"][..]) {
            continue;
        }
        // `[[network]]` or `[network.x]` in the heading names the table; none: the top level.
        let (path, arrays) = match inline_code(&t.heading)
            .into_iter()
            .find(|c| c.starts_with('['))
        {
            Some(name) => {
                let array = name.starts_with("[[");
                let inner = name.trim_matches(|c| c == '[' || c == ']');
                let path: Vec<String> = inner.split('.').map(str::to_owned).collect();
                // The levels above are what their own sections say (`[[network]]` above
                // `[network.x]`); fixed up below once every section is known.
                let arrays = vec![array; path.len()];
                (path, arrays)
            }
            None => (Vec::new(), Vec::new()),
        };
        let rows = t
            .rows
            .iter()
            .map(|r| Row {
                key: unquote(&r[0]).to_owned(),
                ty: r[1].clone(),
                values: r[2].clone(),
                default: r[3].clone(),
            })
            .collect();
        out.push(Documented { path, arrays, rows });
    }
    assert!(out.len() >= 2, "docs/config.md lost its key tables");
    let kinds: Vec<(Vec<String>, bool)> = out
        .iter()
        .filter_map(|t| Some((t.path.clone(), *t.arrays.last()?)))
        .collect();
    for t in &mut out {
        for level in 0..t.path.len().saturating_sub(1) {
            if let Some((_, array)) = kinds.iter().find(|(p, _)| p[..] == t.path[..=level]) {
                t.arrays[level] = *array;
            }
        }
    }
    out
}

/// A TOML document whose only key, in the table at `path`, is unknown: the parser's error
/// lists the keys it does know there.
fn parser_keys(path: &[String], arrays: &[bool]) -> Result<BTreeSet<String>, String> {
    let mut doc = String::new();
    for (i, array) in arrays.iter().enumerate() {
        let name = path[..=i].join(".");
        doc += &if *array {
            format!("[[{name}]]\n")
        } else {
            format!("[{name}]\n")
        };
    }
    doc += "zz_no_such_key = 1\n";
    let err = parse_file(&doc).expect_err("an unknown key is refused");
    if !err.contains("unknown field `zz_no_such_key`") {
        return Err(err); // the table itself is unknown
    }
    let Some((_, expected)) = err.split_once("expected") else {
        return Ok(BTreeSet::new()); // "there are no fields"
    };
    Ok(expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect())
}

#[test]
fn every_key_the_parser_knows_is_documented_and_no_other() {
    let mut wrong = Vec::new();
    for table in reference() {
        let name = match (table.path.is_empty(), table.arrays.last()) {
            (true, _) => "the top level".to_owned(),
            (false, Some(true)) => format!("[[{}]]", table.path.join(".")),
            (false, _) => format!("[{}]", table.path.join(".")),
        };
        let known = match parser_keys(&table.path, &table.arrays) {
            Ok(known) => known,
            Err(e) => {
                wrong.push(format!(
                    "docs/config.md documents {name}, which the parser does not take: {e}"
                ));
                continue;
            }
        };
        let documented: BTreeSet<String> = table.rows.iter().map(|r| r.key.clone()).collect();
        for k in known.difference(&documented) {
            wrong.push(format!(
                "the parser accepts `{k}` in {name}, but docs/config.md does not list it: add a row \
                 (type, values, default, meaning) to its table"
            ));
        }
        for k in documented.difference(&known) {
            wrong.push(format!(
                "docs/config.md lists `{k}` in {name}, which the parser refuses"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("docs_config_{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// What `vxnet run --config FILE` makes of a file (nothing is created: configuration only).
fn engine_config(dir: &Path, text: &str) -> Result<EngineConfig, String> {
    let file = dir.join("vxnet.toml");
    std::fs::write(&file, text).unwrap();
    let cli = Cli::try_parse_from(["vxnet", "run", "--config", file.to_str().unwrap()]).unwrap();
    let Cmd::Run(args) = cli.cmd else {
        unreachable!()
    };
    vxnet::run::config_from_args(&args).map_err(|e| e.to_string())
}

/// A file with one network and the given top-level and network lines.
fn file(top: &[String], network: &[String]) -> String {
    let mut text = String::from("local = \"10.0.0.1\"\n");
    for l in top {
        text += &format!("{l}\n");
    }
    text += "[[network]]\nvni = 1\ndev = \"vxdoc0\"\n";
    for l in network {
        text += &format!("{l}\n");
    }
    text
}

fn top_and_network() -> (Vec<Row>, Vec<Row>) {
    let mut top = Vec::new();
    let mut network = Vec::new();
    for t in reference() {
        match t.path.as_slice() {
            [] => top = t.rows,
            [n] if n == "network" => network = t.rows,
            _ => {}
        }
    }
    assert!(!top.is_empty() && !network.is_empty());
    (top, network)
}

/// Setting every key to the default the page names changes nothing.
#[test]
fn documented_defaults_are_the_engines_defaults() {
    let (top, network) = top_and_network();
    let assign = |rows: &[Row]| -> Vec<String> {
        rows.iter()
            .filter(|r| !matches!(r.key.as_str(), "local" | "network" | "vni" | "dev"))
            .filter_map(|r| Some(format!("{} = {}", r.key, r.literal_default()?)))
            .collect()
    };
    let top_lines = assign(&top);
    let network_lines = assign(&network);
    assert!(
        top_lines.len() >= 10 && network_lines.len() >= 2,
        "{top_lines:?} {network_lines:?}"
    );
    let dir = scratch("defaults");
    let defaults = engine_config(&dir, &file(&[], &[])).unwrap();
    let written = engine_config(&dir, &file(&top_lines, &network_lines)).unwrap();
    assert_eq!(
        defaults, written,
        "a default in docs/config.md is not the engine's: {top_lines:?} {network_lines:?}"
    );
    // And the check can fail: a value that is not the default differs.
    let other = engine_config(&dir, &file(&["ageing = 301".into()], &[])).unwrap();
    assert_ne!(defaults, other);
}

/// Each documented integer range holds at both ends and is refused one past them.
#[test]
fn documented_ranges_are_the_parsers() {
    let (top, network) = top_and_network();
    let dir = scratch("ranges");
    let mut wrong = Vec::new();
    let mut checked = 0;
    for (rows, in_network) in [(&top, false), (&network, true)] {
        for row in rows.iter() {
            let Some((lo, hi)) = row.range() else {
                continue;
            };
            checked += 1;
            let text = |v: u64| {
                let line = vec![format!("{} = {v}", row.key)];
                let (t, n) = if in_network {
                    (vec![], line)
                } else {
                    (line, vec![])
                };
                // The VNI is set by `file` already; give the tested one in its place.
                file(&t, &n).replacen(
                    "vni = 1\n",
                    if row.key == "vni" { "" } else { "vni = 1\n" },
                    1,
                )
            };
            let mut expect = vec![(lo, true), (hi, true), (hi + 1, false)];
            // `0` named as a value of its own (ttl's "auto") is no out-of-range value.
            if lo > 0 && !row.values.contains("`0`") {
                expect.push((lo - 1, false));
            }
            for (v, accepted) in expect {
                let got = engine_config(&dir, &text(v));
                if got.is_ok() != accepted {
                    wrong.push(format!(
                        "`{} = {v}` should be {}: {got:?}",
                        row.key,
                        if accepted { "accepted" } else { "refused" }
                    ));
                }
            }
        }
    }
    assert!(checked >= 8, "only {checked} ranges found");
    assert!(
        wrong.is_empty(),
        "docs/config.md ranges:\n{}",
        wrong.join("\n")
    );
}

/// Every `toml` block in the book is a file `vxnet run --config` loads (key files it names are
/// made for the check), and the reference's full example sets every documented key.
#[test]
fn toml_examples_load() {
    let dir = scratch("examples");
    let mut loaded = 0;
    for page in book() {
        let all = lines(&page.text);
        let mut blocks: Vec<(usize, String)> = Vec::new();
        for l in &all {
            if l.fence == Some("toml") {
                match blocks.last_mut() {
                    Some((end, text)) if *end + 1 == l.no => {
                        *end = l.no;
                        text.push_str(l.text);
                        text.push('\n');
                    }
                    _ => blocks.push((l.no, format!("{}\n", l.text))),
                }
            }
        }
        for (end, text) in blocks {
            let mut text = text;
            for line in text.clone().lines() {
                let Some(value) = line.trim().strip_prefix("key_file = ") else {
                    continue;
                };
                let name = value.trim_matches('"');
                let key = dir.join(Path::new(name).file_name().unwrap());
                std::fs::write(&key, "ab".repeat(32)).unwrap();
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
                text = text.replace(line, &format!("key_file = {:?}", key.to_str().unwrap()));
            }
            let file = dir.join("example.toml");
            std::fs::write(&file, &text).unwrap();
            if let Err(e) = vxnet_dataplane::config::load_file(&file) {
                panic!("{} (block ending at line {end}): {e}\n{text}", page.rel);
            }
            loaded += 1;
        }
    }
    assert!(loaded >= 3, "only {loaded} TOML examples found");

    let page = page("docs/config.md");
    let example = page
        .text
        .split("## A file with every key")
        .nth(1)
        .and_then(|s| s.split("```toml\n").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("docs/config.md has a full example");
    let (top_part, network_part) = example.split_once("[[network]]").unwrap();
    let (top, network) = top_and_network();
    let sets = |part: &str, key: &str| part.lines().any(|l| l.starts_with(&format!("{key} = ")));
    for r in &top {
        assert!(
            r.key == "network" || sets(top_part, &r.key),
            "the full example does not set `{}`",
            r.key
        );
    }
    for r in &network {
        assert!(
            sets(network_part, &r.key),
            "the full example's networks do not set `{}`",
            r.key
        );
    }
}
