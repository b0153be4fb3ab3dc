//! Which timestamped releases to delete: a pure choice over plain data.

use std::time::Duration;

pub const DEFAULT_KEEP: usize = 3;
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    /// Seconds since the epoch, from the name.
    pub stamp: i64,
    pub live: bool,
    /// When it stopped being live (ms), if it ever was.
    pub retired_ms: Option<i64>,
}

/// Releases to prune, oldest first: beyond `keep` (counting the live one),
/// never the live one, never one that stopped being live less than `drain` ago.
pub fn choose_prunable(
    candidates: &[Candidate],
    keep: usize,
    drain: Duration,
    now_ms: i64,
) -> Vec<String> {
    let mut newest_first: Vec<&Candidate> = candidates.iter().collect();
    newest_first.sort_by(|a, b| b.stamp.cmp(&a.stamp).then_with(|| b.name.cmp(&a.name)));
    let live_count = newest_first.iter().filter(|c| c.live).count();
    let mut kept_others = 0;
    let mut prunable = Vec::new();
    for candidate in newest_first {
        if candidate.live {
            continue;
        }
        if live_count + kept_others < keep {
            kept_others += 1;
            continue;
        }
        let draining = candidate
            .retired_ms
            .is_some_and(|retired| now_ms.saturating_sub(retired) < drain.as_millis() as i64);
        if !draining {
            prunable.push(candidate.name.clone());
        }
    }
    prunable.reverse();
    prunable
}

/// Over the disk budget: the oldest release that may go — never the live
/// one, never the previous one (the newest of the rest), never a draining one.
pub fn choose_over_budget(
    candidates: &[Candidate],
    drain: Duration,
    now_ms: i64,
) -> Option<String> {
    let mut others: Vec<&Candidate> = candidates.iter().filter(|c| !c.live).collect();
    others.sort_by(|a, b| a.stamp.cmp(&b.stamp).then_with(|| a.name.cmp(&b.name)));
    others.pop(); // the previous release: the rollback target
    others
        .into_iter()
        .find(|c| {
            c.retired_ms
                .is_none_or(|retired| now_ms.saturating_sub(retired) >= drain.as_millis() as i64)
        })
        .map(|c| c.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, stamp: i64, live: bool, retired_ms: Option<i64>) -> Candidate {
        Candidate {
            name: name.into(),
            stamp,
            live,
            retired_ms,
        }
    }

    #[test]
    fn over_budget_never_takes_the_live_previous_or_draining_release() {
        let drain = Duration::from_secs(60);
        let now = 1_000_000_000;
        let old = Some(now - 3_600_000);
        let fresh = Some(now - 1_000);
        let pick = |list: Vec<Candidate>| choose_over_budget(&list, drain, now);
        assert_eq!(
            pick(vec![
                c("a", 1, false, old),
                c("b", 2, false, old),
                c("c", 3, true, None)
            ]),
            Some("a".into())
        );
        assert_eq!(
            pick(vec![c("a", 1, false, old), c("b", 2, true, None)]),
            None,
            "a is the previous"
        );
        assert_eq!(
            pick(vec![
                c("a", 1, false, fresh),
                c("b", 2, false, old),
                c("c", 3, true, None)
            ]),
            None
        );
        assert_eq!(pick(vec![c("c", 3, true, None)]), None);
        // A release newer than the live one (after a rollback) counts too.
        assert_eq!(
            pick(vec![
                c("a", 1, false, old),
                c("b", 2, true, None),
                c("c", 3, false, old)
            ]),
            Some("a".into())
        );
    }

    #[test]
    fn retention_table() {
        let drain = Duration::from_secs(60);
        let now = 1_000_000_000;
        let old = Some(now - 3_600_000);
        let fresh = Some(now - 1_000);
        let cases: Vec<(&str, Vec<Candidate>, usize, Vec<&str>)> = vec![
            (
                "nothing to prune",
                vec![c("a", 1, false, old), c("b", 2, true, None)],
                3,
                vec![],
            ),
            (
                "oldest beyond keep, oldest first",
                vec![
                    c("a", 1, false, old),
                    c("b", 2, false, old),
                    c("c", 3, false, old),
                    c("d", 4, true, None),
                ],
                2,
                vec!["a", "b"],
            ),
            (
                "live is kept even when oldest (after a rollback)",
                vec![
                    c("a", 1, true, None),
                    c("b", 2, false, old),
                    c("c", 3, false, old),
                ],
                2,
                vec!["b"],
            ),
            (
                "draining release survives",
                vec![
                    c("a", 1, false, old),
                    c("b", 2, false, fresh),
                    c("c", 3, true, None),
                ],
                1,
                vec!["a"],
            ),
            (
                "never-live release is prunable at once",
                vec![c("a", 1, false, None), c("b", 2, true, None)],
                1,
                vec!["a"],
            ),
            (
                "keep 1 without a live release (plain mode)",
                vec![c("a", 1, false, old), c("b", 2, false, old)],
                1,
                vec!["a"],
            ),
        ];
        for (what, candidates, keep, expected) in cases {
            assert_eq!(
                choose_prunable(&candidates, keep, drain, now),
                expected,
                "{what}"
            );
        }
    }
}
