//! Release names (`<context>_<YYYY.MM.DD-hh.mm.ss>`, UTC) and release states.

use std::fmt;

use jiff::{Timestamp, civil::DateTime, tz::TimeZone};

use crate::error::{Error, Result};

/// The timestamp format of release names, the seed platform's pattern exactly.
const STAMP_FORMAT: &str = "%Y.%m.%d-%H.%M.%S";
const STAMP_LEN: usize = 19;

/// What a folder name beside the context is, as far as this context is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseKind {
    /// `<context>_<stamp>`: made by a deploy, subject to retention.
    Timestamped(DateTime),
    /// `<context>_<anything else>`: renamed by a user, never touched.
    Kept,
}

/// Classify a folder name; `None` when it is not a release of `context` at all.
pub fn classify(context: &str, name: &str) -> Option<ReleaseKind> {
    let suffix = name.strip_prefix(context)?.strip_prefix('_')?;
    if suffix.is_empty() {
        return None;
    }
    Some(match parse_stamp(suffix) {
        Some(stamp) => ReleaseKind::Timestamped(stamp),
        None => ReleaseKind::Kept,
    })
}

/// Parse a release timestamp, accepting only the exact canonical form.
pub fn parse_stamp(text: &str) -> Option<DateTime> {
    if text.len() != STAMP_LEN
        || !text
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return None;
    }
    let parsed = DateTime::strptime(STAMP_FORMAT, text).ok()?;
    (parsed.strftime(STAMP_FORMAT).to_string() == text).then_some(parsed)
}

/// Does this text look like a release timestamp (so may not be used as a kept name)?
pub fn looks_like_stamp(text: &str) -> bool {
    parse_stamp(text).is_some()
}

/// The release name for `context` at `at` (UTC, truncated to the second).
pub fn release_name(context: &str, at: Timestamp) -> String {
    let civil = at.to_zoned_datetime(TimeZone::UTC).datetime();
    format!("{context}_{}", civil.strftime(STAMP_FORMAT))
}

/// The instant a timestamped release name stands for.
pub fn stamp_instant(stamp: DateTime) -> Timestamp {
    stamp
        .to_zoned_datetime(TimeZone::UTC)
        .map(|z| z.timestamp())
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Validate the NAME a user gives to `zdeploy keep`.
pub fn validate_kept_name(name: &str) -> Result<()> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if name.is_empty() || !ok_chars || name.starts_with('.') || name.starts_with('-') {
        return Err(Error::Invalid(format!(
            "invalid name '{name}': use letters, digits, '-', '_' and '.', not starting with '.' or '-'"
        )));
    }
    if looks_like_stamp(name) {
        return Err(Error::Invalid(format!(
            "invalid name '{name}': it looks like a release timestamp, so it would still be pruned; pick a name such as 'before-new-levels'"
        )));
    }
    Ok(())
}

/// The life of a release as recorded in the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseState {
    /// Being written by a deploy; removed by `recover` if that deploy died.
    Building,
    /// Complete but not live yet: waiting for its switch (a fleet waits for
    /// every host). Removed by `recover` if the run holding it died.
    Staged,
    /// Fully written and built; may be (or have been) live.
    Complete,
    /// Failed its checks; rollbacks skip it.
    Failed,
    /// Deleted by retention; only the record remains.
    Pruned,
}

impl ReleaseState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseState::Building => "building",
            ReleaseState::Staged => "staged",
            ReleaseState::Complete => "complete",
            ReleaseState::Failed => "failed",
            ReleaseState::Pruned => "pruned",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "building" => ReleaseState::Building,
            "staged" => ReleaseState::Staged,
            "complete" => ReleaseState::Complete,
            "failed" => ReleaseState::Failed,
            "pruned" => ReleaseState::Pruned,
            _ => return None,
        })
    }
}

impl fmt::Display for ReleaseState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A commit id or digest as people read it: the first 12 characters.
pub fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_names() {
        let cases: &[(&str, &str, Option<bool>)] = &[
            // (context, name, Some(timestamped?) or None for "not ours")
            ("ROOT", "ROOT_2026.11.26-10.05.48", Some(true)),
            ("ROOT", "ROOT_before-new-levels", Some(false)),
            ("ROOT", "ROOT_2026.11.26-10.05.4", Some(false)),
            ("ROOT", "ROOT_2026.13.26-10.05.48", Some(false)),
            ("ROOT", "ROOT_2026.11.26-24.05.48", Some(false)),
            ("ROOT", "ROOT_2026-11-26-10.05.48", Some(false)),
            ("ROOT", "ROOT_", None),
            ("ROOT", "ROOT", None),
            ("ROOT", "ROOTX_2026.11.26-10.05.48", None),
            ("ROOT", "api_2026.11.26-10.05.48", None),
            ("api", "api_2026.02.29-00.00.00", Some(false)), // 2026 is no leap year
            ("api", "api_2028.02.29-00.00.00", Some(true)),
        ];
        for &(context, name, expected) in cases {
            let got = classify(context, name).map(|k| matches!(k, ReleaseKind::Timestamped(_)));
            assert_eq!(got, expected, "classify({context:?}, {name:?})");
        }
    }

    #[test]
    fn names_round_trip() {
        let at: Timestamp = "2026-11-26T10:05:48.731Z".parse().unwrap();
        let name = release_name("ROOT", at);
        assert_eq!(name, "ROOT_2026.11.26-10.05.48");
        let Some(ReleaseKind::Timestamped(stamp)) = classify("ROOT", &name) else {
            panic!("{name} not timestamped");
        };
        assert_eq!(stamp_instant(stamp).as_second(), at.as_second());
    }

    #[test]
    fn kept_names() {
        for good in ["before-new-levels", "v1.2", "keep_me"] {
            assert!(validate_kept_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".hidden",
            "-x",
            "a/b",
            "..",
            "2026.11.26-10.05.48",
            "sp ace",
        ] {
            assert!(validate_kept_name(bad).is_err(), "{bad:?}");
        }
    }
}
