//! A deploy, step by step (DESIGN.md "One deploy"): lock, recover, resolve,
//! materialize, carry, build, sync, switch, settle, prune. Any failure before
//! the switch removes the new release and leaves the live one untouched.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use walkdir::WalkDir;

use crate::apache::ApacheMap;
use crate::build::BuildStep;
use crate::build::run_command;
use crate::carry::{Carry, CarryReport, Deployed, Pass};
use crate::error::{Error, Result};
use crate::fsx;
use crate::history::{Kind, Outcome, ReleaseRecord, now_ms};
use crate::layout::Layout;
use crate::manifest::{Entry, EntryKind, Manifest, digest_file};
use crate::plain;
use crate::recover::recover;
use crate::release::{ReleaseState, release_name};
use crate::retention::{DEFAULT_DRAIN, DEFAULT_KEEP};
use crate::reuse::{LiveTree, reuse_folders};
use crate::session::{Observer, RunOptions, Session, Step, human_duration};
use crate::share::Sharer;
use crate::shared::link_shared;
use crate::source::extract::{Extractor, Limits};
use crate::source::{ArchiveLocation, Source, archive, folder, git};
use crate::switch::{Live, read_live, switch_to};

pub const DEFAULT_SETTLE: Duration = Duration::from_secs(1);

/// How an app's releases are made and kept: the part of its settings that
/// every deploy uses, whatever the source.
#[derive(Debug, Clone)]
pub struct Policy {
    pub keep: usize,
    pub drain: Duration,
    /// How long after the switch to wait before carrying what in-flight
    /// requests wrote into the old release.
    pub settle: Duration,
    pub zero_downtime: bool,
    pub shared: Vec<PathBuf>,
    pub build: Vec<crate::build::BuildStep>,
    /// Dependency folders shared from the live release while their key
    /// file is unchanged.
    pub reuse: Vec<crate::reuse::Reuse>,
    /// Prune the oldest releases (never the live or previous one) while
    /// the context's releases take more bytes than this.
    pub max_disk: Option<u64>,
    pub build_timeout: Duration,
    pub limits: Limits,
    /// Checks before and after the switch; a failed check after it switches back.
    pub health: Option<crate::health::HealthCheck>,
    /// Behind Apache: the map its vhost reads the live release from.
    pub apache: Option<ApacheMap>,
    /// Reset PHP-FPM's opcache at this address after each switch.
    pub opcache_reset: Option<crate::fastcgi::Address>,
    /// Owner, group and writable paths of releases; who runs build steps.
    pub privileges: crate::privilege::Privileges,
}

impl Policy {
    /// Commands from the app's config that run in the release before the
    /// switch: build steps and the check.
    pub fn release_commands(&self) -> usize {
        self.build.len() + self.health.as_ref().map_or(0, |h| h.before.iter().count())
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            keep: DEFAULT_KEEP,
            drain: DEFAULT_DRAIN,
            settle: DEFAULT_SETTLE,
            zero_downtime: true,
            shared: Vec::new(),
            build: Vec::new(),
            reuse: Vec::new(),
            max_disk: None,
            build_timeout: crate::build::DEFAULT_BUILD_TIMEOUT,
            limits: Limits::default(),
            health: None,
            apache: None,
            opcache_reset: None,
            privileges: crate::privilege::Privileges::default(),
        }
    }
}

