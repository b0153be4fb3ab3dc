//! Notifications: every deploy and rollback, asked from the CLI, the agent
//! or a fleet's controller, told to the targets in the app's `notify` list
//! (Slack, Discord, Teams, or signed JSON), each on a thread of its own with
//! retries, so no receiver, slow or failing, ever holds up a deploy.

mod payload;
pub mod targets;

use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use zdeploy_core::source::redact_credentials;

use crate::config::{AppConfig, Topology};
use crate::deploying::Done;
use crate::fleet::controller::FleetOutcome;
use crate::fleet::etcd::records::TriggerOutcome;
use zdeploy_core::policy::DeployOutcome;

pub use payload::SIGNATURE_HEADER;

/// Tries per notification, the first retry after `FIRST_RETRY`, each wait
/// four times the one before.
const ATTEMPTS: u32 = 4;
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// One try's limit, connection and answer included.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a notification tells of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Started,
    Succeeded,
    Failed,
    /// The new release failed after its switch; the one before is live again.
    SwitchedBack,
    RolledBack,
    /// A trigger the app's freeze held back.
    Skipped,
    /// A new release serves a share of clients as a canary (its promote
    /// says `succeeded`, its abort `switched_back`).
    Canary,
}

impl Event {
    pub const ALL: [Event; 7] = [
        Event::Started,
        Event::Succeeded,
        Event::Failed,
        Event::SwitchedBack,
        Event::RolledBack,
        Event::Skipped,
        Event::Canary,
    ];
    /// What a target without `on` hears: everything but the starts.
    pub const DEFAULT: [Event; 6] = [
        Event::Succeeded,
        Event::Failed,
        Event::SwitchedBack,
        Event::RolledBack,
        Event::Skipped,
        Event::Canary,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Event::Started => "started",
            Event::Succeeded => "succeeded",
            Event::Failed => "failed",
            Event::SwitchedBack => "switched_back",
            Event::RolledBack => "rolled_back",
            Event::Skipped => "skipped",
            Event::Canary => "canary",
        }
    }

    /// An event's name; the old `success` and `failure` still mean what
    /// they did.
    fn parse(name: &str) -> Option<&'static [Event]> {
        Some(match name {
            "started" => &[Event::Started],
            "succeeded" => &[Event::Succeeded],
            "failed" => &[Event::Failed],
            "switched_back" => &[Event::SwitchedBack],
            "rolled_back" => &[Event::RolledBack],
            "skipped" => &[Event::Skipped],
            "canary" => &[Event::Canary],
            "success" => &[Event::Succeeded, Event::RolledBack],
            "failure" => &[Event::Failed, Event::SwitchedBack],
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Slack,
    Discord,
    Teams,
    Json,
}

/// A signing key; never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// One receiver of notifications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub url: String,
    pub format: Format,
    pub on: Vec<Event>,
    pub secret: Option<Secret>,
}

/// What happened, as every format tells it.
#[derive(Debug, Clone)]
pub struct Notice {
    pub app: String,
    pub event: Event,
    /// "deploy" or "rollback".
    pub kind: String,
    pub deployment: Option<i64>,
    pub release: Option<String>,
    pub previous: Option<String>,
    pub commit: Option<String>,
    pub hosts: Vec<String>,
    pub duration_ms: Option<u64>,
    pub error: Option<String>,
    pub trigger: String,
    /// RFC 3339.
    pub at: String,
}

impl Notice {
    pub fn new(app: &AppConfig, event: Event, kind: &str, trigger: &str) -> Self {
        Notice {
            app: app
                .name
                .clone()
                .unwrap_or_else(|| app.layout.context().to_string()),
            event,
            kind: kind.to_string(),
            deployment: None,
            release: None,
            previous: None,
            commit: None,
            hosts: hosts_of(app),
            duration_ms: None,
            error: None,
            trigger: trigger.to_string(),
            at: jiff::Timestamp::now().to_string(),
        }
    }
}

/// The hosts a run of `app` acts on, by name.
fn hosts_of(app: &AppConfig) -> Vec<String> {
    match &app.topology {
        Topology::Ssh(fleet) => fleet.hosts.iter().map(|h| h.shown.clone()).collect(),
        _ => rustix::system::uname()
            .nodename()
            .to_str()
            .map(|name| vec![name.to_string()])
            .unwrap_or_default(),
    }
}

/// A deploy or rollback being told about: `started` when it begins, its
/// end when it ends.
pub struct Run<'a> {
    app: &'a AppConfig,
    kind: &'static str,
    trigger: String,
    started: Instant,
}

impl<'a> Run<'a> {
    pub fn start(app: &'a AppConfig, kind: &'static str, trigger: &str) -> Self {
        announce(app, Notice::new(app, Event::Started, kind, trigger));
        Run {
            app,
            kind,
            trigger: trigger.to_string(),
            started: Instant::now(),
        }
    }

