//! A fleet deploy from the controller, strategy `atomic`: connect to every
//! host, check zdeploy's version, resolve the commit and pick the release
//! name once, send each host the git objects its mirror lacks, stage on
//! every host, then sync and switch every host together. A host that fails
//! before the switch stops the deploy everywhere; one that fails to switch
//! has the others switched back.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use jiff::Timestamp;
use serde::Serialize;
use zdeploy_core::policy::{DeployOutcome, DeployPlan};
use zdeploy_core::release::{release_name, short};
use zdeploy_core::source::{ArchiveLocation, Source, git};

use crate::config::{AppConfig, Overrides};
use crate::fleet::parallel::on_each;
use crate::fleet::protocol::{Export, Job, Order, Report, StageRole};
use crate::fleet::record;
use crate::fleet::settings::{BuildOn, FleetSettings, OnFailure, Strategy};
use crate::fleet::ssh::Connection;
use crate::fleet::transfer;
use crate::fleet::user_content::{Divergence, describe, divergences, fetch_lists, may_differ};
use zdeploy_core::user_content::UserContentSummary;

/// How long the controller waits for a host's next report before it gives
/// the host up (a stage may run a long build: the stage timeout bounds it).
const REPORT_TIMEOUT_MARGIN: Duration = Duration::from_secs(60);

/// How a fleet run that did not fail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FleetOutcome {
    #[serde(rename = "deployed")]
    Deployed,
    #[serde(rename = "rolled back")]
    RolledBack,
    #[serde(rename = "converged")]
    Converged,
    #[serde(rename = "unchanged")]
    Unchanged,
    /// Every host serves the release to the canary's share of clients.
    #[serde(rename = "canary")]
    Canary,
}

impl FleetOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            FleetOutcome::Deployed => "deployed",
            FleetOutcome::RolledBack => "rolled back",
            FleetOutcome::Converged => "converged",
            FleetOutcome::Unchanged => "unchanged",
            FleetOutcome::Canary => "canary",
        }
    }
}

impl std::fmt::Display for FleetOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a fleet run did, seen as a deploy: every host changed, or none.
impl From<FleetOutcome> for DeployOutcome {
    fn from(outcome: FleetOutcome) -> Self {
        match outcome {
            FleetOutcome::Unchanged => DeployOutcome::Unchanged,
            FleetOutcome::Canary => DeployOutcome::Canary,
            _ => DeployOutcome::Deployed,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct FleetResult {
    pub outcome: FleetOutcome,
    pub release: Option<String>,
    pub commit: Option<String>,
    /// First to last host's switch, in milliseconds.
    pub skew_ms: Option<i64>,
    pub hosts: Vec<HostResult>,
    /// Hosts holding user files another host lacks, as staging found them.
    pub user_content_differs: Vec<Divergence>,
}

#[derive(Debug, Serialize)]
pub struct HostResult {
    pub host: String,
    pub deployment: Option<i64>,
    pub release: Option<String>,
    pub switched_at_ms: Option<i64>,
}

/// A report a host gives in answer to an order, which the controller must
/// not miss while it waits for other hosts.
fn answers_later(report: &Report) -> bool {
    !matches!(
        report,
        Report::Log { .. } | Report::Step { .. } | Report::Progress { .. } | Report::WindowOpen
    )
}

/// One host's `zdeploy fleet-host` process, over its connection.
pub struct Remote {
    connection: Connection,
    child: Child,
    stdin: Option<ChildStdin>,
    deployment: Option<i64>,
    live: Option<String>,
    live_commit: Option<String>,
    live_digest: Option<String>,
    releases: Vec<String>,
    /// Where an archive for this host goes.
    upload: Option<String>,
    /// The staged release's manifest, when it was asked to export it.
    export: Option<Export>,
    /// The user files its carry placed in the staged release.
    user_content: Option<UserContentSummary>,
    switched_at_ms: Option<i64>,
    /// Told to open its maintenance window in this run.
    window_open: bool,
}

impl Remote {
    fn host_name(&self) -> &str {
        &self.connection.host.shown
    }

    /// Where this host takes a file of this run, named by `suffix`.
    fn upload_path(&self, suffix: &str) -> Result<String> {
        let upload = self
            .upload
            .as_deref()
            .ok_or_else(|| anyhow!("{}: gave no upload path", self.host_name()))?;
        Ok(format!("{upload}{suffix}"))
    }

    fn order(&mut self, order: &Order) -> Result<()> {
        let line = serde_json::to_string(order)? + "\n";
        let name = self.connection.host.shown.clone();
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow!("{name}: the connection is closed"))?;
        stdin
            .write_all(line.as_bytes())
            .and_then(|_| stdin.flush())
            .map_err(|e| anyhow!("{name}: the connection broke: {e}"))
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        // Closing stdin is the host's cue to stop; it cleans up after itself.
        self.stdin.take();
        let _ = self.child.wait();
    }
}

/// What a host said, or that it went quiet.
enum Heard {
    Report(Report),
    Closed(String),
}

/// Who watches a fleet run: every line a host (or the controller, as
/// "fleet") says, and each host's state as it changes.
pub trait FleetObserver: Sync {
    fn line(&self, host: &str, text: &str);
    /// "materialize", "build", …, "staged", "switched", "done" or
    /// "failed: why".
    fn host_state(&self, _host: &str, _state: &str) {}
}

/// What a fleet run brings every host to.
pub enum Intent<'a> {
    /// A new release of the source (the ref resolved once).
    Deploy(&'a DeployPlan),
    /// An existing release every host has: the one named, or the newest
    /// before the live one.
    Rollback(Option<String>),
    /// The newest release any host serves, on every host.
    Converge,
}

/// What a deploy brings.
enum Content {
    Commit { commit: String, reference: String },
    Archive(PathBuf),
}

/// Where the run takes the fleet.
struct Decision {
    release: String,
    commit: Option<String>,
    /// The archive (made here for a folder) every host lacking the release
    /// builds it from, when the source is not git.
    archive: Option<PathBuf>,
}

pub struct FleetRun<'a> {
    pub app: &'a AppConfig,
    pub fleet: &'a FleetSettings,
    pub overrides: &'a Overrides,
    pub trigger: String,
    pub watch: &'a dyn FleetObserver,
    /// Asked with --force: frozen hosts take part.
    pub force: bool,
}

impl FleetRun<'_> {
    /// Run `intent` and record it in the controller's fleet history.
    pub fn run(&self, intent: &Intent<'_>) -> Result<FleetResult> {
        let started_ms = zdeploy_core::history::now_ms();
        let result = self.run_unrecorded(intent);
        let entry = record::FleetRecord {
            started_ms,
            finished_ms: zdeploy_core::history::now_ms(),
            kind: match intent {
                Intent::Deploy(_) => "deploy",
                Intent::Rollback(_) => "rollback",
                Intent::Converge => "converge",
            }
            .into(),
            trigger: self.trigger.clone(),
            outcome: match &result {
                Ok(done) => done.outcome.as_str().into(),
                Err(_) => "failed".into(),
            },
            release: result.as_ref().ok().and_then(|d| d.release.clone()),
            commit: result.as_ref().ok().and_then(|d| d.commit.clone()),
            skew_ms: result.as_ref().ok().and_then(|d| d.skew_ms),
            hosts: self.fleet.hosts.iter().map(|h| h.shown.clone()).collect(),
            error: result.as_ref().err().map(|e| format!("{e:#}")),
        };
        if let Err(error) = record::append(self.app, &entry) {
            self.watch.line(
                "fleet",
                &format!("warning: the run was not recorded: {error:#}"),
            );
        }
        result
    }

