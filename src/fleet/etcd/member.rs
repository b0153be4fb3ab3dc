//! One host's agent as a member of a fleet in etcd: it follows the fleet's
//! deploy record and committed release, and runs the same host steps an ssh
//! controller orders (src/fleet/host.rs), with the orders taken from the
//! record: stage when a deploy names it, switch as soon as commit is
//! recorded, remove the staged release on abort. Whenever it serves
//! something other than the committed release and nothing is being decided
//! for it (it started, restarted, was cut off, or joined late), it converges
//! on its own, carrying its user content, before it reports ready.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use zdeploy_core::history::now_ms;
use zdeploy_core::release::short;
use zdeploy_core::release_copy::Base;
use zdeploy_core::switch::read_live;
use zdeploy_core::user_content::summary_of;

use super::changes::Changes;
use super::decision::{ready, skew_ms};
use super::part::Part;
use super::peer::Peer;
use super::records::{
    Committed, DeployRecord, HostState, HostStatus, OnceRun, Phase, Registration, StageReport,
};
use crate::config::Overrides;
use crate::fleet::host::{Reports, serve_orders};
use crate::fleet::protocol::{Job, Order, Report, StageRole};
use crate::fleet::settings::BuildOn;

/// How long a member waits before trying again to converge after a failure.
const CONVERGE_RETRY: Duration = Duration::from_secs(10);
/// How often a member looks again when nothing changed (a safety net under
/// the watch).
const RECHECK: Duration = Duration::from_secs(5);
/// A run that finds the context locked (the CLI deploying by hand) is
/// tried again after this.
const BUSY_PAUSE: Duration = Duration::from_secs(1);
/// How often a copying member looks again whether the builder staged,
/// when no change woke it.
const BUILDER_LOOK: Duration = Duration::from_secs(1);

/// How long a builder about to run a step that needs a maintenance window
/// waits for the other members to open theirs.
const WINDOW_WAIT: Duration = Duration::from_secs(10);

/// What this host's agent knows of its fleet: for `/ready`, the API, the
/// dashboard and metrics. Kept when etcd cannot be reached, so the host
/// keeps answering from what it last knew.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MemberView {
    pub name: String,
    pub connected: bool,
    /// The fleet's record was read at least once since the agent started:
    /// until then this host cannot know it is not behind.
    pub known: bool,
    /// When the fleet's record was last read.
    #[serde(skip)]
    pub read_at: Option<Instant>,
    /// Until when this host's lease holds, as its last keepalive said: past
    /// it, the fleet may have gone on without it.
    #[serde(skip)]
    pub lease_until: Option<Instant>,
    /// Why etcd cannot be reached, or the last thing that went wrong.
    pub error: Option<String>,
    pub leader: Option<String>,
    pub committed: Option<Committed>,
    pub live: Option<String>,
    pub state: Option<HostState>,
    /// The release this host has staged for a deploy being decided (or is
    /// switching to): if it is committed, this host switches at once.
    pub staged: Option<String>,
    /// The fleet as last read: the members alive, each host's status, the
    /// last deploy and its switch's skew.
    pub members: Vec<String>,
    pub hosts: BTreeMap<String, HostStatus>,
    pub deploy: Option<DeployRecord>,
    pub skew_ms: Option<i64>,
}

impl MemberView {
    pub fn ready(&self) -> bool {
        self.known
            && ready(
                self.live.as_deref(),
                self.committed.as_ref(),
                self.staged.as_deref(),
                self.lease_until.is_some_and(|until| Instant::now() < until),
            )
    }
}

/// This host following its fleet.
pub struct Member<'a> {
    pub part: &'a Part<'a>,
}

