//! The fleet's decisions as pure functions over what etcd holds: whether a
//! deploy commits, aborts or waits; what a new leader does with a deploy it
//! finds; whether a host is ready for traffic; the last switch's skew.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::records::{Committed, DeployRecord, HostStatus, Phase, StageReport};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Wait,
    Commit,
    Abort(String),
}

/// A deploy in staging: commit once every member still alive has staged it;
/// abort when one failed, or one alive has not within `stage_timeout`. A
/// member whose lease ran out has left the fleet and is not waited for (it
/// catches up when it returns).
pub fn decide(
    record: &DeployRecord,
    reports: &BTreeMap<String, StageReport>,
    alive: &BTreeSet<String>,
    now_ms: i64,
    stage_timeout: Duration,
) -> Decision {
    if record.phase != Phase::Staging {
        return Decision::Wait;
    }
    for (host, report) in reports {
        if let StageReport::Failed { error } = report
            && record.members.contains(host)
        {
            return Decision::Abort(format!(
                "{host} could not stage {}: {error}",
                record.release
            ));
        }
    }
    let waiting: Vec<&String> = record
        .members
        .iter()
        .filter(|m| alive.contains(*m) && !reports.contains_key(*m))
        .collect();
    let staged = record
        .members
        .iter()
        .filter(|m| matches!(reports.get(*m), Some(StageReport::Staged)))
        .count();
    if waiting.is_empty() {
        return if staged > 0 {
            Decision::Commit
        } else {
            Decision::Abort("every member left the fleet before staging".into())
        };
    }
    if now_ms - record.started_ms >= stage_timeout.as_millis() as i64 {
        let names: Vec<&str> = waiting.iter().map(|s| s.as_str()).collect();
        return Decision::Abort(format!(
            "{} did not stage {} within the stage timeout ({}s)",
            names.join(", "),
            record.release,
            stage_timeout.as_secs()
        ));
    }
    Decision::Wait
}

/// What a leader does with the deploy it finds on taking over: one its
/// predecessor left in staging is aborted (commit was never recorded, so no
/// host switched); a decided one stands.
pub fn on_takeover(record: &DeployRecord) -> Option<Decision> {
    (record.phase == Phase::Staging)
        .then(|| Decision::Abort("the leader that started it is gone".into()))
}

/// Whether a host should get traffic: it serves the committed release, or
/// has it staged while still a member (its lease alive): a member switches
/// the moment it sees the commit, every member of a deploy is in this state
/// at once, and taking them all out of rotation would take the site down.
/// A host whose lease ran out was not waited for and may be cut off: until
/// it serves the committed release, it is behind. With no committed release
/// yet (a fleet before its first deploy), whatever it serves.
pub fn ready(
    live: Option<&str>,
    committed: Option<&Committed>,
    staged: Option<&str>,
    member: bool,
) -> bool {
    match committed {
        None => live.is_some(),
        Some(committed) => {
            live == Some(committed.release.as_str())
                || (member && staged == Some(committed.release.as_str()))
        }
    }
}