    fn run_unrecorded(&self, intent: &Intent<'_>) -> Result<FleetResult> {
        let connections = connect_all(self.fleet)?;
        check_versions(&connections, self.fleet)?;
        let resolved = match intent {
            Intent::Deploy(plan) => Some(self.resolve(plan)?),
            _ => None,
        };
        let (events, heard) = channel();
        let mut remotes = Vec::new();
        for (index, connection) in connections.into_iter().enumerate() {
            remotes.push(self.start(index, connection, &events)?);
        }
        drop(events);
        let mut run = Run {
            remotes,
            heard,
            watch: self.watch,
            timeout: self.host_patience() + REPORT_TIMEOUT_MARGIN,
            busy: false,
            user_content_differs: Vec::new(),
            held: std::collections::VecDeque::new(),
        };
        for remote in &mut run.remotes {
            let job = Job {
                config: self
                    .app
                    .file
                    .as_ref()
                    .map(|(p, t)| (p.display().to_string(), t.clone())),
                app: self.app.name.clone(),
                overrides: self.overrides.clone(),
                stage_timeout_secs: self.host_patience().as_secs().max(1),
                host: remote.host_name().to_string(),
                trigger: self.trigger.clone(),
                rollback: matches!(intent, Intent::Rollback(_)),
                force: self.force,
                prebuilt: matches!(intent, Intent::Deploy(plan) if plan.prebuilt),
                canary: match intent {
                    Intent::Deploy(plan) => plan.canary,
                    _ => None,
                },
            };
            remote.order(&Order::Open(Box::new(job)))?;
        }
        let all: Vec<usize> = (0..run.remotes.len()).collect();
        let opened = run.await_reports(&all, |r| matches!(r, Report::Opened { .. }));
        run.fail_if_any(&opened, "before staging; nothing changed anywhere")?;
        let decision = match intent {
            Intent::Deploy(plan) => {
                let (commit, reference) = match resolved.expect("resolved above") {
                    Content::Commit { commit, reference } => (commit, reference),
                    Content::Archive(path) => {
                        let decision = Decision {
                            release: self.pick_name(&run.remotes),
                            commit: None,
                            archive: Some(path),
                        };
                        return self.finish_run(run, intent, decision);
                    }
                };
                let agree = run.remotes.iter().all(|r| {
                    r.live_commit.as_deref() == Some(commit.as_str())
                        && r.live == run.remotes[0].live
                });
                if agree && !plan.force {
                    let live = run.remotes[0].live.clone();
                    self.watch.line(
                        "fleet",
                        &format!(
                            "every host already serves {} at commit {} ({reference}); nothing to do (--force deploys anyway)",
                            live.as_deref().unwrap_or("?"),
                            short(&commit)
                        ),
                    );
                    run.abort_all("the fleet already serves this commit");
                    return Ok(run.result(FleetOutcome::Unchanged, live, Some(commit)));
                }
                Decision {
                    release: self.pick_name(&run.remotes),
                    commit: Some(commit),
                    archive: None,
                }
            }
            Intent::Rollback(target) => {
                match self.rollback_target(&run.remotes, target.as_deref()) {
                    Ok(release) => Decision {
                        release,
                        commit: None,
                        archive: None,
                    },
                    Err(error) => {
                        run.abort_all(&format!("{error:#}"));
                        return Err(error);
                    }
                }
            }
            Intent::Converge => {
                let newest = run
                    .remotes
                    .iter()
                    .filter(|r| r.live.is_some())
                    .max_by(|a, b| a.live.cmp(&b.live));
                let Some(newest) = newest else {
                    run.abort_all("nothing is deployed on any host");
                    bail!("nothing is deployed on any host of the fleet: deploy first");
                };
                let decision = Decision {
                    release: newest.live.clone().expect("filtered"),
                    commit: newest.live_commit.clone(),
                    archive: None,
                };
                if run
                    .remotes
                    .iter()
                    .all(|r| r.live.as_deref() == Some(decision.release.as_str()))
                {
                    self.watch.line(
                        "fleet",
                        &format!("every host serves {}; nothing to do", decision.release),
                    );
                    run.abort_all("the fleet agrees");
                    return Ok(run.result(
                        FleetOutcome::Unchanged,
                        Some(decision.release),
                        decision.commit,
                    ));
                }
                decision
            }
        };
        self.finish_run(run, intent, decision)
    }

