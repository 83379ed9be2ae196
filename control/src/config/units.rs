//! Units: durations (`"100ms"`, `"2s"`, humantime) and byte sizes (`65536`, `"256KiB"`,
//! `"1MiB"`; binary units only), each with its range check against a default and bounds from
//! [`super::defaults`]. Keys that take a duration or a size go through [`Check::duration`] and
//! [`size_in`], so every such key reports the same way.

use std::time::Duration;

use super::defaults::{DEFAULT_KEEPALIVE, MAX_DURATION, MAX_KEEPALIVE, MIN_KEEPALIVE};
use super::diagnostics::{Check, ConfigError};
use super::raw::{RawDuration, RawSize};

impl Check {
    /// `keepalive` of a reverse leg: idle time before the first probe, within
    /// [`MIN_KEEPALIVE`]..=[`MAX_KEEPALIVE`], [`DEFAULT_KEEPALIVE`] when absent.
    pub(super) fn keepalive(
        &self,
        key: &str,
        raw: Option<&RawDuration>,
    ) -> Result<sallyport_dataplane::Keepalive, ConfigError> {
        let idle = self.duration(key, raw, DEFAULT_KEEPALIVE)?;
        if !(MIN_KEEPALIVE..=MAX_KEEPALIVE).contains(&idle) {
            return Err(self.fail(
                key,
                format!(
                    "must be between {MIN_KEEPALIVE:?} and {MAX_KEEPALIVE:?} (idle time before the first probe), got {idle:?}"
                ),
            ));
        }
        Ok(sallyport_dataplane::Keepalive { idle })
    }

    /// `raw` parsed as a duration, or `default` when the key is absent.
    pub(super) fn duration(
        &self,
        key: &str,
        raw: Option<&RawDuration>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match raw {
            None => Ok(default),
            Some(RawDuration(text)) => parse_duration(text).map_err(|r| self.fail(key, r)),
        }
    }
}

/// `raw` parsed as a size within `min..=max`, or `default` when the key is absent.
pub(super) fn size_in(
    check: &Check,
    key: &str,
    raw: Option<&RawSize>,
    default: usize,
    min: usize,
    max: usize,
) -> Result<usize, ConfigError> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    let bytes = parse_size(raw).map_err(|r| check.fail(key, r))?;
    match usize::try_from(bytes) {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(check.fail(
            key,
            format!(
                "must be between {} and {} ({min}..={max} bytes), got {bytes} bytes",
                format_size(min),
                format_size(max)
            ),
        )),
    }
}

/// A humantime duration (`"100ms"`, `"2s"`, `"1m 30s"`), greater than zero, at most [`MAX_DURATION`].
pub(super) fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let d = humantime::parse_duration(text).map_err(|error| UnitError::Duration {
        text: text.to_string(),
        error,
    })?;
    if d.is_zero() {
        return Err(UnitError::ZeroDuration(text.to_string()));
    }
    if d > MAX_DURATION {
        return Err(UnitError::LongDuration(text.to_string()));
    }
    Ok(d)
}

/// Bytes from an integer or a string: `"4096"`, `"4096B"`, `"256KiB"`, `"1MiB"`, `"1 GiB"`.
/// Decimal units (`KB`, `MB`) are refused as ambiguous.
pub(super) fn parse_size(raw: &RawSize) -> Result<u64, UnitError> {
    let text = match raw {
        RawSize::Bytes(n) => return Ok(*n),
        RawSize::Text(text) => text.trim(),
    };
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = (&text[..digits_end], text[digits_end..].trim());
    if digits.is_empty() {
        return Err(UnitError::Size(text.to_string()));
    }
    let unit_error = |decimal: bool| UnitError::Unit {
        unit: unit.to_string(),
        text: text.to_string(),
        decimal,
    };
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "k" | "kb" | "m" | "mb" | "g" | "gb" => return Err(unit_error(true)),
        _ => return Err(unit_error(false)),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| UnitError::SizeTooLarge(text.to_string()))
}

/// Why a duration or a size as written is not one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UnitError {
    #[error("invalid duration \"{text}\": {error}; write e.g. \"100ms\" or \"2s\"")]
    Duration {
        text: String,
        error: humantime::DurationError,
    },
    #[error("duration \"{0}\" is too long; the limit is 24h")]
    LongDuration(String),
    #[error("invalid size \"{0}\"; expected e.g. 65536, \"256KiB\" or \"1MiB\"")]
    Size(String),
    #[error("size \"{0}\" is too large")]
    SizeTooLarge(String),
    /// A unit that is not B, KiB, MiB or GiB; `decimal`: KB, MB, GB (ambiguous).
    #[error("{} unit \"{unit}\" in \"{text}\"; {}", if *.decimal { "ambiguous" } else { "unknown" }, if *.decimal { "use binary units KiB, MiB or GiB" } else { "use B, KiB, MiB or GiB" })]
    Unit {
        unit: String,
        text: String,
        decimal: bool,
    },
    #[error("duration \"{0}\" must be greater than zero")]
    ZeroDuration(String),
}

/// `1048576` → `1 MiB`, `1536` → `1536 B`.
pub(super) fn format_size(bytes: usize) -> String {
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes >= 1 << shift && bytes & ((1 << shift) - 1) == 0 {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    format!("{bytes} B")
}
