//! A release staged: the deploy's steps up to the switch (resolve,
//! materialize, carry, build, check) leave a complete release, in state
//! `staged`, that is not live. A single-host deploy switches to it at once; a
//! fleet's host waits for the controller's word.

use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;

use crate::carry::{Deployed, Pass};
use crate::confine::Confinement;
use crate::error::{Error, Result};
use crate::fsx;
use crate::history::{ReleaseRecord, now_ms};
use crate::layout::Layout;
use crate::manifest::Manifest;
use crate::plain;
use crate::policy::{DeployOutcome, DeployPlan, DeployResult, Policy};
use crate::public::check_public;
use crate::release::{ReleaseState, release_name, short};
use crate::release_copy::{CopySource, materialize_copy};
use crate::reuse::LiveTree;
use crate::session::{Session, Step};
use crate::share::Sharer;
use crate::share::own_copies;
use crate::shared::link_shared;
use crate::steps::build::own_copies_before;
use crate::steps::carry::{carry_logged, late_writes_since, live_manifest, now_ns};
use crate::steps::discard::discard_release;
use crate::steps::materialize::materialize;
use crate::steps::resolve::{Resolved, resolve};
use crate::switch::{Live, read_live};
use crate::user_content::UserContentList;

/// What staging ended with.
pub enum Staging<'s> {
    /// Nothing to switch: the content is already live, or plain mode
    /// updated the context in place.
    Done(DeployResult),
    Staged(Staged<'s>),
}

/// A complete release, not live, and what switching to it needs.
pub struct Staged<'s> {
    pub name: String,
    pub commit: Option<String>,
    /// What the release deploys; `None` for an older release recorded
    /// without one (everything in it then counts as deployed).
    pub manifest: Option<Manifest<'s>>,
    /// Made by this run (so removed if its switch fails), rather than an
    /// existing release switched back to.
    pub fresh: bool,
    /// What was live when the release was staged.
    pub live: Live,
    /// When the carry from the live release started (ns since the epoch);
    /// `None` when there was nothing to carry from.
    pub carry_started_ns: Option<i128>,
    /// Every user file carried in is a link to the live release's.
    pub carried_all_linked: bool,
    /// Everything written into it so far is on disk (`flush`): the switch
    /// need not flush again unless the sync writes something.
    pub flushed: bool,
}

impl Staged<'_> {
    /// Put what staging wrote on disk now, while nothing waits for it (a
    /// fleet host waiting for the others to stage), so that the switch has
    /// nothing left to flush and hosts switch closer together. The whole
    /// filesystem is flushed: hard links and copies may be anywhere in the
    /// release.
    pub fn flush(&mut self, layout: &Layout) -> Result<()> {
        fsx::sync_filesystem(layout.webroot())?;
        self.flushed = true;
        Ok(())
    }
}

/// Stage a release of `plan` named `name` (a fleet's controller picks one
/// name for every host), or a fresh name.
pub fn stage<'s>(
    session: &'s Session<'_>,
    plan: &DeployPlan,
    name: Option<&str>,
) -> Result<Staging<'s>> {
    let layout = session.layout;
    let live = read_live(layout)?;
    let resolved = session.step(Step::Resolve, || resolve(session, plan))?;
    let live_record = match live.record_name(layout) {
        Some(name) => session.history.release(name)?,
        None => None,
    };
    let live_commit = live_record.as_ref().and_then(|r| r.commit.as_ref());
    let unchanged_commit = resolved.commit.is_some() && live_commit == resolved.commit.as_ref();
    // A monorepo's app changes only when its folder does.
    if let (Some(path), Some(old), Some(new)) = (
        &plan.policy.subfolder,
        live_commit,
        resolved.commit.as_ref(),
    ) && !unchanged_commit
        && !plan.force
    {
        let mirror = layout.mirror_path();
        let tree = crate::source::git::tree_id(&mirror, new, path);
        if tree.is_some() && tree == crate::source::git::tree_id(&mirror, old, path) {
            session.info(&format!(
                "nothing changed under {} between the live commit {} and {}; nothing to do (--force deploys anyway)",
                path.display(),
                short(old),
                short(new)
            ));
            return Ok(Staging::Done(unchanged(
                session,
                &live,
                live_record.as_ref().and_then(|r| r.commit.clone()),
            )));
        }
    }
    if unchanged_commit && !plan.force {
        let commit = resolved.commit.clone();
        session.info(&format!(
            "{} is already live at commit {}; nothing to do (--force deploys anyway)",
            layout.context(),
            short(commit.as_deref().unwrap_or_default())
        ));
        return Ok(Staging::Done(unchanged(session, &live, commit)));
    }
    if !plan.policy.zero_downtime {
        return plain::deploy_in_place(session, plan, &resolved, &live, live_record.as_ref())
            .map(Staging::Done);
    }
    let name = match name {
        Some(name) => claim_name(layout, name)?,
        None => allocate_name(layout)?,
    };
    let made = NewRelease {
        name,
        reference: resolved.reference.clone(),
        commit: resolved.commit.clone(),
        message: resolved.message.clone(),
    };
    stage_new(
        session,
        plan,
        made,
        live,
        live_record,
        Filling::Source(&resolved),
    )
}