/// Everything one deploy needs, validated.
#[derive(Debug, Clone)]
pub struct DeployPlan {
    pub source: Source,
    pub reference: Option<String>,
    pub policy: Policy,
    pub force: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DeployResult {
    pub deployment: i64,
    pub outcome: &'static str,
    /// The release now live (the context itself in plain mode).
    pub release: Option<String>,
    pub previous: Option<String>,
    pub commit: Option<String>,
    pub pruned: Vec<String>,
}

/// What `resolve` found.
pub(crate) struct Resolved {
    pub commit: Option<String>,
    pub message: Option<String>,
    pub reference: Option<String>,
    pub archive: Option<PathBuf>,
}

pub fn deploy(
    layout: &Layout,
    plan: &DeployPlan,
    options: &RunOptions,
    observer: &dyn Observer,
) -> Result<DeployResult> {
    plan.policy
        .privileges
        .check_commands(plan.policy.release_commands())?;
    let shown = plan.source.shown();
    let session = Session::open(
        layout,
        Kind::Deploy,
        options,
        Some(&shown),
        plan.reference.as_deref(),
        observer,
    )?;
    let result = run(&session, plan);
    session.finish(&result, |r| {
        if r.outcome == "unchanged" {
            Outcome::Unchanged
        } else {
            Outcome::Success
        }
    })?;
    // A downloaded archive is only needed during the run (recover removes
    // it when a run is killed).
    let _ = std::fs::remove_dir_all(layout.download_dir());
    result
}

fn run(session: &Session<'_>, plan: &DeployPlan) -> Result<DeployResult> {
    let layout = session.layout;
    session.step(Step::Recover, || {
        recover(session, plan.policy.apache.as_ref())
    })?;
    let live = read_live(layout)?;
    let resolved = session.step(Step::Resolve, || resolve(session, plan))?;
    let live_record = match live.record_name(layout) {
        Some(name) => session.history.release(name)?,
        None => None,
    };
    let unchanged_commit = resolved.commit.is_some()
        && live_record.as_ref().and_then(|r| r.commit.as_ref()) == resolved.commit.as_ref();
    if unchanged_commit && !plan.force {
        let commit = resolved.commit.clone();
        session.info(&format!(
            "{} is already live at commit {}; nothing to do (--force deploys anyway)",
            layout.context(),
            short(commit.as_deref().unwrap_or_default())
        ));
        return Ok(unchanged(session, &live, commit));
    }
    if !plan.policy.zero_downtime {
        return plain::deploy_in_place(session, plan, &resolved, &live, live_record.as_ref());
    }
    let name = allocate_name(layout)?;
    let release_dir = layout.release_path(&name);
    session.history.insert_release(&ReleaseRecord {
        name: name.clone(),
        state: ReleaseState::Building,
        created_ms: now_ms(),
        source: Some(plan.source.shown()),
        reference: resolved.reference.clone(),
        commit: resolved.commit.clone(),
        content_digest: None,
        deployment_id: Some(session.id),
        retired_ms: None,
        carried_ms: None,
        note: None,
    })?;
    let previous = match &live {
        Live::Release(n) => Some(n.clone()),
        _ => None,
    };
    session.history.set_deployment_target(
        session.id,
        Some(&name),
        resolved.commit.as_deref(),
        resolved.message.as_deref(),
        previous.as_deref(),
    )?;
    let prepared = prepare(
        session,
        plan,
        &resolved,
        &live,
        live_record.as_ref(),
        &name,
        &release_dir,
    );
    let prepared = match prepared {
        Ok(Some(prepared)) => prepared,
        Ok(None) => {
            discard_release(session, &name, "unchanged content")?;
            return Ok(unchanged(session, &live, resolved.commit.clone()));
        }
        Err(error) => {
            discard_release(session, &name, &error.to_string())?;
            return Err(error);
        }
    };
    session
        .history
        .set_release_state(&name, ReleaseState::Complete, None)?;
    let displaced = match live {
        Live::Folder => Some(displaced_name(layout, &name)?),
        _ => None,
    };
    if let Some(displaced) = &displaced {
        record_displaced(session, displaced, prepared.sync_started_ms)?;
        session
            .history
            .set_deployment_target(session.id, None, None, None, Some(displaced))?;
    }
    let switched = session.step(Step::Switch, || {
        // New files must be on disk before a name points at them.
        rustix::fs::syncfs(fsx::open(layout.webroot())?)
            .map_err(|e| Error::io("sync filesystem of", layout.webroot(), e.into()))?;
        switch_to(layout, &name, displaced.as_deref())?;
        match &plan.policy.apache {
            Some(apache) => tell_apache(session, apache, &name, previous.as_deref()),
            None => Ok(()),
        }
    });
    if let Err(error) = switched {
        // The rename may have happened before a later part failed: only a
        // release that did not go live is discarded.
        if read_live(layout)? != Live::Release(name.clone()) {
            if let Some(displaced) = &displaced {
                session
                    .history
                    .rename_release(displaced, layout.context())?;
            }
            discard_release(session, &name, &error.to_string())?;
        }
        return Err(error);
    }
    let previous = previous.or(displaced);
    let switched_ms = now_ms();
    if let Some(previous) = &previous {
        session
            .history
            .mark_retired(previous, switched_ms, prepared.sync_started_ms)?;
    }
    session.info(&format!("{} now serves {name}", layout.context()));
    if let Some(url) = plan.policy.health.as_ref().and_then(|h| h.url.as_ref()) {
        let healthy = session.step(Step::Health, || {
            let health = plan.policy.health.as_ref().expect("checked above");
            health.check_url(url).map_err(Error::Health)
        });
        if let Err(error) = healthy {
            return Err(switch_back_unhealthy(
                session,
                &name,
                previous.as_deref(),
                &plan.policy,
                switched_ms,
                error,
            ));
        }
    }
    if let Some(previous) = &previous {
        settle(
            session,
            previous,
            &name,
            Deployed::Listed(&prepared.manifest),
            &plan.policy,
            prepared.sync_started_ms,
            prepared.all_linked,
        );
    }
    let pruned = session
        .step(Step::Prune, || {
            crate::maintenance::prune_in_session(session, &plan.policy)
        })
        .unwrap_or_else(|e| {
            session.warn(&format!("prune failed (the deploy itself succeeded): {e}"));
            Vec::new()
        });
    Ok(DeployResult {
        deployment: session.id,
        outcome: "deployed",
        release: Some(name),
        previous,
        commit: resolved.commit,
        pruned,
    })
}

fn unchanged(session: &Session<'_>, live: &Live, commit: Option<String>) -> DeployResult {
    let release = live.record_name(session.layout).map(str::to_string);
    let _ = session.history.set_deployment_target(
        session.id,
        release.as_deref(),
        commit.as_deref(),
        None,
        None,
    );
    DeployResult {
        deployment: session.id,
        outcome: "unchanged",
        release,
        previous: None,
        commit,
        pruned: Vec::new(),
    }
}

/// A commit id or digest as people read it: the first 12 characters.
pub fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

/// The new release built, carried and synced, ready to switch.
struct Prepared<'s> {
    manifest: Manifest<'s>,
    sync_started_ms: i64,
    /// Every user file of the new release is a link to the live one's.
    all_linked: bool,
}

