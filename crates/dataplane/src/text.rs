//! Messages that quote untrusted input.

/// `message` with control characters escaped (`\r`, `\u{1b}`): an error that quotes what a
/// file or a client sent stays one line and cannot rewrite the terminal it is printed on.
pub(crate) fn printable(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for c in message.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}
