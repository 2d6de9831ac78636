//! `explain --keys FILE`: the SAs to decrypt a capture with, in either of the two forms users
//! already have, told apart by their first character:
//!
//! - **JSON**, as `vxnet sa show --json --keys` prints it: every object anywhere in the document
//!   that has `spi` and `key` is an SA (`src`, `dst` are shown when present; other fields are
//!   ignored, so the document may nest SAs under networks or peers). `spi` is a number or a
//!   `0x…`/decimal string; `key` is hex (with or without `0x`) of the 36-byte RFC 4106 key
//!   material: the AES-256 key, then the 4-byte salt.
//! - **Wireshark's `esp_sa` file** (its ESP SA table, `~/.config/wireshark/esp_sa`): one quoted
//!   CSV line per SA, `"IPv4","*","*","0x1234abcd","AES-GCM with 16 octet ICV [RFC4106]",
//!   "0x<key><salt>","NULL",""`. Only AES-GCM with a 16-octet ICV is what vxnet sends; other
//!   algorithms are refused by line, so a table kept for other tunnels says what it skipped.
//!
//! SAs are looked up by SPI alone: behind a NAT the outer addresses are not the SA's, and an SPI
//! with two SAs (two receivers picked the same one) is tried with each key until one verifies.

use std::net::IpAddr;
use std::path::Path;

use serde_json::Value;
use vxnet_encap::esp::keys::{SA_KEY_MATERIAL_LEN, UNSPECIFIED_VTEP};
use vxnet_encap::esp::{KeyEpoch, OpenKey, SaId, SaKeyMaterial, Spi};

use crate::explain::ExplainError;

/// The encryption column of an `esp_sa` line for the algorithm vxnet uses.
const WIRESHARK_AES_GCM_16: &str = "AES-GCM with 16 octet ICV [RFC4106]";

/// One SA of the keys file.
pub(crate) struct KeyEntry {
    pub key: OpenKey,
    pub src: Option<String>,
    pub dst: Option<String>,
    /// Where in the file it is: `SA 2` (JSON) or `line 3` (esp_sa).
    pub origin: String,
}

impl KeyEntry {
    /// `SA 2 (10.0.0.1 -> 10.0.0.2)` or `line 3`.
    pub(crate) fn describe(&self) -> String {
        match (&self.src, &self.dst) {
            (None, None) => self.origin.clone(),
            (src, dst) => format!(
                "{} ({} -> {})",
                self.origin,
                src.as_deref().unwrap_or("*"),
                dst.as_deref().unwrap_or("*")
            ),
        }
    }
}

/// The SAs of a keys file, by SPI.
pub(crate) struct KeyTable {
    pub path: String,
    pub entries: Vec<KeyEntry>,
}

impl KeyTable {
    pub(crate) fn for_spi(&self, spi: u32) -> impl Iterator<Item = &KeyEntry> {
        self.entries
            .iter()
            .filter(move |e| e.key.id().spi.get() == spi)
    }

    /// The table of one SA (the worked example's own).
    pub(crate) fn single(spi: Spi, material: SaKeyMaterial, origin: &str) -> Self {
        KeyTable {
            path: String::new(),
            entries: vec![entry(spi, material, None, None, origin.to_owned())],
        }
    }

    pub(crate) fn load(path: &Path) -> Result<Self, ExplainError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => ExplainError::NotFound { path: name.clone() },
            _ => ExplainError::Read {
                path: name.clone(),
                source,
            },
        })?;
        let bad = |detail: String| ExplainError::Keys {
            path: name.clone(),
            detail,
        };
        let entries = parse(&text).map_err(bad)?;
        if entries.is_empty() {
            return Err(bad(
                "no SAs in it: expected the JSON of `vxnet sa show --json --keys` (objects with \
                 \"spi\" and \"key\") or Wireshark esp_sa lines"
                    .into(),
            ));
        }
        Ok(KeyTable {
            path: name,
            entries,
        })
    }
}

