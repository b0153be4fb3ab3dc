//! The watch: after a switch, the new release is judged by its real
//! traffic, compared with what the release before it served in the same
//! length of time before the deploy. Its error rate may pass the old one by
//! at most `max_error_rate` (percentage points), its p95 may be at most
//! `max_p95` times the old one (or less than `P95_SLACK_MS` above it). Too
//! few requests to judge keep the release, and say so. The verdict is kept
//! in the history with the figures.

use std::time::Duration;

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::history::History;
use crate::traffic::Figures;

/// A p95 this little above the old one is never a breach, whatever the
/// factor: a page that took 1 ms and now takes 3 ms is timing noise (a
/// busy moment, the histogram's steps), not a slower release.
pub const P95_SLACK_MS: f64 = 20.0;

/// How a release is judged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WatchPolicy {
    /// How long after the switch.
    pub duration: Duration,
    /// The error rate (0 to 1) the new release may add to the old one's.
    pub max_error_rate: f64,
    /// The factor the old release's p95 may grow by.
    pub max_p95: f64,
    /// Requests needed before anything is judged.
    pub min_requests: u64,
}

impl Default for WatchPolicy {
    fn default() -> Self {
        WatchPolicy {
            duration: Duration::from_secs(120),
            max_error_rate: 0.02,
            max_p95: 2.0,
            min_requests: 20,
        }
    }
}

/// What the watch found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "verdict")]
pub enum Verdict {
    /// The release served well for the whole window.
    Kept,
    /// Too few requests (or no reports at all) to judge: kept.
    Unjudged { why: String },
    /// It failed its traffic: switched back.
    Breached { why: String },
    /// A newer deploy or rollback ended the watch.
    Ended { why: String },
}

impl Verdict {
    /// "kept", "unjudged", "breached" or "ended".
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Kept => "kept",
            Verdict::Unjudged { .. } => "unjudged",
            Verdict::Breached { .. } => "breached",
            Verdict::Ended { .. } => "ended",
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Verdict::Kept => "kept: its traffic was as good as the release before".into(),
            Verdict::Unjudged { why } => format!("kept without a verdict: {why}"),
            Verdict::Breached { why } => format!("switched back: {why}"),
            Verdict::Ended { why } => format!("ended: {why}"),
        }
    }
}

impl WatchPolicy {
    /// Whether `now` (the new release since its switch) breaches against
    /// `before` (the old release before the deploy): the reason if so.
    pub fn breach(&self, before: &Figures, now: &Figures) -> Option<String> {
        if now.requests < self.min_requests {
            return None;
        }
        let rate = |f: &Figures| match f.requests {
            0 => 0.0,
            n => f.errors as f64 / n as f64,
        };
        let old_rate = if before.requests >= self.min_requests {
            rate(before)
        } else {
            0.0
        };
        let new_rate = rate(now);
        if new_rate > old_rate + self.max_error_rate {
            return Some(format!(
                "{:.1}% of its {} requests failed with 5xx, against {:.1}% before (at most {:.1} points more)",
                100.0 * new_rate,
                now.requests,
                100.0 * old_rate,
                100.0 * self.max_error_rate
            ));
        }
        if before.requests >= self.min_requests
            && let (Some(old), Some(new)) = (before.p95_ms, now.p95_ms)
            && new > old * self.max_p95
            && new - old >= P95_SLACK_MS
        {
            return Some(format!(
                "its p95 is {new:.0} ms, against {old:.0} ms before (at most {}x, or {P95_SLACK_MS:.0} ms more)",
                self.max_p95
            ));
        }
        None
    }

    /// The verdict once the window is over.
    pub fn at_end(&self, now: &Figures) -> Verdict {
        if now.requests == 0 {
            Verdict::Unjudged {
                why: "no request was reported (is the agent running, and the site written by `zdeploy webserver`?)".into(),
            }
        } else if now.requests < self.min_requests {
            Verdict::Unjudged {
                why: format!(
                    "{} requests in {}s, fewer than the {} needed",
                    now.requests,
                    self.duration.as_secs(),
                    self.min_requests
                ),
            }
        } else {
            Verdict::Kept
        }
    }
}

