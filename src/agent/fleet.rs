//! The agent as a fleet's controller: a trigger deploys to every host, and
//! the app keeps what the dashboard, API and metrics show of each host —
//! its state, its release, its failures — and the last switch's skew.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use zdeploy_core::history::now_ms;

use super::app::{App, Event};
use super::runner::{Finished, failed};
use crate::config::{AppConfig, Topology};
use crate::deploying::{self, Done, Request, Watch};
use crate::fleet::controller::{FleetObserver, FleetOutcome};
use crate::fleet::settings::FleetSettings;

/// How many times a fleet deploy that found a host busy is tried again.
const BUSY_RETRIES: u32 = 30;
const BUSY_PAUSE: Duration = Duration::from_secs(2);

/// What is known of a fleet's hosts from the agent's runs.
#[derive(Debug, Default, Clone, Serialize)]
pub struct FleetView {
    pub hosts: BTreeMap<String, HostView>,
    /// The release the last successful run left on every host.
    pub release: Option<String>,
    /// First to last host's switch in that run.
    pub skew_ms: Option<i64>,
    pub finished_ms: Option<i64>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct HostView {
    /// The last step or state the host reported.
    pub state: String,
    pub release: Option<String>,
    pub failures: u64,
    pub last_error: Option<String>,
}

impl FleetView {
    pub fn for_hosts(fleet: &FleetSettings) -> Self {
        FleetView {
            hosts: fleet
                .hosts
                .iter()
                .map(|h| (h.shown.clone(), HostView::default()))
                .collect(),
            ..FleetView::default()
        }
    }
}

/// Streams a fleet run's lines as the app's log and keeps its hosts' view.
struct Tracker<'a> {
    app: &'a App,
    view: &'a Mutex<FleetView>,
    lines: std::sync::atomic::AtomicU64,
}

impl FleetObserver for Tracker<'_> {
    fn line(&self, host: &str, text: &str) {
        let level = if text.starts_with("warning:") {
            "warn"
        } else {
            "info"
        };
        self.app.emit(Event::Log {
            deployment: 0,
            seq: self.lines.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
            at_ms: now_ms(),
            level: level.into(),
            message: format!("{host}: {text}"),
        });
    }

    fn host_state(&self, host: &str, state: &str) {
        let mut view = self.view.lock().expect("fleet view lock");
        let entry = view.hosts.entry(host.to_string()).or_default();
        entry.state = state.to_string();
        if let Some(why) = state.strip_prefix("failed: ") {
            entry.failures += 1;
            entry.last_error = Some(why.to_string());
        }
    }
}

/// Deploy or roll back the app's fleet; a host that is busy (another
/// controller, or the CLI) is waited for, as a single host's lock is.
pub fn run(app: &App, config: &AppConfig, request: &Request, trigger: &str) -> Finished {
    app.emit(Event::Started {
        deployment: 0,
        kind: format!("fleet {}", request.kind()),
        trigger: trigger.to_string(),
    });
    let tracker = Tracker {
        app,
        view: app.fleet_view(),
        lines: Default::default(),
    };
    let watch = Watch {
        fleet: Some(&tracker),
        ..Watch::quiet(trigger, &|_| {})
    };
    let mut tries = 0;
    let result = loop {
        let result = deploying::run(config, request, &watch);
        let busy = matches!(&result, Err(e) if e.downcast_ref::<zdeploy_core::Error>()
            .is_some_and(|e| e.kind() == zdeploy_core::ErrorKind::Busy));
        if !busy || tries == BUSY_RETRIES {
            break result;
        }
        tries += 1;
        // A canary the hosts run refuses deploys until it ends: a newer
        // deploy aborts it, as on one host (asked once: other holders of
        // the hosts' locks are waited for).
        if let (1, Request::Deploy { .. }, Topology::Ssh(fleet)) =
            (tries, request, &config.topology)
        {
            match crate::fleet::canary::abort_for_newer(config, fleet, trigger) {
                Ok(true) => continue,
                Ok(false) => {}
                Err(error) => break Err(error),
            }
        }
        std::thread::sleep(BUSY_PAUSE);
    };
    match result {
        Ok(Done::Fleet(done)) => {
            let mut view = app.fleet_view().lock().expect("fleet view lock");
            for host in &done.hosts {
                view.hosts.entry(host.host.clone()).or_default().release = host.release.clone();
            }
            if done.outcome != FleetOutcome::Unchanged {
                view.skew_ms = done.skew_ms;
            }
            view.release = done.release.clone();
            view.finished_ms = Some(now_ms());
            Finished::completed(None, done.outcome.into(), done.release, done.commit)
        }
        Ok(other) => failed(None, format!("an ssh fleet's run answered {other:?}")),
        Err(error) => failed(None, format!("{error:#}")),
    }
}