impl Member<'_> {
    fn update(&self, change: impl FnOnce(&mut MemberView)) {
        self.part.update(change);
    }

    fn live(&self) -> Option<String> {
        let layout = &self.part.config.layout;
        read_live(layout)
            .ok()
            .and_then(|live| live.record_name(layout).map(str::to_string))
    }

    /// Ready when this host serves the committed release as far as it
    /// knows, else behind.
    fn settled_state(&self) -> HostState {
        let committed = self.read_view(|v| v.committed.as_ref().map(|c| c.release.clone()));
        if committed.is_none() || self.live() == committed {
            HostState::Ready
        } else {
            HostState::Behind
        }
    }

    fn read_view<T>(&self, read: impl FnOnce(&MemberView) -> T) -> T {
        read(&self.part.view.lock().expect("member view lock"))
    }

    /// Tell the fleet what this host does now.
    async fn status(&self, state: HostState, switched: Option<(u64, i64)>, error: Option<String>) {
        let live = self.live();
        self.update(|view| {
            view.live = live.clone();
            view.state = Some(state);
            // Told at once with what it serves, so readiness never sees
            // neither.
            if state != HostState::Staged {
                view.staged = None;
            }
            if let Some(error) = &error {
                view.error = Some(error.clone());
            }
        });
        let old = self
            .part
            .store
            .get::<HostStatus>(&self.part.store.keys.status(&self.part.store.name))
            .await
            .ok()
            .flatten()
            .map(|(s, _)| s);
        let layout = &self.part.config.layout;
        let status = HostStatus {
            state,
            user_content: live.as_deref().and_then(|l| summary_of(layout, l)),
            live,
            switched: switched.or(old.and_then(|s| s.switched)),
            error,
            at_ms: now_ms(),
        };
        if let Err(e) = self
            .part
            .store
            .put(
                &self.part.store.keys.status(&self.part.store.name),
                &status,
                Some(self.part.lease),
            )
            .await
        {
            self.update(|v| v.error = Some(format!("{e:#}")));
        }
    }

    /// Follow the fleet until this future is dropped (the lease was lost or
    /// the agent stops).
    pub async fn follow(&self) {
        let mut handled: u64 = 0;
        let mut retry_at: Option<Instant> = None;
        let keys = &self.part.store.keys;
        let mut changes = Changes::of(vec![(keys.deploy(), false), (keys.committed(), false)]);
        loop {
            changes.open(self.part.store).await;
            match self.look(&mut handled, &mut retry_at).await {
                Ok(()) => self.update(|v| {
                    v.connected = true;
                }),
                Err(e) => self.update(|v| {
                    v.connected = false;
                    v.error = Some(format!("{e:#}"));
                }),
            }
            // Wake on a change of the deploy or the committed release, or
            // look again after a while.
            changes.wait(RECHECK).await;
        }
    }

    /// One look at the fleet's record: take part in a deploy that names
    /// this host, or converge to the committed release.
    async fn look(&self, handled: &mut u64, retry_at: &mut Option<Instant>) -> Result<()> {
        let keys = &self.part.store.keys;
        let deploy = self
            .part
            .store
            .get::<DeployRecord>(&keys.deploy())
            .await?
            .map(|(d, _)| d);
        let committed = self
            .part
            .store
            .get::<Committed>(&keys.committed())
            .await?
            .map(|(c, _)| c);
        let leader = self.part.store.leader().await?;
        let members = self.part.store.names(&keys.members()).await?;
        let hosts: BTreeMap<String, HostStatus> = self
            .part
            .store
            .list(&keys.statuses())
            .await?
            .into_iter()
            .collect();
        self.update(|v| {
            v.name = self.part.store.name.clone();
            v.known = true;
            v.read_at = Some(Instant::now());
            v.committed = committed.clone();
            v.leader = leader;
            v.error = None;
            v.members = members;
            v.skew_ms = committed.as_ref().and_then(|c| skew_ms(&hosts, c.deploy));
            v.hosts = hosts;
            v.deploy = deploy.clone();
        });
        if let Some(deploy) = deploy.filter(|d| {
            d.phase == Phase::Staging
                && d.id > *handled
                && d.members.contains(&self.part.store.name)
        }) {
            *handled = deploy.id;
            return self.take_part(&deploy).await;
        }
        let live = self.live();
        self.update(|v| v.live = live.clone());
        let Some(committed) = committed else {
            return Ok(());
        };
        if live.as_deref() == Some(committed.release.as_str()) {
            *retry_at = None;
            if self.read_view(|v| v.state) != Some(HostState::Ready) {
                self.status(HostState::Ready, None, None).await;
            }
            return Ok(());
        }
        if retry_at.is_some_and(|at| Instant::now() < at) {
            return Ok(());
        }
        match self.converge(&committed).await {
            Ok(()) => {
                *retry_at = None;
                self.status(HostState::Ready, None, None).await;
            }
            Err(e) => {
                *retry_at = Some(Instant::now() + CONVERGE_RETRY);
                let error = format!("cannot converge to {}: {e:#}", committed.release);
                (self.part.log)("warn", &error);
                self.status(HostState::Behind, None, Some(error)).await;
            }
        }
        Ok(())
    }

    fn job(&self, rollback: bool, trigger: String) -> Job {
        Job {
            config: self
                .part
                .config
                .file
                .as_ref()
                .map(|(path, text)| (path.display().to_string(), text.clone())),
            app: self.part.config.name.clone(),
            overrides: Overrides::default(),
            rollback,
            stage_timeout_secs: self.part.membership.stage_timeout.as_secs().max(1),
            host: self.part.store.name.clone(),
            trigger,
            // Freezes are not kept by fleets in etcd (refused there).
            force: true,
            prebuilt: false,
            // Canaries are refused on fleets in etcd.
            canary: None,
        }
    }

    /// Stage a deploy that names this host, report, and do what the leader
    /// decides. The builder records its run of the `once` steps in etcd,
    /// before they start and when the deploy ends.
    async fn take_part(&self, deploy: &DeployRecord) -> Result<()> {
        let mut claimed = false;
        let switched = self.stage_and_follow(deploy, &mut claimed).await;
        if claimed {
            self.end_once(deploy, matches!(switched, Ok(true))).await;
        }
        switched.map(|_| ())
    }

    /// Whether this host switched to the deploy's release.
    async fn stage_and_follow(&self, deploy: &DeployRecord, claimed: &mut bool) -> Result<bool> {
        let keys = &self.part.store.keys;
        let started = Instant::now();
        self.status(HostState::Staging, None, None).await;
        let job = self.job(
            deploy.rollback,
            format!("fleet deploy #{} ({})", deploy.id, deploy.trigger),
        );
        let builder = deploy.builder();
        let getting = if builder == self.part.store.name {
            // Not for a rollback: its release's steps ran when it was new.
            Getting::Build {
                once: !deploy.rollback,
                windows_of: (!deploy.every_host_builds).then_some(deploy),
            }
        } else if deploy.every_host_builds {
            Getting::Build {
                once: false,
                windows_of: None,
            }
        } else {
            Getting::CopyFromBuilder(deploy)
        };
        let runs_once =
            matches!(getting, Getting::Build { once: true, .. }) && self.has_once_steps();
        let staged = async {
            if runs_once {
                self.claim_once(deploy).await?;
                *claimed = true;
            }
            self.stage(job, &deploy.release, &deploy.commit, &getting)
                .await
        };
        let mut run = match staged.await {
            Ok(run) => run,
            Err(e) => {
                let report = StageReport::Failed {
                    error: format!("{e:#}"),
                };
                self.part
                    .store
                    .put(
                        &keys.stage_report(deploy.id, &self.part.store.name),
                        &report,
                        Some(self.part.lease),
                    )
                    .await?;
                // It still serves what the fleet committed; the deploy is
                // aborted for every host.
                let error = format!("could not stage fleet deploy #{}: {e:#}", deploy.id);
                self.status(self.settled_state(), None, Some(error)).await;
                return Ok(false);
            }
        };
        self.part
            .store
            .put(
                &keys.stage_report(deploy.id, &self.part.store.name),
                &StageReport::Staged,
                Some(self.part.lease),
            )
            .await?;
        self.update(|v| v.staged = Some(deploy.release.clone()));
        self.status(HostState::Staged, None, None).await;
        let deadline = started + self.part.membership.stage_timeout;
        let decided = self.decision(deploy, deadline).await;
        match decided {
            Some(record) if record.phase == Phase::Commit => {
                // What the fleet committed, as this host knows it from now
                // on (even if etcd goes away before its next look).
                let committed = Committed {
                    deploy: record.id,
                    release: record.release.clone(),
                    commit: record.commit.clone(),
                    at_ms: record.decided_ms.unwrap_or_else(now_ms),
                };
                self.update(|v| v.committed = Some(committed));
                let switched = run.switch(self).await;
                match switched {
                    Ok(at_ms) => {
                        self.status(HostState::Ready, Some((deploy.id, at_ms)), None)
                            .await;
                        return Ok(true);
                    }
                    Err(e) => {
                        self.status(HostState::Behind, None, Some(format!("{e:#}")))
                            .await
                    }
                }
            }
            Some(record) => {
                let why = record.why.unwrap_or_else(|| "aborted by the leader".into());
                run.order(Order::Abort { why });
                let _ = run.finish(self).await;
                self.status(self.settled_state(), None, None).await;
            }
            None => {
                // No word in time (etcd unreachable, or no leader): the run
                // removes its staged release; the host converges later.
                self.update(|v| v.staged = None);
                drop(run.orders);
                let _ = run.done.await;
            }
        }
        Ok(false)
    }

    /// The app has steps marked `once`.
    fn has_once_steps(&self) -> bool {
        let policy = &self.part.config.policy;
        policy.build.iter().any(|s| s.once) || policy.after_switch.iter().any(|c| c.once)
    }

    /// Before this host, the builder, runs the `once` steps of `deploy`:
    /// hold the mark no other host starts them under while it is held, say
    /// whether they ran for the deploy's commit before, and record this run.
    async fn claim_once(&self, deploy: &DeployRecord) -> Result<()> {
        let store = self.part.store;
        let mine = OnceRun {
            deploy: deploy.id,
            release: deploy.release.clone(),
            host: store.name.clone(),
            started_ms: now_ms(),
            ok: None,
        };
        let running = store.keys.once_running(&deploy.commit);
        if let Some(other) = store.create(&running, &mine, self.part.lease).await? {
            if other.host != store.name {
                bail!(
                    "the steps marked once for commit {} still run on {} (fleet deploy #{}); they never run on two hosts at once",
                    short(&deploy.commit),
                    other.host,
                    other.deploy
                );
            }
            store.put(&running, &mine, Some(self.part.lease)).await?;
        }
        let record = store.keys.once_run(&deploy.commit);
        if let Some((earlier, _)) = store.get::<OnceRun>(&record).await? {
            (self.part.log)(
                "info",
                &format!(
                    "once: the steps marked once already ran for commit {} in fleet deploy #{} on {} (release {}) and {}; this deploy runs them again",
                    short(&deploy.commit),
                    earlier.deploy,
                    earlier.host,
                    earlier.release,
                    earlier.ending()
                ),
            );
        }
        store.put(&record, &mine, None).await
    }

    /// Record how this host's run of the `once` steps of `deploy` ended,
    /// and let go of the mark. Failures only delay: the mark goes with the
    /// lease.
    async fn end_once(&self, deploy: &DeployRecord, ok: bool) {
        let store = self.part.store;
        let record = store.keys.once_run(&deploy.commit);
        let ended = async {
            let mine = store
                .get::<OnceRun>(&record)
                .await?
                .filter(|(run, _)| run.deploy == deploy.id && run.host == store.name);
            if let Some((mut run, _)) = mine {
                run.ok = Some(ok);
                store.put(&record, &run, None).await?;
            }
            store
                .delete(&store.keys.once_running(&deploy.commit), false)
                .await
        };
        if let Err(e) = ended.await {
            (self.part.log)(
                "warn",
                &format!("recording the end of the once steps: {e:#}"),
            );
        }
    }

    /// The decided record of `deploy`, or `None` if none came by
    /// `deadline`. The change's own value is read from the watch (one round
    /// trip less between the commit and the switch).
    async fn decision(&self, deploy: &DeployRecord, deadline: Instant) -> Option<DeployRecord> {
        let store = self.part.store;
        let key = store.keys.deploy();
        let mut changes = store.watch(&key, false).await.ok();
        let mut seen: Option<DeployRecord> = store.get(&key).await.ok().flatten().map(|(r, _)| r);
        loop {
            match seen.take() {
                Some(record) if record.id == deploy.id && record.phase != Phase::Staging => {
                    return Some(record);
                }
                Some(record) if record.id != deploy.id => {
                    // A newer deploy: this one was decided without us
                    // seeing it; committed if the committed release says so.
                    let committed = store.get::<Committed>(&store.keys.committed()).await;
                    return committed
                        .ok()
                        .flatten()
                        .filter(|(c, _)| c.deploy == deploy.id)
                        .map(|(c, _)| DeployRecord {
                            phase: Phase::Commit,
                            decided_ms: Some(c.at_ms),
                            ..deploy.clone()
                        });
                }
                _ => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let wait = left.min(Duration::from_millis(500));
            match changes.as_mut() {
                Some(stream) => match tokio::time::timeout(wait, stream.message()).await {
                    Ok(Ok(Some(answer))) => {
                        seen = answer
                            .events()
                            .iter()
                            .rev()
                            .filter_map(|event| event.kv())
                            .find_map(|kv| serde_json::from_slice(kv.value()).ok());
                    }
                    Ok(Err(_) | Ok(None)) => {
                        changes = store.watch(&key, false).await.ok();
                        seen = store.get(&key).await.ok().flatten().map(|(r, _)| r);
                    }
                    // Nothing changed: look again (the watch may have missed
                    // a change while etcd was out of reach).
                    Err(_) => seen = store.get(&key).await.ok().flatten().map(|(r, _)| r),
                },
                None => {
                    tokio::time::sleep(wait).await;
                    changes = store.watch(&key, false).await.ok();
                    seen = store.get(&key).await.ok().flatten().map(|(r, _)| r);
                }
            }
        }
    }

    /// Start a host run and stage `release` in it (retried while the
    /// context is locked by someone else, within the stage timeout).
    async fn stage(
        &self,
        job: Job,
        release: &str,
        commit: &str,
        getting: &Getting<'_>,
    ) -> Result<HostRun> {
        let deadline = Instant::now() + self.part.membership.stage_timeout;
        loop {
            let mut run = HostRun::start(job.clone());
            let staged = self
                .stage_in(&mut run, release, commit, getting, deadline)
                .await;
            match staged {
                Ok(()) => return Ok(run),
                Err(e) if run.busy && Instant::now() < deadline => {
                    (self.part.log)(
                        "info",
                        &format!("the context is locked; trying again ({e:#})"),
                    );
                    let _ = run.done.await;
                    tokio::time::sleep(BUSY_PAUSE).await;
                }
                Err(e) => {
                    drop(run.orders);
                    let _ = run.done.await;
                    return Err(e);
                }
            }
        }
    }

    /// Open `run`, and stage `release` in it as `getting` says: a host that
    /// has the release uses it; one that copies fetches the manifest and
    /// then the files it lacks from the member that holds the release.
    async fn stage_in(
        &self,
        run: &mut HostRun,
        release: &str,
        commit: &str,
        getting: &Getting<'_>,
        deadline: Instant,
    ) -> Result<()> {
        let Report::Opened {
            live,
            live_digest,
            releases,
            upload,
            ..
        } = run
            .until(self, |r| matches!(r, Report::Opened { .. }))
            .await?
        else {
            unreachable!("until returns what it waited for");
        };
        let copying_from = match getting {
            Getting::Build { .. } => None,
            _ if releases.iter().any(|r| r == release) => None,
            Getting::CopyFromBuilder(deploy) => {
                Some(self.builder_staged(deploy, deadline, run).await?)
            }
            Getting::CopyFrom(peer) => Some(peer.clone()),
        };
        let app = self.app_name()?;
        let role = match &copying_from {
            None => StageRole::Build {
                once: matches!(getting, Getting::Build { once: true, .. }),
                export: false,
            },
            Some(peer) => {
                let live = live
                    .zip(live_digest)
                    .map(|(release, digest)| Base { release, digest });
                let to = format!("{upload}.manifest");
                let fetched = {
                    let (peer, app, release, to) =
                        (peer.clone(), app.clone(), release.to_string(), to.clone());
                    tokio::task::spawn_blocking(move || {
                        peer.manifest(&app, &release, live.as_ref(), Path::new(&to))
                    })
                    .await??
                };
                (self.part.log)(
                    "info",
                    &format!(
                        "copying {release} (digest {}) from {}{}",
                        short(&fetched.digest),
                        peer.name,
                        fetched
                            .base
                            .as_ref()
                            .map(|b| format!(", the difference from {}", b.release))
                            .unwrap_or_default()
                    ),
                );
                StageRole::Copy {
                    manifest: to,
                    digest: fetched.digest,
                    base: fetched.base,
                }
            }
        };
        run.order(Order::Stage {
            release: release.to_string(),
            commit: Some(commit.to_string()),
            archive: None,
            role,
        });
        loop {
            let report = run
                .until(self, |r| {
                    matches!(
                        r,
                        Report::Staged { .. } | Report::Lacking { .. } | Report::WindowOpening
                    )
                })
                .await?;
            if let Report::WindowOpening = report {
                if let Getting::Build {
                    windows_of: Some(deploy),
                    ..
                } = getting
                {
                    self.open_members_windows(deploy).await?;
                }
                run.order(Order::WindowOpened);
                continue;
            }
            let Report::Lacking { files, bytes, list } = report else {
                return Ok(());
            };
            let peer = copying_from
                .clone()
                .ok_or_else(|| anyhow!("the run asked for files though it builds"))?;
            let tar = format!("{upload}.tar");
            let (app, release_name, to) = (app.clone(), release.to_string(), tar.clone());
            tokio::task::spawn_blocking(move || {
                let wanted = std::fs::read(&list).with_context(|| format!("cannot read {list}"))?;
                peer.files(&app, &release_name, &wanted, (files, bytes), Path::new(&to))
            })
            .await??;
            run.order(Order::Files { tar });
        }
    }

    fn app_name(&self) -> Result<String> {
        self.part
            .config
            .name
            .clone()
            .ok_or_else(|| anyhow!("an app of a fleet in etcd has a name"))
    }

    /// The member `name` as a place to copy from: its agent's URL, as it
    /// registered it.
    async fn peer(&self, name: &str) -> Result<Peer> {
        let store = self.part.store;
        let registration = store
            .get::<Registration>(&store.keys.member(name))
            .await?
            .map(|(r, _)| r)
            .ok_or_else(|| anyhow!("{name} is not a member of the fleet now"))?;
        Peer::registered(
            name,
            registration,
            self.part.token.clone(),
            self.part.membership,
        )
    }

    /// Wait until the builder of `deploy` staged it; where to copy it from.
    /// An error if the builder failed, the deploy was decided without it,
    /// or `deadline` passed.
    async fn builder_staged(
        &self,
        deploy: &DeployRecord,
        deadline: Instant,
        run: &mut HostRun,
    ) -> Result<Peer> {
        let store = self.part.store;
        let builder = deploy.builder();
        let key = store.keys.stage_report(deploy.id, builder);
        let window = store.keys.window(deploy.id);
        let mut changes = Changes::of(vec![
            (key.clone(), false),
            (store.keys.deploy(), false),
            (window.clone(), false),
        ]);
        let mut window_open = false;
        loop {
            changes.open(store).await;
            // The builder is about to run a step that needs a window.
            if !window_open && store.get::<String>(&window).await?.is_some() {
                run.order(Order::OpenWindow);
                run.until(self, |r| matches!(r, Report::WindowOpen)).await?;
                store
                    .put(&store.keys.window_open(deploy.id, &store.name), &true, None)
                    .await?;
                window_open = true;
            }
            match store.get::<StageReport>(&key).await?.map(|(r, _)| r) {
                Some(StageReport::Staged) => return self.peer(builder).await,
                Some(StageReport::Failed { error }) => {
                    bail!(
                        "the builder {builder} could not stage {}: {error}",
                        deploy.release
                    )
                }
                None => {}
            }
            let current = store.get::<DeployRecord>(&store.keys.deploy()).await?;
            if !current.is_some_and(|(d, _)| d.id == deploy.id && d.phase == Phase::Staging) {
                bail!(
                    "fleet deploy #{} was decided before its builder staged",
                    deploy.id
                );
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "the builder {builder} did not stage {} in time",
                    deploy.release
                );
            }
            // Woken by the builder's report (or the deploy's decision).
            changes.wait(left.min(BUILDER_LOOK)).await;
        }
    }

    /// Ask every other member of `deploy` to open its maintenance window,
    /// and wait (at most `WINDOW_WAIT`) until they say they did; a member
    /// that does not is named, and the step runs anyway.
    async fn open_members_windows(&self, deploy: &DeployRecord) -> Result<()> {
        let store = self.part.store;
        let others: Vec<&String> = deploy
            .members
            .iter()
            .filter(|m| **m != store.name)
            .collect();
        store
            .put(&store.keys.window(deploy.id), &store.name, None)
            .await?;
        let open = store.keys.windows_open(deploy.id);
        let mut changes = Changes::of(vec![(open.clone(), true)]);
        let deadline = Instant::now() + WINDOW_WAIT;
        loop {
            changes.open(store).await;
            let opened = store.names(&open).await?;
            let missing: Vec<&&String> = others.iter().filter(|m| !opened.contains(m)).collect();
            if missing.is_empty() {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                (self.part.log)(
                    "warn",
                    &format!(
                        "{} did not open a maintenance window within {}s; the step runs anyway",
                        missing
                            .iter()
                            .map(|m| m.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        WINDOW_WAIT.as_secs()
                    ),
                );
                return Ok(());
            }
            changes.wait(left.min(BUILDER_LOOK)).await;
        }
    }

    /// A member that serves `release`, to copy it from instead of building
    /// it: the builder when it does, else the first that does.
    async fn holder_of(&self, release: &str, builder: Option<&str>) -> Option<Peer> {
        let store = self.part.store;
        let hosts: BTreeMap<String, HostStatus> = store
            .list(&store.keys.statuses())
            .await
            .ok()?
            .into_iter()
            .collect();
        let mut holders: Vec<&String> = hosts
            .iter()
            .filter(|(name, status)| {
                **name != store.name && status.live.as_deref() == Some(release)
            })
            .map(|(name, _)| name)
            .collect();
        holders.sort_by_key(|name| Some(name.as_str()) != builder);
        for name in holders {
            if let Ok(peer) = self.peer(name).await {
                return Some(peer);
            }
        }
        None
    }

    /// Serve the committed release: stage and switch on its own.
    async fn converge(&self, committed: &Committed) -> Result<()> {
        self.status(HostState::CatchingUp, None, None).await;
        (self.part.log)(
            "info",
            &format!(
                "catching up to the fleet's {} (deploy #{})",
                committed.release, committed.deploy
            ),
        );
        let job = self.job(false, format!("fleet catch-up to #{}", committed.deploy));
        // The `once` steps ran when the fleet deployed it. A member that
        // serves the release is copied; with none, or when every host
        // builds, this host builds it.
        let deploy = self.read_view(|v| v.deploy.clone());
        let every_host_builds = deploy.as_ref().is_some_and(|d| d.every_host_builds)
            || self.part.membership.build_on == BuildOn::EveryHost;
        let holder = match every_host_builds {
            true => None,
            false => {
                let builder = deploy.as_ref().map(|d| d.builder().to_string());
                self.holder_of(&committed.release, builder.as_deref()).await
            }
        };
        let getting = match holder {
            Some(peer) => Getting::CopyFrom(peer),
            None => Getting::Build {
                once: false,
                windows_of: None,
            },
        };
        let mut run = self
            .stage(job, &committed.release, &committed.commit, &getting)
            .await?;
        self.update(|v| v.staged = Some(committed.release.clone()));
        let switched = run.switch(self).await;
        switched.map(|_| ())
    }
}

