//! Reading the book (README.md and docs/*.md) the way the docs tests need it: fenced code blocks,
//! prose lines, inline code, links, heading anchors and tables. A small Markdown reader for the
//! subset the book uses (CommonMark's fences, ATX headings, pipe tables), not a general parser.
#![allow(dead_code)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One page of the book: its path relative to the root and its text.
pub struct Page {
    pub rel: String,
    pub path: PathBuf,
    pub text: String,
}

/// README.md and every docs/*.md, in a stable order.
pub fn book() -> Vec<Page> {
    let root = root();
    let mut rels = vec!["README.md".to_owned()];
    let mut docs: Vec<String> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|e| {
            e.expect("readable docs/")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    docs.sort();
    rels.extend(docs);
    rels.into_iter()
        .map(|rel| {
            let path = root.join(&rel);
            let text = std::fs::read_to_string(&path).expect("readable page");
            Page { rel, path, text }
        })
        .collect()
}

pub fn page(rel: &str) -> Page {
    book()
        .into_iter()
        .find(|p| p.rel == rel)
        .unwrap_or_else(|| panic!("{rel} is missing"))
}

/// A line of a page: 1-based number, and whether it is inside a fenced code block (and which).
pub struct Line<'a> {
    pub no: usize,
    pub text: &'a str,
    /// `Some(info string)` inside a fenced block (the fence lines themselves are `None`).
    pub fence: Option<&'a str>,
    /// The nearest heading above (its text, without the #s).
    pub heading: &'a str,
}

pub fn lines(text: &str) -> Vec<Line<'_>> {
    let mut out = Vec::new();
    let mut fence: Option<(&str, &str)> = None; // (marker, info)
    let mut heading = "";
    for (i, l) in text.lines().enumerate() {
        let t = l.trim_start();
        let marker = if t.starts_with("```") {
            Some("```")
        } else if t.starts_with("~~~") {
            Some("~~~")
        } else {
            None
        };
        // A fence line itself is neither code nor prose.
        let fence_line = match (fence, marker) {
            (None, Some(m)) => {
                fence = Some((m, t.trim_start_matches(m).trim()));
                true
            }
            (Some((open, _)), Some(m))
                if m == open && t.trim_start_matches(m).trim().is_empty() =>
            {
                fence = None;
                true
            }
            _ => false,
        };
        if fence_line {
            out.push(Line {
                no: i + 1,
                text: l,
                fence: None,
                heading,
            });
            continue;
        }
        if fence.is_none() && t.starts_with('#') {
            heading = t.trim_start_matches('#').trim();
        }
        out.push(Line {
            no: i + 1,
            text: l,
            fence: fence.map(|(_, info)| info),
            heading,
        });
    }
    out
}

/// The anchors GitHub gives the page's headings: lower case, punctuation removed, spaces to `-`,
/// and `-1`, `-2`, … for repeats.
pub fn anchors(text: &str) -> HashSet<String> {
    let mut seen = HashSet::new();
    for l in lines(text) {
        let t = l.text.trim_start();
        if l.fence.is_some() || !t.starts_with('#') {
            continue;
        }
        let base = slug(t.trim_start_matches('#').trim());
        let mut anchor = base.clone();
        let mut n = 0;
        while seen.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        seen.insert(anchor);
    }
    seen
}

pub fn slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Inline code spans of a prose line (single backticks; double-backtick spans taken whole).
pub fn inline_code(line: &str) -> Vec<String> {
    let mut spans = Vec::new();
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        let ticks = rest[start..].chars().take_while(|&c| c == '`').count();
        let after = &rest[start + ticks..];
        let close = "`".repeat(ticks);
        match after.find(&close) {
            Some(end) => {
                spans.push(after[..end].trim().to_owned());
                rest = &after[end + ticks..];
            }
            None => break,
        }
    }
    spans
}

/// The line with its inline code spans blanked out (links inside code are not links).
pub fn without_code(line: &str) -> String {
    let mut out = String::new();
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
            out.push(' ');
        } else {
            out.push(if in_code { ' ' } else { c });
        }
    }
    out
}

/// Link targets of a prose line: `[text](target)`, `![alt](target)` and `[label]: target`.
pub fn link_targets(line: &str) -> Vec<String> {
    let line = without_code(line);
    let mut targets = Vec::new();
    let trimmed = line.trim_start();
    if trimmed.starts_with('[') {
        if let Some(pos) = trimmed.find("]: ") {
            targets.push(
                trimmed[pos + 3..]
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_owned(),
            );
        }
    }
    let mut rest = line.as_str();
    while let Some(pos) = rest.find("](") {
        let after = &rest[pos + 2..];
        // Balanced parentheses inside a target are rare; the book does not use them.
        let end = after.find(')').unwrap_or(after.len());
        let target = after[..end]
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_owned();
        targets.push(target.trim_matches(|c| c == '<' || c == '>').to_owned());
        rest = &after[end..];
    }
    targets
}

/// A pipe table: its header cells and rows, and the heading it sits under.
pub struct Table {
    pub heading: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub first_line: usize,
}

pub fn tables(text: &str) -> Vec<Table> {
    let all = lines(text);
    let mut out: Vec<Table> = Vec::new();
    let mut i = 0;
    while i < all.len() {
        let l = &all[i];
        let is_row = |l: &Line<'_>| l.fence.is_none() && l.text.trim_start().starts_with('|');
        if is_row(l) && i + 1 < all.len() && all[i + 1].text.contains("---") && is_row(&all[i + 1])
        {
            let mut table = Table {
                heading: l.heading.to_owned(),
                header: cells(l.text),
                rows: Vec::new(),
                first_line: l.no,
            };
            i += 2;
            while i < all.len() && is_row(&all[i]) {
                table.rows.push(cells(all[i].text));
                i += 1;
            }
            out.push(table);
        } else {
            i += 1;
        }
    }
    out
}

/// The cells of a table row; `\|` is a pipe inside a cell.
pub fn cells(row: &str) -> Vec<String> {
    let row = row.trim().trim_start_matches('|').trim_end_matches('|');
    let mut cells = vec![String::new()];
    let mut chars = row.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cells.last_mut().expect("one cell").push('|');
                chars.next();
            }
            '|' => cells.push(String::new()),
            c => cells.last_mut().expect("one cell").push(c),
        }
    }
    cells.into_iter().map(|c| c.trim().to_owned()).collect()
}

/// `` `x` `` → `x`; other text unchanged.
pub fn unquote(cell: &str) -> &str {
    let c = cell.trim();
    c.strip_prefix('`')
        .and_then(|c| c.strip_suffix('`'))
        .unwrap_or(c)
}