/// First to last member's switch in `deploy`, from the members' statuses.
pub fn skew_ms(statuses: &BTreeMap<String, HostStatus>, deploy: u64) -> Option<i64> {
    let times: Vec<i64> = statuses
        .values()
        .filter_map(|s| s.switched.filter(|(id, _)| *id == deploy).map(|(_, at)| at))
        .collect();
    Some(times.iter().max()? - times.iter().min()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::etcd::records::HostState;

    fn record(members: &[&str]) -> DeployRecord {
        DeployRecord {
            id: 3,
            release: "ROOT_2026.12.06-10.00.00".into(),
            commit: "abc".into(),
            rollback: false,
            trigger: "push".into(),
            requests: vec![],
            members: members.iter().map(|m| m.to_string()).collect(),
            leader: "a".into(),
            builder: None,
            every_host_builds: false,
            phase: Phase::Staging,
            started_ms: 1_000,
            decided_ms: None,
            why: None,
        }
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn reports(entries: &[(&str, StageReport)]) -> BTreeMap<String, StageReport> {
        entries
            .iter()
            .map(|(h, r)| (h.to_string(), r.clone()))
            .collect()
    }

    /// What happened, the reports, the members alive, now, the decision.
    type Case = (
        &'static str,
        BTreeMap<String, StageReport>,
        BTreeSet<String>,
        i64,
        Decision,
    );

    #[test]
    fn a_deploy_commits_only_when_every_live_member_staged() {
        let timeout = Duration::from_secs(60);
        let staged = StageReport::Staged;
        let failed = StageReport::Failed {
            error: "disk full".into(),
        };
        let cases: Vec<Case> = vec![
            (
                "nobody yet",
                reports(&[]),
                set(&["a", "b", "c"]),
                2_000,
                Decision::Wait,
            ),
            (
                "two of three",
                reports(&[("a", staged.clone()), ("b", staged.clone())]),
                set(&["a", "b", "c"]),
                2_000,
                Decision::Wait,
            ),
            (
                "all three",
                reports(&[
                    ("a", staged.clone()),
                    ("b", staged.clone()),
                    ("c", staged.clone()),
                ]),
                set(&["a", "b", "c"]),
                2_000,
                Decision::Commit,
            ),
            (
                "c left the fleet (its lease ran out)",
                reports(&[("a", staged.clone()), ("b", staged.clone())]),
                set(&["a", "b"]),
                2_000,
                Decision::Commit,
            ),
            (
                "one failed",
                reports(&[("a", staged.clone()), ("b", failed.clone())]),
                set(&["a", "b", "c"]),
                2_000,
                Decision::Abort("b could not stage ROOT_2026.12.06-10.00.00: disk full".into()),
            ),
            (
                "c alive but silent past the timeout",
                reports(&[("a", staged.clone()), ("b", staged.clone())]),
                set(&["a", "b", "c"]),
                61_000,
                Decision::Abort(
                    "c did not stage ROOT_2026.12.06-10.00.00 within the stage timeout (60s)"
                        .into(),
                ),
            ),
            (
                "everyone left",
                reports(&[]),
                set(&[]),
                2_000,
                Decision::Abort("every member left the fleet before staging".into()),
            ),
            (
                "a newcomer is not waited for",
                reports(&[
                    ("a", staged.clone()),
                    ("b", staged.clone()),
                    ("c", staged.clone()),
                ]),
                set(&["a", "b", "c", "d"]),
                2_000,
                Decision::Commit,
            ),
        ];
        for (what, reports, alive, now, expected) in cases {
            assert_eq!(
                decide(&record(&["a", "b", "c"]), &reports, &alive, now, timeout),
                expected,
                "{what}"
            );
        }
        let mut decided = record(&["a"]);
        decided.phase = Phase::Commit;
        assert_eq!(
            decide(&decided, &BTreeMap::new(), &set(&["a"]), 2_000, timeout),
            Decision::Wait
        );
    }

    #[test]
    fn a_new_leader_aborts_only_what_was_never_committed() {
        let mut found = record(&["a", "b"]);
        assert!(matches!(on_takeover(&found), Some(Decision::Abort(_))));
        found.phase = Phase::Commit;
        assert_eq!(on_takeover(&found), None);
        found.phase = Phase::Abort;
        assert_eq!(on_takeover(&found), None);
    }

    #[test]
    fn ready_means_serving_the_committed_release_or_about_to() {
        let committed = Committed {
            deploy: 4,
            release: "R4".into(),
            commit: "c4".into(),
            at_ms: 10_000,
        };
        assert!(ready(Some("R4"), Some(&committed), None, true));
        assert!(ready(Some("R4"), Some(&committed), None, false));
        assert!(!ready(Some("R3"), Some(&committed), None, true));
        assert!(ready(Some("R3"), Some(&committed), Some("R4"), true));
        assert!(
            !ready(Some("R3"), Some(&committed), Some("R4"), false),
            "staged, but its lease ran out: cut off"
        );
        assert!(!ready(Some("R3"), Some(&committed), Some("R5"), true));
        assert!(!ready(None, Some(&committed), None, true));
        assert!(ready(Some("R1"), None, None, true));
        assert!(!ready(None, None, None, true));
    }

    #[test]
    fn skew_is_first_to_last_switch_of_one_deploy() {
        let status = |switched: Option<(u64, i64)>| HostStatus {
            state: HostState::Ready,
            live: None,
            switched,
            error: None,
            at_ms: 0,
            user_content: None,
        };
        let statuses: BTreeMap<String, HostStatus> = [
            ("a".to_string(), status(Some((5, 1_000)))),
            ("b".to_string(), status(Some((5, 1_004)))),
            ("c".to_string(), status(Some((4, 900)))),
            ("d".to_string(), status(None)),
        ]
        .into();
        assert_eq!(skew_ms(&statuses, 5), Some(4));
        assert_eq!(skew_ms(&statuses, 6), None);
    }
}
