//! One app as the agent holds it: its config, its trigger queue (triggers
//! that arrive while a deploy runs coalesce into at most one more deploy),
//! its live event stream, and what the poller last saw.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;
use tokio::sync::{Notify, broadcast};
use zdeploy_core::history::now_ms;

use super::runner::Finished;
use super::upload::Upload;
use crate::config::AppConfig;

/// Delivery ids remembered per app, to ignore a webhook delivered twice.
const REMEMBERED_DELIVERIES: usize = 1000;
/// Live events buffered for a slow subscriber before it misses some.
const EVENT_BUFFER: usize = 1024;
/// Finished deploys remembered per app, for asking how a trigger ended.
const REMEMBERED_ENDS: usize = 1000;

/// What asked for a deploy.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Trigger {
    /// "poll", "webhook github", "api", …
    pub source: String,
    /// The commit the trigger named, when it named one.
    pub commit: Option<String>,
    /// Deploy exactly this commit (the API's `commit`).
    pub exact: Option<String>,
    /// Deploy this archive (sent with the API's deploy); a newer trigger
    /// that replaces this one lets it go.
    #[serde(skip)]
    pub archive: Option<Arc<Upload>>,
    pub force: bool,
    /// Further triggers folded into this one while a deploy ran.
    pub coalesced: u32,
    /// The app's triggers this one stands for: numbered as they are
    /// accepted, each served by exactly one deploy.
    pub first_id: u64,
    pub last_id: u64,
}

impl Trigger {
    pub fn new(source: impl Into<String>) -> Self {
        Trigger {
            source: source.into(),
            commit: None,
            exact: None,
            archive: None,
            force: false,
            coalesced: 0,
            first_id: 0,
            last_id: 0,
        }
    }

    /// For the history: "agent: webhook github (+3 coalesced) [triggers 5-8]".
    pub fn describe(&self) -> String {
        match self.coalesced {
            0 => format!("agent: {} [trigger {}]", self.source, self.last_id),
            n => format!(
                "agent: {} (+{n} coalesced) [triggers {}-{}]",
                self.source, self.first_id, self.last_id
            ),
        }
    }
}

/// A live event of one app, sent to dashboards and log streams.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Queued {
        trigger: String,
    },
    Started {
        deployment: i64,
        kind: String,
        trigger: String,
    },
    Step {
        deployment: i64,
        step: String,
        state: String,
        elapsed_ms: Option<u64>,
    },
    Log {
        deployment: i64,
        /// The line's place in the deployment's log (0 first).
        seq: u64,
        at_ms: i64,
        level: String,
        message: String,
    },
    Finished {
        deployment: Option<i64>,
        /// As the history records it ("success", "unchanged", "failed", …).
        outcome: String,
        release: Option<String>,
        error: Option<String>,
    },
    Poll {
        ok: bool,
        error: Option<String>,
    },
    /// What this host knows of its fleet in etcd changed (a deploy, a
    /// switch, the leader, a member, etcd's reach).
    Fleet,
}

impl Event {
    /// The deployment an event belongs to, if any.
    pub fn deployment(&self) -> Option<i64> {
        match self {
            Event::Started { deployment, .. }
            | Event::Step { deployment, .. }
            | Event::Log { deployment, .. } => Some(*deployment),
            Event::Finished { deployment, .. } => *deployment,
            Event::Queued { .. } | Event::Poll { .. } | Event::Fleet => None,
        }
    }
}

#[derive(Debug, Default)]
struct Queue {
    /// The number of the last trigger accepted.
    last_id: u64,
    pending: Option<Trigger>,
    /// The deployment running now (`Some(None)` before it has a record).
    running: Option<Option<i64>>,
    /// The triggers the running deploy serves.
    running_triggers: Option<(u64, u64)>,
    /// How the last deploys ended, oldest first.
    ended: VecDeque<Ended>,
}

/// How the deploy that served a run of triggers ended.
#[derive(Debug, Clone)]
struct Ended {
    first_id: u64,
    last_id: u64,
    finished: Finished,
}