fn prepare<'s>(
    session: &'s Session<'_>,
    plan: &DeployPlan,
    resolved: &Resolved,
    live: &Live,
    live_record: Option<&ReleaseRecord>,
    name: &str,
    release_dir: &Path,
) -> Result<Option<Prepared<'s>>> {
    let layout = session.layout;
    let live_manifest = live_manifest(session, live)?;
    let sharer = match (live, live_record, &live_manifest) {
        (Live::Release(live_name), Some(record), Some(manifest)) => Some(Sharer::new(
            &layout.release_path(live_name),
            Some(manifest),
            record.created_ms,
            plan.policy.build.is_empty(),
        )),
        _ => None,
    };
    let base = live_record.and_then(|r| r.commit.as_deref());
    let manifest = Manifest::create(&session.history, name)?;
    session.step(Step::Materialize, || {
        fsx::create_dir(release_dir)?;
        materialize(
            session,
            plan,
            resolved,
            release_dir,
            &manifest,
            sharer.as_ref(),
            base,
        )
    })?;
    // A commit already names the content; archives and folders need a digest.
    if resolved.commit.is_none() {
        let digest = manifest.content_digest()?;
        let same_content =
            live_record.and_then(|r| r.content_digest.as_deref()) == Some(digest.as_str());
        if same_content && !plan.force {
            session.info(&format!(
                "{} already serves this content (digest {}); nothing to do (--force deploys anyway)",
                layout.context(),
                short(&digest)
            ));
            return Ok(None);
        }
        record_digest(session, name, &digest)?;
    }
    let live_dir = live.dir(layout);
    let carry_started_ns = now_ns();
    let carried = session.step(Step::Carry, || {
        for path in &plan.policy.shared {
            if let Some(note) =
                link_shared(layout, release_dir, live_dir.as_deref(), path, &manifest)?
            {
                session.info(&note);
            }
        }
        live_dir
            .as_deref()
            .map(|from| {
                carry_logged(
                    session,
                    Step::Carry,
                    from,
                    Deployed::listed_or(live_manifest.as_ref(), Deployed::Nothing),
                    release_dir,
                    Deployed::Listed(&manifest),
                    &plan.policy.shared,
                    Pass::Fill,
                    false,
                )
            })
            .transpose()
    })?;
    if !plan.policy.build.is_empty() {
        let live_tree = match (&live_dir, &live_manifest, live_record) {
            (Some(dir), Some(manifest), Some(record)) => Some(LiveTree {
                dir,
                manifest,
                made_ms: record.created_ms,
            }),
            _ => None,
        };
        session.step(Step::Build, || {
            build(session, plan, release_dir, &manifest, live_tree.as_ref())
        })?;
    }
    let privileges = &plan.policy.privileges;
    privileges.apply(release_dir, &manifest)?;
    if let Some(health) = plan.policy.health.as_ref().filter(|h| h.before.is_some()) {
        session.step(Step::Check, || {
            health
                .check_release(release_dir, privileges.build_user.as_ref(), &mut |line| {
                    session.debug(&format!("check | {line}"));
                })
                .map_err(|why| Error::Health(format!("the check before the switch {why}")))
        })?;
    }
    manifest.flush()?;
    let sync_started_ms = now_ms();
    let mut all_linked = false;
    if let (Some(from), Some(carried)) = (&live_dir, carried) {
        let synced = session.step(Step::Sync, || {
            carry_logged(
                session,
                Step::Sync,
                from,
                Deployed::listed_or(live_manifest.as_ref(), Deployed::Nothing),
                release_dir,
                Deployed::Listed(&manifest),
                &plan.policy.shared,
                Pass::Mirror {
                    since: Some(carry_started_ns - MARK_MARGIN_NS),
                },
                carried.all_linked(),
            )
        })?;
        all_linked = carried.all_linked() && synced.all_linked();
    }
    Ok(Some(Prepared {
        manifest,
        sync_started_ms,
        all_linked,
    }))
}

