//! The configuration reference (docs/config.md) as a man page, vxnet.toml(5): one source for the
//! book and the page. Converts the Markdown that page uses (headings, paragraphs, bullet lists,
//! pipe tables, fenced code, inline code, emphasis and links) into roff; not a general Markdown
//! renderer, but anything else comes out as plain text rather than being lost.

use roff::{bold, italic, roman, Inline, Roff};

/// `text` (Markdown) as a section-5 man page named `name`; its first heading becomes NAME.
pub(crate) fn page(name: &str, summary: &str, source: &str, text: &str) -> String {
    let mut doc = Roff::new();
    let title = name.to_uppercase();
    doc.control(
        "TH",
        [title.as_str(), "5", super::NO_DATE, source, "vxnet manual"],
    );
    doc.control("SH", ["NAME"]);
    doc.text([roman(format!("{name} - {summary}"))]);
    let mut lines = text.lines().peekable();
    let mut paragraph: Vec<String> = Vec::new();
    let flush = |doc: &mut Roff, paragraph: &mut Vec<String>| {
        if !paragraph.is_empty() {
            doc.control("PP", []);
            doc.text(inline(&paragraph.join(" ")));
            paragraph.clear();
        }
    };
    while let Some(line) = lines.next() {
        let t = line.trim();
        if t.starts_with("# ") {
            continue; // the page title: NAME says it already
        }
        if let Some(h) = t.strip_prefix("## ") {
            flush(&mut doc, &mut paragraph);
            doc.control("SH", [plain(h).to_uppercase().as_str()]);
        } else if let Some(h) = t.strip_prefix("### ") {
            flush(&mut doc, &mut paragraph);
            doc.control("SS", [plain(h).as_str()]);
        } else if t.starts_with("```") {
            flush(&mut doc, &mut paragraph);
            doc.control("RS", ["4"]).control("nf", []);
            for code in lines.by_ref() {
                if code.trim_start().starts_with("```") {
                    break;
                }
                doc.text([roman(code)]);
            }
            doc.control("fi", []).control("RE", []);
        } else if let Some(item) = t.strip_prefix("- ") {
            flush(&mut doc, &mut paragraph);
            // A list item runs on over its indented continuation lines.
            let mut text = item.to_owned();
            while let Some(next) = lines.peek() {
                if next.starts_with("  ") && !next.trim().is_empty() {
                    text.push(' ');
                    text.push_str(next.trim());
                    lines.next();
                } else {
                    break;
                }
            }
            doc.control("IP", ["\\(bu", "2"]);
            doc.text(inline(&text));
        } else if t.starts_with('|') {
            flush(&mut doc, &mut paragraph);
            let header = cells(t);
            lines.next(); // the |---| line
            while let Some(row) = lines.next_if(|l| l.trim().starts_with('|')) {
                table_row(&mut doc, &header, &cells(row));
            }
        } else if t.is_empty() {
            flush(&mut doc, &mut paragraph);
        } else {
            paragraph.push(t.to_owned());
        }
    }
    flush(&mut doc, &mut paragraph);
    doc.render()
}

/// A table row as a tagged paragraph: the first cell as the tag, the others below it, each
/// named by its column (`type: integer`), the last (the meaning) as text.
fn table_row(doc: &mut Roff, header: &[String], row: &[String]) {
    doc.control("TP", []);
    doc.text(inline(&row[0]));
    let mut body: Vec<Inline> = Vec::new();
    let last = row.len().saturating_sub(1);
    for (i, cell) in row.iter().enumerate().skip(1) {
        if i == last && i > 1 {
            if !body.is_empty() {
                body.push(roman(". "));
            }
            body.extend(inline(cell));
        } else {
            if !body.is_empty() {
                body.push(roman("; "));
            }
            let column = header.get(i).map(String::as_str).unwrap_or("");
            body.push(italic(format!("{column}: ")));
            body.extend(inline(cell));
        }
    }
    doc.text(body);
}

fn cells(row: &str) -> Vec<String> {
    row.trim()
        .trim_start_matches('|')
        .trim_end_matches('|')
        .split('|')
        .map(|c| c.trim().to_owned())
        .collect()
}

/// Markdown inline markup as roff: `code` and **strong** bold, *emphasis* italic, links as
/// their text.
fn inline(text: &str) -> Vec<Inline> {
    let text = unlink(text);
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while !rest.is_empty() {
        let next = ["`", "**", "*"]
            .iter()
            .filter_map(|m| rest.find(m).map(|i| (i, *m)))
            .min_by_key(|(i, m)| (*i, std::cmp::Reverse(m.len())));
        let Some((start, marker)) = next else {
            out.push(roman(rest));
            break;
        };
        let after = &rest[start + marker.len()..];
        let Some(end) = after.find(marker) else {
            out.push(roman(rest));
            break;
        };
        if start > 0 {
            out.push(roman(&rest[..start]));
        }
        let inner = &after[..end];
        out.push(if marker == "*" {
            italic(inner)
        } else {
            bold(inner)
        });
        rest = &after[end + marker.len()..];
    }
    out
}

/// `[text](target)` → `text`.
fn unlink(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        let Some(mid) = rest[open..].find("](") else {
            break;
        };
        let Some(close) = rest[open + mid..].find(')') else {
            break;
        };
        out.push_str(&rest[..open]);
        out.push_str(&rest[open + 1..open + mid]);
        rest = &rest[open + mid + close + 1..];
    }
    out.push_str(rest);
    out
}

/// Heading text without inline markup.
fn plain(text: &str) -> String {
    unlink(text).replace(['`', '*'], "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_becomes_roff() {
        let md = "# Title\n\nSome `code`, **bold** and *it* with a [link](x.md#y).\n\n\
                  ## Keys\n\n| key | type | meaning |\n|---|---|---|\n| `port` | integer | The port. |\n\n\
                  - an item\n  continued\n\n```toml\nport = 1\n.dot = 2\n```\n";
        let roff = page("vxnet.toml", "the file", "vxnet 1.0", md);
        assert!(
            roff.contains(".TH VXNET.TOML 5 \"\" \"vxnet 1.0\" \"vxnet manual\""),
            "{roff}"
        );
        assert!(roff.contains("\\fBcode\\fR"), "{roff}");
        assert!(roff.contains("\\fIit\\fR with a link."), "{roff}");
        assert!(!roff.contains("x.md"), "{roff}");
        assert!(roff.contains(".SH KEYS"), "{roff}");
        assert!(
            roff.contains(".TP\n\\fBport\\fR\n\\fItype: \\fRinteger. The port."),
            "{roff}"
        );
        assert!(roff.contains("an item continued"), "{roff}");
        assert!(roff.contains(".nf\nport = 1\n\\&.dot = 2\n.fi"), "{roff}");
    }
}