/// A watch as the history keeps it.
#[derive(Debug, Clone, Serialize)]
pub struct WatchRecord {
    pub deployment_id: i64,
    pub release: String,
    #[serde(flatten)]
    pub verdict: Verdict,
    pub before: Figures,
    pub after: Figures,
    pub ended_ms: i64,
}

impl History {
    /// Keep how the watch of `deployment`'s release ended; a breach also
    /// marks the deployment failed with the reason, and the release failed
    /// (so rollbacks skip it).
    pub fn record_watch(&self, record: &WatchRecord) -> Result<()> {
        let verdict = serde_json::to_string(&record.verdict).unwrap_or_default();
        let figures = |f: &Figures| serde_json::to_string(f).unwrap_or_default();
        self.conn
            .execute(
                "INSERT OR REPLACE INTO watches (deployment_id, release, verdict, before, after, ended_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    record.deployment_id,
                    record.release,
                    verdict,
                    figures(&record.before),
                    figures(&record.after),
                    record.ended_ms
                ],
            )
            .map_err(|e| self.fail(e))?;
        if let Verdict::Breached { why } = &record.verdict {
            let error = format!("the watch switched back: {why}");
            self.conn
                .execute(
                    "UPDATE deployments SET outcome = 'failed', error = ?2 WHERE id = ?1",
                    params![record.deployment_id, error],
                )
                .map_err(|e| self.fail(e))?;
            self.set_release_state(
                &record.release,
                crate::release::ReleaseState::Failed,
                Some(&error),
            )?;
        }
        Ok(())
    }

    /// How the watch of `deployment` ended, if it was watched.
    pub fn deployment_watch(&self, deployment: i64) -> Result<Option<WatchRecord>> {
        self.conn
            .query_row(
                "SELECT deployment_id, release, verdict, before, after, ended_ms FROM watches WHERE deployment_id = ?1",
                params![deployment],
                |row| {
                    let parse_figures = |text: String| serde_json::from_str(&text).unwrap_or_default();
                    Ok(WatchRecord {
                        deployment_id: row.get(0)?,
                        release: row.get(1)?,
                        verdict: serde_json::from_str(&row.get::<_, String>(2)?).unwrap_or(
                            Verdict::Unjudged {
                                why: "unreadable record".into(),
                            },
                        ),
                        before: parse_figures(row.get(3)?),
                        after: parse_figures(row.get(4)?),
                        ended_ms: row.get(5)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.fail(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(requests: u64, errors: u64, p95: f64) -> Figures {
        Figures {
            requests,
            errors,
            p50_ms: Some(p95 / 2.0),
            p95_ms: Some(p95),
            p99_ms: Some(p95 * 1.5),
        }
    }

    #[test]
    fn a_release_is_judged_against_the_one_before() {
        let policy = WatchPolicy::default();
        let before = figures(1000, 5, 20.0);
        assert_eq!(
            policy.breach(&before, &figures(10, 10, 20.0)),
            None,
            "too few to judge"
        );
        assert_eq!(policy.breach(&before, &figures(100, 2, 30.0)), None);
        let errors = policy.breach(&before, &figures(100, 20, 20.0)).unwrap();
        assert!(errors.contains("20.0% of its 100 requests"), "{errors}");
        let slow = policy.breach(&before, &figures(100, 0, 50.0)).unwrap();
        assert!(slow.contains("p95 is 50 ms"), "{slow}");
        // Three times a fast page's p95 is noise, not a breach.
        assert_eq!(
            policy.breach(&figures(1000, 0, 1.0), &figures(100, 0, 3.0)),
            None
        );
        assert!(
            policy
                .breach(&figures(1000, 0, 1.0), &figures(100, 0, 22.0))
                .is_some()
        );
        // A site that always failed 10% is not blamed on the new release.
        assert_eq!(
            policy.breach(&figures(1000, 100, 20.0), &figures(100, 11, 20.0)),
            None
        );
        // Without a baseline, latency is not judged; errors still are.
        assert_eq!(
            policy.breach(&Figures::default(), &figures(100, 0, 500.0)),
            None
        );
        assert!(
            policy
                .breach(&Figures::default(), &figures(100, 20, 5.0))
                .is_some()
        );
        assert!(matches!(
            policy.at_end(&Figures::default()),
            Verdict::Unjudged { .. }
        ));
        assert_eq!(policy.at_end(&figures(100, 0, 5.0)), Verdict::Kept);
    }
}