/// Carry marks are compared with file times; a second of margin covers
/// clock granularity (looking at a file twice is harmless).
pub(crate) const MARK_MARGIN_NS: i128 = 1_000_000_000;

/// The mark a late carry from a release compares with: its last carry (in
/// ms) less the margin; without one (a record from an older zdeploy), the
/// beginning of time, so everything the target lacks or has older is carried.
pub(crate) fn late_writes_since(carried_ms: Option<i64>) -> i128 {
    carried_ms.map_or(i128::MIN, |ms| ms as i128 * 1_000_000 - MARK_MARGIN_NS)
}

pub(crate) fn now_ns() -> i128 {
    Timestamp::now().as_nanosecond()
}

pub(crate) fn live_manifest<'s>(
    session: &'s Session<'_>,
    live: &Live,
) -> Result<Option<Manifest<'s>>> {
    match live.record_name(session.layout) {
        Some(name) => session.history.manifest(name),
        None => Ok(None),
    }
}

fn record_digest(session: &Session<'_>, name: &str, digest: &str) -> Result<()> {
    if let Some(mut record) = session.history.release(name)? {
        record.content_digest = Some(digest.to_string());
        session.history.insert_release(&record)?;
    }
    Ok(())
}

pub(crate) fn resolve(session: &Session<'_>, plan: &DeployPlan) -> Result<Resolved> {
    let layout = session.layout;
    match &plan.source {
        Source::Git { url } => {
            let shown = plan.source.shown();
            let reference = match &plan.reference {
                Some(r) => r.clone(),
                None => git::default_branch(url, &shown)?.ok_or_else(|| {
                    Error::Source(format!("{shown} has no default branch; pass --ref"))
                })?,
            };
            git::validate_ref(&reference)?;
            session.info(&format!("fetching {shown}"));
            git::fetch(&layout.mirror_path(), url, &shown)?;
            let commit = git::resolve(&layout.mirror_path(), &reference, &shown)?;
            let message = git::describe(&layout.mirror_path(), &commit);
            session.info(&format!(
                "{reference} is at {} {}",
                short(&commit),
                message.as_deref().unwrap_or("")
            ));
            Ok(Resolved {
                commit: Some(commit),
                message,
                reference: Some(reference),
                archive: None,
            })
        }
        Source::Archive(location) => {
            let path = match location {
                ArchiveLocation::Path(p) => p.clone(),
                ArchiveLocation::Url(url) => {
                    let dir = layout.download_dir();
                    fsx::create_dir_all(&dir)?;
                    let dest = dir.join(format!("archive-{}", session.id));
                    session.info(&format!("downloading {}", plan.source.shown()));
                    archive::download(
                        url,
                        &plan.source.shown(),
                        &dest,
                        plan.policy.limits.max_bytes,
                    )?;
                    dest
                }
            };
            Ok(Resolved {
                commit: None,
                message: None,
                reference: None,
                archive: Some(path),
            })
        }
        Source::Folder(path) => {
            check_folder_source(layout, path)?;
            Ok(Resolved {
                commit: None,
                message: None,
                reference: None,
                archive: None,
            })
        }
    }
}

