//! The CLI on an app of a fleet in etcd: `deploy` and `rollback` hand a
//! trigger to the fleet's leader and wait for its outcome (no host is
//! touched from here: the agents do it); `status` shows the fleet as etcd
//! holds it — members, leader, committed release, each host's live release
//! and state, the last deploy and its switch's skew; `releases`, `verify`,
//! `log`, `prune` and `keep` run on every member, through its agent.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use zdeploy_core::history::now_ms;
use zdeploy_core::release::short;

use super::decision::skew_ms;
use super::peer::Peer;
use super::records::Registration;
use super::records::{Committed, DeployRecord, HostStatus, Outcome, TriggerOutcome, TriggerRecord};
use super::request::{ask, trigger_id};
use super::settings::Membership;
use super::store::Store;
use crate::config::{AppConfig, ConfigFile};
use crate::deploying::Request;
use crate::fleet::parallel::on_each;
use crate::fleet::remote_command::{Answer, fail_if_any_failed, host_args, show, show_digests};
use crate::fleet::status::show_doctor;
use crate::fleet::user_content::{Divergence, describe, divergences, may_differ};
use crate::output::out;
use zdeploy_core::user_content::UserContentSummary;

/// Run `work` to its end: on the agent's runtime when called from one of
/// its blocking threads, else on a runtime of its own (the CLI).
fn block_on<T>(work: impl Future<Output = Result<T>>) -> Result<T> {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        return runtime.block_on(work);
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(work)
}

fn app_name(app: &AppConfig) -> Result<&str> {
    app.name
        .as_deref()
        .context("a fleet in etcd is an app of a config file")
}

/// Ask the fleet's leader for what `request` asks and wait for its
/// outcome; `waiting` hears why it waits (no leader, no quorum).
pub fn ask_leader(
    app: &AppConfig,
    membership: &Membership,
    request: &Request,
    trigger: &str,
    waiting: &(dyn Fn(&str) + Sync),
) -> Result<Outcome> {
    let name = app_name(app)?;
    let (force, commit, rollback, release) = match request {
        Request::Deploy { force, commit, .. } => (*force, commit.clone(), false, None),
        Request::Rollback { to, .. } => (false, None, true, to.clone()),
    };
    let record = TriggerRecord {
        id: trigger_id(&membership.etcd.name),
        trigger: format!("{trigger} on {}", membership.etcd.name),
        force,
        commit,
        rollback,
        release,
        at_ms: now_ms(),
    };
    // The stage timeout bounds a deploy; the rest is the switch and a
    // leader that may still have to be elected.
    let wait = membership.stage_timeout + Duration::from_secs(300);
    block_on(async {
        let store = Store::connect(&membership.etcd, name).await?;
        ask(&store, &record, wait, waiting).await
    })
}

/// The fleet's answer, for people (or as JSON); an error when the deploy
/// was aborted or failed.
pub fn report(outcome: &Outcome, json: bool) -> Result<()> {
    if json {
        crate::commands::print_json(outcome)?;
    } else {
        let release = outcome.release.as_deref().unwrap_or("?");
        let commit = outcome
            .commit
            .as_deref()
            .map(|c| format!(", commit {}", short(c)))
            .unwrap_or_default();
        match outcome.outcome {
            TriggerOutcome::Deployed => out!(
                "the fleet -> {release} (fleet deploy #{}{commit}); every member switches to it",
                outcome.deploy.unwrap_or(0)
            ),
            TriggerOutcome::Unchanged => {
                out!("the fleet unchanged: {release} is already committed{commit}")
            }
            TriggerOutcome::Aborted | TriggerOutcome::Failed => {}
        }
    }
    match outcome.outcome {
        TriggerOutcome::Deployed | TriggerOutcome::Unchanged => Ok(()),
        other => bail!(
            "the fleet's deploy {}: {}",
            other.as_str(),
            outcome.error.as_deref().unwrap_or("no reason given")
        ),
    }
}

