//! The store's TLS material checked before connecting, and TLS failures of a connection put
//! into words. A handshake that fails says only "transport error" once it has come through
//! tonic; an operator needs to know *which* certificate is wrong and how: expired (when), not
//! yet valid, a key that is not its certificate's, no client certificate where etcd asks for
//! one. What the files show is checked here, locally (a small DER reader: validity, subject
//! and public key of each certificate; the key's public half from ring); what only the server
//! knows (its own certificate, whether it wants a client certificate) is read from the
//! handshake's error.

use ring::signature::{self, KeyPair};

use crate::access::Tls;

/// Checks the CA and the client certificate and key at `now` (Unix seconds): one message
/// naming the certificate and the fault, or `Ok`. Material this reader does not understand is
/// left to the TLS library (it is no proof of a fault).
pub(crate) fn check(tls: &Tls, now: i64) -> Result<(), String> {
    for (i, cert) in pem_blocks(&tls.ca, "CERTIFICATE").iter().enumerate() {
        let what = if i == 0 {
            "the store's CA certificate (--store-ca)".to_owned()
        } else {
            format!("certificate {} of the store's CA file (--store-ca)", i + 1)
        };
        if let Some(c) = Cert::parse(cert) {
            c.check_validity(&what, now)?;
        }
    }
    let Some((cert_pem, key_pem)) = &tls.identity else {
        return Ok(());
    };
    let what = "the client certificate (--store-cert)";
    let Some(der) = pem_blocks(cert_pem, "CERTIFICATE").into_iter().next() else {
        return Err(format!("{what} holds no PEM certificate"));
    };
    let Some(cert) = Cert::parse(&der) else {
        return Ok(());
    };
    cert.check_validity(what, now)?;
    if let Some(public) = key_public(key_pem) {
        if public != cert.public_key {
            return Err(format!(
                "the client key (--store-key) does not match the client certificate (--store-cert, {}): they are not a pair",
                cert.subject
            ));
        }
    }
    Ok(())
}

const NO_CLIENT_CERT: &str = "etcd asks for a client certificate (it runs with --client-cert-auth) and none was given: give --store-cert FILE and --store-key FILE";

/// What a TLS failure in `chain` (an error and its sources, as text) means for an operator,
/// `None` when it is no TLS failure this knows. `client_cert`: whether one was presented.
pub(crate) fn explain(chain: &str, client_cert: bool) -> Option<String> {
    let lower = chain.to_ascii_lowercase();
    if lower.contains("certificaterequired") || lower.contains("certificate required") {
        return Some(NO_CLIENT_CERT.into());
    }
    // TLS 1.3: etcd (Go) checks the client's certificate after the handshake completed on the
    // client's side, and on refusal closes the connection; its alert does not survive the way
    // up through hyper and tonic. A close right after connecting is what that looks like; when
    // the client's first request races the close it is a broken pipe or a reset instead.
    let closed = [
        "connection closed",
        "operation was canceled",
        "broken pipe",
        "brokenpipe",
        "connectionreset",
        "connection reset",
    ];
    if closed.iter().any(|c| lower.contains(c)) {
        return Some(if client_cert {
            format!("etcd closed the TLS connection as it does when it refuses a client certificate (--store-cert): is it signed by a CA etcd trusts (its --trusted-ca-file), with extendedKeyUsage clientAuth? ({chain})")
        } else {
            format!("{NO_CLIENT_CERT} (etcd closed the TLS connection as it does without one)")
        });
    }
    if lower.contains("peer certificate") || lower.contains("invalidcertificate") {
        if lower.contains("expired") {
            let when = not_valid_after(chain)
                .map(|t| format!(" on {}", format_time(t)))
                .unwrap_or_default();
            return Some(format!(
                "etcd's server certificate expired{when}: renew it on the etcd server ({chain})"
            ));
        }
        if lower.contains("notvalidyet") || lower.contains("not valid yet") {
            return Some(format!(
                "etcd's server certificate is not valid yet (check the clocks): {chain}"
            ));
        }
        if lower.contains("unknownissuer") || lower.contains("unknown issuer") {
            return Some(format!(
                "etcd's server certificate is not signed by the store's CA (--store-ca): {chain}"
            ));
        }
        if lower.contains("notvalidforname") || lower.contains("not valid for name") {
            return Some(format!(
                "etcd's server certificate does not name the address connected to (its subjectAltName): {chain}"
            ));
        }
    }
    if lower.contains("alert") {
        // Go's TLS server answers a missing client certificate with bad_certificate.
        if !client_cert && lower.contains("badcertificate") {
            return Some(NO_CLIENT_CERT.into());
        }
        for (alert, meaning) in [
            ("certificateexpired", "has expired"),
            ("badcertificate", "is not acceptable to it"),
            ("unknownca", "is not signed by a CA it trusts"),
            ("certificaterevoked", "was revoked"),
        ] {
            if lower.contains(alert) {
                return Some(format!(
                    "etcd refused the client certificate (--store-cert): it {meaning} ({chain})"
                ));
            }
        }
    }
    None
}