/// A folder source may not contain the webroot: the copy would contain itself.
fn check_folder_source(layout: &Layout, folder: &Path) -> Result<()> {
    let folder =
        std::fs::canonicalize(folder).map_err(|e| Error::io("open source folder", folder, e))?;
    let webroot = std::fs::canonicalize(layout.webroot())
        .map_err(|e| Error::io("open", layout.webroot(), e))?;
    if webroot.starts_with(&folder) {
        return Err(Error::Invalid(format!(
            "source folder {} contains the webroot {}; deploy from a folder outside it",
            folder.display(),
            webroot.display()
        )));
    }
    Ok(())
}

/// Write the source into `dest` (empty, existing), recording it in `manifest`.
pub(crate) fn materialize(
    session: &Session<'_>,
    plan: &DeployPlan,
    resolved: &Resolved,
    dest: &Path,
    manifest: &Manifest<'_>,
    sharer: Option<&Sharer>,
    base: Option<&str>,
) -> Result<()> {
    let mut progress = |entries: u64, total: Option<u64>| {
        if entries.is_multiple_of(64) {
            session.progress(Step::Materialize, entries, total);
        }
    };
    match &plan.source {
        Source::Git { .. } => {
            let commit = resolved
                .commit
                .as_deref()
                .expect("git sources resolve to a commit");
            let origin = format!("commit {}", short(commit));
            let mirror = session.layout.mirror_path();
            let mut extractor =
                Extractor::new(dest, &origin, plan.policy.limits, manifest, &mut progress);
            let incremental = match (sharer, base) {
                (Some(sharer), Some(base)) => {
                    extractor.share_from(sharer);
                    git::materialize_changes(&mirror, base, commit, &mut extractor)?
                }
                _ => false,
            };
            if !incremental {
                git::archive_into(&mirror, commit, &mut extractor)?;
            }
            extractor.finish(false)?
        }
        Source::Archive(_) => {
            let path = resolved
                .archive
                .as_deref()
                .expect("archives resolve to a file");
            archive::extract(
                path,
                dest,
                plan.policy.limits,
                manifest,
                sharer,
                &mut progress,
            )?
        }
        Source::Folder(path) => folder::copy(
            path,
            dest,
            plan.policy.limits,
            manifest,
            sharer,
            &mut progress,
        )?,
    }
    let (shared, shared_bytes) = sharer.map(Sharer::counts).unwrap_or_default();
    session.info(&format!(
        "wrote {} entries ({} bytes) from {}",
        manifest.entry_count()?.saturating_sub(shared),
        manifest.total_bytes()?.saturating_sub(shared_bytes),
        plan.source.shown()
    ));
    if let Some(sharer) = sharer.filter(|_| shared > 0) {
        session.info(&format!(
            "shared {shared} unchanged files ({shared_bytes} bytes) with the live release by {}",
            sharer.method().as_str()
        ));
    }
    Ok(())
}