/// Stage release `name` as a copy of the one the fleet's builder built
/// (`commit`, when from git): its files, not its build steps, so `plan`'s
/// build steps do not run here; when `plan` is prebuilt (a promotion), its
/// `once` entries do.
pub fn stage_copy<'s>(
    session: &'s Session<'_>,
    plan: &DeployPlan,
    name: &str,
    commit: Option<String>,
    copy: &mut CopySource<'_>,
) -> Result<Staged<'s>> {
    let layout = session.layout;
    let live = read_live(layout)?;
    let live_record = match live.record_name(layout) {
        Some(live_name) => session.history.release(live_name)?,
        None => None,
    };
    let made = NewRelease {
        name: claim_name(layout, name)?,
        reference: plan.reference.clone(),
        commit,
        message: None,
    };
    let plan = DeployPlan {
        policy: Policy {
            // A prebuilt plan's build runs its `once` entries only.
            build: match plan.prebuilt {
                true => plan.policy.build.clone(),
                false => Vec::new(),
            },
            ..plan.policy.clone()
        },
        ..plan.clone()
    };
    match stage_new(session, &plan, made, live, live_record, Filling::Copy(copy))? {
        Staging::Staged(staged) => Ok(staged),
        Staging::Done(_) => Err(Error::Invalid(format!(
            "{name} copies what is live already"
        ))),
    }
}

/// A release about to be made, as its record starts.
struct NewRelease {
    name: String,
    reference: Option<String>,
    commit: Option<String>,
    message: Option<String>,
}

/// Where a new release's deployed files come from.
enum Filling<'a, 'c> {
    Source(&'a Resolved),
    Copy(&'a mut CopySource<'c>),
}

/// Record the new release, build it, and mark it staged, or remove it.
fn stage_new<'s>(
    session: &'s Session<'_>,
    plan: &DeployPlan,
    made: NewRelease,
    live: Live,
    live_record: Option<ReleaseRecord>,
    filling: Filling<'_, '_>,
) -> Result<Staging<'s>> {
    let layout = session.layout;
    let name = made.name;
    session.history.insert_release(&ReleaseRecord {
        name: name.clone(),
        state: ReleaseState::Building,
        created_ms: now_ms(),
        source: Some(plan.source.shown()),
        reference: made.reference.clone(),
        commit: made.commit.clone(),
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
        made.commit.as_deref(),
        made.message.as_deref(),
        previous.as_deref(),
    )?;
    let release_dir = layout.release_path(&name);
    let built = build_release(
        session,
        plan,
        filling,
        &live,
        live_record.as_ref(),
        &name,
        &release_dir,
    );
    match built {
        Ok(Some((manifest, carry_started_ns, carried_all_linked))) => {
            session
                .history
                .set_release_state(&name, ReleaseState::Staged, None)?;
            Ok(Staging::Staged(Staged {
                name,
                commit: made.commit,
                manifest: Some(manifest),
                fresh: true,
                live,
                carry_started_ns,
                carried_all_linked,
                flushed: false,
            }))
        }
        Ok(None) => {
            discard_release(session, &name, "unchanged content")?;
            Ok(Staging::Done(unchanged(session, &live, made.commit)))
        }
        Err(error) => {
            discard_release(session, &name, &error.to_string())?;
            Err(error)
        }
    }
}