    /// Send what hosts lack, stage, then switch by the strategy.
    fn finish_run(
        &self,
        mut run: Run<'_>,
        intent: &Intent<'_>,
        decision: Decision,
    ) -> Result<FleetResult> {
        let all: Vec<usize> = (0..run.remotes.len()).collect();
        let lacking: Vec<usize> = all
            .iter()
            .copied()
            .filter(|i| !run.remotes[*i].releases.contains(&decision.release))
            .collect();
        let source = self.copy_source(&run.remotes, &lacking);
        // Copied from the source, the other hosts need nothing of the source.
        let building: Vec<usize> = match source {
            Some(source) => lacking.iter().copied().filter(|i| *i == source).collect(),
            None => lacking.clone(),
        };
        let sent = match (&decision.commit, &decision.archive) {
            _ if building.is_empty() => Ok(()),
            (Some(commit), _) => self.ensure_commit(commit).and_then(|_| {
                self.send_objects(&run.remotes, &building, commit, &decision.release)
            }),
            (None, Some(archive)) => send_archive(&run.remotes, &building, archive),
            (None, None) => Ok(()),
        };
        if let Err(error) = sent {
            run.abort_all(&format!("{error:#}"));
            return Err(error);
        }
        self.watch.line(
            "fleet",
            &format!(
                "staging {}{} on {} hosts",
                decision.release,
                decision
                    .commit
                    .as_deref()
                    .map(|c| format!(" (commit {})", short(c)))
                    .unwrap_or_default(),
                run.remotes.len()
            ),
        );
        let deploying = matches!(intent, Intent::Deploy(_));
        match source {
            Some(source) => self.stage_from_source(&mut run, &decision, source, deploying)?,
            None => {
                let orders = (0..run.remotes.len())
                    .map(|i| {
                        let role = StageRole::Build {
                            once: deploying && i == self.fleet.builder,
                            export: false,
                        };
                        (i, run.stage_order(i, &decision, role))
                    })
                    .collect();
                run.stage_hosts(orders, self.fleet.parallel, &mut no_copies)?;
            }
        }
        run.user_content_differs = self.user_content_differences(&run.remotes);
        match self.fleet.strategy {
            Strategy::Atomic => {
                let everyone: Vec<usize> = (0..run.remotes.len()).collect();
                run.sync_hosts(&everyone, OnFailure::Revert)?;
                run.switch_hosts(&everyone, OnFailure::Revert)?;
            }
            Strategy::Rolling {
                batch,
                wait,
                on_failure,
            } => {
                let size = batch.size(run.remotes.len());
                let batches: Vec<Vec<usize>> = all.chunks(size).map(<[usize]>::to_vec).collect();
                for (number, hosts) in batches.iter().enumerate() {
                    if number > 0 && !wait.is_zero() {
                        self.watch
                            .line("fleet", &format!("waiting {wait:?} before the next batch"));
                        std::thread::sleep(wait);
                    }
                    let names: Vec<&str> =
                        hosts.iter().map(|i| run.remotes[*i].host_name()).collect();
                    self.watch.line(
                        "fleet",
                        &format!(
                            "batch {} of {}: {}",
                            number + 1,
                            batches.len(),
                            names.join(", ")
                        ),
                    );
                    run.sync_hosts(hosts, on_failure)?;
                    run.switch_hosts(hosts, on_failure)?;
                }
            }
        }
        for remote in &mut run.remotes {
            remote.order(&Order::Finish)?;
        }
        let done = run.await_reports(&all, |r| matches!(r, Report::Done { .. }));
        for (index, heard) in &done {
            if let Err(error) = heard {
                self.watch.line(
                    run.remotes[*index].host_name(),
                    &format!("warning: after the switch: {error}"),
                );
            }
        }
        let skew = run.skew_ms();
        let canaries = done
            .iter()
            .filter(|(_, heard)| {
                matches!(heard, Ok(Report::Done { outcome, .. }) if *outcome == DeployOutcome::Canary)
            })
            .count();
        let outcome = match intent {
            Intent::Rollback(_) => FleetOutcome::RolledBack,
            Intent::Converge => FleetOutcome::Converged,
            Intent::Deploy(_) if canaries > 0 => FleetOutcome::Canary,
            Intent::Deploy(_) => FleetOutcome::Deployed,
        };
        let line = match (outcome, intent) {
            (FleetOutcome::Canary, Intent::Deploy(plan)) => format!(
                "{canaries} of {} hosts serve {} as a canary to {}; `zdeploy canary promote` or `abort` ends it on every host",
                run.remotes.len(),
                decision.release,
                plan.canary.map(|s| s.describe()).unwrap_or_default()
            ),
            _ => format!(
                "{} hosts now serve {}; switch skew {} ms",
                run.remotes.len(),
                decision.release,
                skew.unwrap_or(0)
            ),
        };
        self.watch.line("fleet", &line);
        Ok(run.result(outcome, Some(decision.release), decision.commit))
    }

    /// Hosts holding user files others lack, named (a warning, not a
    /// failure: the deploy goes on).
    fn user_content_differences(&self, remotes: &[Remote]) -> Vec<Divergence> {
        let summaries: Vec<Option<UserContentSummary>> =
            remotes.iter().map(|r| r.user_content.clone()).collect();
        if !may_differ(&summaries) {
            return Vec::new();
        }
        let connections: Vec<&Connection> = remotes.iter().map(|r| &r.connection).collect();
        match fetch_lists(self.app, &connections) {
            Ok(lists) => {
                let found = divergences(&lists);
                if !found.is_empty() {
                    self.watch
                        .line("fleet", &format!("warning: {}", describe(&found)));
                }
                found
            }
            Err(error) => {
                self.watch.line(
                    "fleet",
                    &format!("warning: the hosts' user content differs; reading their lists failed: {error:#}"),
                );
                Vec::new()
            }
        }
    }

    /// The host the others copy the release from, when they copy: the
    /// builder, unless it lacks a release others have (a converge).
    fn copy_source(&self, remotes: &[Remote], lacking: &[usize]) -> Option<usize> {
        if self.fleet.build_on != BuildOn::Builder {
            return None;
        }
        let builder = self.fleet.builder;
        let source = if lacking.len() == remotes.len() || !lacking.contains(&builder) {
            builder
        } else {
            (0..remotes.len()).find(|i| !lacking.contains(i))?
        };
        lacking.iter().any(|i| *i != source).then_some(source)
    }

