//! The agent's part in a fleet whose agents agree through etcd, per app:
//! connect, register this host under a lease, and follow the fleet (and
//! campaign to lead it) while the lease holds; when it is lost, register
//! again. What it last knew stays in the app's member view, so `/ready` and
//! the dashboard keep answering while etcd cannot be reached.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use zdeploy_core::history::now_ms;
use zdeploy_core::policy::DeployOutcome;

use super::SharedAgent;
use super::app::{App, Event};
use super::runner::{Finished, failed};
use crate::config::AppConfig;
use crate::deploying::{self, Done, Request, Watch};
use crate::fleet::etcd::leader::Leader;
use crate::fleet::etcd::member::Member;
use crate::fleet::etcd::part::Part;
use crate::fleet::etcd::records::{Committed, Registration, TriggerOutcome};
use crate::fleet::etcd::settings::EtcdSettings;
use crate::fleet::etcd::store::Store;

/// A host that lost etcd tries again this often, so that it catches up
/// soon after its link is back.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// Take part in the app's fleet until the agent stops or the app leaves
/// the config.
pub async fn serve(agent: SharedAgent, app: Arc<App>) {
    let started_ms = now_ms();
    let mut retry = RETRY_FIRST;
    loop {
        if app.is_removed() || agent.is_stopping() {
            return;
        }
        let config = app.config();
        let Some(membership) = config.topology.etcd().cloned() else {
            return;
        };
        let log = |level: &str, message: &str| log(&app, level, message);
        let epoch = async {
            let store = Store::connect(&membership.etcd, &app.name).await?;
            let ttl = membership.etcd.lease_ttl;
            let lease = store.grant(ttl).await?;
            let registration = Registration {
                version: env!("CARGO_PKG_VERSION").to_string(),
                started_ms,
                agent: Some(advertised(agent.listen, &membership.etcd).await),
            };
            store
                .put(&store.keys.member(&store.name), &registration, Some(lease))
                .await?;
            retry = RETRY_FIRST;
            app.member_view()
                .lock()
                .expect("member view lock")
                .connected = true;
            *app.etcd().lock().expect("etcd client lock") = Some(store.clone());
            tracing::info!(app = %app.name, member = %store.name, "joined the fleet");
            let part = Part {
                store: &store,
                lease,
                config: config.clone(),
                membership: &membership,
                token: agent.token(),
                view: app.member_view(),
                log: &log,
                changed: &|| app.emit(Event::Fleet),
            };
            let (member, leader) = (Member { part: &part }, Leader { part: &part });
            // The lease holds a TTL past each keepalive etcd answered.
            let kept = || {
                app.member_view()
                    .lock()
                    .expect("member view lock")
                    .lease_until = Some(std::time::Instant::now() + ttl);
            };
            kept();
            let ended: Result<()> = tokio::select! {
                why = store.keep_alive(lease, ttl, &kept) => Err(why),
                () = member.follow() => Ok(()),
                () = leader.serve() => Ok(()),
                () = agent.stopped() => {
                    // Leave at once: no deploy waits for this host, and
                    // another agent may lead.
                    store.revoke(lease).await;
                    Ok(())
                }
            };
            ended
        };
        let ended = epoch.await;
        {
            let mut view = app.member_view().lock().expect("member view lock");
            // A deploy this host was staging for ended with the epoch (its
            // run removes the staged release): a release staged under the
            // old lease must not make it ready under the next one.
            view.staged = None;
            if let Err(e) = ended {
                let error = format!("{e:#}");
                tracing::warn!(app = %app.name, %error, "etcd: registering again");
                view.connected = false;
                view.error = Some(error);
            }
        }
        app.emit(Event::Fleet);
        if !agent.sleep(retry).await {
            return;
        }
        retry = (retry * 2).min(RETRY_MAX);
    }
}

/// The URL other members copy releases from this host's agent at: the
/// fleet's `advertise`, else the address the agent listens on, or (when it
/// listens on every address) the one this host reaches etcd from.
async fn advertised(listen: SocketAddr, etcd: &EtcdSettings) -> String {
    if let Some(url) = &etcd.advertise {
        return url.clone();
    }
    let ip = match listen.ip().is_unspecified() {
        true => route_to(&etcd.endpoints).await.unwrap_or(listen.ip()),
        false => listen.ip(),
    };
    format!("http://{}", SocketAddr::new(ip, listen.port()))
}