/// Where a trigger is, for a CI waiting on the deploy it asked for.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TriggerState {
    Queued,
    Running {
        deployment: Option<i64>,
    },
    /// `outcome` is "success", "unchanged", "skipped" or "failed".
    Done {
        #[serde(flatten)]
        finished: Finished,
    },
}

/// What the poller last saw, for the dashboard and the API.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PollStatus {
    pub last_ms: Option<i64>,
    pub remote_commit: Option<String>,
    pub error: Option<String>,
    pub failures: u32,
    /// A commit whose deploy failed: polling does not retry it (a push or
    /// an API deploy does).
    pub failed_commit: Option<String>,
}

pub struct App {
    pub name: String,
    config: RwLock<Arc<AppConfig>>,
    /// The webhook secret, read when the config was (re)loaded.
    secret: RwLock<Option<String>>,
    queue: Mutex<Queue>,
    /// Woken when a trigger is queued or the agent stops.
    pub wake: Notify,
    events: broadcast::Sender<Event>,
    deliveries: Mutex<VecDeque<String>>,
    poll: Mutex<PollStatus>,
    /// Set when SIGHUP dropped the app from the config.
    removed: AtomicBool,
    /// Each host's state, when the app is a fleet.
    fleet: Mutex<super::fleet::FleetView>,
    /// What this host knows of its fleet in etcd.
    member: Mutex<crate::fleet::etcd::member::MemberView>,
    /// Its client of the fleet's etcd, once connected.
    etcd: Mutex<Option<crate::fleet::etcd::store::Store>>,
}

impl App {
    pub fn new(name: String, config: AppConfig, secret: Option<String>) -> Arc<Self> {
        let fleet = config
            .topology
            .ssh()
            .map(super::fleet::FleetView::for_hosts)
            .unwrap_or_default();
        Arc::new(App {
            name,
            config: RwLock::new(Arc::new(config)),
            secret: RwLock::new(secret),
            queue: Mutex::default(),
            wake: Notify::new(),
            events: broadcast::channel(EVENT_BUFFER).0,
            deliveries: Mutex::default(),
            poll: Mutex::default(),
            removed: AtomicBool::new(false),
            fleet: Mutex::new(fleet),
            member: Mutex::default(),
            etcd: Mutex::default(),
        })
    }

    pub fn etcd(&self) -> &Mutex<Option<crate::fleet::etcd::store::Store>> {
        &self.etcd
    }

    pub fn member_view(&self) -> &Mutex<crate::fleet::etcd::member::MemberView> {
        &self.member
    }

    pub fn fleet_view(&self) -> &Mutex<super::fleet::FleetView> {
        &self.fleet
    }

    pub fn config(&self) -> Arc<AppConfig> {
        self.config.read().expect("config lock").clone()
    }

    pub fn secret(&self) -> Option<String> {
        self.secret.read().expect("secret lock").clone()
    }

    /// New config and secret after SIGHUP; a running deploy keeps the old one.
    pub fn replace(&self, config: AppConfig, secret: Option<String>) {
        *self.config.write().expect("config lock") = Arc::new(config);
        *self.secret.write().expect("secret lock") = secret;
    }

