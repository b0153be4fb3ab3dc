//! `zdeploy agent`: one long-running process for every app in the config. It
//! deploys on an interval and on push webhooks, serves the API, the
//! dashboard and metrics, and shares the lock and history with the CLI.
//! SIGTERM stops taking triggers and lets a running deploy finish (or
//! abandons it after `shutdown_timeout`: ROOT is whole at every instant);
//! SIGHUP rereads the config.

pub mod api;
pub mod app;
pub mod fleet;
mod front;
pub mod member;
pub mod metrics;
pub mod peer;
pub mod poll;
pub mod runner;
pub mod traffic;
pub mod upload;
pub mod webhook;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tokio::sync::{Notify, Semaphore, watch};

use crate::config::{AgentConfig, AppConfig, ConfigFile, Overrides, Role, UsageError};
use app::App;
use metrics::Metrics;

pub type SharedAgent = Arc<Agent>;

pub struct Agent {
    config_path: PathBuf,
    apps: RwLock<BTreeMap<String, Arc<App>>>,
    token: RwLock<Option<String>>,
    /// Where the agent listens (what fleet members reach it at, unless
    /// the fleet says otherwise).
    pub listen: std::net::SocketAddr,
    pub metrics: Metrics,
    stopping: AtomicBool,
    stop_signal: watch::Sender<bool>,
    /// Woken whenever a deploy finishes (shutdown waits on it).
    pub idle: Notify,
    /// Remote checks in flight at once: each runs git on a thread of its
    /// own, so many apps polling together would otherwise grow memory.
    pub poll_slots: Semaphore,
}

const CONCURRENT_POLLS: usize = 4;

impl Agent {
    pub fn app(&self, name: &str) -> Option<Arc<App>> {
        self.apps.read().expect("apps lock").get(name).cloned()
    }

    pub fn apps(&self) -> Vec<Arc<App>> {
        self.apps
            .read()
            .expect("apps lock")
            .values()
            .cloned()
            .collect()
    }

    /// The config file the agent reads.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    pub fn token(&self) -> Option<String> {
        self.token.read().expect("token lock").clone()
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Resolves when the agent begins to stop.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut receiver = self.stop_signal.subscribe();
        async move {
            let _ = receiver.wait_for(|stop| *stop).await;
        }
    }

    /// Sleep unless the agent stops first; false if it did.
    pub async fn sleep(&self, delay: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(delay) => !self.is_stopping(),
            _ = self.stopped() => false,
        }
    }

    fn begin_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = self.stop_signal.send(true);
        for app in self.apps() {
            app.wake.notify_one();
        }
    }

    fn running_count(&self) -> usize {
        self.apps()
            .iter()
            .filter(|a| a.activity().0.is_some())
            .count()
    }
}

/// Every app of the config, validated, with its webhook secret read.
pub fn load_apps(
    file: &ConfigFile,
) -> Result<Vec<(String, AppConfig, Option<String>)>, UsageError> {
    let mut apps = Vec::new();
    for name in file.app_names() {
        let config = file
            .app(Some(name), &Overrides::default(), Role::Operator)
            .map_err(|e| UsageError(anyhow::Error::from(e).to_string()))?;
        config.deploy_plan(false)?;
        let secret = match &config.automation.webhook_secret {
            Some(source) => Some(source.read().map_err(|e| {
                UsageError(format!("{}: apps.{name}: {}", file.path().display(), e.0))
            })?),
            None => None,
        };
        apps.push((name.to_string(), config, secret));
    }
    if apps.is_empty() {
        return Err(UsageError(format!(
            "{} defines no apps; add an [apps.NAME] table",
            file.path().display()
        )));
    }
    Ok(apps)
}

/// The config, checked: what `zdeploy agent --check` prints.
pub fn check(config_path: &Path, listen: Option<&str>) -> Result<String, UsageError> {
    let file = ConfigFile::load(config_path)?;
    let agent = file.agent(listen)?;
    let apps = load_apps(&file)?;
    let mut report = format!(
        "{}: ok; the agent would listen on {}{}\n",
        config_path.display(),
        agent.listen,
        if agent.token.is_some() {
            " (actions need the token)"
        } else {
            ""
        }
    );
    for (name, config, secret) in &apps {
        let auto = &config.automation;
        report.push_str(&format!(
            "  {name}: {} -> {}/{}; interval {}; webhooks {}; health {}; notify {}\n",
            config
                .source
                .as_ref()
                .map(|s| s.shown())
                .unwrap_or_default(),
            config.layout.webroot().display(),
            config.layout.context(),
            auto.interval
                .map(crate::units::config_duration)
                .unwrap_or_else(|| "off".into()),
            if secret.is_some() { "on" } else { "off" },
            if config.policy.health.is_some() {
                "on"
            } else {
                "off"
            },
            match config.notify.len() {
                0 => "off".to_string(),
                n => format!("{n} target(s)"),
            },
        ));
    }
    Ok(report)
}