/// The fleet as etcd holds it.
#[derive(Serialize)]
pub struct FleetState {
    pub members: Vec<String>,
    pub leader: Option<String>,
    pub committed: Option<Committed>,
    pub deploy: Option<DeployRecord>,
    pub hosts: BTreeMap<String, HostStatus>,
    pub skew_ms: Option<i64>,
    /// Members holding user files others lack.
    pub user_content_differs: Vec<Divergence>,
}

pub async fn read_state(store: &Store) -> Result<FleetState> {
    let keys = &store.keys;
    let committed = store
        .get::<Committed>(&keys.committed())
        .await?
        .map(|(c, _)| c);
    let hosts: BTreeMap<String, HostStatus> =
        store.list(&keys.statuses()).await?.into_iter().collect();
    Ok(FleetState {
        members: store.names(&keys.members()).await?,
        leader: store.leader().await?,
        skew_ms: committed.as_ref().and_then(|c| skew_ms(&hosts, c.deploy)),
        committed,
        deploy: store
            .get::<DeployRecord>(&keys.deploy())
            .await?
            .map(|(d, _)| d),
        hosts,
        user_content_differs: Vec::new(),
    })
}

/// `zdeploy status` of a fleet in etcd.
pub fn status(app: &AppConfig, membership: &Membership, json: bool) -> Result<()> {
    let name = app_name(app)?;
    let mut state = block_on(async {
        let store = Store::connect(&membership.etcd, name).await?;
        read_state(&store).await
    })?;
    state.user_content_differs = user_content_differences(app, &state, || peers(app, membership));
    if json {
        return crate::commands::print_json(&state);
    }
    out!(
        "fleet {name} in etcd ({}): {} members, leader {}",
        membership.etcd.endpoints.join(", "),
        state.members.len(),
        state.leader.as_deref().unwrap_or("none (electing)")
    );
    match &state.committed {
        Some(c) => out!(
            "committed: {} (commit {}, fleet deploy #{})",
            c.release,
            short(&c.commit),
            c.deploy
        ),
        None => out!("committed: nothing yet"),
    }
    if let Some(d) = &state.deploy {
        out!(
            "last deploy: #{} {} {} ({}){}",
            d.id,
            d.phase.as_str(),
            d.release,
            d.trigger,
            d.why
                .as_deref()
                .map(|w| format!(": {w}"))
                .unwrap_or_default()
        );
    }
    if let Some(skew) = state.skew_ms {
        out!("last switch skew: {skew} ms");
    }
    let width = state
        .members
        .iter()
        .chain(state.hosts.keys())
        .map(String::len)
        .max()
        .unwrap_or(4)
        .max(4);
    out!("  {:width$}  {:<12}  {:<26}  NOTE", "HOST", "STATE", "LIVE");
    let mut names: Vec<&String> = state.members.iter().chain(state.hosts.keys()).collect();
    names.sort();
    names.dedup();
    for host in names {
        let status = state.hosts.get(host);
        let member = state.members.contains(host);
        let on_committed = status
            .and_then(|s| s.live.as_deref())
            .zip(state.committed.as_ref())
            .is_some_and(|(live, c)| live == c.release);
        let note = match (member, status.and_then(|s| s.error.as_deref())) {
            (false, _) => "not a member (its lease ran out)".to_string(),
            (true, Some(error)) => error.to_string(),
            (true, None) if on_committed => String::new(),
            (true, None) => "behind the committed release".to_string(),
        };
        out!(
            "{} {:width$}  {:<12}  {:<26}  {note}",
            if state.leader.as_ref() == Some(host) {
                "*"
            } else {
                " "
            },
            host,
            status.map_or("-", |s| s.state.as_str()),
            status.and_then(|s| s.live.as_deref()).unwrap_or("-"),
        );
    }
    if !state.user_content_differs.is_empty() {
        out!("warning: {}", describe(&state.user_content_differs));
    }
    Ok(())
}