fn entry(
    spi: Spi,
    material: SaKeyMaterial,
    src: Option<String>,
    dst: Option<String>,
    origin: String,
) -> KeyEntry {
    let parse_addr = |a: &Option<String>| a.as_deref().and_then(|a| a.parse::<IpAddr>().ok());
    let id = SaId {
        // The epoch and addresses only feed the derivation from a network key, which a key
        // given as material skips; they are kept for display.
        epoch: KeyEpoch(u32::from(spi.epoch_tag())),
        spi,
        src: parse_addr(&src).unwrap_or(UNSPECIFIED_VTEP),
        dst: parse_addr(&dst).unwrap_or(UNSPECIFIED_VTEP),
    };
    KeyEntry {
        key: OpenKey::from_material(id, material),
        src,
        dst,
        origin,
    }
}

/// Parses either format; errors name the SA or line at fault.
pub(crate) fn parse(text: &str) -> Result<Vec<KeyEntry>, String> {
    match text.trim_start().chars().next() {
        Some('{' | '[') => parse_json(text),
        _ => parse_esp_sa(text),
    }
}

fn parse_json(text: &str) -> Result<Vec<KeyEntry>, String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let mut found = Vec::new();
    collect_sas(&doc, &mut found);
    if found.is_empty() && has_spi_without_key(&doc) {
        return Err(
            "its SAs have no \"key\": print them with `vxnet sa show --json --keys` \
                    (--keys adds the key material)"
                .into(),
        );
    }
    found
        .into_iter()
        .enumerate()
        .map(|(i, sa)| {
            let origin = format!("SA {}", i + 1);
            let spi = json_spi(&sa["spi"]).map_err(|e| format!("{origin}: {e}"))?;
            let key = sa["key"]
                .as_str()
                .ok_or_else(|| format!("{origin}: \"key\" is not a hex string"))
                .and_then(|k| material(k).map_err(|e| format!("{origin}: {e}")))?;
            let text_of = |v: &Value| v.as_str().map(str::to_owned);
            Ok(entry(
                spi,
                key,
                text_of(&sa["src"]),
                text_of(&sa["dst"]),
                origin,
            ))
        })
        .collect()
}

/// Every object with both `spi` and `key`, depth first in document order.
fn collect_sas<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Object(map) => {
            if map.contains_key("spi") && map.contains_key("key") {
                out.push(value);
                return;
            }
            map.values().for_each(|v| collect_sas(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_sas(v, out)),
        _ => {}
    }
}

/// Whether an SA listing without `--keys` was given: objects with `spi` but no `key`.
fn has_spi_without_key(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.contains_key("spi") || map.values().any(has_spi_without_key),
        Value::Array(items) => items.iter().any(has_spi_without_key),
        _ => false,
    }
}

fn json_spi(value: &Value) -> Result<Spi, String> {
    let raw = match value {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => spi_text(s),
        _ => None,
    }
    .ok_or_else(|| format!("\"spi\" {value} is not a 32-bit number or 0x… hex string"))?;
    checked_spi(raw)
}