    /// Stage on `source` first (building the release if it lacks it, and
    /// the `once` steps with it when deploying), then on every other host,
    /// those that lack the release copying the source's.
    fn stage_from_source(
        &self,
        run: &mut Run<'_>,
        decision: &Decision,
        source: usize,
        deploying: bool,
    ) -> Result<()> {
        let role = StageRole::Build {
            once: deploying,
            export: true,
        };
        let order = run.stage_order(source, decision, role);
        run.stage_hosts(vec![(source, order)], 1, &mut no_copies)?;
        let copying: Vec<usize> = (0..run.remotes.len())
            .filter(|i| *i != source && !run.remotes[*i].releases.contains(&decision.release))
            .collect();
        let dir = record::controller_dir(self.app);
        let sent = dir.and_then(|dir| {
            let roles = self.send_manifests(run, source, &decision.release, &copying, &dir)?;
            Ok((dir, roles))
        });
        let (dir, roles) = match sent {
            Ok(sent) => sent,
            Err(error) => {
                run.abort_all(&format!("{error:#}"));
                return Err(
                    error.context("sending the builder's manifest; nothing changed anywhere")
                );
            }
        };
        let orders = (0..run.remotes.len())
            .filter(|i| *i != source)
            .map(|i| {
                let role = match copying.iter().position(|c| *c == i) {
                    Some(at) => roles[at].clone(),
                    None => StageRole::Build {
                        once: false,
                        export: false,
                    },
                };
                (i, run.stage_order(i, decision, role))
            })
            .collect::<Vec<_>>();
        let release_dir = self.app.layout.release_path(&decision.release);
        let mut files = Files::new(dir);
        let mut supply = |run: &mut Run<'_>, host: usize, list: &str| {
            files.supply(run, source, host, &release_dir, list)
        };
        run.stage_hosts(orders, self.fleet.parallel, &mut supply)
    }

    /// Send each of `copying` the manifest of the release `source` staged:
    /// only its difference from the release a host is live on when that is
    /// the one the builder built over (the usual case), else the whole
    /// manifest. Each host's copy role.
    fn send_manifests(
        &self,
        run: &Run<'_>,
        source: usize,
        release: &str,
        copying: &[usize],
        dir: &std::path::Path,
    ) -> Result<Vec<StageRole>> {
        let builder = &run.remotes[source];
        let export = builder
            .export
            .clone()
            .ok_or_else(|| anyhow!("{}: staged without its manifest", builder.host_name()))?;
        let takes_delta = |remote: &Remote| {
            export.delta.as_ref().is_some_and(|delta| {
                remote.live.as_ref() == Some(&delta.base.release)
                    && remote.live_digest.as_ref() == Some(&delta.base.digest)
            })
        };
        let (whole, delta) = (dir.join("builder.manifest"), dir.join("builder.delta"));
        let hosts: Vec<&Remote> = copying.iter().map(|i| &run.remotes[*i]).collect();
        if hosts.iter().any(|r| !takes_delta(r)) {
            transfer::fetch_file(&builder.connection, &export.manifest, &whole)?;
        }
        if let Some(found) = export
            .delta
            .as_ref()
            .filter(|_| hosts.iter().any(|r| takes_delta(r)))
        {
            transfer::fetch_file(&builder.connection, &found.manifest, &delta)?;
        }
        let roles = on_each(&hosts, |remote| {
            let (local, path, base) = match export.delta.as_ref().filter(|_| takes_delta(remote)) {
                Some(found) => (
                    &delta,
                    remote.upload_path(".delta")?,
                    Some(found.base.clone()),
                ),
                None => (&whole, remote.upload_path(".manifest")?, None),
            };
            transfer::send_file(&remote.connection, local, &path)?;
            Ok(StageRole::Copy {
                manifest: path,
                digest: export.digest.clone(),
                base,
            })
        })?;
        self.watch.line(
            "fleet",
            &format!(
                "{} built {release} (digest {}); {} hosts copy it",
                builder.host_name(),
                short(&export.digest),
                copying.len()
            ),
        );
        Ok(roles)
    }

    /// How long a host waits for its next order: the stage timeout, and in
    /// a rolling deploy the time the batches before its own may take.
    fn host_patience(&self) -> Duration {
        match self.fleet.strategy {
            Strategy::Atomic => self.fleet.stage_timeout,
            Strategy::Rolling { batch, wait, .. } => {
                let batches = self
                    .fleet
                    .hosts
                    .len()
                    .div_ceil(batch.size(self.fleet.hosts.len()));
                self.fleet.stage_timeout + (wait + REPORT_TIMEOUT_MARGIN) * batches as u32
            }
        }
    }

    /// The release a fleet rollback goes to: named (and on every host), or
    /// the newest timestamped release older than the live one that every
    /// host has.
    fn rollback_target(&self, remotes: &[Remote], named: Option<&str>) -> Result<String> {
        let context = self.app.layout.context();
        let live: Vec<&str> = remotes.iter().filter_map(|r| r.live.as_deref()).collect();
        if live.len() < remotes.len() || live.iter().any(|l| *l != live[0]) {
            bail!(
                "the fleet is split ({}); bring it to one release first: zdeploy fleet converge",
                describe_live(remotes)
            );
        }
        let current = live[0];
        if let Some(named) = named {
            let full = if zdeploy_core::release::classify(context, named).is_some() {
                named.to_string()
            } else {
                format!("{context}_{named}")
            };
            if full == current {
                bail!("{full} is already live on every host");
            }
            let lacking: Vec<&str> = remotes
                .iter()
                .filter(|r| !r.releases.contains(&full))
                .map(|r| r.host_name())
                .collect();
            if !lacking.is_empty() {
                bail!(
                    "no complete release {full} on {}; nothing changed",
                    lacking.join(", ")
                );
            }
            return Ok(full);
        }
        let mut common: Vec<&String> = remotes[0]
            .releases
            .iter()
            .filter(|name| name.as_str() < current)
            .filter(|name| {
                matches!(
                    zdeploy_core::release::classify(context, name),
                    Some(zdeploy_core::release::ReleaseKind::Timestamped(_))
                )
            })
            .filter(|name| remotes.iter().all(|r| r.releases.contains(name)))
            .collect();
        common.sort();
        common.last().map(|n| n.to_string()).ok_or_else(|| {
            anyhow!("no earlier release is on every host of the fleet; name one that is")
        })
    }

    /// What the deploy sends: the commit the ref names (fetched into the
    /// controller's own mirror), or one archive for every host (a folder
    /// is packed into one; a URL is downloaded once).
    fn resolve(&self, plan: &DeployPlan) -> Result<Content> {
        let url = match &plan.source {
            Source::Git { url } => url,
            Source::Archive(ArchiveLocation::Path(path)) => {
                return Ok(Content::Archive(path.clone()));
            }
            Source::Archive(ArchiveLocation::Url(url)) => {
                let dest = record::controller_dir(self.app)?.join("download.archive");
                self.watch
                    .line("fleet", &format!("downloading {}", plan.source.shown()));
                zdeploy_core::source::archive::download(
                    url,
                    &plan.source.shown(),
                    &dest,
                    plan.policy.limits.max_bytes,
                )?;
                return Ok(Content::Archive(dest));
            }
            Source::Folder(folder) => return Ok(Content::Archive(self.pack(folder)?)),
        };
        let shown = plan.source.shown();
        let mirror = controller_mirror(self.app)?;
        let reference = match &plan.reference {
            Some(r) => r.clone(),
            None => git::default_branch(url, &shown)?
                .ok_or_else(|| anyhow!("{shown} has no default branch; pass --ref"))?,
        };
        self.watch.line("fleet", &format!("fetching {shown}"));
        git::fetch(&mirror, url, &shown)?;
        let mut commit = git::resolve(&mirror, &reference, &shown)?;
        self.watch
            .line("fleet", &format!("{reference} is at {}", short(&commit)));
        if let Some(requested) = &plan.requested {
            commit = git::pin(
                &mirror,
                url,
                &shown,
                (&reference, &commit),
                requested,
                plan.policy.allow_any_commit,
            )?;
            self.watch.line(
                "fleet",
                &format!("deploying commit {} as asked", short(&commit)),
            );
        }
        Ok(Content::Commit { commit, reference })
    }

    /// A folder source as one tar for every host: its top folder is the
    /// one an archive's single top folder is unwrapped from; its `.git` is
    /// left out, as a folder deploy leaves it out.
    fn pack(&self, folder: &std::path::Path) -> Result<PathBuf> {
        let folder = std::fs::canonicalize(folder)
            .map_err(|e| anyhow!("cannot open source folder {}: {e}", folder.display()))?;
        let (Some(parent), Some(name)) = (folder.parent(), folder.file_name()) else {
            bail!("cannot send {} as a fleet's source", folder.display());
        };
        let dest = record::controller_dir(self.app)?.join("folder.tar");
        let mut exclude = std::ffi::OsString::from("--exclude=");
        exclude.push(name);
        exclude.push("/.git");
        let output = std::process::Command::new("tar")
            .arg("-C")
            .arg(parent)
            .arg("-cf")
            .arg(&dest)
            .arg(exclude)
            .arg("--")
            .arg(name)
            .output()
            .context("run tar")?;
        if !output.status.success() {
            bail!(
                "cannot pack {}: {}",
                folder.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(dest)
    }

    /// Make sure the controller's mirror has `commit` (a converge may need
    /// one it never fetched).
    fn ensure_commit(&self, commit: &str) -> Result<()> {
        let mirror = controller_mirror(self.app)?;
        let shown = self
            .app
            .source
            .as_ref()
            .map(|s| s.shown())
            .unwrap_or_default();
        let has = |mirror: &std::path::Path| git::resolve(mirror, commit, &shown).is_ok();
        if has(&mirror) {
            return Ok(());
        }
        if let Some(Source::Git { url }) = &self.app.source {
            git::fetch(&mirror, url, &shown)?;
            if has(&mirror) {
                return Ok(());
            }
        }
        bail!(
            "commit {} is not in {} any more; deploy a ref instead",
            short(commit),
            if shown.is_empty() {
                "the source"
            } else {
                &shown
            }
        )
    }

    /// One release name for every host: now, or just after the newest
    /// release any host has, so names sort in deploy order everywhere.
    fn pick_name(&self, remotes: &[Remote]) -> String {
        let context = self.app.layout.context();
        let newest = remotes
            .iter()
            .flat_map(|r| r.releases.iter())
            .filter(|name| {
                matches!(
                    zdeploy_core::release::classify(context, name),
                    Some(zdeploy_core::release::ReleaseKind::Timestamped(_))
                )
            })
            .max();
        let mut at = Timestamp::now();
        loop {
            let name = release_name(context, at);
            if newest.is_none_or(|n| name.as_str() > n.as_str()) {
                return name;
            }
            at += jiff::SignedDuration::from_secs(1);
        }
    }

    /// Push the commit to the mirrors of `hosts`: git's pack protocol sends
    /// only the objects each mirror lacks.
    fn send_objects(
        &self,
        remotes: &[Remote],
        hosts: &[usize],
        commit: &str,
        release: &str,
    ) -> Result<()> {
        let mirror = controller_mirror(self.app)?;
        let remote_mirror = self.app.layout.mirror_path();
        let targets: Vec<&Remote> = hosts.iter().map(|i| &remotes[*i]).collect();
        on_each(&targets, |remote| {
            let mut push = git::git();
            push.env("GIT_SSH_COMMAND", remote.connection.git_ssh_command())
                .arg("--git-dir")
                .arg(&mirror)
                .args(["push", "--quiet", "--force", "--end-of-options"])
                .arg(remote.connection.host.ssh_url(&remote_mirror))
                .arg(format!("{commit}:refs/zdeploy/{release}"));
            let output = push.output().context("run git push")?;
            if !output.status.success() {
                bail!(
                    "{}: sending commit {} failed: {}",
                    remote.host_name(),
                    short(commit),
                    String::from_utf8_lossy(&output.stderr).trim()
                );
            }
            Ok(())
        })
        .map_err(|e| anyhow!("{e:#}; nothing changed anywhere"))?;
        Ok(())
    }

    /// Start `zdeploy fleet-host` on a host, its reports read on a thread.
    fn start(
        &self,
        index: usize,
        connection: Connection,
        events: &Sender<(usize, Heard)>,
    ) -> Result<Remote> {
        let mut child = connection
            .command(&self.fleet.remote("fleet-host"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| anyhow!("{}: cannot run ssh: {e}", connection.host.shown))?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let events = events.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Report>(&line) {
                    Ok(report) => {
                        if events.send((index, Heard::Report(report))).is_err() {
                            return;
                        }
                    }
                    Err(_) => {
                        let _ = events.send((
                            index,
                            Heard::Closed(format!("said something unreadable: {line}")),
                        ));
                        return;
                    }
                }
            }
            let mut said = String::new();
            let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut said);
            let said = said.trim();
            let why = if said.is_empty() {
                "the connection closed".to_string()
            } else {
                format!("the connection closed: {said}")
            };
            let _ = events.send((index, Heard::Closed(why)));
        });
        let stdin = child.stdin.take();
        Ok(Remote {
            connection,
            child,
            stdin,
            deployment: None,
            live: None,
            live_commit: None,
            live_digest: None,
            releases: Vec::new(),
            upload: None,
            export: None,
            user_content: None,
            switched_at_ms: None,
            window_open: false,
        })
    }
}

