//! The units of the command line, shared by the `mdbus` verbs and `mdbus bench`: durations
//! ([`DurationArg`], read by `humantime`) and sizes ([`parse_size`]: bytes, or a number and a
//! unit such as `64KiB` or `16MiB`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A duration on the command line, read by `humantime`: a number and a unit (`ns`, `us` or
/// `µs`, `ms`, `s`, `m`, `h`, ...), several summed (`1m 30s`). A bare number is refused (its
/// unit would be a guess) and so is a fraction (`1.5ms`: write `1500us`). Displayed in the
/// largest unit that keeps it exact, so a default reads back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurationArg(pub Duration);

/// Why a [`DurationArg`] could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DurationError(String);

impl FromStr for DurationArg {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, DurationError> {
        let text = s.trim();
        let digits = text.len() - text.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let (number, unit) = text.split_at(digits);
        if number.is_empty() {
            return Err(DurationError(
                "expected a whole number and a unit (ns, us, ms, s), e.g. 500us, 2ms, 1s".into(),
            ));
        }
        if unit.trim().is_empty() {
            return Err(DurationError(
                "no unit: add one of ns, us, ms, s, e.g. 500us".into(),
            ));
        }
        if unit.starts_with('.') {
            return Err(DurationError(
                "a whole number is expected: use a smaller unit, e.g. 1500us for 1.5ms".into(),
            ));
        }
        match humantime::parse_duration(text) {
            // Within u64 nanoseconds (584 years), so that no deadline computed from it
            // overflows.
            Ok(d) if d.as_nanos() > u128::from(u64::MAX) => Err(DurationError("too large".into())),
            Ok(d) => Ok(DurationArg(d)),
            Err(humantime::DurationError::NumberOverflow) => Err(DurationError("too large".into())),
            Err(humantime::DurationError::UnknownUnit { unit, .. }) => Err(DurationError(format!(
                "unknown unit {unit:?}: expected ns, us, ms, s, m or h"
            ))),
            Err(e) => Err(DurationError(e.to_string())),
        }
    }
}

impl DurationArg {
    /// The duration in nanoseconds (it fits: [`DurationArg::from_str`] refuses more).
    pub fn as_nanos_u64(&self) -> u64 {
        u64::try_from(self.0.as_nanos()).unwrap_or(u64::MAX)
    }
}

impl fmt::Display for DurationArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.0.as_nanos();
        let (per_unit, unit) = [(1_000_000_000, "s"), (1_000_000, "ms"), (1_000, "us")]
            .into_iter()
            .find(|&(per_unit, _)| ns.is_multiple_of(per_unit))
            .unwrap_or((1, "ns"));
        write!(f, "{}{unit}", ns / per_unit)
    }
}

/// A size on the command line: a whole number of bytes (`65536`) or of a unit, `B`, `KiB`,
/// `MiB`, `GiB`, `TiB` (powers of 1024) or `kB`, `MB`, `GB` (powers of 1000), case aside:
/// `64KiB`, `16 MiB`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let text = s.trim();
    let digits = text.len() - text.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (number, unit) = text.split_at(digits);
    if number.is_empty() {
        return Err(format!(
            "{text:?}: expected a whole number of bytes, or one of KiB, MiB, GiB (e.g. 64KiB, 16MiB)"
        ));
    }
    let per_unit: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        u if u.starts_with('.') => {
            return Err(format!(
                "{text:?}: a whole number is expected: use a smaller unit (e.g. 1536KiB for 1.5MiB)"
            ));
        }
        _ => {
            return Err(format!(
                "{text:?}: unknown unit: expected B, KiB, MiB, GiB, TiB, kB, MB or GB"
            ));
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(per_unit))
        .ok_or_else(|| format!("{text:?}: too large"))
}

/// A [`parse_size`] that fits a `usize`.
pub fn parse_size_usize(s: &str) -> Result<usize, String> {
    let n = parse_size(s)?;
    usize::try_from(n).map_err(|_| format!("{s:?}: too large"))
}

/// A size written as `n` bytes, in the largest binary unit that keeps it exact.
pub fn format_size(n: u64) -> String {
    [
        (1u64 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ]
    .into_iter()
    .find(|&(per, _)| n != 0 && n.is_multiple_of(per))
    .map_or_else(|| n.to_string(), |(per, unit)| format!("{}{unit}", n / per))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dur(s: &str) -> Result<Duration, DurationError> {
        s.parse::<DurationArg>().map(|d| d.0)
    }

    #[test]
    fn durations_parse_in_every_unit() {
        assert_eq!(dur("250ns"), Ok(Duration::from_nanos(250)));
        assert_eq!(dur("500us"), Ok(Duration::from_micros(500)));
        assert_eq!(dur("500µs"), Ok(Duration::from_micros(500)));
        assert_eq!(dur("2ms"), Ok(Duration::from_millis(2)));
        assert_eq!(dur("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(dur(" 3 ms "), Ok(Duration::from_millis(3)));
        assert_eq!(dur("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_durations_say_why() {
        for (text, why) in [
            ("", "whole number and a unit"),
            ("ms", "whole number and a unit"),
            ("-1ms", "whole number and a unit"),
            ("5", "no unit"),
            ("1.5ms", "smaller unit"),
            ("5 parsecs", "unknown unit"),
            ("2 parsecs", "unknown unit"),
            ("99999999999999999999ns", "too large"),
            ("18446744073710s", "too large"),
        ] {
            let e = dur(text).expect_err(text).to_string();
            assert!(e.contains(why), "{text:?}: {e}");
        }
    }

    #[test]
    fn durations_display_exactly_and_read_back() {
        for (d, text) in [
            (Duration::ZERO, "0s"),
            (Duration::from_secs(3), "3s"),
            (Duration::from_millis(1), "1ms"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_micros(250), "250us"),
            (Duration::from_nanos(1_000_001), "1000001ns"),
        ] {
            assert_eq!(DurationArg(d).to_string(), text);
            assert_eq!(dur(text), Ok(d));
        }
    }

    #[test]
    fn sizes_take_units_and_never_wrap() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("16 MiB"), Ok(16 << 20));
        assert_eq!(parse_size("1gib"), Ok(1 << 30));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        for (bad, why) in [
            ("", "expected a whole number"),
            ("MiB", "expected a whole number"),
            ("-1", "expected a whole number"),
            ("1.5MiB", "smaller unit"),
            ("3 parsecs", "unknown unit"),
            ("99999999999999999999", "too large"),
            ("17179869184GiB", "too large"),
        ] {
            let e = parse_size(bad).expect_err(bad);
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        assert_eq!(format_size(16 << 20), "16MiB");
        assert_eq!(format_size(1000), "1000");
        assert_eq!(format_size(0), "0");
    }
}