fn router(agent: SharedAgent) -> Router {
    Router::new()
        .route("/", get(crate::web::dashboard))
        .route("/apps/{app}/panel", get(crate::web::panel))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/ready", get(api::ready))
        .route("/metrics", get(api::metrics))
        .route("/hooks/{app}", post(webhook::receive))
        .route("/api/apps", get(api::apps))
        .route("/api/apps/{app}", get(api::app))
        .route("/api/apps/{app}/releases", get(api::releases))
        .route("/api/apps/{app}/deployments", get(api::deployments))
        .route("/api/apps/{app}/deployments/{id}", get(api::deployment))
        .route(
            "/api/apps/{app}/deployments/{id}/log",
            get(api::deployment_log),
        )
        .route("/api/apps/{app}/events", get(api::events))
        .route("/api/apps/{app}/traffic", get(api::traffic))
        .route("/api/apps/{app}/deploy", post(api::deploy))
        .route("/api/apps/{app}/triggers/{id}", get(api::trigger_state))
        .route("/api/apps/{app}/rollback", post(api::rollback))
        .route("/api/apps/{app}/canary/{action}", post(api::canary))
        .route("/api/apps/{app}/keep", post(api::keep))
        .route("/api/apps/{app}/prune", post(api::prune))
        .route("/api/apps/{app}/run", post(peer::run))
        .route("/api/apps/{app}/user-content", get(peer::user_content))
        .route(
            "/api/apps/{app}/releases/{release}/manifest",
            get(peer::manifest),
        )
        .route(
            "/api/apps/{app}/releases/{release}/files",
            post(peer::files).layer(DefaultBodyLimit::max(peer::MAX_LIST)),
        )
        .layer(DefaultBodyLimit::max(webhook::MAX_BODY))
        .with_state(agent)
}

fn spawn_app_tasks(agent: &SharedAgent, app: &Arc<App>) {
    tokio::spawn(runner::work(agent.clone(), app.clone()));
    tokio::spawn(traffic::listen(agent.clone(), app.clone()));
    if app.config().topology.etcd().is_some() {
        // The fleet's leader polls for every member.
        tokio::spawn(member::serve(agent.clone(), app.clone()));
    } else {
        tokio::spawn(poll::poll(agent.clone(), app.clone()));
    }
}

/// SIGHUP: reread the config; apps added start, apps removed stop (a
/// running deploy of theirs finishes), the others take the new settings.
fn reload(agent: &SharedAgent) {
    let loaded = ConfigFile::load(&agent.config_path).and_then(|file| {
        let settings = file.agent(None)?;
        Ok((settings, load_apps(&file)?))
    });
    let (settings, apps) = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            tracing::error!(error = %e, "config not reloaded; keeping the running one");
            return;
        }
    };
    *agent.token.write().expect("token lock") = settings.token;
    let mut current = agent.apps.write().expect("apps lock");
    let names: Vec<String> = apps.iter().map(|(n, _, _)| n.clone()).collect();
    current.retain(|name, app| {
        let keep = names.contains(name);
        if !keep {
            tracing::info!(app = %name, "app removed from the config");
            app.remove();
        }
        keep
    });
    for (name, config, secret) in apps {
        match current.get(&name) {
            Some(app) => {
                let had_interval = app.config().automation.interval.is_some();
                let has_interval = config.automation.interval.is_some();
                let had_membership = app.config().topology.etcd().is_some();
                let has_membership = config.topology.etcd().is_some();
                app.replace(config, secret);
                if has_membership && !had_membership {
                    tokio::spawn(member::serve(agent.clone(), app.clone()));
                } else if has_interval && !had_interval && !has_membership {
                    tokio::spawn(poll::poll(agent.clone(), app.clone()));
                }
            }
            None => {
                tracing::info!(app = %name, "app added to the config");
                let app = App::new(name.clone(), config, secret);
                spawn_app_tasks(agent, &app);
                current.insert(name, app);
            }
        }
    }
    tracing::info!(apps = current.len(), "config reloaded");
}

async fn serve(agent: SharedAgent, settings: AgentConfig) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    tracing::info!(listen = %settings.listen, apps = agent.apps().len(), "agent started");
    for app in agent.apps() {
        spawn_app_tasks(&agent, &app);
    }
    tokio::spawn(traffic::relay_caddy(agent.clone()));
    let signals = {
        use tokio::signal::unix::{SignalKind, signal};
        let agent = agent.clone();
        let mut term = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut hangup = signal(SignalKind::hangup())?;
        async move {
            loop {
                tokio::select! {
                    _ = term.recv() => break,
                    _ = interrupt.recv() => break,
                    _ = hangup.recv() => reload(&agent),
                }
            }
            tracing::info!("stopping: no new triggers; waiting for running deploys");
            agent.begin_stop();
        }
    };
    tokio::spawn(signals);
    front::serve(listener, router(agent.clone()), agent.stopped()).await;
    // Let running deploys finish, within the timeout.
    let deadline = tokio::time::Instant::now() + settings.shutdown_timeout;
    loop {
        // Registered before the count is read, so no finish goes unnoticed.
        let idle = agent.idle.notified();
        tokio::pin!(idle);
        idle.as_mut().enable();
        if agent.running_count() == 0 {
            break;
        }
        if tokio::time::timeout_at(deadline, idle).await.is_err() {
            tracing::warn!(
                "shutdown timeout reached with a deploy running; abandoning it (the live release stays whole; the next run cleans up)"
            );
            break;
        }
    }
    tracing::info!("agent stopped");
    Ok(())
}

/// Run the agent until SIGTERM.
pub fn run(config_path: &Path, listen: Option<&str>) -> Result<()> {
    let file = ConfigFile::load(config_path)?;
    let settings = file.agent(listen)?;
    let apps = load_apps(&file)?;
    let agent = Arc::new(Agent {
        config_path: config_path.to_path_buf(),
        apps: RwLock::new(
            apps.into_iter()
                .map(|(name, config, secret)| {
                    // No trigger survives a restart, so no upload is wanted.
                    upload::remove_leftovers(&config);
                    (name.clone(), App::new(name, config, secret))
                })
                .collect(),
        ),
        token: RwLock::new(settings.token.clone()),
        listen: settings.listen,
        metrics: Metrics::default(),
        stopping: AtomicBool::new(false),
        stop_signal: watch::channel(false).0,
        idle: Notify::new(),
        poll_slots: Semaphore::new(CONCURRENT_POLLS),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(64)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(serve(agent, settings));
    // An abandoned deploy thread must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}
