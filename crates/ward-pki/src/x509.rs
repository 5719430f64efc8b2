//! Helpers shared by the certificate modules: times, serials, hashes, PEM.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use rand::RngCore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::time::ASN1Time;

/// Converts a chrono instant to the `time` type rcgen uses, rounding up to the next whole second.
pub(crate) fn to_offset_ceil(at: DateTime<Utc>) -> time::OffsetDateTime {
    let secs = at.timestamp() + i64::from(at.timestamp_subsec_nanos() > 0);
    time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// Converts a chrono instant to the `time` type rcgen uses, truncating to the whole second.
pub(crate) fn to_offset_floor(at: DateTime<Utc>) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(at.timestamp()).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// Converts an X.509 time to a chrono instant.
pub(crate) fn from_asn1(at: ASN1Time) -> DateTime<Utc> {
    DateTime::from_timestamp(at.timestamp(), 0).unwrap_or(DateTime::UNIX_EPOCH)
}

/// The last instant an X.509 time can express: 9999-12-31T23:59:59Z (RFC 5280, 4.1.2.5).
pub(crate) fn latest() -> DateTime<Utc> {
    DateTime::from_timestamp(253_402_300_799, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `at + duration` when it is no later than [`latest`]: a certificate can end then.
pub(crate) fn checked_end(at: DateTime<Utc>, duration: Duration) -> Option<DateTime<Utc>> {
    TimeDelta::from_std(duration).ok().and_then(|d| at.checked_add_signed(d)).filter(|end| *end <= latest())
}

/// `at + duration`, saturating at the largest representable instant.
pub(crate) fn add(at: DateTime<Utc>, duration: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(duration).ok().and_then(|d| at.checked_add_signed(d)).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// A random positive 127-bit certificate serial number (16 bytes, top bit clear, second bit set).
pub(crate) fn random_serial() -> [u8; 16] {
    let mut serial = [0u8; 16];
    rand::rng().fill_bytes(&mut serial);
    serial[0] = (serial[0] & 0x7f) | 0x40;
    serial
}

/// Lowercase hex without separators.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Lowercase hex SHA-256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
}

/// The first `CERTIFICATE` block of a PEM string, or the reason there is none.
pub(crate) fn cert_der_from_pem(pem: &str) -> Result<CertificateDer<'static>, String> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => "no PEM CERTIFICATE block found".to_string(),
        other => format!("invalid PEM: {other}"),
    })
}

/// Encodes DER as a PEM block with the given label, 64 characters a line.
pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Formats an instant as RFC 3339 with second precision, e.g. `2020-01-01T00:00:00Z`.
pub(crate) fn rfc3339(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The number of significant bits of a big-endian unsigned integer.
pub(crate) fn bit_len(bytes: &[u8]) -> usize {
    match bytes.iter().position(|&b| b != 0) {
        Some(i) => (bytes.len() - i - 1) * 8 + (8 - bytes[i].leading_zeros() as usize),
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_len_counts_significant_bits() {
        for (bytes, bits) in [
            (&[][..], 0),
            (&[0, 0][..], 0),
            (&[1][..], 1),
            (&[0, 0x80][..], 8),
            (&[0x01, 0, 0, 0, 0, 0, 0, 0][..], 57),
            (&[0x40; 16][..], 127),
        ] {
            assert_eq!(bit_len(bytes), bits, "{bytes:?}");
        }
    }

    #[test]
    fn random_serials_are_positive_127_bit_and_differ() {
        let a = random_serial();
        let b = random_serial();
        assert_ne!(a, b);
        assert_eq!(bit_len(&a), 127);
        assert_eq!(a[0] & 0x80, 0);
    }

    #[test]
    fn time_conversions_round_in_the_stated_direction() {
        let at = DateTime::from_timestamp(100, 500_000_000).unwrap();
        assert_eq!(to_offset_ceil(at).unix_timestamp(), 101);
        assert_eq!(to_offset_floor(at).unix_timestamp(), 100);
        assert_eq!(rfc3339(&DateTime::from_timestamp(1_577_836_800, 0).unwrap()), "2020-01-01T00:00:00Z");
    }

    #[test]
    fn a_certificate_end_past_9999_is_refused() {
        assert_eq!(rfc3339(&latest()), "9999-12-31T23:59:59Z");
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let to_latest = (latest() - now).to_std().unwrap();
        assert_eq!(checked_end(now, to_latest), Some(latest()));
        for too_long in [to_latest + Duration::from_secs(1), Duration::from_secs(70_000_000 * 3600), Duration::MAX] {
            assert_eq!(checked_end(now, too_long), None, "{too_long:?}");
        }
    }
}
