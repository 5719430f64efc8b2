//! Durations in Kuma's forms: `500ms`, `30s`, `30m`, `24h`, `1d`, and sums like `1h30m`.

use std::{fmt, time::Duration};

/// A duration written the way Kuma writes it; keeps the text it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KumaDuration {
    text: String,
    value: Duration,
}

/// Message for a duration that cannot be read.
pub const DURATION_FORMAT: &str = "must be a duration such as 30s, 30m, 24h or 1d";

/// Longest duration accepted, in seconds: from 1970 to the end of 9999, the last instant an
/// X.509 time (and so any certificate) can hold. No lifetime longer than this can end in a
/// time a certificate or token can state, whenever it starts.
pub const MAX_SECS: u64 = 253_402_300_799;

impl KumaDuration {
    /// Parses `30s`, `1h30m`, `1d`, `250ms`; refuses more than [`MAX_SECS`].
    pub fn parse(text: &str) -> Result<Self, String> {
        let value = parse_duration(text).ok_or_else(|| format!("{DURATION_FORMAT} (got {text:?})"))?;
        if value.as_secs() > MAX_SECS {
            return Err(format!(
                "must be at most {MAX_SECS}s: no certificate can be valid past the year 9999 (got {text:?})"
            ));
        }
        Ok(KumaDuration { text: text.to_string(), value })
    }

    /// The duration itself.
    pub fn get(&self) -> Duration {
        self.value
    }

    /// A duration from a whole number of seconds, written in seconds.
    pub fn from_secs(secs: u64) -> Self {
        KumaDuration { text: format!("{secs}s"), value: Duration::from_secs(secs) }
    }
}

fn parse_duration(text: &str) -> Option<Duration> {
    const UNITS: [(&str, u64); 6] =
        [("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000), ("y", 365 * 86_400_000)];
    if text.is_empty() {
        return None;
    }
    let mut rest = text;
    let mut total_ms: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let number: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let (_, factor) = UNITS.iter().find(|(name, _)| *name == &rest[..unit_len])?;
        total_ms = total_ms.checked_add(number.checked_mul(*factor)?)?;
        rest = &rest[unit_len..];
    }
    Some(Duration::from_millis(total_ms))
}

impl fmt::Display for KumaDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl serde::Serialize for KumaDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for KumaDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <serde_json::Value as serde::Deserialize>::deserialize(d)?;
        match text {
            serde_json::Value::String(s) => KumaDuration::parse(&s).map_err(serde::de::Error::custom),
            other => Err(serde::de::Error::custom(format!("{DURATION_FORMAT} (got {other})"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kuma_forms() {
        let cases = [
            ("30s", Some(30_000)),
            ("30m", Some(1_800_000)),
            ("24h", Some(86_400_000)),
            ("1d", Some(86_400_000)),
            ("1h30m", Some(5_400_000)),
            ("250ms", Some(250)),
            ("10y", Some(10 * 365 * 86_400_000)),
            ("", None),
            ("30", None),
            ("s", None),
            ("3x", None),
            ("-5s", None),
            ("1.5h", None),
            ("99999999999999999999d", None),
        ];
        for (text, want) in cases {
            let got = parse_duration(text).map(|d| d.as_millis() as u64);
            assert_eq!(got, want, "{text:?}");
        }
    }

    #[test]
    fn keeps_text_and_reports_bad_input() {
        let d: KumaDuration = serde_json::from_str("\"1d\"").unwrap();
        assert_eq!(d.to_string(), "1d");
        assert_eq!(d.get(), Duration::from_secs(86_400));
        let err = serde_json::from_str::<KumaDuration>("5").unwrap_err().to_string();
        assert!(err.contains("must be a duration"), "{err}");
    }

    #[test]
    fn nothing_longer_than_an_x509_time_can_hold_is_accepted() {
        assert_eq!(KumaDuration::parse(&format!("{MAX_SECS}s")).unwrap().get().as_secs(), MAX_SECS);
        for text in [format!("{}s", MAX_SECS + 1), "9000y".into(), "18446744073709551ms1s".into()] {
            let err = KumaDuration::parse(&text).unwrap_err();
            assert!(err.starts_with("must be at most 253402300799s"), "{text}: {err}");
        }
    }
}
