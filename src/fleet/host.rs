//! A fleet host's part of a deploy: one run that holds the host's lock from
//! stage to switch and does what it is ordered, composed of the same steps
//! as a single-host deploy. The orders come from a controller over ssh
//! (`zdeploy fleet-host`, reports on stdout) or from the fleet's record in
//! etcd (the agent's member, reports written back there). If the orders stop
//! (the connection closes, or none comes within `stage_timeout`), a staged
//! release is removed; a switched one stays and the fleet converges to it.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use zdeploy_core::history::{Kind, Outcome};
use zdeploy_core::lock::LockWait;
use zdeploy_core::maintenance;
use zdeploy_core::policy::{DeployOutcome, DeployPlan, DeployResult};
use zdeploy_core::release::ReleaseState;
use zdeploy_core::release_copy::{CopySource, Lacking, export_delta, export_manifest};
use zdeploy_core::session::{Level, Observer, RunOptions, Session, Step};
use zdeploy_core::source::{ArchiveLocation, Source, git};
use zdeploy_core::steps::after_switch::{OnFailure, after_switch};
use zdeploy_core::steps::discard::discard_release;
use zdeploy_core::steps::prune::prune_after_switch;
use zdeploy_core::steps::recover::recover;
use zdeploy_core::steps::settle::settle_switched;
use zdeploy_core::steps::stage::{Staged, Staging, stage, stage_copy, stage_existing};
use zdeploy_core::steps::switch::{Synced, check_live, switch, switch_back, sync};
use zdeploy_core::switch::{Live, read_live};
use zdeploy_core::user_content::summary_of;

use crate::config::{AppConfig, ConfigFile, Role, ad_hoc};
use crate::fleet::protocol::{Base, Delta, Export, Job, Order, Report, StageRole};
use crate::fleet::settings::HostAddress;

/// Where a host's reports go.
pub trait Reports: Send + Sync {
    fn send(&self, report: &Report);
}

/// Reports to a controller over ssh: stdout, one JSON line each.
struct StdoutReports {
    out: Mutex<std::io::Stdout>,
}

impl Reports for StdoutReports {
    fn send(&self, report: &Report) {
        let line = serde_json::to_string(report).expect("reports serialize");
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        // A controller that went away is noticed on stdin, not here.
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// The run's steps and log lines, as reports.
struct Reporter<'a> {
    sink: &'a dyn Reports,
    /// Where the controller's orders arrive: a window this host opens
    /// waits for the controller to open every other host's.
    orders: &'a Receiver<Result<Order>>,
}

/// How long a host about to open a maintenance window waits for the
/// controller to have opened every other host's.
const WINDOW_WAIT: Duration = Duration::from_secs(300);

impl Reporter<'_> {
    fn send(&self, report: &Report) {
        self.sink.send(report);
    }
}

impl Observer for Reporter<'_> {
    fn step_started(&self, step: Step) {
        self.send(&Report::Step {
            step: step.as_str().into(),
            done: false,
            ok: true,
        });
    }
    fn step_finished(&self, step: Step, _elapsed: Duration, ok: bool) {
        self.send(&Report::Step {
            step: step.as_str().into(),
            done: true,
            ok,
        });
    }
    fn log(&self, level: Level, message: &str) {
        if level >= Level::Info {
            self.send(&Report::Log {
                level: level.as_str().into(),
                message: message.into(),
            });
        }
    }
    fn progress(&self, step: Step, done: u64, total: Option<u64>) {
        if done.is_multiple_of(4096) {
            self.send(&Report::Progress {
                step: step.as_str().into(),
                done,
                total,
            });
        }
    }
    fn window_opening(&self) -> Result<(), String> {
        self.send(&Report::WindowOpening);
        match next(self.orders, WINDOW_WAIT) {
            Next::Order(Order::WindowOpened) => Ok(()),
            Next::Order(Order::Abort { why }) => Err(format!("the controller stopped: {why}")),
            Next::Order(other) => Err(format!(
                "expected the other hosts' windows open, got a {} order",
                other.name()
            )),
            Next::Gone(why) => Err(why),
        }
    }
}