/// Carry user content and log what happened, shadowed files by name.
#[allow(clippy::too_many_arguments)]
pub(crate) fn carry_logged(
    session: &Session<'_>,
    step: Step,
    from: &Path,
    from_deployed: Deployed<'_>,
    to: &Path,
    to_deployed: Deployed<'_>,
    shared: &[PathBuf],
    pass: Pass,
    all_linked: bool,
) -> Result<CarryReport> {
    let report = Carry {
        from,
        from_deployed,
        to,
        to_deployed,
        skip: shared,
        pass,
        all_linked,
    }
    .run(&mut |seen| session.progress(step, seen, None))?;
    if report.files() > 0 || report.removed > 0 {
        let linked = report.files() - report.copied;
        session.info(&format!(
            "{step}: carried {linked} user file{} by hard link from {} ({} new, {} replaced, {} removed)",
            if linked == 1 { "" } else { "s" },
            from.display(),
            report.created,
            report.replaced,
            report.removed,
        ));
    }
    if report.copied > 0 {
        session.warn(&format!(
            "{step}: {} user files could not be linked (another filesystem, or too many links) and were copied ({} bytes)",
            report.copied, report.copied_bytes
        ));
    }
    if report.folders_unchanged > 0 {
        session.debug(&format!(
            "{step}: {} folders unchanged since the last carry were not read",
            report.folders_unchanged
        ));
    }
    for path in &report.shadowed {
        session.warn(&format!(
            "{step}: user file {} is shadowed by a deployed file of the same path; the deployed one wins",
            path.display()
        ));
    }
    Ok(report)
}

pub(crate) fn build(
    session: &Session<'_>,
    plan: &DeployPlan,
    release_dir: &Path,
    manifest: &Manifest<'_>,
    live: Option<&LiveTree<'_>>,
) -> Result<()> {
    let reused = match live {
        Some(live) if !plan.policy.reuse.is_empty() => {
            let skipped = |step: &BuildStep, reusable: &[PathBuf]| {
                step.unless_reused
                    .as_ref()
                    .is_some_and(|p| reusable.contains(p))
            };
            // Hardlinks only if every build step would be skipped.
            let all_paths: Vec<PathBuf> =
                plan.policy.reuse.iter().map(|r| r.path.clone()).collect();
            let hardlinks_ok = plan.policy.build.iter().all(|s| skipped(s, &all_paths));
            reuse_folders(
                session,
                &plan.policy.reuse,
                live,
                release_dir,
                manifest,
                hardlinks_ok,
            )?
        }
        _ => Vec::new(),
    };
    plan.policy
        .privileges
        .hand_to_build_user(release_dir, manifest)?;
    let user_content = Manifest::create(
        &session.history,
        &format!("{}/user-content", manifest.release()),
    )?;
    record_user_content(release_dir, manifest, &user_content)?;
    let started_ns = now_ns();
    let env = [
        ("ZDEPLOY_RELEASE", release_dir.display().to_string()),
        ("ZDEPLOY_CONTEXT", session.layout.context().to_string()),
        (
            "ZDEPLOY_WEBROOT",
            session.layout.webroot().display().to_string(),
        ),
    ];
    for step in &plan.policy.build {
        let command = &step.run;
        if let Some(path) = step.unless_reused.as_ref().filter(|p| reused.contains(p)) {
            session.info(&format!(
                "build: skipped {command} ({} was reused)",
                path.display()
            ));
            continue;
        }
        session.info(&format!("build: running {command}"));
        let started = std::time::Instant::now();
        run_command(
            command,
            release_dir,
            &env,
            plan.policy.privileges.build_user.as_ref(),
            plan.policy.build_timeout,
            &mut |line| {
                session.debug(&format!("build | {line}"));
            },
        )
        .map_err(|why| Error::Build(format!("build step {why}")))?;
        session.info(&format!(
            "build: {command} finished in {}",
            human_duration(started.elapsed())
        ));
    }
    let rescanned = Manifest::create(&session.history, &format!("{}/rescan", manifest.release()))?;
    rescan_after_build(
        release_dir,
        &user_content,
        manifest,
        &rescanned,
        &plan.policy.shared,
        started_ns,
    )?;
    manifest.replace_with(&rescanned)?;
    session.history.drop_manifest(user_content.release())
}

/// Note in `user_content` every entry of `root` that `manifest` does not
/// list (user files carried in), so the rescan after the build keeps them
/// user content.
fn record_user_content(
    root: &Path,
    manifest: &Manifest<'_>,
    user_content: &Manifest<'_>,
) -> Result<()> {
    let walk = WalkDir::new(root)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name();
    for entry in walk {
        let entry = entry.map_err(|e| Error::io("read", root, e.into()))?;
        let relative = entry.path().strip_prefix(root).expect("under root");
        let Some(kind) = EntryKind::of(entry.file_type()) else {
            continue;
        };
        if !manifest.contains(relative)? {
            let noted = Entry {
                kind,
                mode: 0,
                size: 0,
                digest: String::new(),
            };
            user_content.insert(relative, noted)?;
        }
    }
    user_content.flush()
}

