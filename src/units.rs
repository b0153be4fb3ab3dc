//! Human units in config and flags: durations ("90s", "5m", "1h30m", "500ms")
//! and sizes ("2GiB", "500MB", "1048576").

use std::time::Duration;

/// Parse a duration made of number+unit pairs (ms, s, m, h, d).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let hint = "use a number with a unit, e.g. 500ms, 90s, 5m, 1h30m";
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("empty duration; {hint}"));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("invalid duration '{text}'; {hint}"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration '{text}': number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" => Duration::from_secs(number.saturating_mul(60)),
            "h" => Duration::from_secs(number.saturating_mul(3600)),
            "d" => Duration::from_secs(number.saturating_mul(86400)),
            "" => return Err(format!("invalid duration '{text}': missing unit; {hint}")),
            other => {
                return Err(format!(
                    "invalid duration '{text}': unknown unit '{other}'; {hint}"
                ));
            }
        };
        total = total.saturating_add(part);
    }
    Ok(total)
}

/// Parse a size in bytes: a plain number, or a number with B, KB, MB, GB,
/// TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let hint = "use bytes or a unit, e.g. 500MB, 2GiB";
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    if digits == 0 {
        return Err(format!("invalid size '{text}'; {hint}"));
    }
    let number: u64 = text[..digits]
        .parse()
        .map_err(|_| format!("invalid size '{text}': number too large"))?;
    let multiplier: u64 = match text[digits..].trim() {
        "" | "B" => 1,
        "KB" => 1000,
        "MB" => 1000_u64.pow(2),
        "GB" => 1000_u64.pow(3),
        "TB" => 1000_u64.pow(4),
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        other => {
            return Err(format!(
                "invalid size '{text}': unknown unit '{other}'; {hint}"
            ));
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("invalid size '{text}': too large"))
}

/// A duration as config files write it: "5m", "1h30m", "90s", "250ms".
pub fn config_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms == 0 || !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let (mut seconds, mut text) = (ms / 1000, String::new());
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if seconds >= size {
            text.push_str(&format!("{}{unit}", seconds / size));
            seconds %= size;
        }
    }
    text
}

/// "1.2 MiB"-style rendering for tables.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases: &[(&str, Option<u64>)] = &[
            ("500ms", Some(500)),
            ("90s", Some(90_000)),
            ("5m", Some(300_000)),
            ("1h30m", Some(5_400_000)),
            ("0s", Some(0)),
            ("5x", None),
            ("5", None),
            ("m5", None),
            ("", None),
            ("-1s", None),
        ];
        for (text, expected) in cases {
            let got = parse_duration(text).ok().map(|d| d.as_millis() as u64);
            assert_eq!(got, *expected, "{text:?}");
            if let Some(ms) = expected.filter(|ms| *ms > 0) {
                let shown = config_duration(Duration::from_millis(ms));
                assert_eq!(
                    parse_duration(&shown).unwrap().as_millis() as u64,
                    ms,
                    "{shown}"
                );
            }
        }
    }

    #[test]
    fn sizes() {
        let cases: &[(&str, Option<u64>)] = &[
            ("1024", Some(1024)),
            ("2GiB", Some(2 << 30)),
            ("500MB", Some(500_000_000)),
            ("1 KiB", Some(1024)),
            ("1XB", None),
            ("GiB", None),
            ("99999999999TiB", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_size(text).ok(), *expected, "{text:?}");
        }
    }
}
