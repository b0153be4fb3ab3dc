//! Retention applied (`prune`), releases renamed out of retention (`keep`),
//! and the one way a release folder is deleted.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::apache::ApacheMap;
use crate::carry::{Deployed, Pass};
use crate::deploy::{Policy, carry_logged, late_writes_since, live_manifest};
use crate::error::{Error, Result};
use crate::fsx;
use crate::history::{Kind, Outcome, now_ms};
use crate::inventory::releases_on_disk;
use crate::layout::Layout;
use crate::release::{ReleaseState, validate_kept_name};
use crate::retention::{Candidate, choose_over_budget, choose_prunable};
use crate::session::{Observer, RunOptions, Session, Step};
use crate::switch::{Live, read_live, switch_to};

/// Delete a release folder: renamed into the trash first (so a half-deleted
/// folder never looks like a release), then removed.
pub fn delete_release_dir(layout: &Layout, name: &str) -> Result<()> {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let path = layout.release_path(name);
    if fsx::metadata_if_exists(&path)?.is_none() {
        return Ok(());
    }
    let trash = layout.trash_dir();
    fsx::create_dir_all(&trash)?;
    let doomed = trash.join(format!(
        "{name}.{}.{}",
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    ));
    fsx::rename(&path, &doomed)?;
    fsx::remove_dir_all(&doomed)
}

/// Apply retention inside a run that holds the lock: `keep`, then
/// `max_disk`; returns what was pruned.
pub fn prune_in_session(session: &Session<'_>, policy: &Policy) -> Result<Vec<String>> {
    let mut pruned = prune_chosen(session, policy, |candidates| {
        choose_prunable(candidates, policy.keep, policy.drain, now_ms())
    })?;
    if let Some(budget) = policy.max_disk {
        loop {
            let used = crate::inventory::context_usage(session.layout)?;
            if used <= budget {
                break;
            }
            let over = prune_chosen(session, policy, |candidates| {
                choose_over_budget(candidates, policy.drain, now_ms())
                    .into_iter()
                    .collect()
            })?;
            if over.is_empty() {
                session.warn(&format!(
                    "the releases take {used} bytes, over max_disk ({budget} bytes), and none can go: the live and previous releases, kept ones and draining ones stay"
                ));
                break;
            }
            session.info(&format!("over max_disk ({used} of {budget} bytes)"));
            pruned.extend(over);
        }
    }
    Ok(pruned)
}

/// Prune what `choose` picks from the timestamped releases on disk.
fn prune_chosen(
    session: &Session<'_>,
    policy: &Policy,
    choose: impl FnOnce(&[Candidate]) -> Vec<String>,
) -> Result<Vec<String>> {
    let shared = &policy.shared;
    let layout = session.layout;
    let live = read_live(layout)?;
    let mut candidates = Vec::new();
    for release in releases_on_disk(layout)? {
        let Some(stamp) = release.stamp() else {
            continue;
        };
        let record = session.history.release(&release.name)?;
        if record
            .as_ref()
            .is_some_and(|r| r.state == ReleaseState::Building)
        {
            continue;
        }
        candidates.push(Candidate {
            live: live == Live::Release(release.name.clone()),
            name: release.name,
            stamp,
            retired_ms: record.and_then(|r| r.retired_ms),
        });
    }
    let chosen = choose(&candidates);
    let live_path = live.dir(layout);
    let live_manifest = live_manifest(session, &live)?;
    // A live release without a manifest: everything in it counts as deployed.
    let live_deployed = Deployed::listed_or(live_manifest.as_ref(), Deployed::Everything);
    for name in &chosen {
        let record = session.history.release(name)?;
        // A release that was live may hold late writes: carry them first.
        if let (Some(to), Some(record)) = (&live_path, &record)
            && record.retired_ms.is_some()
        {
            let since = late_writes_since(record.carried_ms);
            let from_manifest = session.history.manifest(name)?;
            carry_logged(
                session,
                Step::Prune,
                &layout.release_path(name),
                Deployed::listed_or(from_manifest.as_ref(), Deployed::Nothing),
                to,
                live_deployed,
                shared,
                Pass::Late { since },
                false,
            )?;
        }
        delete_release_dir(layout, name)?;
        if record.is_some() {
            session
                .history
                .set_release_state(name, ReleaseState::Pruned, None)?;
            session.history.drop_manifest(name)?;
        }
        session.info(&format!("pruned {name}"));
    }
    Ok(chosen)
}

