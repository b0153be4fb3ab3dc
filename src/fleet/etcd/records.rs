//! What a fleet writes in etcd, as JSON: the deploy being decided and its
//! phase, the committed release, each member's stage report and status,
//! triggers handed to the leader and their outcomes.

use serde::{Deserialize, Serialize};

/// One fleet deploy, written by the leader that decides it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployRecord {
    /// One more than the deploy before it.
    pub id: u64,
    pub release: String,
    pub commit: String,
    /// A rollback: `release` is an older release, kept or rebuilt.
    pub rollback: bool,
    /// What asked for it, for people.
    pub trigger: String,
    /// The triggers it answers.
    pub requests: Vec<String>,
    /// The live members when it started: each must stage it.
    pub members: Vec<String>,
    pub leader: String,
    /// The member that builds the release (the others copy it) and runs
    /// the `once` steps; the leader when absent (a record of an older agent).
    #[serde(default)]
    pub builder: Option<String>,
    /// Every member builds the release itself (`build_on = "every-host"`).
    #[serde(default)]
    pub every_host_builds: bool,
    pub phase: Phase,
    pub started_ms: i64,
    pub decided_ms: Option<i64>,
    /// Why it was aborted.
    pub why: Option<String>,
}

impl DeployRecord {
    /// The member that builds the release and runs the `once` steps.
    pub fn builder(&self) -> &str {
        self.builder.as_deref().unwrap_or(&self.leader)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Members stage and report; nobody switches.
    Staging,
    /// Every member staged: switch now.
    Commit,
    /// Remove what was staged; nothing changes.
    Abort,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Staging => "staging",
            Phase::Commit => "commit",
            Phase::Abort => "abort",
        }
    }
}

/// The release every member serves, or converges to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    pub deploy: u64,
    pub release: String,
    pub commit: String,
    pub at_ms: i64,
}

/// What a member's registration (under its lease) says of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub version: String,
    pub started_ms: i64,
    /// Where other members reach its agent, to copy releases from it.
    #[serde(default)]
    pub agent: Option<String>,
}

/// A run of the `once` steps (migrations) for a commit, recorded before
/// it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnceRun {
    pub deploy: u64,
    pub release: String,
    pub host: String,
    pub started_ms: i64,
    /// Whether the deploy went through, once it ended; absent while it
    /// runs, or when its host died during it.
    pub ok: Option<bool>,
}

impl OnceRun {
    /// How it ended, for people.
    pub fn ending(&self) -> &'static str {
        match self.ok {
            Some(true) => "ended ok",
            Some(false) => "failed",
            None => "was cut off (its host stopped or lost etcd during it)",
        }
    }
}

/// A member's answer to a deploy's staging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum StageReport {
    Staged,
    Failed { error: String },
}

/// What a member is doing and serving, for status, the dashboard and skew.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStatus {
    pub state: HostState,
    pub live: Option<String>,
    /// The deploy its last switch belonged to, and when it switched.
    pub switched: Option<(u64, i64)>,
    pub error: Option<String>,
    pub at_ms: i64,
    /// The user files its last carry placed in its live release, summed
    /// up: members whose digests differ hold different uploads.
    #[serde(default)]
    pub user_content: Option<zdeploy_core::user_content::UserContentSummary>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    /// Serves the committed release.
    Ready,
    /// Building the committed release to switch to it on its own.
    CatchingUp,
    /// Staging a deploy that is being decided.
    Staging,
    /// Staged; waiting for the decision.
    Staged,
    /// Switching to a committed deploy.
    Switching,
    /// Serves something else and could not converge (the error says why).
    Behind,
}

impl HostState {
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Ready => "ready",
            HostState::CatchingUp => "catching up",
            HostState::Staging => "staging",
            HostState::Staged => "staged",
            HostState::Switching => "switching",
            HostState::Behind => "behind",
        }
    }
}

/// A deploy or rollback asked of the fleet, by any agent or the CLI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerRecord {
    pub id: String,
    /// What asked, for people ("push by alice", "api", "poll").
    pub trigger: String,
    /// Deploy even if the commit is live already.
    pub force: bool,
    /// The commit a webhook or poll saw; the leader asks the remote otherwise.
    pub commit: Option<String>,
    /// A rollback, to `release` or to the release committed before the
    /// current one.
    pub rollback: bool,
    pub release: Option<String>,
    pub at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerOutcome {
    Deployed,
    Unchanged,
    Aborted,
    Failed,
}

impl TriggerOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerOutcome::Deployed => "deployed",
            TriggerOutcome::Unchanged => "unchanged",
            TriggerOutcome::Aborted => "aborted",
            TriggerOutcome::Failed => "failed",
        }
    }
}

/// How a trigger ended, for whoever waits on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub deploy: Option<u64>,
    pub outcome: TriggerOutcome,
    pub release: Option<String>,
    pub commit: Option<String>,
    pub error: Option<String>,
}
