//! Sizes (`"1MiB"`, `"10KB"`, bytes) and durations (`"250ms"`, `"30s"`, `"5m"`, `"1h"`)
//! as written in `proxy.toml`, and their inverse for messages and `patchgate check`.

use std::time::Duration;

/// Longest accepted duration. Longer values are almost certainly typos, and keeping them
/// small means `Instant + duration` can never overflow anywhere in the proxy.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

const SIZE_UNITS: &[(&str, u64)] = &[
    ("B", 1),
    ("KB", 1_000),
    ("kB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
];

const SIZE_HINT: &str = "write a whole number with a unit such as \"512KiB\", \"1MiB\", \"2GiB\", \
                         \"10KB\" or \"100B\", or an integer number of bytes";

/// Parses a size: a whole number followed by `B`, `KB`/`MB`/`GB`/`TB` (powers of 1000) or
/// `KiB`/`MiB`/`GiB`/`TiB` (powers of 1024), or a bare number of bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, unit) = split_number(t);
    if t.starts_with('-') {
        return Err(format!("a size cannot be negative; {SIZE_HINT}"));
    }
    if digits.is_empty() {
        return Err(format!("expected a size, found {s:?}; {SIZE_HINT}"));
    }
    if unit.starts_with('.') || unit.starts_with(',') {
        return Err(format!(
            "fractions are not supported, found {s:?}; use a smaller unit, e.g. \"1536KiB\""
        ));
    }
    let unit = unit.trim_start();
    let factor = if unit.is_empty() {
        1
    } else {
        match SIZE_UNITS.iter().find(|(name, _)| *name == unit) {
            Some((_, factor)) => *factor,
            None => return Err(format!("unknown size unit {unit:?} in {s:?}; {SIZE_HINT}")),
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .ok_or_else(|| format!("size {s:?} is too large; the maximum is {} bytes", u64::MAX))
}

/// Parses a duration: a whole number followed by `ms`, `s`, `m` or `h`, at most one year.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    const HINT: &str = "write a whole number with a unit: \"250ms\", \"30s\", \"5m\" or \"1h\"";
    let t = s.trim();
    if t.is_empty() {
        return Err(format!("expected a duration, found an empty string; {HINT}"));
    }
    if t.starts_with('-') {
        return Err(format!("a duration cannot be negative, found {s:?}; {HINT}"));
    }
    let (digits, unit) = split_number(t);
    if digits.is_empty() {
        return Err(format!("expected a duration, found {s:?}; {HINT}"));
    }
    if unit.starts_with('.') || unit.starts_with(',') {
        return Err(format!(
            "fractions are not supported, found {s:?}; use a smaller unit, e.g. \"1500ms\""
        ));
    }
    let millis_per_unit: u64 = match unit.trim_start() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "" => return Err(format!("the duration {s:?} has no unit; {HINT}")),
        other => return Err(format!("unknown duration unit {other:?} in {s:?}; {HINT}")),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(millis_per_unit))
        .map(Duration::from_millis)
        .filter(|d| *d <= MAX_DURATION)
        .ok_or_else(|| format!("the duration {s:?} is too long; the maximum is \"8760h\" (one year)"))
}

/// Splits `"123KiB"` into `("123", "KiB")`; the number part is ASCII digits only.
fn split_number(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s.split_at(end)
}

/// The shortest exact spelling `parse_duration` accepts (`"5m"`, `"250ms"`); sub-millisecond
/// durations fall back to `Debug`.
pub fn format_duration(d: Duration) -> String {
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        return format!("{d:?}");
    }
    let ms = d.as_millis();
    match ms {
        0 => "0s".to_owned(),
        _ if ms.is_multiple_of(3_600_000) => format!("{}h", ms / 3_600_000),
        _ if ms.is_multiple_of(60_000) => format!("{}m", ms / 60_000),
        _ if ms.is_multiple_of(1_000) => format!("{}s", ms / 1_000),
        _ => format!("{ms}ms"),
    }
}

