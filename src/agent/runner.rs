//! The agent's worker for one app: it takes queued triggers one at a time and
//! runs the deploy on a blocking thread, streaming its steps and log lines as
//! events. Rollback, keep and prune asked through the API run the same way.
//! The context's lock is shared with the CLI: a run that finds it held waits.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use zdeploy_core::ErrorKind;
use zdeploy_core::freeze::Freeze;
use zdeploy_core::history::{History, Kind, now_ms};
use zdeploy_core::lock::LockWait;
use zdeploy_core::policy::DeployOutcome;
use zdeploy_core::session::{Level, Observer, RunOptions, Step};

use super::app::{App, Event, Trigger};
use super::{Agent, SharedAgent};
use crate::config::Topology;
use crate::deploying::{self, Done, Request, Watch};

/// Sends what a run does to the app's event stream.
struct Streamer<'a> {
    app: &'a App,
    kind: &'static str,
    trigger: String,
    deployment: AtomicI64,
    lines: AtomicU64,
}

impl Streamer<'_> {
    fn id(&self) -> i64 {
        self.deployment.load(Ordering::SeqCst)
    }
}

impl Observer for Streamer<'_> {
    fn opened(&self, deployment: i64) {
        self.deployment.store(deployment, Ordering::SeqCst);
        if self.kind == "deploy" {
            self.app.set_running_id(deployment);
        }
        self.app.emit(Event::Started {
            deployment,
            kind: self.kind.to_string(),
            trigger: self.trigger.clone(),
        });
    }

    fn step_started(&self, step: Step) {
        if step != Step::Lock {
            self.step(step, "started", None);
        }
    }

    fn step_finished(&self, step: Step, elapsed: Duration, ok: bool) {
        if step != Step::Lock {
            let state = if ok { "ok" } else { "failed" };
            self.step(step, state, Some(elapsed.as_millis() as u64));
        }
    }

    fn log(&self, level: Level, message: &str) {
        self.app.emit(Event::Log {
            deployment: self.id(),
            seq: self.lines.fetch_add(1, Ordering::SeqCst),
            at_ms: now_ms(),
            level: level.as_str().to_string(),
            message: message.to_string(),
        });
    }
}

impl Streamer<'_> {
    fn step(&self, step: Step, state: &str, elapsed_ms: Option<u64>) {
        self.app.emit(Event::Step {
            deployment: self.id(),
            step: step.as_str().to_string(),
            state: state.to_string(),
            elapsed_ms,
        });
    }
}

/// How a run ended, for events, metrics and notifications.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Finished {
    pub deployment: Option<i64>,
    pub outcome: RunOutcome,
    pub release: Option<String>,
    pub commit: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    Success,
    Unchanged,
    /// The new release serves a share of clients as a canary.
    Canary,
    /// Not run: the app is frozen.
    Skipped,
    Failed,
}

impl RunOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Success => "success",
            RunOutcome::Unchanged => "unchanged",
            RunOutcome::Canary => "canary",
            RunOutcome::Skipped => "skipped",
            RunOutcome::Failed => "failed",
        }
    }
}

impl std::fmt::Display for RunOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Finished {
    /// A run that did not fail, on one host or a fleet of either kind: the
    /// one mapping of a deploy's outcome to a run's.
    pub fn completed(
        deployment: Option<i64>,
        outcome: DeployOutcome,
        release: Option<String>,
        commit: Option<String>,
    ) -> Self {
        Finished {
            deployment,
            outcome: match outcome {
                DeployOutcome::Deployed => RunOutcome::Success,
                DeployOutcome::Canary => RunOutcome::Canary,
                DeployOutcome::Unchanged => RunOutcome::Unchanged,
            },
            release,
            commit,
            error: None,
        }
    }
}

/// Run `work` under the app's lock, waiting (and counting the wait) if the
/// CLI or another run holds it, with its events streamed.
pub fn run_streamed<T>(
    agent: &Agent,
    app: &App,
    kind: &'static str,
    trigger: &str,
    work: impl Fn(&RunOptions, &dyn Observer) -> anyhow::Result<T>,
) -> (Option<i64>, anyhow::Result<T>) {
    let streamer = Streamer {
        app,
        kind,
        trigger: trigger.to_string(),
        deployment: AtomicI64::new(0),
        lines: AtomicU64::new(0),
    };
    let mut options = RunOptions {
        trigger: trigger.to_string(),
        wait: LockWait::Fail,
    };
    let mut result = work(&options, &streamer);
    if matches!(&result, Err(e) if busy(e)) {
        agent.metrics.lock_waited(&app.name);
        tracing::info!(app = %app.name, kind, "the lock is held; waiting for it");
        options.wait = LockWait::Queue;
        result = work(&options, &streamer);
    }
    let id = Some(streamer.id()).filter(|id| *id != 0);
    (id, result)
}

