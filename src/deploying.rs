//! One deploy and one rollback, however the app is deployed: on this host
//! alone, by the controller of an ssh fleet, or by the leader of an etcd
//! fleet asked through etcd. The CLI, the agent's queue and its API all
//! ask here and get one typed answer; each only shows it its own way.

use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;
use zdeploy_core::lock::LockWait;
use zdeploy_core::policy::{DeployPlan, DeployResult};
use zdeploy_core::rollback::{RollbackPlan, RollbackResult};
use zdeploy_core::session::{Observer, RunOptions};

use crate::config::{AppConfig, Overrides, Topology};
use crate::fleet::controller::{FleetObserver, FleetResult, FleetRun, Intent};
use crate::fleet::etcd::records::Outcome;

/// What is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Deploy the source's newest commit (`force`: even if it is live);
    /// `commit`: the one a webhook named, for an etcd fleet's leader;
    /// `exact`: deploy this commit and nothing else (it must be on the
    /// app's ref unless the app allows any commit); `archive`: deploy this
    /// archive, built elsewhere, instead of the app's source.
    Deploy {
        force: bool,
        commit: Option<String>,
        exact: Option<String>,
        archive: Option<PathBuf>,
    },
    /// Back to `to`, or the release before the live one (`force`: even
    /// while the app is frozen).
    Rollback { to: Option<String>, force: bool },
}

/// Who watches, and how: the one-host run's options and observer, the ssh
/// fleet's observer, a line for each thing said while an etcd fleet's
/// leader is waited for.
pub struct Watch<'a> {
    pub options: RunOptions,
    /// Unset: a run on this host is not shown.
    pub observer: Option<&'a dyn Observer>,
    /// Unset: an ssh fleet's run is not shown.
    pub fleet: Option<&'a dyn FleetObserver>,
    /// The flags an ssh fleet's hosts get (unset: none).
    pub overrides: Option<&'a Overrides>,
    /// What asked ("cli", "api", "webhook github", …).
    pub trigger: &'a str,
    pub waiting: &'a (dyn Fn(&str) + Sync),
}

impl<'a> Watch<'a> {
    /// Nobody watches but `waiting`; a busy lock fails the run.
    pub fn quiet(trigger: &'a str, waiting: &'a (dyn Fn(&str) + Sync)) -> Self {
        Watch {
            options: RunOptions {
                trigger: trigger.to_string(),
                wait: LockWait::Fail,
            },
            observer: None,
            fleet: None,
            overrides: None,
            trigger,
            waiting,
        }
    }
}

/// What a deploy or rollback did, by how the app is deployed.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Done {
    Deployed(DeployResult),
    RolledBack(RollbackResult),
    Fleet(FleetResult),
    /// The etcd fleet's answer (it may say the deploy was aborted).
    Etcd(Outcome),
}

/// Do what `request` asks of `app`, telling the app's `notify` targets.
pub fn run(app: &AppConfig, request: &Request, watch: &Watch<'_>) -> Result<Done> {
    let told = crate::notify::Run::start(app, request.kind(), watch.trigger);
    let result = run_untold(app, request, watch);
    told.finish(&result);
    result
}

fn run_untold(app: &AppConfig, request: &Request, watch: &Watch<'_>) -> Result<Done> {
    match &app.topology {
        Topology::Etcd(_) if matches!(request, Request::Deploy { exact: Some(_), .. }) => {
            Err(anyhow::anyhow!(
                "a fleet in etcd deploys the head of its ref; deploying an exact commit there is not supported yet"
            ))
        }
        Topology::Etcd(_)
            if matches!(
                request,
                Request::Deploy {
                    archive: Some(_),
                    ..
                }
            ) =>
        {
            Err(anyhow::anyhow!(
                "a fleet in etcd deploys the head of its ref; deploying an archive there is not supported yet"
            ))
        }
        Topology::Etcd(membership) => crate::fleet::etcd::command::ask_leader(
            app,
            membership,
            request,
            watch.trigger,
            watch.waiting,
        )
        .map(Done::Etcd),
        Topology::Ssh(fleet) => {
            let none = Overrides::default();
            let run = FleetRun {
                app,
                fleet,
                overrides: watch.overrides.unwrap_or(&none),
                trigger: watch.trigger.to_string(),
                watch: watch.fleet.unwrap_or(&Unwatched),
                force: match request {
                    Request::Deploy { force, .. } | Request::Rollback { force, .. } => *force,
                },
            };
            match request {
                Request::Deploy {
                    force,
                    exact,
                    archive,
                    ..
                } => run.run(&Intent::Deploy(&deploy_plan(app, *force, exact, archive)?)),
                Request::Rollback { to, .. } => run.run(&Intent::Rollback(to.clone())),
            }
            .map(Done::Fleet)
        }
        Topology::OneHost | Topology::OnOrders => match request {
            Request::Deploy {
                force,
                exact,
                archive,
                ..
            } => {
                let done = zdeploy_core::deploy::deploy(
                    &app.layout,
                    &deploy_plan(app, *force, exact, archive)?,
                    &watch.options,
                    watch.observer.unwrap_or(&Unwatched),
                )?;
                Ok(Done::Deployed(done))
            }
            Request::Rollback { to, .. } => {
                let plan = RollbackPlan {
                    target: to.clone(),
                    policy: app.policy.clone(),
                    only_from: None,
                };
                let done = zdeploy_core::rollback::rollback(
                    &app.layout,
                    &plan,
                    &watch.options,
                    watch.observer.unwrap_or(&Unwatched),
                )?;
                Ok(Done::RolledBack(done))
            }
        },
    }
}

/// A deploy's plan: the archive asked for, the exact commit, or the head
/// of the app's source.
fn deploy_plan(
    app: &AppConfig,
    force: bool,
    exact: &Option<String>,
    archive: &Option<PathBuf>,
) -> Result<DeployPlan> {
    Ok(match archive {
        Some(archive) => app.artifact_plan(force, archive),
        None => app.exact_plan(force, exact.as_deref())?,
    })
}

/// No one watches the run.
struct Unwatched;

impl FleetObserver for Unwatched {
    fn line(&self, _host: &str, _text: &str) {}
}

impl Observer for Unwatched {}

impl Request {
    /// "deploy" or "rollback", as runs are named.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Deploy { .. } => "deploy",
            Request::Rollback { .. } => "rollback",
        }
    }
}
