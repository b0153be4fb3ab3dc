//! How an app's releases are made and kept: the settings every run uses,
//! whatever the source, and the plan and result of one deploy.

use std::path::PathBuf;
use std::time::Duration;

use crate::apache::ApacheMap;
use crate::retention::{DEFAULT_DRAIN, DEFAULT_KEEP};
use crate::source::Source;
use crate::source::extract::Limits;

pub const DEFAULT_SETTLE: Duration = Duration::from_secs(1);

/// How an app's releases are made and kept: the part of its settings that
/// every deploy uses, whatever the source.
#[derive(Debug, Clone)]
pub struct Policy {
    pub keep: usize,
    pub drain: Duration,
    /// How long after the switch to wait before carrying what in-flight
    /// requests wrote into the old release.
    pub settle: Duration,
    pub zero_downtime: bool,
    /// The folder of each release the web server serves (`public/`);
    /// `None` serves the release itself.
    pub public: Option<PathBuf>,
    /// A deploy may ask for a commit that is not on the app's ref.
    pub allow_any_commit: bool,
    /// The folder of a git repository that is the app (a monorepo's
    /// `apps/site`); `None`: the whole repository.
    pub subfolder: Option<PathBuf>,
    /// The page a maintenance window serves, a file of the release.
    pub maintenance_page: Option<PathBuf>,
    /// Who still reaches the app through a deploy's maintenance window.
    pub maintenance_allow: Vec<crate::maintenance::Allowed>,
    pub shared: Vec<PathBuf>,
    /// Those of `shared` that are files (`.env`): one nobody has yet is not
    /// made a folder.
    pub shared_files: Vec<PathBuf>,
    pub build: Vec<crate::build::BuildStep>,
    /// Dependency folders shared from the live release while their key
    /// file is unchanged.
    pub reuse: Vec<crate::reuse::Reuse>,
    /// Prune the oldest releases (never the live or previous one) while
    /// the context's releases take more bytes than this.
    pub max_disk: Option<u64>,
    pub build_timeout: Duration,
    /// Commands run in the new live release right after the switch.
    pub after_switch: Vec<crate::build::AfterSwitchCommand>,
    pub limits: Limits,
    /// Checks before and after the switch; a failed check after it switches back.
    pub health: Option<crate::health::HealthCheck>,
    /// Behind Apache: the map its vhost reads the live release from.
    pub apache: Option<ApacheMap>,
    /// Reset PHP-FPM's opcache at this address after each switch.
    pub opcache_reset: Option<crate::fastcgi::Address>,
    /// Owner, group and writable paths of releases; who runs build steps.
    pub privileges: crate::privilege::Privileges,
}

impl Policy {
    /// Commands from the app's config that run in a release: build steps,
    /// the check and the after_switch commands.
    pub fn release_commands(&self) -> usize {
        self.build.len()
            + self.after_switch.len()
            + self.health.as_ref().map_or(0, |h| h.before.iter().count())
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            keep: DEFAULT_KEEP,
            drain: DEFAULT_DRAIN,
            settle: DEFAULT_SETTLE,
            zero_downtime: true,
            public: None,
            allow_any_commit: false,
            subfolder: None,
            maintenance_page: None,
            maintenance_allow: Vec::new(),
            shared: Vec::new(),
            shared_files: Vec::new(),
            build: Vec::new(),
            reuse: Vec::new(),
            max_disk: None,
            build_timeout: crate::build::DEFAULT_BUILD_TIMEOUT,
            after_switch: Vec::new(),
            limits: Limits::default(),
            health: None,
            apache: None,
            opcache_reset: None,
            privileges: crate::privilege::Privileges::default(),
        }
    }
}

/// Everything one deploy needs, validated.
#[derive(Debug, Clone)]
pub struct DeployPlan {
    pub source: Source,
    pub reference: Option<String>,
    /// A git commit already in the mirror (a fleet's controller sent it):
    /// resolve takes it as it is and fetches nothing.
    pub commit: Option<String>,
    /// The exact commit asked for (`deploy --commit`, the API's `commit`):
    /// deployed instead of the ref's head, if it is on the ref (or the app
    /// allows any commit).
    pub requested: Option<String>,
    pub policy: Policy,
    pub force: bool,
    /// The source was built already (a CI's artifact, staging's release):
    /// build entries run only if they are `once` (migrations); nothing is
    /// reused from the live release, so the release is the source's bytes.
    pub prebuilt: bool,
    /// Instead of switching, let the new release serve this share of
    /// clients as a canary.
    pub canary: Option<crate::canary::Share>,
}

/// How a deploy that did not fail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployOutcome {
    /// A new release went live (or plain mode updated the context).
    Deployed,
    /// What the source holds was live already.
    Unchanged,
    /// The new release serves a share of clients as a canary.
    Canary,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DeployResult {
    pub deployment: i64,
    pub outcome: DeployOutcome,
    /// The release now live (the context itself in plain mode).
    pub release: Option<String>,
    pub previous: Option<String>,
    pub commit: Option<String>,
    pub pruned: Vec<String>,
}
