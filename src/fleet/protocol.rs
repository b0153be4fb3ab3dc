//! What a fleet's controller and a host's `zdeploy fleet-host` say to each
//! other: one JSON object per line, the controller on the host's stdin, the
//! host on its stdout.

use serde::{Deserialize, Serialize};

use crate::config::Overrides;
pub use zdeploy_core::release_copy::Base;

/// Controller to host.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Take the lock, recover, make the mirror ready; answer `Opened`.
    Open(Box<Job>),
    /// Stage this release; answer `Staged` (or `Done` when nothing changes).
    /// Be ready to switch to this release: nothing if it is live, the
    /// existing folder if the host has it, else built from the job's commit.
    /// `commit`: what to build the release from if the host lacks it.
    Stage {
        release: String,
        commit: Option<String>,
        /// Or: the archive the controller wrote to the host's `upload` path.
        archive: Option<String>,
        /// Built here, or copied from the builder.
        role: StageRole,
    },
    /// The files a copying host said it lacks, in a tar the controller
    /// wrote to this path; answer `Staged`.
    Files { tar: String },
    /// Carry what users wrote since the stage; answer `Synced`.
    Sync,
    /// Switch now; answer `Switched`.
    Switch,
    /// Keep the switch: settle, prune; answer `Done`.
    Finish,
    /// Another host failed: remove the staged release, or switch back to
    /// the one that was live; answer `Aborted`.
    Abort { why: String },
    /// A host is about to run a build step that needs a maintenance window:
    /// open this host's (closed at its switch, or when the run ends);
    /// answer `WindowOpen`.
    OpenWindow,
    /// To the host that asked with `WindowOpening`: every host's window is
    /// open, run the step.
    WindowOpened,
}

/// Everything a host needs to run its part, so it needs no config of its own.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    /// The controller's config file and its text (absent ad hoc).
    pub config: Option<(String, String)>,
    pub app: Option<String>,
    pub overrides: Overrides,
    /// Recorded as a rollback in the host's history.
    pub rollback: bool,
    /// Asked with --force: a frozen host takes part anyway.
    #[serde(default)]
    pub force: bool,
    /// The archive sent to stage was built already (`deploy --archive`):
    /// only `once` build entries run.
    #[serde(default)]
    pub prebuilt: bool,
    /// A deploy that starts a canary of this share on each host in place
    /// of the switch (the `switch` order starts it).
    #[serde(default)]
    pub canary: Option<zdeploy_core::canary::Share>,
    /// Seconds a staged release waits for its switch.
    pub stage_timeout_secs: u64,
    /// The host's name as the controller knows it.
    pub host: String,
    pub trigger: String,
}

impl Order {
    /// The order's name, as the protocol spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Order::Open(_) => "open",
            Order::Stage { .. } => "stage",
            Order::Files { .. } => "files",
            Order::Sync => "sync",
            Order::Switch => "switch",
            Order::Finish => "finish",
            Order::Abort { .. } => "abort",
            Order::OpenWindow => "open_window",
            Order::WindowOpened => "window_opened",
        }
    }
}

/// How a host gets a release it lacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageRole {
    /// Build it from the source. `once`: run the steps marked `once` (the
    /// builder does). `export`: write the staged release's manifest for the
    /// other hosts to copy.
    Build { once: bool, export: bool },
    /// Copy the builder's release: its manifest, which the controller wrote
    /// to this path, and its content digest.
    Copy {
        manifest: String,
        digest: String,
        /// Set when `manifest` is only the difference from this release.
        base: Option<Base>,
    },
}

/// Host to controller.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Report {
    Opened {
        deployment: i64,
        live: Option<String>,
        live_commit: Option<String>,
        /// The live release's content digest.
        live_digest: Option<String>,
        /// Complete releases on disk, live one included.
        releases: Vec<String>,
        /// Where the controller may write an archive to stage from.
        upload: String,
    },
    Step {
        step: String,
        done: bool,
        ok: bool,
    },
    Log {
        level: String,
        message: String,
    },
    Progress {
        step: String,
        done: u64,
        total: Option<u64>,
    },
    Staged {
        release: String,
        /// Asked to export: where the release's manifest was written, and
        /// its content digest.
        export: Option<Export>,
        /// The user files its carry placed in the release, when it listed them.
        user_content: Option<zdeploy_core::user_content::UserContentSummary>,
    },
    /// A copying host lacks these files (their paths in the file `list`,
    /// each ended by a NUL); answer with `Files`.
    Lacking {
        files: u64,
        bytes: u64,
        list: String,
    },
    Synced,
    Switched {
        at_ms: i64,
    },
    Aborted,
    Done {
        release: Option<String>,
        outcome: zdeploy_core::policy::DeployOutcome,
    },
    /// About to run a build step that needs a maintenance window: open
    /// every other host's, then answer `WindowOpened`.
    WindowOpening,
    /// This host's window is open (`OpenWindow`).
    WindowOpen,
    /// `busy`: another run holds the host's lock.
    Failed {
        error: String,
        busy: bool,
    },
}

/// A staged release's manifest, written on its host for others to copy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Export {
    pub manifest: String,
    pub digest: String,
    /// Its difference from the release it was built over, for hosts live
    /// on that release.
    pub delta: Option<Delta>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delta {
    pub manifest: String,
    pub base: Base,
}