fn spi_text(text: &str) -> Option<u32> {
    let text = text.trim();
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

fn checked_spi(raw: u32) -> Result<Spi, String> {
    Spi::new(raw)
        .ok_or_else(|| format!("SPI {raw} is reserved (0-255): no SA has it (RFC 4303 §2.1)"))
}

/// Hex of the RFC 4106 key material, key then salt.
fn material(text: &str) -> Result<SaKeyMaterial, String> {
    let text = text.trim();
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    let bytes = hex::decode(digits).map_err(|e| format!("key is not hex: {e}"))?;
    let bytes: [u8; SA_KEY_MATERIAL_LEN] = bytes.as_slice().try_into().map_err(|_| {
        let len = bytes.len();
        match len {
            20 | 28 => format!(
                "key is {len} bytes: AES-{}-GCM key material; vxnet uses AES-256-GCM, \
                 {SA_KEY_MATERIAL_LEN} bytes (32-byte key, 4-byte salt)",
                (len - 4) * 8
            ),
            _ => format!(
                "key is {len} bytes, not {SA_KEY_MATERIAL_LEN} (RFC 4106 key material: 32-byte \
                 AES-256 key, then the 4-byte salt)"
            ),
        }
    })?;
    Ok(SaKeyMaterial::from_bytes(bytes))
}

fn parse_esp_sa(text: &str) -> Result<Vec<KeyEntry>, String> {
    let mut entries = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let origin = format!("line {}", i + 1);
        let fields = csv_fields(line).ok_or_else(|| {
            format!(
                "{origin}: neither JSON nor a Wireshark esp_sa line (\"IPv4\",\"*\",\"*\",\
                 \"0x…\",\"{WIRESHARK_AES_GCM_16}\",\"0x<key><salt>\",\"NULL\",\"\")"
            )
        })?;
        if fields.len() < 6 {
            return Err(format!(
                "{origin}: {} fields, an esp_sa line has at least 6 (protocol, source, \
                 destination, SPI, encryption, key)",
                fields.len()
            ));
        }
        if fields[4] != WIRESHARK_AES_GCM_16 {
            return Err(format!(
                "{origin}: encryption {:?} is not what vxnet sends ({WIRESHARK_AES_GCM_16:?})",
                fields[4]
            ));
        }
        let spi = spi_text(&fields[3])
            .ok_or_else(|| format!("{origin}: SPI {:?} is not a number", fields[3]))
            .and_then(|raw| checked_spi(raw).map_err(|e| format!("{origin}: {e}")))?;
        let key = material(&fields[5]).map_err(|e| format!("{origin}: {e}"))?;
        let addr = |s: &str| (s != "*" && !s.is_empty()).then(|| s.to_owned());
        entries.push(entry(spi, key, addr(&fields[1]), addr(&fields[2]), origin));
    }
    Ok(entries)
}

