//! Plain mode (`zero_downtime = false`, the seed's checkbox off): the context
//! is a real folder updated in place. Converting from the release layout
//! swaps a full copy of the live release in with one exchange, keeping user
//! content; converting back is the first-deploy-over-a-folder path.

use crate::carry::{Deployed, Pass, copy_release};
use crate::error::Result;
use crate::fsx;
use crate::history::{ReleaseRecord, now_ms};
use crate::manifest::{EntryKind, Manifest};
use crate::policy::{DeployOutcome, DeployPlan, DeployResult};
use crate::release::ReleaseState;
use crate::release::short;
use crate::session::{Session, Step};
use crate::shared::link_shared;
use crate::steps::carry::{MARK_MARGIN_NS, carry_logged, now_ns};
use crate::steps::materialize::materialize;
use crate::steps::resolve::Resolved;
use crate::switch::Live;

pub(crate) fn deploy_in_place(
    session: &Session<'_>,
    plan: &DeployPlan,
    resolved: &Resolved,
    live: &Live,
    live_record: Option<&ReleaseRecord>,
) -> Result<DeployResult> {
    let layout = session.layout;
    let context = layout.context().to_string();
    let context_path = layout.context_path();
    let mut previous = None;
    let mut live_record = live_record.cloned();
    match live {
        Live::Release(release) => {
            session.step(Step::Switch, || {
                convert_to_plain(session, release, &plan.policy.shared)
            })?;
            previous = Some(release.clone());
            live_record = session.history.release(&context)?;
        }
        Live::Nothing => fsx::create_dir(&context_path)?,
        Live::Folder => {}
    }
    let staging = layout.staging_path();
    if fsx::metadata_if_exists(&staging)?.is_some() {
        fsx::remove_dir_all(&staging)?;
    }
    // Staged under a scratch name until it is the context's.
    let new_manifest = Manifest::create(&session.history, &format!("{context}/staging"))?;
    session.step(Step::Materialize, || {
        fsx::create_dir(&staging)?;
        materialize(session, plan, resolved, &staging, &new_manifest, None, None)
    })?;
    let digest = new_manifest.content_digest()?;
    let unchanged = resolved.commit.is_none()
        && live_record
            .as_ref()
            .and_then(|r| r.content_digest.as_deref())
            == Some(digest.as_str());
    if unchanged && !plan.force {
        fsx::remove_dir_all(&staging)?;
        session.history.drop_manifest(new_manifest.release())?;
        session.info(&format!(
            "{context} already serves this content (digest {}); nothing to do",
            short(&digest)
        ));
        return Ok(DeployResult {
            deployment: session.id,
            outcome: DeployOutcome::Unchanged,
            release: Some(context),
            previous: None,
            commit: None,
            pruned: Vec::new(),
        });
    }
    let public = plan.policy.public.as_deref();
    // Build steps may make the public folder; without them it must be in
    // the source, checked before anything in place changes.
    if plan.policy.build.is_empty()
        && let Err(error) = crate::public::check_public(&staging, public)
    {
        fsx::remove_dir_all(&staging)?;
        session.history.drop_manifest(new_manifest.release())?;
        return Err(error);
    }
    let old_manifest = session.history.manifest(&context)?;
    session.step(Step::Switch, || {
        apply_in_place(session, &staging, &new_manifest, old_manifest.as_ref())?;
        for path in &plan.policy.shared {
            if let Some(note) = link_shared(
                layout,
                &context_path,
                Some(&context_path),
                path,
                plan.policy.shared_files.contains(path),
                &new_manifest,
            )? {
                session.info(&note);
            }
        }
        Ok(())
    })?;
    fsx::remove_dir_all(&staging)?;
    if !plan.policy.build.is_empty() {
        session.step(Step::Build, || {
            crate::steps::build::build(session, plan, &context_path, &new_manifest, None)
        })?;
        crate::public::check_public(&context_path, public)?;
    }
    session.history.insert_release(&ReleaseRecord {
        name: context.clone(),
        state: ReleaseState::Complete,
        created_ms: now_ms(),
        source: Some(plan.source.shown()),
        reference: resolved.reference.clone(),
        commit: resolved.commit.clone(),
        content_digest: Some(digest),
        deployment_id: Some(session.id),
        retired_ms: None,
        carried_ms: None,
        note: Some("plain mode: the context folder itself".into()),
    })?;
    new_manifest.flush()?;
    session
        .history
        .move_manifest(new_manifest.release(), &context)?;
    session.history.set_deployment_target(
        session.id,
        Some(&context),
        resolved.commit.as_deref(),
        resolved.message.as_deref(),
        previous.as_deref(),
    )?;
    session.info(&format!("{context} updated in place (plain mode)"));
    let pruned = session.step(Step::Prune, || {
        crate::steps::prune::prune_in_session(session, &plan.policy)
    })?;
    Ok(DeployResult {
        deployment: session.id,
        outcome: DeployOutcome::Deployed,
        release: Some(context),
        previous,
        commit: resolved.commit.clone(),
        pruned,
    })
}