/// How a member gets the release it stages (a host that has it uses it).
enum Getting<'a> {
    /// Build it from the source; `once`: with the steps marked `once`;
    /// `windows_of`: the deploy whose copying members open their
    /// maintenance windows before a step of this host's needs one.
    Build {
        once: bool,
        windows_of: Option<&'a DeployRecord>,
    },
    /// Copy it from the deploy's builder, once the builder staged it.
    CopyFromBuilder(&'a DeployRecord),
    /// Copy it from a member that serves it.
    CopyFrom(Peer),
}

/// Reports of a host run, handed to the member's async side.
struct ChannelReports(UnboundedSender<Report>);

impl Reports for ChannelReports {
    fn send(&self, report: &Report) {
        let _ = self.0.send(report.clone());
    }
}

/// A host run on a blocking thread, driven by orders.
struct HostRun {
    orders: std::sync::mpsc::Sender<Result<Order>>,
    reports: UnboundedReceiver<Report>,
    done: tokio::task::JoinHandle<Result<()>>,
    /// It failed because another run held the context's lock.
    busy: bool,
}

impl HostRun {
    fn start(job: Job) -> HostRun {
        let (orders, receiver) = std::sync::mpsc::channel();
        let (sender, reports) = unbounded_channel();
        let done =
            tokio::task::spawn_blocking(move || serve_orders(&receiver, &ChannelReports(sender)));
        let _ = orders.send(Ok(Order::Open(Box::new(job))));
        HostRun {
            orders,
            reports,
            done,
            busy: false,
        }
    }

