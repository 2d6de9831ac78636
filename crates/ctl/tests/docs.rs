#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The book (README.md and docs/) cannot rot: every relative link leads to a file (and heading)
//! that exists, every `vxnet …` command line it shows parses with the real command-line
//! definitions, the README keeps its promises to a newcomer, and no page tells the project's
//! development history. Placeholders in command lines follow the convention docs/README.md
//! states (its placeholder table is read from there).

mod docs_support;

use std::collections::HashMap;

use clap::CommandFactory;
use docs_support::*;

/// Every relative link in the book points at a file that exists, and an `#anchor` at a heading
/// of that page.
#[test]
fn relative_links_resolve() {
    let pages = book();
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in &pages {
        let dir = page.path.parent().unwrap();
        for l in lines(&page.text) {
            if l.fence.is_some() {
                continue;
            }
            for target in link_targets(l.text) {
                if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                checked += 1;
                let (file, anchor) = match target.split_once('#') {
                    Some((f, a)) => (f, Some(a)),
                    None => (target.as_str(), None),
                };
                let path = if file.is_empty() {
                    page.path.clone()
                } else {
                    dir.join(file)
                };
                let at = format!("{}:{}: {target}", page.rel, l.no);
                if !path.exists() {
                    broken.push(format!("{at}: no such file"));
                    continue;
                }
                let Some(anchor) = anchor else { continue };
                if path.extension().is_none_or(|e| e != "md") {
                    broken.push(format!("{at}: an anchor into a file that is not Markdown"));
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                if !anchors(&text).contains(anchor) {
                    broken.push(format!("{at}: no heading with this anchor"));
                }
            }
        }
    }
    assert!(
        checked > 30,
        "only {checked} links found: is the link reader broken?"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// The book is navigable: docs/README.md (the table of contents) links every page of docs/, and
/// the README links the table of contents.
#[test]
fn every_page_is_in_the_table_of_contents() {
    let toc = page("docs/README.md");
    let linked: Vec<String> = lines(&toc.text)
        .iter()
        .filter(|l| l.fence.is_none())
        .flat_map(|l| link_targets(l.text))
        .map(|t| t.split('#').next().unwrap_or("").to_owned())
        .collect();
    let missing: Vec<String> = book()
        .into_iter()
        .filter_map(|p| p.rel.strip_prefix("docs/").map(str::to_owned))
        .filter(|name| name != "README.md" && !linked.contains(name))
        .collect();
    assert!(
        missing.is_empty(),
        "pages not linked from the table of contents: add each to docs/README.md: {missing:?}"
    );
    assert!(page("README.md").text.contains("](docs/README.md)"));
}

/// Every Prometheus metric the book names is one the engine's source writes (`vxnet_…` in
/// inline code), so a renamed metric cannot leave a dashboard recipe wrong.
#[test]
fn metric_names_in_the_docs_exist() {
    let mut source = String::new();
    for dir in ["crates/dataplane/src", "crates/ctl/src"] {
        read_sources(&root().join(dir), &mut source);
    }
    let mut unknown = Vec::new();
    for page in book() {
        for l in lines(&page.text) {
            for span in inline_code(l.text) {
                let name: String = span
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let rest = &span[name.len()..];
                if name.starts_with("vxnet_")
                    && !rest.starts_with("::")
                    && !source.contains(&format!("\"{name}"))
                {
                    unknown.push(format!("{}:{}: {name}", page.rel, l.no));
                }
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "metrics the engine does not export:\n{}",
        unknown.join("\n")
    );
}

fn read_sources(dir: &std::path::Path, into: &mut String) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            read_sources(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
}

/// The link checker itself: a broken file, a broken anchor and a good one.
#[test]
fn the_link_reader_sees_links_and_anchors() {
    assert_eq!(
        link_targets("see [a](x.md#y), ![i](img.png) and `[not](code.md)`"),
        ["x.md#y", "img.png"]
    );
    assert_eq!(link_targets("[label]: other.md#z"), ["other.md#z"]);
    let a = anchors("# Top\n## `vxnet run` exits\n```sh\n# not a heading\n```\n## Top\n");
    assert!(a.contains("top") && a.contains("vxnet-run-exits") && a.contains("top-1"));
    assert!(!a.contains("not-a-heading"));
    assert_eq!(slug("Why ring for AES-GCM"), "why-ring-for-aes-gcm");
    assert_eq!(slug("`[[network]]` tables"), "network-tables");
}

/// Placeholder → the value command lines are checked with, from docs/README.md's table.
fn placeholders() -> HashMap<String, String> {
    let guide = page("docs/README.md");
    let table = tables(&guide.text)
        .into_iter()
        .find(|t| t.header.first().map(String::as_str) == Some("placeholder"))
        .expect("docs/README.md has the placeholder table");
    let map: HashMap<String, String> = table
        .rows
        .iter()
        .map(|r| (unquote(&r[0]).to_owned(), unquote(&r[2]).to_owned()))
        .collect();
    assert!(map.len() >= 10, "{map:?}");
    map
}

/// Shell words of one command line; `None` for an operator (`|`, `&&`, `;`, redirections).
fn shell_words(line: &str) -> Vec<Option<String>> {
    let mut words: Vec<Option<String>> = Vec::new();
    let mut cur: Option<String> = None;
    let mut chars = line.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.get_or_insert_with(String::new).push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                cur.get_or_insert_with(String::new);
            }
            (None, '\\') => {
                if let Some(n) = chars.next() {
                    cur.get_or_insert_with(String::new).push(n);
                }
            }
            (None, '#') if cur.is_none() => break, // a comment
            (None, c) if c.is_whitespace() => words.extend(cur.take().map(Some)),
            (None, '|' | '&' | ';' | '<' | '>') => {
                // `2>` is a redirection of stderr, not the word 2.
                if cur.as_deref() == Some("2") {
                    cur = None;
                }
                words.extend(cur.take().map(Some));
                words.push(None);
                while matches!(chars.peek(), Some('|' | '&' | '>')) {
                    chars.next();
                }
                if matches!(c, '<' | '>') {
                    // The redirection's target is no argument either.
                    words.push(Some(String::from("\0redirect")));
                }
            }
            (None, c) => cur.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(cur.take().map(Some));
    // Drop each redirection target (the word after the marker).
    let mut out = Vec::new();
    let mut skip_next = false;
    for w in words {
        match w {
            Some(m) if m == "\0redirect" => skip_next = true,
            Some(w) if skip_next => {
                skip_next = false;
                let _ = w;
            }
            other => out.push(other),
        }
    }
    out
}

/// The `vxnet` argument vectors of one shell line (`vxnet …`, `./target/release/vxnet …`,
/// `cargo run … -p vxnet -- …`), after environment assignments and `sudo`.
fn vxnet_commands(line: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for segment in shell_words(line).split(Option::is_none) {
        let mut words: Vec<String> = segment.iter().flatten().cloned().collect();
        while words
            .first()
            .is_some_and(|w| w == "sudo" || w == "exec" || (w.contains('=') && !w.starts_with('-')))
        {
            words.remove(0);
        }
        let Some(first) = words.first() else { continue };
        if first == "vxnet" || first.ends_with("/vxnet") {
            words[0] = "vxnet".into();
            out.push(words);
        } else if first == "cargo" && words.get(1).map(String::as_str) == Some("run") {
            let package = words.windows(2).any(|w| w[0] == "-p" && w[1] == "vxnet");
            if let (true, Some(dashes)) = (package, words.iter().position(|w| w == "--")) {
                let mut argv = vec!["vxnet".to_owned()];
                argv.extend(words[dashes + 1..].iter().cloned());
                out.push(argv);
            }
        }
    }
    out
}

/// Replaces each placeholder word (a run of capitals, digits and `_` standing alone or inside an
/// argument such as `etcd://IP:2379`) that the convention names.
fn substitute(arg: &str, placeholders: &HashMap<String, String>) -> String {
    let mut out = String::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        match placeholders.get(word.as_str()) {
            Some(v) => out.push_str(v),
            None => out.push_str(word),
        }
        word.clear();
    };
    for c in arg.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// A command line shown in the book, where it is, and whether it must be complete (code blocks)
/// or may name a command without its required arguments (inline code in prose).
struct Shown {
    at: String,
    argv: Vec<String>,
    complete: bool,
}

fn shown_commands() -> Vec<Shown> {
    let mut shown = Vec::new();
    for page in book() {
        // Generated from the definitions themselves, in clap's own usage syntax.
        if page.rel == "docs/cli.md" {
            continue;
        }
        let all = lines(&page.text);
        let mut i = 0;
        while i < all.len() {
            let l = &all[i];
            let at = format!("{}:{}", page.rel, l.no);
            match l.fence {
                Some("" | "sh" | "shell" | "bash" | "console") => {
                    // Join continuation lines.
                    let mut line = l.text.to_owned();
                    while line.ends_with('\\') && i + 1 < all.len() {
                        line.pop();
                        i += 1;
                        line.push(' ');
                        line.push_str(all[i].text);
                    }
                    for argv in vxnet_commands(&line) {
                        shown.push(Shown {
                            at: at.clone(),
                            argv,
                            complete: true,
                        });
                    }
                }
                Some(_) => {}
                None => {
                    for span in inline_code(l.text) {
                        if !(span == "vxnet" || span.starts_with("vxnet ")) {
                            continue;
                        }
                        // `vxnet …` abbreviates: check what comes before the ellipsis.
                        let span = span.split(['…']).next().unwrap_or("").replace("...", "");
                        for argv in vxnet_commands(&span) {
                            shown.push(Shown {
                                at: at.clone(),
                                argv,
                                complete: false,
                            });
                        }
                    }
                }
            }
            i += 1;
        }
    }
    shown
}

/// Every `vxnet …` command line in the README and docs/ parses with the real CLI.
#[test]
fn command_lines_parse_with_the_real_cli() {
    use clap::error::ErrorKind;
    let placeholders = placeholders();
    let shown = shown_commands();
    assert!(
        shown.iter().filter(|s| s.complete).count() > 40,
        "too few command lines found: is the reader broken?"
    );
    let mut wrong = Vec::new();
    for s in &shown {
        let argv: Vec<String> = s
            .argv
            .iter()
            .map(|a| substitute(a, &placeholders))
            .collect();
        let result = vxnet::cli::Cli::command().try_get_matches_from(&argv);
        let ok = match &result {
            Ok(_) => true,
            Err(e) => match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => true,
                ErrorKind::MissingRequiredArgument
                | ErrorKind::MissingSubcommand
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => !s.complete,
                _ => false,
            },
        };
        if !ok {
            let why = result.err().map(|e| e.to_string()).unwrap_or_default();
            let why = why.lines().next().unwrap_or("").to_owned();
            wrong.push(format!("{}: `{}`: {why}", s.at, s.argv.join(" ")));
        }
    }
    assert!(
        wrong.is_empty(),
        "command lines in the docs that the CLI refuses (placeholders: docs/README.md#conventions-in-this-book):\n{}",
        wrong.join("\n")
    );
}

/// The command reader: shells' operators, quotes, comments, continuation and placeholders.
#[test]
fn the_command_reader_reads_shell_lines() {
    let c = vxnet_commands(
        "VXNET_STATE_DIR=/x sudo vxnet stats --json | jq . && ./target/release/vxnet peers # c",
    );
    assert_eq!(
        c,
        [vec!["vxnet", "stats", "--json"], vec!["vxnet", "peers"]]
    );
    let c = vxnet_commands("vxnet completions bash > /etc/bash_completion.d/vxnet 2>/dev/null");
    assert_eq!(c, [vec!["vxnet", "completions", "bash"]]);
    let c = vxnet_commands("cargo run --release -p vxnet -- demo --json");
    assert_eq!(c, [vec!["vxnet", "demo", "--json"]]);
    let c = vxnet_commands("vxnet explain --keys 'my keys.json'");
    assert_eq!(c, [vec!["vxnet", "explain", "--keys", "my keys.json"]]);
    let p: HashMap<String, String> = [("IP", "10.0.0.2"), ("N", "3")]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
    assert_eq!(substitute("etcd://IP:2379", &p), "etcd://10.0.0.2:2379");
    assert_eq!(substitute("VNI", &p), "VNI");
    assert_eq!(substitute("IPv4", &p), "IPv4");
    // A wrong option really fails the check.
    let argv = ["vxnet", "run", "--no-such-option"];
    assert!(vxnet::cli::Cli::command()
        .try_get_matches_from(argv)
        .is_err());
}

fn section<'a>(text: &'a str, heading: &str) -> &'a str {
    let start = text
        .find(heading)
        .unwrap_or_else(|| panic!("no {heading:?}"));
    let body = &text[start + heading.len()..];
    &body[..body.find("\n## ").unwrap_or(body.len())]
}

/// The README's Quick start is exactly the two commands: the demo, and the test suite that CI
/// runs.
#[test]
fn readme_quick_start_is_the_two_commands() {
    let readme = page("README.md");
    let quick = section(&readme.text, "\n## Quick start\n");
    let commands: Vec<String> = lines(quick)
        .iter()
        .filter(|l| l.fence.is_some() && !l.text.trim().is_empty())
        .map(|l| l.text.trim().to_owned())
        .collect();
    assert_eq!(
        commands,
        ["cargo run --release -p vxnet -- demo", "./scripts/test.sh"]
    );
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    assert!(ci.contains("scripts/test.sh"), "{ci}");
    assert!(
        readme.text.lines().count() <= 150,
        "README.md is for a five-minute read; put the rest into docs/"
    );
}

/// The overhead diagram's brace spans exactly the outer Ethernet, IPv4, UDP and VXLAN boxes,
/// whose sizes add up to the 50 bytes it names.
#[test]
fn readme_overhead_brace_spans_the_outer_headers() {
    let readme = page("README.md");
    let all: Vec<&str> = readme.text.lines().collect();
    let at = all
        .iter()
        .position(|l| l.contains("50 bytes of overhead"))
        .expect("the overhead diagram");
    let brace = all[at].trim_end();
    let border = all[at + 1];
    let boxes = all[at + 3];
    // The fifth `+` closes the VXLAN box.
    let corners: Vec<usize> = border.match_indices('+').map(|(i, _)| i).collect();
    assert!(brace.starts_with('<') && brace.ends_with('>'), "{brace}");
    assert_eq!(brace.chars().count(), corners[4] + 1, "{brace}\n{border}");
    let sizes: u32 = boxes
        .split('|')
        .take(5)
        .filter_map(|c| c.split_whitespace().next()?.parse::<u32>().ok())
        .sum();
    assert_eq!(sizes, 50, "{boxes}");
}

/// User docs describe the product, not how it came to be.
#[test]
fn no_development_history_in_the_docs() {
    let mut found = Vec::new();
    for page in book() {
        for (no, line) in page.text.lines().enumerate() {
            let lower = line.to_lowercase();
            let words: Vec<&str> = lower
                .split(|c: char| !c.is_alphanumeric() && c != '#')
                .filter(|w| !w.is_empty())
                .collect();
            let history = words.windows(2).any(|w| {
                (matches!(w[0], "issue" | "session" | "sessions")
                    && w[1].trim_start_matches('#').parse::<u32>().is_ok())
                    || (w[0] == "this" && matches!(w[1], "session" | "week"))
                    || (w[0] == "commit"
                        && w[1].len() >= 7
                        && w[1].chars().all(|c| c.is_ascii_hexdigit()))
            }) || lower.contains("before the change")
                || lower.contains("in session");
            if history {
                found.push(format!("{}:{}: {line}", page.rel, no + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "development history in user docs:\n{}",
        found.join("\n")
    );
}