/// The next order, opening this host's maintenance window on the way when
/// the controller says another host is about to run a step that needs one.
fn next_order(
    session: &Session<'_>,
    app: &AppConfig,
    orders: &Receiver<Result<Order>>,
    reporter: &Reporter<'_>,
    timeout: Duration,
) -> Next {
    let deadline = Instant::now() + timeout;
    loop {
        match next(orders, deadline.saturating_duration_since(Instant::now())) {
            Next::Order(Order::OpenWindow) => match open_window(session, app) {
                Ok(()) => reporter.send(&Report::WindowOpen),
                Err(error) => {
                    return Next::Gone(format!("cannot open the maintenance window: {error:#}"));
                }
            },
            other => return other,
        }
    }
}

/// This host's window for the fleet's deploy, serving the live release's
/// page (the built-in one when it has none).
fn open_window(session: &Session<'_>, app: &AppConfig) -> Result<()> {
    let layout = session.layout;
    let page = match (&app.policy.maintenance_page, read_live(layout)?.dir(layout)) {
        (Some(relative), Some(live)) => maintenance::page_in_release(&live, relative)
            .inspect_err(|e| session.warn(&format!("{e}; the window serves the built-in page")))
            .ok(),
        _ => None,
    };
    if maintenance::open_for_deploy(session, page, &app.policy.maintenance_allow)? {
        session.info("maintenance: on until the switch, for a step another host runs");
    }
    Ok(())
}

/// Orders from stdin, read on a thread; the channel closes when the
/// controller's connection does.
fn orders() -> Receiver<Result<Order>> {
    let (sender, receiver) = channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let order = line
                .context("read orders")
                .and_then(|l| serde_json::from_str::<Order>(&l).context("parse an order"));
            let failed = order.is_err();
            if sender.send(order).is_err() || failed {
                return;
            }
        }
    });
    receiver
}

/// What the wait for the next order ended with.
enum Next {
    Order(Order),
    /// The controller went away or said nothing in time.
    Gone(String),
}

fn next(orders: &Receiver<Result<Order>>, timeout: Duration) -> Next {
    match orders.recv_timeout(timeout) {
        Ok(Ok(order)) => Next::Order(order),
        Ok(Err(e)) => Next::Gone(format!("the controller sent something unreadable: {e:#}")),
        Err(RecvTimeoutError::Timeout) => Next::Gone(format!(
            "no word from the controller within the stage timeout ({}s)",
            timeout.as_secs()
        )),
        Err(RecvTimeoutError::Disconnected) => {
            Next::Gone("the controller's connection closed".into())
        }
    }
}

/// `zdeploy fleet-host`: orders on stdin, reports on stdout.
pub fn serve() -> Result<()> {
    let sink = StdoutReports {
        out: Mutex::new(std::io::stdout()),
    };
    serve_orders(&orders(), &sink)
}

/// Carry out one job's orders, reporting to `sink`; a failure is reported
/// too.
pub fn serve_orders(orders: &Receiver<Result<Order>>, sink: &dyn Reports) -> Result<()> {
    let reporter = Reporter { sink, orders };
    let result = serve_job(orders, &reporter);
    if let Err(error) = &result {
        let busy = error
            .downcast_ref::<zdeploy_core::Error>()
            .is_some_and(|e| e.kind() == zdeploy_core::ErrorKind::Busy);
        reporter.send(&Report::Failed {
            error: format!("{error:#}"),
            busy,
        });
    }
    result
}

fn serve_job(orders: &Receiver<Result<Order>>, reporter: &Reporter<'_>) -> Result<()> {
    let job = match next(orders, Duration::from_secs(60)) {
        Next::Order(Order::Open(job)) => job,
        Next::Order(other) => bail!("expected an open order first, got {other:?}"),
        Next::Gone(why) => bail!("{why}"),
    };
    let app = app_of(&job)?;
    let options = RunOptions {
        trigger: format!("fleet {}", job.trigger),
        wait: LockWait::Fail,
    };
    let shown = app.source.as_ref().map(|s| s.shown());
    let session = Session::open(
        &app.layout,
        if job.rollback {
            Kind::Rollback
        } else {
            Kind::Deploy
        },
        &options,
        shown.as_deref(),
        app.reference.as_deref(),
        reporter,
    )?;
    let frozen = match job.force {
        true => None,
        false => zdeploy_core::freeze::current(&app.layout)?,
    };
    if let Some(freeze) = frozen {
        let kind = if job.rollback {
            Kind::Rollback
        } else {
            Kind::Deploy
        };
        let refused: zdeploy_core::Result<()> =
            Err(zdeploy_core::freeze::refusal(&app.layout, &freeze, kind));
        session.finish(&refused, |_| Outcome::Failed)?;
        refused?;
    }
    let result = run(&session, &app, &job, orders, reporter);
    let recorded = match &result {
        Ok(done) => Ok(done.clone()),
        Err(error) => Err(zdeploy_core::Error::Invalid(format!("{error:#}"))),
    };
    session.finish(&recorded, |_| Outcome::Success)?;
    // What the controller uploaded is only needed during the run.
    let _ = std::fs::remove_dir_all(app.layout.download_dir());
    let done = result?;
    reporter.send(&Report::Done {
        release: done.release,
        outcome: done.outcome,
    });
    Ok(())
}