    fn order(&self, order: Order) {
        let _ = self.orders.send(Ok(order));
    }

    /// The next report `wanted` takes, logging the rest; an error if the
    /// run failed or ended first.
    async fn until(
        &mut self,
        member: &Member<'_>,
        wanted: impl Fn(&Report) -> bool,
    ) -> Result<Report> {
        while let Some(report) = self.reports.recv().await {
            match &report {
                _ if wanted(&report) => return Ok(report),
                Report::Log { level, message } => (member.part.log)(level, message),
                // A step that needs a window on a host that builds for
                // itself (every host builds, or it catches up): its own.
                Report::WindowOpening => {
                    (member.part.log)(
                        "warn",
                        "this member builds for itself: its maintenance window opens here only; the other members serve until their switch",
                    );
                    self.order(Order::WindowOpened);
                }
                Report::Failed { error, busy } => {
                    self.busy = *busy;
                    bail!("{error}");
                }
                Report::Done { .. } => bail!("the run ended early"),
                _ => {}
            }
        }
        Err(anyhow!("the run ended without a word"))
    }

    /// Sync, switch, finish: the switch's time, once the run is done. Both
    /// orders go at once (a host run takes them in turn, and stops at a
    /// failed sync): no round trip between this task and the run's thread
    /// delays the switch after the commit.
    async fn switch(&mut self, member: &Member<'_>) -> Result<i64> {
        self.order(Order::Sync);
        self.order(Order::Switch);
        let Report::Switched { at_ms } = self
            .until(member, |r| matches!(r, Report::Switched { .. }))
            .await?
        else {
            unreachable!("until returns what it waited for");
        };
        self.order(Order::Finish);
        self.until(member, |r| matches!(r, Report::Done { .. }))
            .await?;
        Ok(at_ms)
    }

    /// Wait for the run to end, logging what it says.
    async fn finish(mut self, member: &Member<'_>) -> Result<()> {
        let _ = self
            .until(member, |r| {
                matches!(r, Report::Done { .. } | Report::Aborted)
            })
            .await;
        drop(self.orders);
        self.done
            .await
            .map_err(|e| anyhow!("the run panicked: {e}"))?
    }
}