/// The Unix time in rustls' "… is not valid after N …".
fn not_valid_after(chain: &str) -> Option<i64> {
    let (_, rest) = chain.split_once("not valid after ")?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The DER contents of every PEM block labelled `label` in `pem`.
fn pem_blocks(pem: &[u8], label: &str) -> Vec<Vec<u8>> {
    use base64::Engine;
    let text = String::from_utf8_lossy(pem);
    let (begin, end) = (
        format!("-----BEGIN {label}-----"),
        format!("-----END {label}-----"),
    );
    let mut out = Vec::new();
    let mut rest = text.as_ref();
    while let Some(start) = rest.find(&begin) {
        let body = &rest[start + begin.len()..];
        let Some(stop) = body.find(&end) else {
            break;
        };
        let b64: String = body[..stop]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(b64) {
            out.push(der);
        }
        rest = &body[stop + end.len()..];
    }
    out
}

/// One DER element: its tag, its contents and what follows it.
fn tlv(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = data.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;

/// What is checked of a certificate.
struct Cert {
    subject: String,
    not_before: (i64, String),
    not_after: (i64, String),
    /// The subjectPublicKey bits.
    public_key: Vec<u8>,
}

impl Cert {
    fn parse(der: &[u8]) -> Option<Cert> {
        let (SEQUENCE, cert, _) = tlv(der)? else {
            return None;
        };
        let (SEQUENCE, tbs, _) = tlv(cert)? else {
            return None;
        };
        let mut rest = tbs;
        let (tag, _, after) = tlv(rest)?;
        if tag == 0xa0 {
            rest = after; // version
        }
        let (_, _, rest) = tlv(rest)?; // serial
        let (_, _, rest) = tlv(rest)?; // signature algorithm
        let (_, _, rest) = tlv(rest)?; // issuer
        let (SEQUENCE, validity, rest) = tlv(rest)? else {
            return None;
        };
        let (_, subject, rest) = tlv(rest)?;
        let (SEQUENCE, spki, _) = tlv(rest)? else {
            return None;
        };
        let (t1, before, after) = tlv(validity)?;
        let (t2, not_after, _) = tlv(after)?;
        let (_, _, spki_rest) = tlv(spki)?; // algorithm
        let (0x03, bits, _) = tlv(spki_rest)? else {
            return None;
        };
        Some(Cert {
            subject: common_name(subject)
                .map_or_else(|| "no common name".to_owned(), |cn| format!("CN={cn}")),
            not_before: parse_time(t1, before)?,
            not_after: parse_time(t2, not_after)?,
            public_key: bits.get(1..)?.to_vec(),
        })
    }

    fn check_validity(&self, what: &str, now: i64) -> Result<(), String> {
        if now > self.not_after.0 {
            return Err(format!(
                "{what}, {}, expired on {}",
                self.subject, self.not_after.1
            ));
        }
        if now < self.not_before.0 {
            return Err(format!(
                "{what}, {}, is not valid before {} (check this host's clock)",
                self.subject, self.not_before.1
            ));
        }
        Ok(())
    }
}

/// The first commonName of a Name (SEQUENCE OF SET OF SEQUENCE { OID, value }).
fn common_name(mut name: &[u8]) -> Option<String> {
    const CN: &[u8] = &[0x55, 0x04, 0x03];
    while let Some((_, set, rest)) = tlv(name) {
        name = rest;
        let (_, attr, _) = tlv(set)?;
        let (0x06, oid, value) = tlv(attr)? else {
            continue;
        };
        if oid == CN {
            let (_, text, _) = tlv(value)?;
            return Some(String::from_utf8_lossy(text).into_owned());
        }
    }
    None
}

/// UTCTime (0x17, YYMMDDHHMMSSZ) or GeneralizedTime (0x18, YYYYMMDDHHMMSSZ): Unix seconds and
/// the time as text.
fn parse_time(tag: u8, bytes: &[u8]) -> Option<(i64, String)> {
    let text = std::str::from_utf8(bytes).ok()?.strip_suffix('Z')?;
    let digits = |s: &str| s.parse::<i64>().ok();
    let (year, rest) = match (tag, text.len()) {
        (0x17, 12) => {
            let yy = digits(&text[..2])?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &text[2..])
        }
        (0x18, 14) => (digits(&text[..4])?, &text[4..]),
        _ => return None,
    };
    let field = |i: usize| digits(&rest[i..i + 2]);
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    let unix = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    Some((unix, format_time(unix)))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD HH:MM:SS UTC` of Unix seconds (also `vxnet endpoints`' "since").
pub fn format_time(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    // The inverse of `days_from_civil`.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The public half of a PEM private key (PKCS#8, SEC1 EC or PKCS#1 RSA), as a certificate's
/// subjectPublicKey holds it; `None` for a key ring cannot read.
fn key_public(pem: &[u8]) -> Option<Vec<u8>> {
    let rng = ring::rand::SystemRandom::new();
    if let Some(der) = pem_blocks(pem, "PRIVATE KEY").into_iter().next() {
        for alg in [
            &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
        ] {
            if let Ok(k) = signature::EcdsaKeyPair::from_pkcs8(alg, &der, &rng) {
                return Some(k.public_key().as_ref().to_vec());
            }
        }
        if let Ok(k) = signature::RsaKeyPair::from_pkcs8(&der) {
            return Some(k.public_key().as_ref().to_vec());
        }
        if let Ok(k) = signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der) {
            return Some(k.public_key().as_ref().to_vec());
        }
        return None;
    }
    if let Some(der) = pem_blocks(pem, "EC PRIVATE KEY").into_iter().next() {
        // ECPrivateKey ::= SEQUENCE { version, privateKey, [0] parameters, [1] publicKey }
        let (SEQUENCE, mut fields, _) = tlv(&der)? else {
            return None;
        };
        while let Some((tag, value, rest)) = tlv(fields) {
            if tag == 0xa1 {
                let (0x03, bits, _) = tlv(value)? else {
                    return None;
                };
                return Some(bits.get(1..)?.to_vec());
            }
            fields = rest;
        }
        return None;
    }
    let der = pem_blocks(pem, "RSA PRIVATE KEY").into_iter().next()?;
    let k = signature::RsaKeyPair::from_der(&der).ok()?;
    Some(k.public_key().as_ref().to_vec())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        assert_eq!(parse_time(0x17, b"700101000000Z").unwrap().0, 0);
        let (t, text) = parse_time(0x18, b"20260107123456Z").unwrap();
        assert_eq!(text, "2026-01-07 12:34:56 UTC");
        assert_eq!(format_time(t), text);
        assert_eq!(
            parse_time(0x17, b"491231235959Z").unwrap().1,
            "2049-12-31 23:59:59 UTC"
        );
        assert_eq!(
            parse_time(0x17, b"500101000000Z").unwrap().1,
            "1950-01-01 00:00:00 UTC"
        );
        assert!(parse_time(0x17, b"5001010000Z").is_none());
    }

    #[test]
    fn rustls_expiry_messages_are_named() {
        let chain = "transport error: invalid peer certificate: certificate expired: verification time 1765000000 (UNIX), but certificate is not valid after 1700000000 (65000000 seconds ago)";
        let m = explain(chain, true).unwrap();
        assert!(
            m.starts_with("etcd's server certificate expired on 2023-11-14 22:13:20 UTC"),
            "{m}"
        );
        let m = explain("received fatal alert: CertificateRequired", false).unwrap();
        assert!(m.contains("--store-cert"), "{m}");
        let m = explain("hyper::Error(Canceled, \"connection closed\")", false).unwrap();
        assert!(m.starts_with(NO_CLIENT_CERT), "{m}");
        // Under load the client may write (its first request) after etcd closed: the same
        // refusal surfaces as a broken pipe or a reset instead of a closed connection.
        let chain = "grpc request error: code: 'Unknown error', message: \"transport error\", source: tonic::transport::Error(Transport, hyper::Error(Io, Custom { kind: BrokenPipe, error: \"stream closed because of a broken pipe\" }))";
        let m = explain(chain, false).unwrap();
        assert!(m.starts_with(NO_CLIENT_CERT), "{m}");
        let m = explain(
            "hyper::Error(Io, Os { code: 104, kind: ConnectionReset })",
            true,
        )
        .unwrap();
        assert!(m.contains("refuses a client certificate"), "{m}");
        assert_eq!(explain("connection refused", false), None);
    }
}