    pub fn remove(&self) {
        self.removed.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::SeqCst)
    }

    /// Queue a deploy and return the trigger's number. While one is
    /// pending, the newer trigger replaces it and counts the older as
    /// coalesced: one deploy serves a run of consecutive numbers.
    pub fn trigger(&self, trigger: Trigger) -> u64 {
        let mut queue = self.queue.lock().expect("queue lock");
        queue.last_id += 1;
        let id = queue.last_id;
        let merged = match queue.pending.take() {
            None => Trigger {
                first_id: id,
                last_id: id,
                ..trigger
            },
            Some(older) => Trigger {
                force: trigger.force || older.force,
                coalesced: older.coalesced + 1 + trigger.coalesced,
                first_id: older.first_id,
                last_id: id,
                ..trigger
            },
        };
        self.emit(Event::Queued {
            trigger: merged.describe(),
        });
        queue.pending = Some(merged);
        drop(queue);
        self.wake.notify_one();
        id
    }

    /// Take the pending trigger and mark a deploy running.
    pub fn start_next(&self) -> Option<Trigger> {
        let mut queue = self.queue.lock().expect("queue lock");
        let next = queue.pending.take()?;
        queue.running = Some(None);
        queue.running_triggers = Some((next.first_id, next.last_id));
        Some(next)
    }

    pub fn set_running_id(&self, id: i64) {
        self.queue.lock().expect("queue lock").running = Some(Some(id));
    }

    /// The running deploy ended as `finished`.
    pub fn finish_running(&self, finished: &Finished) {
        let mut queue = self.queue.lock().expect("queue lock");
        queue.running = None;
        if let Some((first_id, last_id)) = queue.running_triggers.take() {
            if queue.ended.len() == REMEMBERED_ENDS {
                queue.ended.pop_front();
            }
            queue.ended.push_back(Ended {
                first_id,
                last_id,
                finished: finished.clone(),
            });
        }
    }

    /// Where trigger `id` is; `None` if it was never accepted or ended too
    /// long ago to be remembered.
    pub fn trigger_state(&self, id: u64) -> Option<TriggerState> {
        let queue = self.queue.lock().expect("queue lock");
        let covers = |first: u64, last: u64| (first..=last).contains(&id);
        if queue
            .pending
            .as_ref()
            .is_some_and(|t| covers(t.first_id, t.last_id))
        {
            return Some(TriggerState::Queued);
        }
        if let (Some((first, last)), Some(deployment)) = (queue.running_triggers, queue.running)
            && covers(first, last)
        {
            return Some(TriggerState::Running { deployment });
        }
        queue
            .ended
            .iter()
            .rev()
            .find(|ended| covers(ended.first_id, ended.last_id))
            .map(|ended| TriggerState::Done {
                finished: ended.finished.clone(),
            })
    }

    /// `(running deployment, pending trigger)`.
    pub fn activity(&self) -> (Option<Option<i64>>, Option<Trigger>) {
        let queue = self.queue.lock().expect("queue lock");
        (queue.running, queue.pending.clone())
    }

    pub fn is_busy(&self) -> bool {
        let queue = self.queue.lock().expect("queue lock");
        queue.running.is_some() || queue.pending.is_some()
    }

    pub fn emit(&self, event: Event) {
        // No subscriber is fine: nobody is watching.
        let _ = self.events.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Remember a webhook delivery id; false if it was seen before.
    pub fn first_delivery(&self, id: &str) -> bool {
        let mut seen = self.deliveries.lock().expect("deliveries lock");
        if seen.iter().any(|d| d == id) {
            return false;
        }
        if seen.len() == REMEMBERED_DELIVERIES {
            seen.pop_front();
        }
        seen.push_back(id.to_string());
        true
    }

    pub fn poll_status(&self) -> PollStatus {
        self.poll.lock().expect("poll lock").clone()
    }

    pub fn poll_succeeded(&self, commit: Option<String>) {
        let mut poll = self.poll.lock().expect("poll lock");
        let recovered = poll.error.is_some();
        poll.last_ms = Some(now_ms());
        poll.remote_commit = commit;
        poll.error = None;
        poll.failures = 0;
        drop(poll);
        if recovered {
            self.emit(Event::Poll {
                ok: true,
                error: None,
            });
        }
    }

    /// Remember how the deploy of `commit` ended, so polling does not retry
    /// a commit that failed.
    pub fn deploy_ended(&self, commit: Option<&str>, succeeded: bool) {
        let mut poll = self.poll.lock().expect("poll lock");
        if succeeded {
            poll.failed_commit = None;
        } else if let Some(commit) = commit {
            poll.failed_commit = Some(commit.to_string());
        }
    }

    /// Record a failed poll; returns how many failed in a row.
    pub fn poll_failed(&self, error: String) -> u32 {
        let mut poll = self.poll.lock().expect("poll lock");
        poll.last_ms = Some(now_ms());
        poll.error = Some(error.clone());
        poll.failures += 1;
        let failures = poll.failures;
        drop(poll);
        self.emit(Event::Poll {
            ok: false,
            error: Some(error),
        });
        failures
    }
}