/// `zdeploy prune`: retention on demand.
pub fn prune(
    layout: &Layout,
    policy: &Policy,
    options: &RunOptions,
    observer: &dyn Observer,
) -> Result<Vec<String>> {
    let session = Session::open(layout, Kind::Prune, options, None, None, observer)?;
    let result = session
        .step(Step::Recover, || {
            crate::recover::recover(&session, policy.apache.as_ref())
        })
        .and_then(|_| session.step(Step::Prune, || prune_in_session(&session, policy)));
    session.finish(&result, |_| Outcome::Success)?;
    result
}

/// `zdeploy keep RELEASE NAME`: rename a release to `<context>_NAME` so
/// retention never touches it. The live release is renamed without a moment
/// where the context does not resolve.
pub fn keep(
    layout: &Layout,
    release: &str,
    name: &str,
    apache: Option<&ApacheMap>,
    options: &RunOptions,
    observer: &dyn Observer,
) -> Result<String> {
    validate_kept_name(name)?;
    let session = Session::open(layout, Kind::Keep, options, None, None, observer)?;
    let result = keep_in_session(&session, release, name, apache);
    session.finish(&result, |_| Outcome::Success)?;
    result
}

fn keep_in_session(
    session: &Session<'_>,
    release: &str,
    name: &str,
    apache: Option<&ApacheMap>,
) -> Result<String> {
    let layout = session.layout;
    session.step(Step::Recover, || crate::recover::recover(session, apache))?;
    let release = resolve_release_name(layout, release)?;
    let new_name = format!("{}_{name}", layout.context());
    if fsx::metadata_if_exists(&layout.release_path(&new_name))?.is_some() {
        return Err(Error::Invalid(format!(
            "cannot keep {release} as {new_name}: {new_name} already exists"
        )));
    }
    let old_path = layout.release_path(&release);
    let new_path = layout.release_path(&new_name);
    if read_live(layout)? == Live::Release(release.clone()) {
        // Put a symlink at the new name pointing to itself, then exchange: the
        // folder takes the new name and the old name becomes a symlink to it,
        // so `<context>` -> old name -> new name resolves throughout.
        fsx::symlink(Path::new(&new_name), &new_path)?;
        fsx::exchange(&old_path, &new_path)?;
        switch_to(layout, &new_name, None)?;
        if let Some(apache) = apache {
            // Apache serves the old name, now a symlink, until the map changes.
            apache.point_at(layout, &new_name)?;
        }
        fsx::remove_file(&old_path)?;
    } else {
        fsx::rename(&old_path, &new_path)?;
    }
    fsx::fsync_dir(layout.webroot())?;
    session.history.rename_release(&release, &new_name)?;
    session.info(&format!(
        "kept {release} as {new_name}; retention will never remove it"
    ));
    Ok(new_name)
}

/// Accept a release by full name or by the part after `<context>_`.
pub fn resolve_release_name(layout: &Layout, given: &str) -> Result<String> {
    let releases = releases_on_disk(layout)?;
    let wanted = [given.to_string(), format!("{}_{given}", layout.context())];
    releases
        .iter()
        .find(|r| wanted.contains(&r.name))
        .map(|r| r.name.clone())
        .ok_or_else(|| {
            let names: Vec<_> = releases.iter().map(|r| r.name.as_str()).collect();
            Error::Invalid(format!(
                "no release '{given}' of {} in {} (releases: {})",
                layout.context(),
                layout.webroot().display(),
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ))
        })
}