/// The app as the controller's config (or flags) define it, its health
/// URL's `{host}` naming this host.
fn app_of(job: &Job) -> Result<AppConfig> {
    let mut app = match &job.config {
        Some((path, text)) => ConfigFile::parse(Path::new(path), text.clone())?.app(
            job.app.as_deref(),
            &job.overrides,
            Role::FleetHost,
        )?,
        None => ad_hoc(&job.overrides, Role::FleetHost)?,
    };
    if let Some(url) = app.policy.health.as_mut().and_then(|h| h.url.as_mut()) {
        let host = HostAddress::parse(&job.host).map_err(|e| anyhow::anyhow!(e))?;
        *url = url.replace("{host}", &host.name);
    }
    Ok(app)
}

/// The host's facts the controller decides with.
fn opened(session: &Session<'_>) -> Result<Report> {
    let layout = session.layout;
    let live = read_live(layout)?;
    let live_name = live.record_name(layout).map(str::to_string);
    let live_commit = match &live_name {
        Some(name) => session.history.release(name)?.and_then(|r| r.commit),
        None => None,
    };
    let live_digest = match &live_name {
        Some(name) => session
            .history
            .manifest(name)?
            .map(|m| m.content_digest())
            .transpose()?,
        None => None,
    };
    let mut releases = Vec::new();
    for release in zdeploy_core::inventory::releases_on_disk(layout)? {
        let record = session.history.release(&release.name)?;
        let complete = record
            .as_ref()
            .is_none_or(|r| r.state == ReleaseState::Complete);
        if complete {
            releases.push(release.name);
        }
    }
    let downloads = layout.download_dir();
    zdeploy_core::fsx::create_dir_all(&downloads)?;
    Ok(Report::Opened {
        deployment: session.id,
        live: live_name,
        live_commit,
        live_digest,
        releases,
        upload: downloads
            .join(format!("fleet-{}.archive", session.id))
            .display()
            .to_string(),
    })
}

/// What the host will switch to.
enum Target<'s> {
    /// The release is live here already: nothing to stage or switch.
    AlreadyLive(String),
    Staged(Box<Staged<'s>>),
}