/// The largest binary unit that divides `bytes` exactly (`"8MiB"`), else bytes (`"1000B"`).
pub fn format_size(bytes: u64) -> String {
    for (name, factor) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if bytes >= factor && bytes.is_multiple_of(factor) {
            return format!("{}{name}", bytes / factor);
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn sizes_accept_binary_decimal_and_plain_bytes() {
        let table: &[(&str, u64)] = &[
            ("0", 0),
            ("100", 100),
            ("100B", 100),
            ("512KiB", 512 * 1024),
            ("1MiB", 1 << 20),
            ("2GiB", 2 << 30),
            ("1TiB", 1 << 40),
            ("10KB", 10_000),
            ("10kB", 10_000),
            ("1MB", 1_000_000),
            ("1GB", 1_000_000_000),
            ("1 MiB", 1 << 20),
            (" 8MiB ", 8 << 20),
            ("18446744073709551615", u64::MAX),
            ("18446744073709551615B", u64::MAX),
        ];
        for (input, expected) in table {
            assert_eq!(parse_size(input), Ok(*expected), "{input:?}");
        }
    }

    #[test]
    fn sizes_reject_junk_negatives_fractions_and_overflow() {
        let table: &[(&str, &str)] = &[
            ("", "expected a size"),
            ("MiB", "expected a size"),
            ("-1", "cannot be negative"),
            ("-1MiB", "cannot be negative"),
            ("+1", "expected a size"),
            ("1.5MiB", "fractions are not supported"),
            ("1mib", "unknown size unit \"mib\""),
            ("1Mb", "unknown size unit \"Mb\""),
            ("1 MiB B", "unknown size unit"),
            ("1_000", "unknown size unit \"_000\""),
            ("0x10", "unknown size unit \"x10\""),
            ("18446744073709551616", "too large"),
            ("17179869184GiB", "too large"),
            ("99999999999999999999999999TiB", "too large"),
            ("１MiB", "expected a size"),
        ];
        for (input, needle) in table {
            let err = parse_size(input).unwrap_err();
            assert!(err.contains(needle), "{input:?}: {err}");
        }
    }

    #[test]
    fn durations_accept_ms_s_m_h() {
        let table: &[(&str, Duration)] = &[
            ("0s", Duration::ZERO),
            ("0ms", Duration::ZERO),
            ("250ms", Duration::from_millis(250)),
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("1h", Duration::from_secs(3600)),
            (" 10 s ", Duration::from_secs(10)),
            ("8760h", Duration::from_secs(365 * 24 * 3600)),
        ];
        for (input, expected) in table {
            assert_eq!(parse_duration(input), Ok(*expected), "{input:?}");
        }
    }

    #[test]
    fn durations_reject_junk_negatives_missing_units_and_overflow() {
        let table: &[(&str, &str)] = &[
            ("", "empty string"),
            ("   ", "empty string"),
            ("s", "expected a duration"),
            ("-5s", "cannot be negative"),
            ("30", "has no unit"),
            ("1.5s", "fractions are not supported"),
            ("5 minutes", "unknown duration unit \"minutes\""),
            ("5d", "unknown duration unit \"d\""),
            ("5S", "unknown duration unit \"S\""),
            ("1h30m", "unknown duration unit \"h30m\""),
            ("8761h", "too long"),
            ("18446744073709551615h", "too long"),
            ("99999999999999999999999s", "too long"),
            ("sometimes", "expected a duration"),
        ];
        for (input, needle) in table {
            let err = parse_duration(input).unwrap_err();
            assert!(err.contains(needle), "{input:?}: {err}");
        }
    }

    #[test]
    fn formatted_durations_and_sizes_round_trip() {
        for s in ["0s", "250ms", "1500ms", "30s", "5m", "90s", "1h", "25h"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
        assert_eq!(format_duration(Duration::from_micros(1500)), "1.5ms");
        for s in ["0B", "100B", "1000B", "512KiB", "8MiB", "256MiB", "2GiB", "1TiB"] {
            assert_eq!(format_size(parse_size(s).unwrap()), s);
        }
    }
}