impl Staged<'_> {
    /// What counts as deployed in the staged release.
    pub fn deployed(&self) -> Deployed<'_> {
        Deployed::listed_or(self.manifest.as_ref(), Deployed::Everything)
    }
}

/// Stage an existing release (a rollback, or a fleet host converging to a
/// release it has): first carry what requests wrote into it after it
/// stopped being live into the live release, so nothing written anywhere
/// is lost, then fill it with the live release's user content.
pub fn stage_existing<'s>(
    session: &'s Session<'_>,
    target: &str,
    policy: &Policy,
) -> Result<Staged<'s>> {
    let layout = session.layout;
    let shared = &policy.shared;
    let live = read_live(layout)?;
    let Some(live_name) = live
        .record_name(layout)
        .filter(|_| matches!(live, Live::Release(_)))
    else {
        return Err(Error::Invalid(format!(
            "{} is not a release (plain mode or never deployed by zdeploy): there is no release to switch from",
            layout.context_path().display()
        )));
    };
    let live_name = live_name.to_string();
    let live_dir = layout.release_path(&live_name);
    let target_dir = layout.release_path(target);
    check_public(&target_dir, policy.public.as_deref())?;
    let live_manifest = session.history.manifest(&live_name)?;
    let manifest = session.history.manifest(target)?;
    let record = session.history.release(target)?;
    let carry_started_ns = now_ns();
    let carried = session.step(Step::Carry, || {
        if let (Some(manifest), Some(record)) = (&manifest, &record)
            && record.retired_ms.is_some()
        {
            carry_logged(
                session,
                Step::Carry,
                &target_dir,
                Deployed::Listed(manifest),
                &live_dir,
                Deployed::listed_or(live_manifest.as_ref(), Deployed::Everything),
                shared,
                Pass::Late {
                    since: late_writes_since(record.carried_ms),
                },
                false,
                None,
            )?;
        }
        carry_logged(
            session,
            Step::Carry,
            &live_dir,
            Deployed::listed_or(live_manifest.as_ref(), Deployed::Nothing),
            &target_dir,
            Deployed::listed_or(manifest.as_ref(), Deployed::Everything),
            shared,
            Pass::Mirror { since: None },
            false,
            None,
        )
    })?;
    Ok(Staged {
        name: target.to_string(),
        commit: record.and_then(|r| r.commit),
        manifest,
        fresh: false,
        live,
        carry_started_ns: Some(carry_started_ns),
        carried_all_linked: carried.all_linked(),
        flushed: false,
    })
}

/// The result of a deploy that found its content already live.
pub(crate) fn unchanged(
    session: &Session<'_>,
    live: &Live,
    commit: Option<String>,
) -> DeployResult {
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
        outcome: DeployOutcome::Unchanged,
        release,
        previous: None,
        commit,
        pruned: Vec::new(),
    }
}

/// Materialize, carry, build and check the new release; `None` when its
/// content is what is live already.
type Built<'s> = Option<(Manifest<'s>, Option<i128>, bool)>;