fn run(
    session: &Session<'_>,
    app: &AppConfig,
    job: &Job,
    orders: &Receiver<Result<Order>>,
    reporter: &Reporter<'_>,
) -> Result<DeployResult> {
    let layout = session.layout;
    let policy = &app.policy;
    session.step(Step::Recover, || recover(session, policy.apache.as_ref()))?;
    zdeploy_core::canary::refuse_while_running(layout)?;
    git::init_mirror(&layout.mirror_path())?;
    let opened = opened(session)?;
    let live_digest = match &opened {
        Report::Opened { live_digest, .. } => live_digest.clone(),
        _ => None,
    };
    reporter.send(&opened);
    let timeout = Duration::from_secs(job.stage_timeout_secs);
    let (release, content, role) = match next_order(session, app, orders, reporter, timeout) {
        Next::Order(Order::Stage {
            release,
            commit,
            archive,
            role,
        }) => (release, (commit, archive), role),
        Next::Order(Order::Abort { why }) => {
            reporter.send(&Report::Aborted);
            bail!("stopped before staging: {why}");
        }
        Next::Order(other) => bail!("expected a stage order, got {other:?}"),
        Next::Gone(why) => bail!("{why}"),
    };
    let app = &without_once_steps(session, app, &role);
    let policy = &app.policy;
    let mut supply = |lacking: &Lacking| supply_lacking(lacking, orders, reporter, timeout);
    let target = stage_target(
        session,
        app,
        content,
        job.prebuilt,
        &release,
        &role,
        &mut supply,
    )?;
    let export = |name: &str, base: Option<Base>| match role {
        StageRole::Build { export: true, .. } => export_release(session, name, base).map(Some),
        _ => Ok(None),
    };
    let mut staged = match target {
        Target::AlreadyLive(name) => {
            let export = export(&name, None)?;
            let user_content = summary_of(layout, &name);
            reporter.send(&Report::Staged {
                release,
                export,
                user_content,
            });
            return follow_along(session, app, orders, reporter, timeout, name);
        }
        Target::Staged(staged) => staged,
    };
    // Staged means on disk, flushed while hosts wait for each other anyway:
    // the switch then flushes only what the sync writes, if anything.
    if let Err(error) = staged.flush(layout) {
        discard_staged(session, &staged, &error.to_string())?;
        return Err(error.into());
    }
    // The release this one was built over, as the host opened with it.
    let built_over = match (&staged.live, live_digest) {
        (Live::Release(name), Some(digest)) if staged.fresh => Some(Base {
            release: name.clone(),
            digest,
        }),
        _ => None,
    };
    let export = match export(&release, built_over) {
        Ok(export) => export,
        Err(error) => {
            discard_staged(session, &staged, &format!("{error:#}"))?;
            return Err(error);
        }
    };
    reporter.send(&Report::Staged {
        user_content: summary_of(layout, &release),
        release: release.clone(),
        export,
    });
    let discard = |why: &str| discard_staged(session, &staged, why);
    let deadline = Instant::now() + timeout;
    let wait_staged = || {
        next_order(
            session,
            app,
            orders,
            reporter,
            deadline.saturating_duration_since(Instant::now()),
        )
    };
    let expect = |wanted: &str, next: Next| -> Result<()> {
        match next {
            Next::Order(order) if order.name() == wanted => Ok(()),
            Next::Order(Order::Abort { why }) => {
                discard(&why)?;
                reporter.send(&Report::Aborted);
                bail!("aborted before the switch: {why}");
            }
            Next::Order(other) => {
                discard("the controller broke the protocol")?;
                bail!("expected a {wanted} order, got {other:?}");
            }
            Next::Gone(why) => {
                discard(&why)?;
                bail!("{why}");
            }
        }
    };
    expect("sync", wait_staged())?;
    let synced = match sync(session, &staged, policy) {
        Ok(synced) => synced,
        Err(error) => {
            discard(&error.to_string())?;
            return Err(error.into());
        }
    };
    reporter.send(&Report::Synced);
    expect("switch", wait_staged())?;
    if let Some(share) = job.canary
        && canary_possible(session, &staged)?
    {
        return start_canary(session, *staged, &synced, app, share, reporter, timeout);
    }
    let switched = switch(session, &staged, &synced, policy)?;
    maintenance::close_after_switch(session);
    // A failure that keeps the release live is logged as a warning (and so
    // reported to the controller), not failed: the fleet stays on one release.
    let _kept_live = after_switch(session, &switched, policy, OnFailure::SwitchBackIfChecked)?;
    check_live(session, &switched, policy)?;
    reporter.send(&Report::Switched {
        at_ms: switched.at_ms,
    });
    match next(orders, timeout) {
        Next::Order(Order::Finish) => {}
        Next::Order(Order::Abort { why }) => {
            let previous = switch_back(session, &switched, policy, &why)?;
            reporter.send(&Report::Aborted);
            bail!("switched back to {previous}: {why}");
        }
        Next::Order(other) => session.warn(&format!(
            "expected a finish order, got {other:?}; keeping {}",
            switched.name
        )),
        Next::Gone(why) => session.warn(&format!(
            "{why} after the switch; keeping {} (the next fleet deploy brings every host to one release)",
            switched.name
        )),
    }
    settle_switched(session, &staged, &synced, &switched, policy);
    let pruned = prune_after_switch(session, policy);
    Ok(DeployResult {
        deployment: session.id,
        outcome: DeployOutcome::Deployed,
        release: Some(switched.name),
        previous: switched.previous,
        commit: staged.commit,
        pruned,
    })
}

/// Whether this host can start the fleet's canary: a release is live to
/// share clients with, and no build step needed a maintenance window (the
/// live release could not serve what it changed). Otherwise it switches
/// everyone, and says so.
fn canary_possible(session: &Session<'_>, staged: &Staged<'_>) -> Result<bool> {
    let why = if !matches!(staged.live, Live::Release(_)) {
        "no release is live here to share clients with"
    } else if zdeploy_core::deploy::migrated_in_window(session)? {
        "a build step needed a maintenance window (the live release cannot serve what it changed)"
    } else {
        return Ok(true);
    };
    session.info(&format!(
        "{why}: switching everyone instead of starting a canary"
    ));
    Ok(false)
}