/// Deploy the app once for `trigger`; nothing while it is frozen (unless
/// forced), said once in the history for each commit it skips.
fn deploy(agent: &Agent, app: &App, trigger: &Trigger) -> Finished {
    let config = app.config();
    if !trigger.force && matches!(config.topology, Topology::OneHost) {
        match zdeploy_core::freeze::current(&config.layout) {
            Ok(Some(freeze)) => return skipped(&config, trigger, &freeze),
            Ok(None) => {}
            Err(error) => return failed(None, format!("{error:#}")),
        }
    }
    if matches!(config.topology, Topology::OneHost)
        && let Err(error) = crate::canary::end_for_newer(&config, &trigger.describe())
    {
        return failed(None, format!("{error:#}"));
    }
    let request = Request::Deploy {
        force: trigger.force,
        commit: trigger.commit.clone(),
        exact: trigger.exact.clone(),
        archive: trigger.archive.as_ref().map(|upload| upload.path.clone()),
    };
    run(agent, app, &request, trigger)
}

/// Do what `request` asks of the app, however it is deployed: this host's
/// run streamed to the app's watchers, a fleet's as the fleet shows it.
pub fn run(agent: &Agent, app: &App, request: &Request, trigger: &Trigger) -> Finished {
    let config = app.config();
    match &config.topology {
        Topology::Ssh(_) => return super::fleet::run(app, &config, request, &trigger.describe()),
        Topology::Etcd(_) => return super::member::run(app, &config, request, &trigger.source),
        Topology::OneHost | Topology::OnOrders => {}
    }
    let described = trigger.describe();
    let (deployment, result) = run_streamed(
        agent,
        app,
        request.kind(),
        &described,
        |options, observer| {
            let watch = Watch {
                options: options.clone(),
                observer: Some(observer),
                ..Watch::quiet(&described, &|_| {})
            };
            deploying::run(&config, request, &watch)
        },
    );
    match result {
        Ok(Done::Deployed(done)) => Finished::completed(
            Some(done.deployment),
            done.outcome,
            done.release,
            done.commit,
        ),
        Ok(Done::RolledBack(done)) => Finished::completed(
            Some(done.deployment),
            DeployOutcome::Deployed,
            Some(done.release),
            None,
        ),
        Ok(other) => failed(deployment, format!("a run on this host answered {other:?}")),
        Err(error) => failed(deployment, format!("{error:#}")),
    }
}

/// A trigger the freeze holds back: recorded in the history as skipped
/// (once for the same commit and reason), and finished without a deploy.
fn skipped(config: &crate::config::AppConfig, trigger: &Trigger, freeze: &Freeze) -> Finished {
    let why = freeze.describe();
    let recorded = History::open(&config.layout.history_path()).and_then(|history| {
        let last = history.deployments(1)?.into_iter().next();
        let repeated = last.is_some_and(|d| {
            d.outcome == "skipped"
                && d.commit == trigger.commit
                && d.error.as_deref() == Some(&format!("skipped: {why}"))
        });
        if repeated {
            return Ok(None);
        }
        let id = history.record_skipped(Kind::Deploy, &trigger.describe(), &why)?;
        history.set_deployment_target(id, None, trigger.commit.as_deref(), None, None)?;
        Ok(Some(id))
    });
    if let Ok(Some(id)) = recorded {
        let mut notice = crate::notify::Notice::new(
            config,
            crate::notify::Event::Skipped,
            "deploy",
            &trigger.describe(),
        );
        notice.deployment = Some(id);
        notice.commit = trigger.commit.clone();
        notice.error = Some(format!("skipped: {why}"));
        crate::notify::announce(config, notice);
    }
    match recorded {
        Ok(id) => Finished {
            deployment: id,
            outcome: RunOutcome::Skipped,
            release: None,
            commit: None,
            error: Some(format!("skipped: {why}")),
        },
        Err(error) => failed(None, format!("{error:#}")),
    }
}

/// The run found the lock held by another.
pub fn busy(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<zdeploy_core::Error>()
        .is_some_and(|e| e.kind() == ErrorKind::Busy)
}

pub fn failed(deployment: Option<i64>, error: String) -> Finished {
    Finished {
        deployment,
        outcome: RunOutcome::Failed,
        release: None,
        commit: None,
        error: Some(error),
    }
}