/// Replace the `<context>` symlink by a real folder holding a copy of the
/// live release (its user content linked), in one exchange.
fn convert_to_plain(
    session: &Session<'_>,
    release: &str,
    shared: &[std::path::PathBuf],
) -> Result<()> {
    let layout = session.layout;
    let tmp = layout.plain_tmp_path();
    let release_dir = layout.release_path(release);
    let copy_started_ns = now_ns();
    let manifest = session.history.manifest(release)?;
    copy_release(&release_dir, manifest.as_ref(), &tmp)?;
    fsx::exchange(&tmp, &layout.context_path())?;
    crate::failpoint::hit("plain.exchanged");
    fsx::remove_file(&tmp)?;
    fsx::fsync_dir(layout.webroot())?;
    let record = session.history.release(release)?;
    if let Some(mut record) = record {
        record.name = layout.context().to_string();
        record.note = Some("plain mode: the context folder itself".into());
        session.history.insert_release(&record)?;
    }
    if manifest.is_some() {
        session.history.copy_manifest(release, layout.context())?;
    }
    let carried_ms = (copy_started_ns / 1_000_000) as i64;
    session
        .history
        .mark_retired(release, now_ms(), carried_ms)?;
    session.info(&format!(
        "converted {} to plain mode: it is now a real folder copied from {release}",
        layout.context()
    ));
    let target_manifest = session.history.manifest(layout.context())?;
    carry_logged(
        session,
        Step::Switch,
        &release_dir,
        Deployed::listed_or(manifest.as_ref(), Deployed::Nothing),
        &layout.context_path(),
        Deployed::listed_or(target_manifest.as_ref(), Deployed::Nothing),
        shared,
        Pass::Late {
            since: copy_started_ns - MARK_MARGIN_NS,
        },
        false,
        None,
    )?;
    Ok(())
}

/// Move the staged source into the context file by file (each a rename), then
/// remove what the previous deploy deployed and this one does not.
fn apply_in_place(
    session: &Session<'_>,
    staging: &std::path::Path,
    new: &Manifest<'_>,
    old: Option<&Manifest<'_>>,
) -> Result<()> {
    let context_path = session.layout.context_path();
    for item in new.entries() {
        let (path, entry) = item?;
        let dest = context_path.join(&path);
        let existing = fsx::metadata_if_exists(&dest)?;
        match entry.kind {
            EntryKind::Dir => match existing {
                Some(meta) if meta.is_dir() => {}
                Some(_) => {
                    fsx::remove_file(&dest)?;
                    fsx::create_dir(&dest)?;
                }
                None => fsx::create_dir(&dest)?,
            },
            EntryKind::File | EntryKind::Symlink => {
                if existing.is_some_and(|m| m.is_dir()) {
                    session.warn(&format!(
                        "{} is a folder in the site but a file in the source; the folder is left as it is",
                        path.display()
                    ));
                    continue;
                }
                fsx::rename(&staging.join(&path), &dest)?;
            }
        }
    }
    if let Some(old) = old {
        // Children before their folders: only what went is held.
        let mut gone = Vec::new();
        for item in old.entries() {
            let (path, entry) = item?;
            if !new.contains(&path)? {
                gone.push((path, entry.kind));
            }
        }
        for (path, kind) in gone.into_iter().rev() {
            let dest = context_path.join(path);
            let _ = match kind {
                EntryKind::Dir => std::fs::remove_dir(&dest),
                _ => std::fs::remove_file(&dest),
            };
        }
    }
    Ok(())
}