/// This host's part of a fleet's canary, in place of its switch: start
/// it, and keep it when the controller finishes the run, or abort it
/// (everything its users wrote carried back) when another host failed.
fn start_canary(
    session: &Session<'_>,
    staged: Staged<'_>,
    synced: &Synced,
    app: &AppConfig,
    share: zdeploy_core::canary::Share,
    reporter: &Reporter<'_>,
    timeout: Duration,
) -> Result<DeployResult> {
    let started = zdeploy_core::canary::start_synced(session, staged, synced, &app.policy, share)?;
    reporter.send(&Report::Switched {
        at_ms: zdeploy_core::history::now_ms(),
    });
    match next(reporter.orders, timeout) {
        Next::Order(Order::Finish) => {}
        Next::Order(Order::Abort { why }) => {
            zdeploy_core::canary::abort_started(session, &app.policy, &why)?;
            reporter.send(&Report::Aborted);
            bail!("canary aborted: {why}");
        }
        Next::Order(other) => session.warn(&format!(
            "expected a finish order, got {other:?}; the canary keeps serving"
        )),
        Next::Gone(why) => session.warn(&format!(
            "{why} after the canary began; it keeps serving until `zdeploy canary promote` or `abort`"
        )),
    }
    Ok(started)
}

/// Remove a release this run staged (not one that was here before), and
/// say why.
fn discard_staged(session: &Session<'_>, staged: &Staged<'_>, why: &str) -> Result<()> {
    if staged.fresh {
        discard_release(session, &staged.name, why)?;
        session.warn(&format!(
            "removed the staged release {}: {why}",
            staged.name
        ));
    }
    Ok(())
}

/// Stage `release`: nothing if it is live, the existing folder if the host
/// has it, else a new release built from the commit the controller sent.
fn stage_target<'s>(
    session: &'s Session<'_>,
    app: &AppConfig,
    (commit, archive): (Option<String>, Option<String>),
    prebuilt: bool,
    release: &str,
    role: &StageRole,
    supply: &mut dyn FnMut(&Lacking) -> zdeploy_core::Result<PathBuf>,
) -> Result<Target<'s>> {
    let policy = &app.policy;
    let layout = session.layout;
    if read_live(layout)?.record_name(layout) == Some(release) {
        session.info(&format!("{release} is live here already"));
        return Ok(Target::AlreadyLive(release.to_string()));
    }
    if zdeploy_core::fsx::metadata_if_exists(&layout.release_path(release))?.is_some() {
        // A release that failed a check here is tried again: the fleet
        // chose it, and the health check after the switch still applies.
        let record = session.history.release(release)?;
        let usable = record
            .as_ref()
            .is_none_or(|r| matches!(r.state, ReleaseState::Complete | ReleaseState::Failed));
        if !usable {
            bail!("{release} is here but unfinished; it cannot go live");
        }
        if let (Some(wanted), Some(found)) = (&commit, record.and_then(|r| r.commit))
            && wanted != &found
        {
            bail!(
                "{release} is here with commit {}, not the fleet's {}; it cannot go live under that name",
                zdeploy_core::release::short(&found),
                zdeploy_core::release::short(wanted)
            );
        }
        let staged = stage_existing(session, release, policy)?;
        return Ok(Target::Staged(Box::new(staged)));
    }
    let plan = app.deploy_plan(true)?;
    if let StageRole::Copy {
        manifest,
        digest,
        base,
    } = role
    {
        let downloads = layout.download_dir();
        let mut copy = CopySource {
            manifest: PathBuf::from(manifest),
            digest: digest.clone(),
            base: base.clone(),
            lacking_list: downloads.join(format!("fleet-{}.lacking", session.id)),
            supply,
        };
        let staged = stage_copy(session, &plan, release, commit, &mut copy)?;
        return Ok(Target::Staged(Box::new(staged)));
    }
    let plan = match (commit, archive) {
        (Some(commit), _) if matches!(plan.source, Source::Git { .. }) => DeployPlan {
            commit: Some(commit),
            ..plan
        },
        // An archive, or a folder the controller sent as one.
        (None, Some(archive)) => DeployPlan {
            source: Source::Archive(ArchiveLocation::Path(archive.into())),
            reference: None,
            prebuilt,
            ..plan
        },
        _ => bail!("this host has no release {release} and was sent nothing to build it from"),
    };
    match stage(session, &plan, Some(release))? {
        Staging::Staged(staged) => Ok(Target::Staged(Box::new(staged))),
        Staging::Done(_) => bail!("nothing was staged for {release}"),
    }
}