/// After build steps: what they created or changed is deployed; what was
/// user content before stays user content; what they deleted is gone.
fn rescan_after_build(
    root: &Path,
    user_content: &Manifest<'_>,
    old: &Manifest<'_>,
    rescanned: &Manifest<'_>,
    shared: &[PathBuf],
    build_started_ns: i128,
) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let walk = WalkDir::new(root)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name();
    for entry in walk {
        let entry = entry.map_err(|e| Error::io("read", root, e.into()))?;
        let relative = entry
            .path()
            .strip_prefix(root)
            .expect("under root")
            .to_path_buf();
        if shared.iter().any(|s| relative.starts_with(s)) {
            continue;
        }
        if user_content.contains(&relative)? {
            continue;
        }
        let meta = entry
            .metadata()
            .map_err(|e| Error::io("inspect", entry.path(), e.into()))?;
        let Some(kind) = EntryKind::of(meta.file_type()) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        let entry_record = match (kind, old.get(&relative)?) {
            (EntryKind::File, Some(prev))
                if prev.kind == EntryKind::File && unchanged_since(&meta, build_started_ns) =>
            {
                prev
            }
            (EntryKind::File, _) => {
                let (digest, size) =
                    digest_file(entry.path()).map_err(|e| Error::io("read", entry.path(), e))?;
                Entry {
                    kind,
                    mode,
                    size,
                    digest,
                }
            }
            (EntryKind::Symlink, _) => {
                let target = fsx::read_link(entry.path())?;
                Entry {
                    kind,
                    mode: 0o777,
                    size: meta.len(),
                    digest: target.to_string_lossy().into_owned(),
                }
            }
            (EntryKind::Dir, _) => Entry {
                kind,
                mode,
                size: 0,
                digest: String::new(),
            },
        };
        rescanned.insert(&relative, entry_record)?;
    }
    rescanned.flush()
}

/// Whether a file's ctime says it was not touched after `mark_ns` (with a
/// margin for coarse filesystem clocks).
fn unchanged_since(meta: &std::fs::Metadata, mark_ns: i128) -> bool {
    use std::os::unix::fs::MetadataExt;
    let ctime_ns = meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128;
    ctime_ns < mark_ns - MARK_MARGIN_NS
}

/// Name the new release, waiting for the next second if the name is taken.
pub(crate) fn allocate_name(layout: &Layout) -> Result<String> {
    loop {
        let now = Timestamp::now();
        let name = release_name(layout.context(), now);
        if fsx::metadata_if_exists(&layout.release_path(&name))?.is_none() {
            return Ok(name);
        }
        let into_second = now.subsec_nanosecond().max(0) as u64;
        std::thread::sleep(Duration::from_nanos(
            1_000_000_000 - into_second + 1_000_000,
        ));
    }
}

/// The timestamped name a displaced real folder gets: the latest free second
/// before the new release's.
pub(crate) fn displaced_name(layout: &Layout, new_release: &str) -> Result<String> {
    let stamp = new_release
        .strip_prefix(layout.context())
        .and_then(|s| s.strip_prefix('_'))
        .and_then(crate::release::parse_stamp)
        .map(crate::release::stamp_instant)
        .unwrap_or_else(Timestamp::now);
    let mut at = stamp;
    loop {
        at -= jiff::SignedDuration::from_secs(1);
        let name = release_name(layout.context(), at);
        if fsx::metadata_if_exists(&layout.release_path(&name))?.is_none() {
            return Ok(name);
        }
    }
}

/// Give the folder about to be displaced a record: its manifest if a plain
/// deploy made it, else none (all of it then counts as user content).
fn record_displaced(session: &Session<'_>, displaced: &str, carried_ms: i64) -> Result<()> {
    let context = session.layout.context();
    match session.history.release(context)? {
        Some(_) => session.history.rename_release(context, displaced)?,
        None => session.history.insert_release(&ReleaseRecord {
            name: displaced.to_string(),
            state: ReleaseState::Complete,
            created_ms: now_ms(),
            source: Some("the site that was in place before zdeploy".into()),
            reference: None,
            commit: None,
            content_digest: None,
            deployment_id: Some(session.id),
            retired_ms: None,
            carried_ms: Some(carried_ms),
            note: None,
        })?,
    }
    session.info(&format!(
        "{context} was a real folder; it is kept as release {displaced} and its files the new source does not provide were carried as user content"
    ));
    Ok(())
}