/// The local address this host reaches the first etcd endpoint from (a UDP
/// socket is connected, which sends nothing).
async fn route_to(endpoints: &[String]) -> Option<IpAddr> {
    let endpoint = endpoints.first()?;
    let host_port = endpoint
        .split_once("://")
        .map_or(endpoint.as_str(), |(_, rest)| rest);
    let target = tokio::net::lookup_host(host_port).await.ok()?.next()?;
    let any: SocketAddr = match target {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = std::net::UdpSocket::bind(any).ok()?;
    socket.connect(target).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

/// How long `/ready` may spend asking etcd itself.
const READY_CHECK: Duration = Duration::from_millis(500);
/// A record read this recently is fresh enough for `/ready`.
const FRESH: Duration = Duration::from_secs(1);

/// Before `/ready` answers from the member view, read the committed
/// release afresh if the view is older than a second: a host whose link
/// just came back must not answer from what it knew before it was cut off
/// (the fleet may have moved on without it). When etcd cannot answer (no
/// quorum, or unreachable), what it last knew stands: losing etcd must not
/// take every host out of rotation.
pub async fn refresh_for_ready(app: &App) {
    let Some(membership) = app.config().topology.etcd().cloned() else {
        return;
    };
    let read_at = app.member_view().lock().expect("member view lock").read_at;
    if read_at.is_some_and(|at| at.elapsed() < FRESH) {
        return;
    }
    // The client in use is trusted while this host's lease holds.
    let trusted = {
        let view = app.member_view().lock().expect("member view lock");
        view.connected
            && view
                .lease_until
                .is_some_and(|until| std::time::Instant::now() < until)
    };
    let cached = app
        .etcd()
        .lock()
        .expect("etcd client lock")
        .clone()
        .filter(|_| trusted);
    let read = async {
        match cached {
            Some(store) => read_committed(store).await,
            // Cut off until now, perhaps: a connection made before may be
            // dead. Every member is asked afresh at once; the first answer
            // counts.
            None => {
                let mut asking = tokio::task::JoinSet::new();
                for endpoint in &membership.etcd.endpoints {
                    let mut one = membership.etcd.clone();
                    one.endpoints = vec![endpoint.clone()];
                    let name = app.name.clone();
                    asking.spawn(async move {
                        read_committed(Store::connect(&one, &name).await?).await
                    });
                }
                let mut last = None;
                while let Some(answer) = asking.join_next().await {
                    match answer {
                        Ok(Ok(committed)) => return Ok(committed),
                        Ok(Err(e)) => last = Some(e),
                        Err(e) => last = Some(e.into()),
                    }
                }
                Err(last.unwrap_or_else(|| anyhow::anyhow!("no etcd endpoint")))
            }
        }
    };
    if let Ok(Ok(committed)) = tokio::time::timeout(READY_CHECK, read).await {
        let mut view = app.member_view().lock().expect("member view lock");
        view.committed = committed;
        view.known = true;
        view.read_at = Some(std::time::Instant::now());
    }
}

async fn read_committed(store: Store) -> Result<Option<Committed>> {
    Ok(store
        .get::<Committed>(&store.keys.committed())
        .await?
        .map(|(c, _)| c))
}

/// A member's line, in the app's event stream and the agent's log.
fn log(app: &App, level: &str, message: &str) {
    match level {
        "warn" | "error" => tracing::warn!(app = %app.name, "{message}"),
        _ => tracing::info!(app = %app.name, "{message}"),
    }
    app.emit(Event::Log {
        deployment: 0,
        seq: 0,
        at_ms: now_ms(),
        level: level.to_string(),
        message: message.to_string(),
    });
}

/// A deploy or rollback handed to the fleet's leader: its outcome is the
/// run's. On the worker's blocking thread.
pub fn run(app: &App, config: &AppConfig, request: &Request, trigger: &str) -> Finished {
    let waiting = |why: &str| log(app, "info", why);
    let watch = Watch::quiet(trigger, &waiting);
    match deploying::run(config, request, &watch) {
        Ok(Done::Etcd(outcome)) => match outcome.outcome {
            TriggerOutcome::Deployed => Finished::completed(
                None,
                DeployOutcome::Deployed,
                outcome.release,
                outcome.commit,
            ),
            TriggerOutcome::Unchanged => Finished::completed(
                None,
                DeployOutcome::Unchanged,
                outcome.release,
                outcome.commit,
            ),
            other => failed(
                None,
                outcome
                    .error
                    .unwrap_or_else(|| format!("the fleet's deploy ended {}", other.as_str())),
            ),
        },
        Ok(other) => failed(None, format!("an etcd fleet's run answered {other:?}")),
        Err(e) => failed(None, format!("{e:#}")),
    }
}