/// The app as this host runs its part: the steps marked `once` are left to
/// the builder unless this host is it.
fn without_once_steps(session: &Session<'_>, app: &AppConfig, role: &StageRole) -> AppConfig {
    if matches!(role, StageRole::Build { once: true, .. }) {
        return app.clone();
    }
    let mut app = app.clone();
    let policy = &mut app.policy;
    let skipped: Vec<String> = policy
        .build
        .iter()
        .filter(|s| s.once)
        .map(|s| s.run.clone())
        .chain(
            policy
                .after_switch
                .iter()
                .filter(|c| c.once)
                .map(|c| c.run.clone()),
        )
        .collect();
    if !skipped.is_empty() && !matches!(role, StageRole::Copy { .. }) {
        session.info(&format!(
            "the builder runs what runs once: {}",
            skipped.join("; ")
        ));
    }
    policy.build.retain(|s| !s.once);
    policy.after_switch.retain(|c| !c.once);
    app
}

/// Write release `name`'s manifest for the other hosts to copy, and its
/// difference from `base` (the release it was built over) for hosts live
/// on that one.
fn export_release(session: &Session<'_>, name: &str, base: Option<Base>) -> Result<Export> {
    let manifest = session.history.manifest(name)?.ok_or_else(|| {
        anyhow::anyhow!("{name} has no manifest in this host's history: other hosts cannot copy it")
    })?;
    let downloads = session.layout.download_dir();
    let path = downloads.join(format!("fleet-{}.export", session.id));
    export_manifest(&manifest, &path)?;
    let delta = match base {
        Some(base) => match session.history.manifest(&base.release)? {
            Some(old) => {
                let delta_path = downloads.join(format!("fleet-{}.delta", session.id));
                export_delta(&old, &manifest, &delta_path)?;
                Some(Delta {
                    manifest: delta_path.display().to_string(),
                    base,
                })
            }
            None => None,
        },
        None => None,
    };
    Ok(Export {
        manifest: path.display().to_string(),
        digest: manifest.content_digest()?,
        delta,
    })
}

/// Tell the controller what this host lacks to copy the builder's release,
/// and wait for the tar it sends.
fn supply_lacking(
    lacking: &Lacking,
    orders: &Receiver<Result<Order>>,
    reporter: &Reporter<'_>,
    timeout: Duration,
) -> zdeploy_core::Result<PathBuf> {
    reporter.send(&Report::Lacking {
        files: lacking.files,
        bytes: lacking.bytes,
        list: lacking.list.display().to_string(),
    });
    match next(orders, timeout) {
        Next::Order(Order::Files { tar }) => Ok(PathBuf::from(tar)),
        Next::Order(Order::Abort { why }) => Err(zdeploy_core::Error::Invalid(format!(
            "stopped while copying the builder's release: {why}"
        ))),
        Next::Order(other) => Err(zdeploy_core::Error::Invalid(format!(
            "expected the builder's files, got a {} order",
            other.name()
        ))),
        Next::Gone(why) => Err(zdeploy_core::Error::Invalid(why)),
    }
}

/// On a host already live on the fleet's release: answer every order so
/// the fleet moves in step, and change nothing.
fn follow_along(
    session: &Session<'_>,
    app: &AppConfig,
    orders: &Receiver<Result<Order>>,
    reporter: &Reporter<'_>,
    timeout: Duration,
    release: String,
) -> Result<DeployResult> {
    loop {
        match next_order(session, app, orders, reporter, timeout) {
            Next::Order(Order::Sync) => reporter.send(&Report::Synced),
            Next::Order(Order::Switch) => {
                maintenance::close_after_switch(session);
                reporter.send(&Report::Switched {
                    at_ms: zdeploy_core::history::now_ms(),
                })
            }
            Next::Order(Order::Finish) | Next::Gone(_) => break,
            Next::Order(Order::Abort { .. }) => {
                reporter.send(&Report::Aborted);
                break;
            }
            Next::Order(other) => bail!("unexpected order {other:?}"),
        }
    }
    Ok(DeployResult {
        deployment: session.id,
        outcome: DeployOutcome::Unchanged,
        release: Some(release),
        previous: None,
        commit: None,
        pruned: Vec::new(),
    })
}