/// After the switch: wait, then carry what in-flight requests wrote into the
/// old release. Failures are logged: the new release is already live.
/// `all_linked`: every user file of `new` is a link to `old`'s.
pub(crate) fn settle(
    session: &Session<'_>,
    old: &str,
    new: &str,
    new_deployed: Deployed<'_>,
    policy: &Policy,
    carried_ms: i64,
    all_linked: bool,
) {
    let layout = session.layout;
    let result = session.step(Step::Settle, || {
        std::thread::sleep(policy.settle);
        let old_manifest = session.history.manifest(old)?;
        let since = late_writes_since(Some(carried_ms));
        carry_logged(
            session,
            Step::Settle,
            &layout.release_path(old),
            Deployed::listed_or(old_manifest.as_ref(), Deployed::Nothing),
            &layout.release_path(new),
            new_deployed,
            &policy.shared,
            Pass::Late { since },
            all_linked,
        )
    });
    if let Err(e) = result {
        session.warn(&format!("settle: could not carry late writes from {old}: {e}; they stay in {old} and are carried again before it is pruned"));
    }
    if let Some(address) = &policy.opcache_reset {
        match crate::opcache::reset(layout, address) {
            Ok(()) => session.info(&format!("settle: reset PHP-FPM's opcache at {address}")),
            Err(e) => session.warn(&format!("settle: {e} (the deploy itself succeeded)")),
        }
    }
}

/// Behind Apache, point its map at the new live release. If the map cannot
/// be written, switch back so the symlink and Apache agree, and fail.
pub(crate) fn tell_apache(
    session: &Session<'_>,
    apache: &ApacheMap,
    new: &str,
    previous: Option<&str>,
) -> Result<()> {
    let layout = session.layout;
    if let Err(error) = apache.point_at(layout, new) {
        if let Some(previous) = previous {
            apache.point_at(layout, previous)?;
            switch_to(layout, previous, None)?;
            session.warn(&format!(
                "switched back to {previous}: Apache's map could not be written"
            ));
        }
        return Err(error);
    }
    session.info(&format!("Apache's map now names {new}"));
    Ok(())
}

/// The new release failed its health check after going live: put the
/// previous release back (with what users wrote meanwhile), mark the new one
/// failed so rollbacks skip it, and return the error that says so.
fn switch_back_unhealthy(
    session: &Session<'_>,
    failed: &str,
    previous: Option<&str>,
    policy: &Policy,
    switched_ms: i64,
    error: Error,
) -> Error {
    let Some(previous) = previous else {
        session.warn(&format!(
            "{failed} failed its health check and there is no earlier release to go back to; it stays live"
        ));
        return error;
    };
    let layout = session.layout;
    let back = (|| -> Result<()> {
        switch_to(layout, previous, None)?;
        if let Some(apache) = &policy.apache {
            apache.point_at(layout, previous)?;
        }
        session.history.mark_live(previous)?;
        session
            .history
            .mark_retired(failed, now_ms(), switched_ms)?;
        session.history.set_release_state(
            failed,
            ReleaseState::Failed,
            Some(&error.to_string()),
        )?;
        session.info(&format!(
            "{} serves {previous} again; {failed} is marked failed and rollbacks skip it",
            layout.context()
        ));
        let previous_manifest = session.history.manifest(previous)?;
        settle(
            session,
            failed,
            previous,
            // A release without a manifest: everything in it counts as deployed.
            Deployed::listed_or(previous_manifest.as_ref(), Deployed::Everything),
            policy,
            switched_ms,
            false,
        );
        Ok(())
    })();
    match back {
        Ok(()) => Error::Health(format!("{error}; switched back to {previous}")),
        Err(e) => Error::Health(format!("{error}; switching back to {previous} failed: {e}")),
    }
}

/// Remove a release this run created and mark it failed.
pub(crate) fn discard_release(session: &Session<'_>, name: &str, why: &str) -> Result<()> {
    crate::maintenance::delete_release_dir(session.layout, name)?;
    session
        .history
        .set_release_state(name, ReleaseState::Failed, Some(why))?;
    session.history.drop_manifest(name)
}