/// The hosts' processes and what they report, during one run.
struct Run<'a> {
    remotes: Vec<Remote>,
    heard: Receiver<(usize, Heard)>,
    watch: &'a dyn FleetObserver,
    timeout: Duration,
    /// A host said another run holds its lock.
    busy: bool,
    user_content_differs: Vec<Divergence>,
    /// What a host said while the controller waited for others (a host
    /// staged while every other opened its window), read again next.
    held: std::collections::VecDeque<(usize, Heard)>,
}

type Answers = Vec<(usize, Result<Report, String>)>;

impl Run<'_> {
    /// The next thing a host said: what was held first, then what arrives.
    fn recv(&mut self) -> Result<(usize, Heard), std::sync::mpsc::RecvTimeoutError> {
        match self.held.pop_front() {
            Some(event) => Ok(event),
            None => self.heard.recv_timeout(self.timeout),
        }
    }

    /// Wait until each of `hosts` gives a report `wanted` matches, fails, or
    /// goes quiet; everything else they say is printed on the way.
    fn await_reports(&mut self, hosts: &[usize], wanted: impl Fn(&Report) -> bool) -> Answers {
        let mut answers: Answers = Vec::new();
        let mut held = Vec::new();
        while answers.len() < hosts.len() {
            let pending: Vec<usize> = hosts
                .iter()
                .copied()
                .filter(|h| !answers.iter().any(|(a, _)| a == h))
                .collect();
            let (index, heard) = match self.recv() {
                Ok(event) => event,
                Err(_) => {
                    for index in pending {
                        answers.push((index, Err("no report in time".into())));
                    }
                    break;
                }
            };
            if !pending.contains(&index) {
                match &heard {
                    Heard::Report(report) if !answers_later(report) => self.show(index, report),
                    _ => held.push((index, heard)),
                }
                continue;
            }
            match heard {
                Heard::Report(Report::Failed { error, busy }) => {
                    self.busy |= busy;
                    answers.push((index, Err(self.failed(index, error))));
                }
                Heard::Report(report) if wanted(&report) => {
                    self.note(index, &report);
                    answers.push((index, Ok(report)));
                }
                Heard::Report(report) => self.show(index, &report),
                Heard::Closed(why) => answers.push((index, Err(self.failed(index, why)))),
            }
        }
        // Read again, in order, before anything new.
        for event in held.into_iter().rev() {
            self.held.push_front(event);
        }
        answers
    }

    /// Every host but `asking` opens its maintenance window; those not
    /// staging now confirm before `asking` is told to go on (a host busy
    /// staging opens its own when it next reads an order, before its switch).
    fn open_windows(&mut self, asking: usize, staging: &[usize]) -> Result<(), String> {
        let targets: Vec<usize> = (0..self.remotes.len())
            .filter(|i| *i != asking && !self.remotes[*i].window_open)
            .collect();
        let mut confirming = Vec::new();
        for &index in &targets {
            self.remotes[index].window_open = true;
            self.remotes[index]
                .order(&Order::OpenWindow)
                .map_err(|e| format!("{e:#}"))?;
            if !staging.contains(&index) {
                confirming.push(index);
            }
        }
        self.remotes[asking].window_open = true;
        let answers = self.await_reports(&confirming, |r| matches!(r, Report::WindowOpen));
        match self.failures(&answers) {
            Some(failed) => Err(format!(
                "a host could not open its maintenance window: {failed}"
            )),
            None => self.remotes[asking]
                .order(&Order::WindowOpened)
                .map_err(|e| format!("{e:#}")),
        }
    }

    fn note(&mut self, index: usize, report: &Report) {
        let state = match report {
            Report::Opened { .. } => Some("opened"),
            Report::Staged { .. } => Some("staged"),
            Report::Lacking { .. } => Some("receiving"),
            Report::Synced => Some("synced"),
            Report::Switched { .. } => Some("switched"),
            Report::Aborted => Some("stopped"),
            Report::Done { .. } => Some("done"),
            _ => None,
        };
        if let Some(state) = state {
            self.watch
                .host_state(self.remotes[index].host_name(), state);
        }
        let remote = &mut self.remotes[index];
        match report {
            Report::Opened {
                deployment,
                live,
                live_commit,
                live_digest,
                releases,
                upload,
            } => {
                remote.live_digest = live_digest.clone();
                remote.upload = Some(upload.clone());
                remote.deployment = Some(*deployment);
                remote.live = live.clone();
                remote.live_commit = live_commit.clone();
                remote.releases = releases.clone();
            }
            Report::Switched { at_ms } => remote.switched_at_ms = Some(*at_ms),
            Report::Staged {
                export,
                user_content,
                ..
            } => {
                remote.export = export.clone();
                remote.user_content = user_content.clone();
            }
            _ => {}
        }
    }

    /// Note that a host failed; the reason, for the caller's answer.
    fn failed(&self, index: usize, why: String) -> String {
        self.watch
            .host_state(self.remotes[index].host_name(), &format!("failed: {why}"));
        why
    }

    fn show(&self, index: usize, report: &Report) {
        let name = self.remotes[index].host_name();
        if let Report::Step {
            step, done: false, ..
        } = report
        {
            self.watch.host_state(name, step);
        }
        match report {
            Report::Log { level, message } if level == "warn" => {
                self.watch.line(name, &format!("warning: {message}"))
            }
            Report::Log { message, .. } => self.watch.line(name, message),
            Report::Step {
                step,
                done: true,
                ok: false,
            } => self.watch.line(name, &format!("[{step}] FAILED")),
            _ => {}
        }
    }

    /// Every failed host's error, named, or `None` when all answered.
    fn failures(&self, answers: &Answers) -> Option<String> {
        let failed: Vec<String> = answers
            .iter()
            .filter_map(|(i, a)| {
                a.as_ref()
                    .err()
                    .map(|e| format!("{}: {e}", self.remotes[*i].host_name()))
            })
            .collect();
        (!failed.is_empty()).then(|| failed.join("; "))
    }

    /// Fail with every host's error named, after stopping the others.
    fn fail_if_any(&mut self, answers: &Answers, consequence: &str) -> Result<()> {
        let Some(why) = self.failures(answers) else {
            return Ok(());
        };
        self.abort_all(&why);
        let message = format!("fleet run failed {consequence}: {why}");
        if self.busy {
            // Exit as a single host's busy lock does.
            return Err(zdeploy_core::Error::Busy(message).into());
        }
        bail!(message)
    }

    /// Tell every host still listening to stop, and wait for each.
    fn abort_all(&mut self, why: &str) {
        let everyone: Vec<usize> = (0..self.remotes.len()).collect();
        self.abort_hosts(&everyone, why);
    }

    fn abort_hosts(&mut self, hosts: &[usize], why: &str) {
        let mut listening = Vec::new();
        for &index in hosts {
            if self.remotes[index]
                .order(&Order::Abort {
                    why: why.to_string(),
                })
                .is_ok()
            {
                listening.push(index);
            }
        }
        for (index, answer) in self.await_reports(&listening, |r| matches!(r, Report::Aborted)) {
            if let Err(error) = answer {
                let name = self.remotes[index].host_name();
                if !error.contains(why) {
                    self.watch.line(name, &format!("while stopping: {error}"));
                }
            }
        }
    }

    /// The stage order for host `index`.
    fn stage_order(&self, index: usize, decision: &Decision, role: StageRole) -> Order {
        Order::Stage {
            release: decision.release.clone(),
            commit: decision.commit.clone(),
            archive: decision
                .archive
                .as_ref()
                .and(self.remotes[index].upload.clone()),
            role,
        }
    }

    /// Give each host its stage order, at most `parallel` staging at once;
    /// a host that reports what it lacks of the builder's release is sent
    /// it by `supply` and goes on.
    fn stage_hosts(
        &mut self,
        orders: Vec<(usize, Order)>,
        parallel: usize,
        supply: &mut Supply<'_>,
    ) -> Result<()> {
        let count = orders.len();
        let mut orders = orders.into_iter();
        let mut started: Vec<usize> = Vec::new();
        let mut answers: Answers = Vec::new();
        while answers.len() < count {
            while started.len() < count && started.len() - answers.len() < parallel.max(1) {
                let (index, order) = orders.next().expect("one order a host");
                started.push(index);
                if let Err(e) = self.remotes[index].order(&order) {
                    answers.push((index, Err(format!("{e:#}"))));
                }
            }
            let waiting: Vec<usize> = started
                .iter()
                .copied()
                .filter(|i| !answers.iter().any(|(a, _)| a == i))
                .collect();
            if waiting.is_empty() {
                continue;
            }
            let (index, answer) = self.await_one(&waiting, |r| {
                matches!(
                    r,
                    Report::Staged { .. } | Report::Lacking { .. } | Report::WindowOpening
                )
            });
            match answer {
                Ok(Report::WindowOpening) => {
                    let staging: Vec<usize> =
                        waiting.iter().copied().filter(|i| *i != index).collect();
                    if let Err(why) = self.open_windows(index, &staging) {
                        answers.push((index, Err(self.failed(index, why))));
                    }
                }
                Ok(Report::Lacking { list, .. }) => {
                    let sent = supply(self, index, &list);
                    if let Err(e) = sent {
                        answers.push((index, Err(self.failed(index, format!("{e:#}")))));
                    }
                }
                answer => answers.push((index, answer)),
            }
        }
        self.fail_if_any(
            &answers,
            "while staging; nothing switched anywhere, staged releases removed",
        )
    }

    /// The first of `hosts` to answer.
    fn await_one(
        &mut self,
        hosts: &[usize],
        wanted: impl Fn(&Report) -> bool,
    ) -> (usize, Result<Report, String>) {
        loop {
            let (index, heard) = match self.recv() {
                Ok(event) => event,
                Err(_) => return (hosts[0], Err("no report in time".into())),
            };
            match heard {
                Heard::Report(Report::Failed { error, busy }) if hosts.contains(&index) => {
                    self.busy |= busy;
                    return (index, Err(self.failed(index, error)));
                }
                Heard::Report(report) if hosts.contains(&index) && wanted(&report) => {
                    self.note(index, &report);
                    return (index, Ok(report));
                }
                Heard::Report(report) => self.show(index, &report),
                Heard::Closed(why) if hosts.contains(&index) => {
                    return (index, Err(self.failed(index, why)));
                }
                Heard::Closed(_) => {}
            }
        }
    }

    /// Sync `hosts` before their switch.
    fn sync_hosts(&mut self, hosts: &[usize], on_failure: OnFailure) -> Result<()> {
        let mut answers: Answers = Vec::new();
        let mut sent = Vec::new();
        for &index in hosts {
            match self.remotes[index].order(&Order::Sync) {
                Ok(()) => sent.push(index),
                Err(e) => answers.push((index, Err(format!("{e:#}")))),
            }
        }
        answers.extend(self.await_reports(&sent, |r| matches!(r, Report::Synced)));
        self.stop_if_any_failed(&answers, on_failure, "before its switch")
    }

    /// Order the switch of `hosts` at once (the lines are written back to
    /// back, so they switch within about one round trip); a host's own
    /// health check runs before it answers.
    fn switch_hosts(&mut self, hosts: &[usize], on_failure: OnFailure) -> Result<()> {
        let line = serde_json::to_string(&Order::Switch)? + "\n";
        let mut answers: Answers = Vec::new();
        let mut sent = Vec::new();
        for &index in hosts {
            let written = self.remotes[index]
                .stdin
                .as_mut()
                .map(|s| s.write_all(line.as_bytes()).and_then(|_| s.flush()));
            match written {
                Some(Ok(())) => sent.push(index),
                _ => answers.push((index, Err("the connection broke before the switch".into()))),
            }
        }
        answers.extend(self.await_reports(&sent, |r| matches!(r, Report::Switched { .. })));
        self.stop_if_any_failed(&answers, on_failure, "at the switch")
    }

    /// After a failure at or before a switch: with `Revert`, every host that
    /// switched goes back and the staged releases are removed; with `Stop`,
    /// switched hosts keep the new release and the rest are left as they were.
    fn stop_if_any_failed(
        &mut self,
        answers: &Answers,
        on_failure: OnFailure,
        when: &str,
    ) -> Result<()> {
        let Some(why) = self.failures(answers) else {
            return Ok(());
        };
        let failed_hosts: Vec<usize> = answers
            .iter()
            .filter(|(_, a)| a.is_err())
            .map(|(i, _)| *i)
            .collect();
        let switched: Vec<usize> = (0..self.remotes.len())
            .filter(|i| self.remotes[*i].switched_at_ms.is_some() && !failed_hosts.contains(i))
            .collect();
        let names = |run: &Self, hosts: &[usize]| {
            hosts
                .iter()
                .map(|i| run.remotes[*i].host_name().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match on_failure {
            OnFailure::Revert => {
                self.abort_all(&format!("another host failed {when} ({why})"));
                if switched.is_empty() {
                    bail!("fleet run failed {when}: {why}; nothing switched anywhere");
                }
                Err(zdeploy_core::Error::SwitchedBack(format!(
                    "fleet run failed {when}: {why}; switched back: {}",
                    names(self, &switched)
                ))
                .into())
            }
            OnFailure::Stop => {
                for &index in &switched {
                    let _ = self.remotes[index].order(&Order::Finish);
                }
                self.await_reports(&switched, |r| matches!(r, Report::Done { .. }));
                let others: Vec<usize> = (0..self.remotes.len())
                    .filter(|i| !switched.contains(i))
                    .collect();
                self.abort_hosts(&others, &format!("another host failed {when} ({why})"));
                bail!(
                    "fleet run stopped {when}: {why}; {} keep the new release, the others serve what they served (on_failure = \"stop\"; zdeploy fleet converge finishes it)",
                    if switched.is_empty() {
                        "no hosts".to_string()
                    } else {
                        names(self, &switched)
                    }
                )
            }
        }
    }

    fn skew_ms(&self) -> Option<i64> {
        let times: Vec<i64> = self
            .remotes
            .iter()
            .filter_map(|r| r.switched_at_ms)
            .collect();
        Some(times.iter().max()? - times.iter().min()?)
    }

    fn result(
        &self,
        outcome: FleetOutcome,
        release: Option<String>,
        commit: Option<String>,
    ) -> FleetResult {
        FleetResult {
            outcome,
            release: release.clone(),
            commit,
            skew_ms: self.skew_ms(),
            user_content_differs: self.user_content_differs.clone(),
            hosts: self
                .remotes
                .iter()
                .map(|r| HostResult {
                    host: r.host_name().to_string(),
                    deployment: r.deployment,
                    release: if outcome == FleetOutcome::Unchanged {
                        r.live.clone()
                    } else {
                        release.clone()
                    },
                    switched_at_ms: r.switched_at_ms,
                })
                .collect(),
        }
    }
}

/// How a copying host gets the files it lacks: `(run, host, list)` sends
/// them and orders it to go on.
type Supply<'a> = dyn FnMut(&mut Run<'_>, usize, &str) -> Result<()> + 'a;

