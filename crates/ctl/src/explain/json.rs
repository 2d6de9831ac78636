//! `--json`: the same `Explanation` the text view draws, as one JSON document.

pub(super) fn to_string<T: serde::Serialize>(explanation: &T) -> String {
    // The model holds only strings, numbers and vectors, which serde_json always serialises.
    let mut out = serde_json::to_string_pretty(explanation)
        .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string());
    out.push('\n');
    out
}

/// Any serialisable value as one line of JSON (`explain --live --json`: one document per line).
pub(super) fn to_line<T: serde::Serialize>(value: &T) -> String {
    let mut out = serde_json::to_string(value)
        .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string());
    out.push('\n');
    out
}

/// Packet bytes as one lowercase hex string: compact, and what `xxd -r -p` reads back.
pub(super) fn hex<S: serde::Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    serializer.serialize_str(&text)
}

/// [`hex`] for an optional byte string (skipped when `None`).
pub(super) fn hex_opt<S: serde::Serializer>(
    bytes: &Option<Vec<u8>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match bytes {
        Some(bytes) => hex(bytes, serializer),
        None => serializer.serialize_none(),
    }
}