    /// Tell how the run ended (nothing for one that changed nothing).
    pub fn finish(self, result: &anyhow::Result<Done>) {
        let mut notice = Notice::new(self.app, Event::Failed, self.kind, &self.trigger);
        notice.duration_ms = Some(self.started.elapsed().as_millis() as u64);
        match result {
            Err(error) => {
                let switched_back = error.chain().any(|e| {
                    matches!(e.downcast_ref(), Some(zdeploy_core::Error::SwitchedBack(_)))
                });
                if switched_back {
                    notice.event = Event::SwitchedBack;
                }
                notice.error = Some(format!("{error:#}"));
            }
            Ok(Done::Deployed(done)) => {
                notice.event = match done.outcome {
                    DeployOutcome::Unchanged => return,
                    DeployOutcome::Canary => Event::Canary,
                    DeployOutcome::Deployed => Event::Succeeded,
                };
                notice.deployment = Some(done.deployment);
                notice.release = done.release.clone();
                notice.previous = done.previous.clone();
                notice.commit = done.commit.clone();
            }
            Ok(Done::RolledBack(done)) => {
                notice.event = Event::RolledBack;
                notice.deployment = Some(done.deployment);
                notice.release = Some(done.release.clone());
                notice.previous = Some(done.previous.clone());
            }
            Ok(Done::Fleet(done)) => {
                notice.event = match done.outcome {
                    FleetOutcome::Unchanged => return,
                    FleetOutcome::RolledBack => Event::RolledBack,
                    FleetOutcome::Deployed | FleetOutcome::Converged => Event::Succeeded,
                    FleetOutcome::Canary => Event::Canary,
                };
                notice.release = done.release.clone();
                notice.commit = done.commit.clone();
                notice.hosts = done.hosts.iter().map(|h| h.host.clone()).collect();
            }
            Ok(Done::Etcd(done)) => {
                notice.event = match done.outcome {
                    TriggerOutcome::Unchanged => return,
                    TriggerOutcome::Deployed if self.kind == "rollback" => Event::RolledBack,
                    TriggerOutcome::Deployed => Event::Succeeded,
                    TriggerOutcome::Aborted | TriggerOutcome::Failed => Event::Failed,
                };
                notice.release = done.release.clone();
                notice.commit = done.commit.clone();
                notice.error = done.error.clone();
                notice.hosts = Vec::new();
            }
        }
        announce(self.app, notice);
    }
}

/// Send `notice` to every target of `app` that wants its event, each on a
/// thread of its own.
pub fn announce(app: &AppConfig, mut notice: Notice) {
    // Credentials in a source URL never leave in an error text.
    notice.error = notice.error.as_deref().map(redact_credentials);
    for target in app.notify.iter().filter(|t| t.on.contains(&notice.event)) {
        let target = target.clone();
        let notice = notice.clone();
        let handle = std::thread::spawn(move || deliver(&target, &notice));
        let mut pending = PENDING.lock().expect("pending lock");
        pending.retain(|h| !h.is_finished());
        pending.push(handle);
    }
}

/// Deliveries still being tried (a CLI waits a little for them at exit).
static PENDING: Mutex<Vec<JoinHandle<()>>> = Mutex::new(Vec::new());

/// Wait at most `limit` for deliveries still being tried; say so if some
/// are given up.
pub fn wait_for_deliveries(limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let left = {
            let mut pending = PENDING.lock().expect("pending lock");
            pending.retain(|h| !h.is_finished());
            pending.len()
        };
        if left == 0 {
            return;
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                "{left} notification(s) not delivered within {}s; not waiting longer",
                limit.as_secs()
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// POST the notice to `target`, retrying what may pass on a later try: no
/// answer, 408, 429 and 5xx.
fn deliver(target: &Target, notice: &Notice) {
    let body = payload::body(target.format, notice).to_string();
    let signature = target
        .secret
        .as_ref()
        .map(|secret| payload::signature(secret, body.as_bytes()));
    let delivery = format!("{}-{}-{}", notice.app, notice.event.as_str(), notice.at);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(ATTEMPT_TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into();
    let host = shown_url(&target.url);
    let mut wait = FIRST_RETRY;
    for attempt in 1..=ATTEMPTS {
        let mut request = agent
            .post(&target.url)
            .header("content-type", "application/json")
            .header("user-agent", concat!("zdeploy/", env!("CARGO_PKG_VERSION")))
            .header("x-zdeploy-event", notice.event.as_str())
            .header("x-zdeploy-delivery", &delivery);
        if let Some(signature) = &signature {
            request = request.header(SIGNATURE_HEADER, signature);
        }
        let why = match request.send(&body) {
            Ok(response) if response.status().is_success() => return,
            Ok(response) => {
                let status = response.status().as_u16();
                if !(status == 408 || status == 429 || status >= 500) {
                    tracing::warn!(app = %notice.app, %host, status, "notification refused; not retrying");
                    return;
                }
                format!("answered {status}")
            }
            Err(e) => e.to_string(),
        };
        if attempt == ATTEMPTS {
            tracing::warn!(app = %notice.app, %host, error = %why, "notification not delivered; giving up");
        } else {
            tracing::info!(app = %notice.app, %host, error = %why, attempt, "notification failed; retrying");
            std::thread::sleep(wait);
            wait *= 4;
        }
    }
}

/// A webhook URL as logs and errors may show it: scheme and host only (its
/// path often is the secret).
pub fn shown_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    format!("{scheme}://{host}/…")
}