/// A supply for runs where nobody copies.
fn no_copies(run: &mut Run<'_>, host: usize, _: &str) -> Result<()> {
    bail!(
        "{} asked for the builder's files, but this run copies nothing",
        run.remotes[host].host_name()
    )
}

/// The builder's files that copying hosts lack, fetched once per distinct
/// list (hosts that served the same release lack the same files).
struct Files {
    dir: PathBuf,
    /// Each list fetched so far and the tar holding its files.
    fetched: Vec<(Vec<u8>, PathBuf)>,
}

impl Files {
    fn new(dir: PathBuf) -> Self {
        Files {
            dir,
            fetched: Vec::new(),
        }
    }

    /// Send `host` the files its list (at `list` on the host) names, from
    /// the builder, and order it to write them.
    fn supply(
        &mut self,
        run: &mut Run<'_>,
        builder: usize,
        host: usize,
        release_dir: &std::path::Path,
        list: &str,
    ) -> Result<()> {
        let local_list = self.dir.join("lacking.list");
        transfer::fetch_file(&run.remotes[host].connection, list, &local_list)?;
        let wanted = std::fs::read(&local_list)
            .map_err(|e| anyhow!("cannot read {}: {e}", local_list.display()))?;
        let known = self
            .fetched
            .iter()
            .find(|(l, _)| *l == wanted)
            .map(|(_, tar)| tar.clone());
        let tar = match known {
            Some(tar) => tar,
            None => {
                let tar = self.dir.join(format!("files-{}.tar", self.fetched.len()));
                transfer::fetch_release_files(
                    &run.remotes[builder].connection,
                    release_dir,
                    &wanted,
                    &tar,
                )?;
                self.fetched.push((wanted, tar.clone()));
                tar
            }
        };
        let remote = &run.remotes[host];
        let target = remote.upload_path(".tar")?;
        transfer::send_file(&remote.connection, &tar, &target)?;
        run.remotes[host].order(&Order::Files { tar: target })
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        for (_, tar) in &self.fetched {
            let _ = std::fs::remove_file(tar);
        }
    }
}