/// Report a finished run everywhere it is watched.
pub fn report(agent: &Agent, app: &App, kind: &str, finished: &Finished, elapsed: Duration) {
    agent.metrics.run_finished(
        &app.name,
        kind,
        finished.outcome.as_str(),
        elapsed.as_secs_f64(),
    );
    app.emit(Event::Finished {
        deployment: finished.deployment,
        outcome: finished.outcome.as_str().into(),
        release: finished.release.clone(),
        error: finished.error.clone(),
    });
    match &finished.error {
        Some(error) if finished.outcome != RunOutcome::Failed => {
            tracing::info!(app = %app.name, kind, deployment = ?finished.deployment, %error, "{kind} not run")
        }
        Some(error) => {
            tracing::warn!(app = %app.name, kind, deployment = ?finished.deployment, %error, "{kind} failed")
        }
        None => tracing::info!(
            app = %app.name,
            kind,
            deployment = ?finished.deployment,
            outcome = %finished.outcome,
            release = ?finished.release,
            seconds = elapsed.as_secs_f64(),
            "{kind} finished"
        ),
    }
}

/// Judge the release a deploy put live by its traffic, or the canary it
/// started, on a thread of its own: the queue goes on, and a newer deploy
/// ends the watch (and the canary).
fn watch_after(agent: &SharedAgent, app: &Arc<App>, finished: &Finished) {
    let config = app.config();
    let judging = config
        .canary
        .as_ref()
        .and_then(|c| crate::canary::judging(&config, c));
    match (finished.outcome, finished.deployment, &config.topology) {
        (RunOutcome::Canary, _, Topology::Ssh(fleet)) => {
            let Some(policy) = judging else { return };
            let (config, fleet) = (config.clone(), fleet.clone());
            judge_on_thread(agent, app, "judging the fleet's canary", move |say| {
                let judged = crate::fleet::canary::judge(&config, &fleet, &policy, say)?;
                Ok(Some(judged.verdict.name()))
            });
        }
        (RunOutcome::Canary, Some(id), Topology::OneHost) => {
            let Some(policy) = judging else { return };
            let config = config.clone();
            judge_on_thread(agent, app, "judging the canary", move |say| {
                let judged = crate::canary::judge(&config, &policy, id, say, &crate::watch::Quiet)?;
                Ok(judged.map(|j| j.record.verdict.name()))
            });
        }
        (RunOutcome::Success, Some(id), Topology::OneHost) => {
            let Some(policy) = config.watch else { return };
            let (config, agent_now, app_now) = (config.clone(), agent.clone(), app.clone());
            judge_on_thread(agent, app, "the watch", move |say| {
                let ended = || {
                    if agent_now.is_stopping() {
                        Some("the agent stopped".to_string())
                    } else {
                        app_now
                            .is_busy()
                            .then(|| "a newer deploy was asked for".to_string())
                    }
                };
                let watched =
                    crate::watch::watch(&config, &policy, id, &ended, say, &crate::watch::Quiet)?;
                Ok(watched.map(|w| w.record.verdict.name()))
            });
        }
        _ => {}
    }
}

/// Run `judge` on a thread of its own (the queue goes on); the verdict it
/// names is counted, its failure logged as `what` failing.
fn judge_on_thread(
    agent: &SharedAgent,
    app: &Arc<App>,
    what: &'static str,
    judge: impl FnOnce(&dyn Fn(&str)) -> anyhow::Result<Option<&'static str>> + Send + 'static,
) {
    let (agent, app) = (agent.clone(), app.clone());
    tokio::task::spawn_blocking(move || {
        let say = |line: &str| tracing::info!(app = %app.name, "{line}");
        match judge(&say) {
            Ok(Some(verdict)) => agent.metrics.watched(&app.name, verdict),
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(app = %app.name, error = %format!("{error:#}"), "{what} failed")
            }
        }
    });
}

/// The app's worker: one deploy at a time until the agent stops or the app
/// is dropped from the config.
pub async fn work(agent: SharedAgent, app: Arc<App>) {
    loop {
        if app.is_removed() || agent.is_stopping() {
            return;
        }
        let Some(trigger) = app.start_next() else {
            app.wake.notified().await;
            continue;
        };
        tracing::info!(app = %app.name, trigger = %trigger.describe(), "deploy starting");
        let started = Instant::now();
        let (worker_agent, worker_app) = (agent.clone(), app.clone());
        let asked_for = trigger.commit.clone();
        let finished =
            tokio::task::spawn_blocking(move || deploy(&worker_agent, &worker_app, &trigger))
                .await
                .unwrap_or_else(|panic| {
                    failed(None, format!("the deploy thread panicked: {panic}"))
                });
        app.finish_running(&finished);
        let commit = finished.commit.as_deref().or(asked_for.as_deref());
        app.deploy_ended(commit, finished.outcome != RunOutcome::Failed);
        report(&agent, &app, "deploy", &finished, started.elapsed());
        watch_after(&agent, &app, &finished);
        agent.idle.notify_waiters();
    }
}