fn build_release<'s>(
    session: &'s Session<'_>,
    plan: &DeployPlan,
    filling: Filling<'_, '_>,
    live: &Live,
    live_record: Option<&ReleaseRecord>,
    name: &str,
    release_dir: &Path,
) -> Result<Built<'s>> {
    let layout = session.layout;
    let live_manifest = live_manifest(session, live)?;
    let sharer = match (live, live_record, &live_manifest) {
        (Live::Release(live_name), Some(record), Some(manifest)) => Some(Sharer::new(
            &layout.release_path(live_name),
            Some(manifest),
            record.created_ms,
        )),
        _ => None,
    };
    let base = live_record.and_then(|r| r.commit.as_deref());
    let manifest = Manifest::create(&session.history, name)?;
    match filling {
        Filling::Source(resolved) => {
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
        }
        Filling::Copy(copy) => {
            session.step(Step::Materialize, || {
                fsx::create_dir(release_dir)?;
                copy_from_builder(session, plan, copy, release_dir, &manifest, sharer.as_ref())
            })?;
            record_digest(session, name, &copy.digest)?;
        }
    }
    let live_dir = live.dir(layout);
    let carry_started_ns = now_ns();
    let listing = UserContentList::create(layout, name)?;
    let carried = session.step(Step::Carry, || {
        for path in &plan.policy.shared {
            if let Some(note) = link_shared(
                layout,
                release_dir,
                live_dir.as_deref(),
                path,
                plan.policy.shared_files.contains(path),
                &manifest,
            )? {
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
                    Some(&listing),
                )
            })
            .transpose()
    })?;
    listing.finish(layout)?;
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
            crate::steps::build::build(session, plan, release_dir, &manifest, live_tree.as_ref())
        })?;
    }
    let privileges = &plan.policy.privileges;
    // Writable paths are made group-writable in place.
    own_copies(release_dir, &privileges.writable, &manifest)?;
    privileges.apply(release_dir, &manifest)?;
    check_public(release_dir, plan.policy.public.as_deref())?;
    if let Some(health) = plan.policy.health.as_ref().filter(|h| h.before.is_some()) {
        // A check reads the release; it writes only where the app may.
        let confined_to = crate::confine::available().then_some(privileges.writable.as_slice());
        let confinement = confined_to.map(|writes| Confinement::new(release_dir, writes));
        let command = health.before.as_deref().unwrap_or_default();
        own_copies_before(session, command, release_dir, confined_to, &manifest)?;
        session.step(Step::Check, || {
            health
                .check_release(
                    release_dir,
                    privileges.build_user.as_ref(),
                    confinement.as_ref(),
                    &mut |line| session.debug(&format!("check | {line}")),
                )
                .map_err(|why| Error::Health(format!("the check before the switch {why}")))
        })?;
    }
    manifest.flush()?;
    let all_linked = carried.as_ref().is_some_and(|c| c.all_linked());
    Ok(Some((
        manifest,
        carried.map(|_| carry_started_ns),
        all_linked,
    )))
}

/// Materialize a copy of the builder's release, and say what it took.
fn copy_from_builder(
    session: &Session<'_>,
    plan: &DeployPlan,
    copy: &mut CopySource<'_>,
    release_dir: &Path,
    manifest: &Manifest<'_>,
    sharer: Option<&Sharer>,
) -> Result<()> {
    let mut progress = |entries: u64, total: Option<u64>| {
        if entries.is_multiple_of(64) {
            session.progress(Step::Materialize, entries, total);
        }
    };
    // The controller sends changes only to a host whose copy of the base
    // has the builder's digest; were it otherwise, the copy's own digest
    // would differ from the builder's and the copy would be refused.
    let base = match &copy.base {
        Some(base) => Some(session.history.manifest(&base.release)?.ok_or_else(|| {
            Error::Invalid(format!(
                "this host has no manifest of {} to take the builder's changes to it",
                base.release
            ))
        })?),
        None => None,
    };
    let lacking = materialize_copy(
        copy,
        release_dir,
        plan.policy.limits,
        manifest,
        base.as_ref(),
        sharer,
        &mut progress,
    )?;
    let (shared, shared_bytes) = sharer.map(Sharer::counts).unwrap_or_default();
    session.info(&format!(
        "copied the builder's release (digest {}{}): {} files ({} bytes) received, {shared} ({shared_bytes} bytes) shared with the live release{}",
        short(&copy.digest),
        copy.base
            .as_ref()
            .map(|b| format!(", sent as its changes to {}", b.release))
            .unwrap_or_default(),
        lacking.files,
        lacking.bytes,
        sharer.map(|s| format!(" by {}", s.method().as_str())).unwrap_or_default()
    ));
    Ok(())
}

fn record_digest(session: &Session<'_>, name: &str, digest: &str) -> Result<()> {
    if let Some(mut record) = session.history.release(name)? {
        record.content_digest = Some(digest.to_string());
        session.history.insert_release(&record)?;
    }
    Ok(())
}

/// A name given by a fleet's controller: refused if this host has it already.
fn claim_name(layout: &Layout, name: &str) -> Result<String> {
    let stamp_ok = name
        .strip_prefix(layout.context())
        .and_then(|s| s.strip_prefix('_'))
        .and_then(crate::release::parse_stamp)
        .is_some();
    if !stamp_ok {
        return Err(Error::Invalid(format!(
            "'{name}' is not a release name of {}",
            layout.context()
        )));
    }
    if fsx::metadata_if_exists(&layout.release_path(name))?.is_some() {
        return Err(Error::Invalid(format!(
            "release {name} already exists in {}",
            layout.webroot().display()
        )));
    }
    Ok(name.to_string())
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