/// Stream the archive to each of `hosts` (in parallel), to the path each
/// host gave.
fn send_archive(remotes: &[Remote], hosts: &[usize], archive: &std::path::Path) -> Result<()> {
    let targets: Vec<&Remote> = hosts.iter().map(|i| &remotes[*i]).collect();
    on_each(&targets, |remote| {
        transfer::send_file(&remote.connection, archive, &remote.upload_path("")?)
    })
    .map_err(|e| anyhow!("{e:#}; nothing changed anywhere"))?;
    Ok(())
}

/// Connect to every host at once; every failure is named.
fn connect_all(fleet: &FleetSettings) -> Result<Vec<Connection>> {
    on_each(&fleet.hosts, |host| Connection::open(host, fleet))
}

/// Every host must run this very zdeploy version.
fn check_versions(connections: &[Connection], fleet: &FleetSettings) -> Result<()> {
    let ours = format!("zdeploy {}", env!("CARGO_PKG_VERSION"));
    let words = fleet.remote("--version");
    let theirs = on_each(connections, |c| {
        let version = match c.command(&words).stdin(Stdio::null()).output() {
            Ok(out) if out.status.success() => {
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            }
            // ssh's own failure, not the command's.
            Ok(out) if out.status.code() == Some(255) => format!(
                "no answer ({})",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Ok(_) => "no zdeploy".to_string(),
            Err(e) => format!("unreachable ({e})"),
        };
        Ok((c.host.shown.clone(), version))
    })?;
    let differ: Vec<String> = theirs
        .iter()
        .filter(|(_, v)| *v != ours)
        .map(|(host, v)| format!("{host} has {v}"))
        .collect();
    if !differ.is_empty() {
        bail!(
            "zdeploy versions differ: this controller is {ours}, {} (zdeploy fleet install puts this binary on them)",
            differ.join(", ")
        );
    }
    Ok(())
}

/// The controller's own mirror of the app's repository.
fn controller_mirror(app: &AppConfig) -> Result<PathBuf> {
    Ok(record::controller_dir(app)?.join("mirror.git"))
}

/// Each host's live release, for messages.
pub fn describe_live(remotes: &[Remote]) -> String {
    remotes
        .iter()
        .map(|r| {
            format!(
                "{} serves {}",
                r.host_name(),
                r.live.as_deref().unwrap_or("nothing")
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}
