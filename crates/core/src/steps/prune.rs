//! Step `prune`: retention applied inside a run (`keep`, then `max_disk`),
//! late writes carried out of a release before it goes, releases a running
//! process still uses left for a later prune, and the one way a release
//! folder is deleted.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::carry::{Deployed, Pass};
use crate::error::Result;
use crate::fsx;
use crate::history::now_ms;
use crate::holders::holders;
use crate::inventory::releases_on_disk;
use crate::layout::Layout;
use crate::policy::Policy;
use crate::release::ReleaseState;
use crate::retention::{Candidate, choose_over_budget, choose_prunable};
use crate::session::{Session, Step};
use crate::steps::carry::{carry_logged, late_writes_since, live_manifest};
use crate::switch::{Live, read_live};

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
    let canary = crate::canary::current(layout)?;
    let mut candidates = Vec::new();
    for release in releases_on_disk(layout)? {
        let Some(stamp) = release.stamp() else {
            continue;
        };
        let record = session.history.release(&release.name)?;
        if record
            .as_ref()
            .is_some_and(|r| matches!(r.state, ReleaseState::Building | ReleaseState::Staged))
            || canary.as_ref().is_some_and(|c| c.release == release.name)
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
    let mut chosen = choose(&candidates);
    // A release a process still uses (a worker started from it) stays
    // until the process is gone.
    if !chosen.is_empty() {
        let dirs: Vec<_> = chosen.iter().map(|n| layout.release_path(n)).collect();
        let held = holders(&dirs);
        for (name, holder) in chosen.iter().zip(&held) {
            let Some(holder) = holder else {
                continue;
            };
            session.info(&format!(
                "kept {name} for now: process {} ({}) uses it; a later prune removes it once that process is gone",
                holder.pid, holder.command
            ));
        }
        chosen = chosen
            .into_iter()
            .zip(held)
            .filter(|(_, holder)| holder.is_none())
            .map(|(name, _)| name)
            .collect();
    }
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
                None,
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

/// Retention after a switch; a failure is logged, not fatal: the deploy
/// itself succeeded.
pub fn prune_after_switch(session: &Session<'_>, policy: &Policy) -> Vec<String> {
    session
        .step(Step::Prune, || prune_in_session(session, policy))
        .unwrap_or_else(|e| {
            session.warn(&format!("prune failed (the deploy itself succeeded): {e}"));
            Vec::new()
        })
}