/// The fields of a Wireshark UAT line: each quoted, separated by commas (`\"` and `\\` escapes,
/// `\xNN` hex escapes as Wireshark writes them). `None` if the line is not of that form.
fn csv_fields(line: &str) -> Option<Vec<String>> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        if chars.next()? != '"' {
            return None;
        }
        let mut field = String::new();
        loop {
            match chars.next()? {
                '"' => break,
                '\\' => match chars.next()? {
                    'x' => {
                        let hi = chars.next()?.to_digit(16)?;
                        let lo = chars.next()?.to_digit(16)?;
                        field.push(char::from((hi * 16 + lo) as u8));
                    }
                    c => field.push(c),
                },
                c => field.push(c),
            }
        }
        fields.push(field);
        match chars.next() {
            None => return Some(fields),
            Some(',') => {}
            Some(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fa0a1a2a3";

    fn spis(entries: &[KeyEntry]) -> Vec<u32> {
        entries.iter().map(|e| e.key.id().spi.get()).collect()
    }

    #[test]
    fn json_of_sa_show_nested_anywhere_with_number_or_hex_spi() {
        let doc = format!(
            r#"{{"networks":[{{"name":"blue","sas":[
                {{"spi":"0x1234abcd","src":"10.0.0.1","dst":"10.0.0.2","key":"{KEY}","direction":"out"}},
                {{"spi":4660,"src":"10.0.0.2","dst":"10.0.0.1","key":"{}"}}]}}]}}"#,
            &KEY[2..]
        );
        let entries = parse(&doc).unwrap();
        assert_eq!(spis(&entries), [0x1234_abcd, 4660]);
        assert_eq!(entries[0].describe(), "SA 1 (10.0.0.1 -> 10.0.0.2)");
        assert_eq!(entries[0].key.key_material().to_hex(), KEY);
        assert_eq!(
            entries[0].key.id().src,
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
        // A top-level array works too.
        let array = format!(r#"[{{"spi":"300","key":"{KEY}"}}]"#);
        assert_eq!(spis(&parse(&array).unwrap()), [300]);
    }

    /// The rows `vxnet sa show --json --keys` prints (the engine's `SaRow`), verbatim in shape.
    #[test]
    fn sa_show_rows_as_the_engine_prints_them() {
        let rows = format!(
            r#"[{{"network":"blue","vni":42,"direction":"out","spi":"0x8000abcd",
                "src":"10.0.0.1","dst":"10.0.0.2","endpoint":"10.0.0.2:4500","epoch":2,
                "algorithm":"rfc4106(gcm(aes))","esn":true,"seq":5,"replay_window":0,
                "packets":4,"bytes":400,"worker":0,"key":"{KEY}"}}]"#
        );
        let entries = parse(&rows).unwrap();
        assert_eq!(spis(&entries), [0x8000_abcd]);
        assert_eq!(entries[0].describe(), "SA 1 (10.0.0.1 -> 10.0.0.2)");
        // The same listing without --keys says what to do.
        let without = rows.replace(&format!(r#","key":"{KEY}""#), "");
        assert!(parse(&without)
            .err()
            .unwrap()
            .contains("sa show --json --keys"));
    }

    #[test]
    fn wireshark_esp_sa_lines() {
        let text = format!(
            "# kept for tshark\n\n\"IPv4\",\"*\",\"*\",\"0x1234abcd\",\"{WIRESHARK_AES_GCM_16}\",\"{KEY}\",\"NULL\",\"\"\n\
             \"IPv4\",\"192.168.0.1\",\"192.168.0.2\",\"0x00000200\",\"{WIRESHARK_AES_GCM_16}\",\"{KEY}\",\"NULL\",\"\"\n"
        );
        let entries = parse(&text).unwrap();
        assert_eq!(spis(&entries), [0x1234_abcd, 0x200]);
        assert_eq!(entries[0].describe(), "line 3");
        assert_eq!(entries[1].describe(), "line 4 (192.168.0.1 -> 192.168.0.2)");
    }

    #[test]
    fn bad_files_name_the_fault() {
        let err = |text: &str| parse(text).err().unwrap_or_default();
        assert!(err("{\"spi\": ").starts_with("not valid JSON"));
        assert!(err(&format!(r#"{{"spi":"0x10","key":"{KEY}"}}"#)).contains("reserved"));
        assert!(err(r#"{"spi":"0x1000","key":"abcd"}"#).contains("key is 2 bytes, not 36"));
        assert!(err(r#"{"spi":"0x1000","key":"zz"}"#).contains("not hex"));
        assert!(err(r#"{"spi":true,"key":"00"}"#).contains("not a 32-bit number"));
        let aes128 = format!(r#"{{"spi":"0x1000","key":"{}"}}"#, &KEY[..42]);
        assert!(err(&aes128).contains("AES-128-GCM"), "{}", err(&aes128));
        assert!(err("garbage\n").starts_with("line 1: neither JSON nor"));
        let cbc = format!(
            "\"IPv4\",\"*\",\"*\",\"0x1000\",\"AES-CBC [RFC3602]\",\"{KEY}\",\"NULL\",\"\""
        );
        assert!(err(&cbc).contains("is not what vxnet sends"));
        assert!(err("\"IPv4\",\"*\"").contains("2 fields"));
        // No SA objects at all is for the caller to report; it parses as empty.
        assert!(parse("{\"sas\": []}").unwrap().is_empty());
        assert!(parse("# only a comment\n").unwrap().is_empty());
    }

    #[test]
    fn csv_escapes() {
        assert_eq!(
            csv_fields(r#""a\"b","\x41","""#).unwrap(),
            ["a\"b", "A", ""]
        );
        assert_eq!(csv_fields(r#""a" ,"b""#), None);
        assert_eq!(csv_fields(r#""unterminated"#), None);
    }
}