/// Each member as a peer to ask through its agent (at the URL it
/// registered, with this host's agent token), or why it cannot be asked.
fn peers(app: &AppConfig, membership: &Membership) -> Result<Vec<Result<Peer>>> {
    let name = app_name(app)?.to_string();
    let token = match &app.file {
        Some((path, text)) => ConfigFile::parse(path, text.clone())?.agent(None)?.token,
        None => None,
    }
    .context("asking the members' agents needs the agent's token: set agent.token_file")?;
    let registrations: Vec<(String, Registration)> = block_on(async {
        let store = Store::connect(&membership.etcd, &name).await?;
        store.list(&store.keys.members()).await
    })?;
    if registrations.is_empty() {
        bail!("the fleet has no members now (no agent holds a lease in etcd)");
    }
    Ok(registrations
        .into_iter()
        .map(|(member, registration)| {
            Peer::registered(&member, registration, Some(token.clone()), membership)
        })
        .collect())
}

/// Run `zdeploy ARGS` for `app` on each of `peers`, through its agent, at
/// once.
fn run_on(app: &str, peers: &[Result<Peer>], args: &[String]) -> Result<Vec<Answer>> {
    on_each(peers, |peer| match peer {
        Ok(peer) => peer.run(app, args),
        Err(e) => Err(anyhow::anyhow!("{e:#}")),
    })
}

/// Members holding user files others lack, named from the lists their
/// agents keep (`peers` is asked only then), when the summaries in etcd say
/// the members' user content differs (a warning when the lists cannot be
/// read).
fn user_content_differences(
    app: &AppConfig,
    state: &FleetState,
    peers: impl FnOnce() -> Result<Vec<Result<Peer>>>,
) -> Vec<Divergence> {
    let summaries: Vec<Option<UserContentSummary>> = state
        .members
        .iter()
        .map(|m| state.hosts.get(m).and_then(|s| s.user_content.clone()))
        .collect();
    if !may_differ(&summaries) {
        return Vec::new();
    }
    let read = app_name(app).and_then(|name| {
        on_each(&peers()?, |peer| match peer {
            Ok(peer) => Ok((peer.name.clone(), peer.user_content(name)?)),
            Err(e) => Err(anyhow::anyhow!("{e:#}")),
        })
    });
    match read {
        Ok(lists) => divergences(&lists),
        Err(error) => {
            eprintln!(
                "warning: the members' user content differs; reading their lists failed: {error:#}"
            );
            Vec::new()
        }
    }
}

/// `zdeploy doctor` on every member, then whether they hold the same user
/// content.
pub fn doctor_everywhere(app: &AppConfig, membership: &Membership, json: bool) -> Result<()> {
    let name = app_name(app)?;
    let peers = peers(app, membership)?;
    let answers = run_on(name, &peers, &host_args())?;
    let state = block_on(async {
        let store = Store::connect(&membership.etcd, name).await?;
        read_state(&store).await
    })?;
    let uploads_differ = user_content_differences(app, &state, || Ok(peers));
    show_doctor(&answers, &uploads_differ, json)
}

/// Run this command on every member and show each answer under its name.
pub fn show_everywhere(app: &AppConfig, membership: &Membership, json: bool) -> Result<()> {
    let answers = run_on(app_name(app)?, &peers(app, membership)?, &host_args())?;
    show(&answers, json)?;
    fail_if_any_failed(&answers)
}

/// Run `zdeploy ARGS` on every member at once, through their agents.
pub fn run_everywhere(
    app: &AppConfig,
    membership: &Membership,
    args: &[String],
) -> Result<Vec<Answer>> {
    run_on(app_name(app)?, &peers(app, membership)?, args)
}

/// `zdeploy verify` on every member, and whether they hold one digest.
pub fn verify_everywhere(app: &AppConfig, membership: &Membership, json: bool) -> Result<()> {
    let answers = run_on(app_name(app)?, &peers(app, membership)?, &host_args())?;
    show_digests(&answers, json)
}
