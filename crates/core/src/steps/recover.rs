//! Step `recover`: undo what a killed run left behind, using only facts (the
//! lock is ours, so every "running" record is dead).

use crate::apache::ApacheMap;
use crate::error::Result;
use crate::fsx;
use crate::history::now_ms;
use crate::release::ReleaseState;
use crate::session::Session;
use crate::steps::prune::delete_release_dir;
use crate::switch::{Live, read_live};

pub fn recover(session: &Session<'_>, apache: Option<&ApacheMap>) -> Result<()> {
    let layout = session.layout;
    let history = &session.history;

    // A folder at the switch's temporary name is a site displaced by an
    // exchange whose follow-up rename never ran: give it its release name.
    let tmp = layout.switch_tmp_path();
    if let Some(meta) = fsx::metadata_if_exists(&tmp)? {
        if meta.is_dir() && !meta.file_type().is_symlink() {
            let name = match history
                .deployments(1000)?
                .into_iter()
                .find(|d| d.outcome == "running" && d.previous.is_some())
            {
                Some(d) => d.previous.expect("filtered on previous"),
                None => crate::steps::switch::displaced_name(
                    layout,
                    &crate::release::release_name(layout.context(), jiff::Timestamp::now()),
                )?,
            };
            fsx::rename(&tmp, &layout.release_path(&name))?;
            session.warn(&format!(
                "recovered the displaced site left at {} as release {name}",
                tmp.display()
            ));
        } else {
            fsx::remove_file(&tmp)?;
        }
    }
    // A plain-mode conversion killed before or after its exchange.
    let plain_tmp = layout.plain_tmp_path();
    if let Some(meta) = fsx::metadata_if_exists(&plain_tmp)? {
        if meta.file_type().is_symlink() {
            fsx::remove_file(&plain_tmp)?;
        } else {
            fsx::remove_dir_all(&plain_tmp)?;
        }
        session.info("removed an unfinished conversion to plain mode");
    }

    crate::maintenance::close_abandoned(session)?;
    let live = read_live(layout)?;
    let interrupted: Vec<_> = history
        .deployments(1000)?
        .into_iter()
        .filter(|d| d.outcome == "running" && d.id != session.id)
        .collect();
    // A run killed after its switch never recorded that the release it
    // switched away from stopped being live; without that, prune would treat
    // it as never live and delete it without carrying late writes out of it.
    for run in &interrupted {
        let (Some(release), Some(previous)) = (&run.release, &run.previous) else {
            continue;
        };
        let switched = live == Live::Release(release.clone());
        let unrecorded = history
            .release(previous)?
            .is_none_or(|r| r.retired_ms.is_none());
        if switched && unrecorded && previous != release {
            history.mark_retired(previous, now_ms(), run.started_ms)?;
            session.warn(&format!(
                "run #{} was killed after switching to {release}; {previous} now drains like any retired release",
                run.id
            ));
        }
    }
    crate::canary::recover(session, &live, apache)?;
    let canary = crate::canary::current(layout)?;
    for release in history.releases()? {
        if !matches!(release.state, ReleaseState::Building | ReleaseState::Staged)
            || live == Live::Release(release.name.clone())
            || canary.as_ref().is_some_and(|c| c.release == release.name)
        {
            continue;
        }
        delete_release_dir(layout, &release.name)?;
        history.set_release_state(
            &release.name,
            ReleaseState::Failed,
            Some("interrupted before its switch; removed"),
        )?;
        history.drop_manifest(&release.name)?;
        session.warn(&format!(
            "removed {}, left unfinished by an interrupted deploy",
            release.name
        ));
    }
    // Behind Apache, a run killed between the switch and the map write left
    // Apache on the old release: make it follow the symlink again.
    if let (Some(apache), Live::Release(name)) = (apache, &live)
        && apache.in_use()
        && apache.current(layout).as_ref() != Some(name)
    {
        apache.point_at(layout, name)?;
        session.warn(&format!(
            "Apache's map did not name the live release; pointed it at {name}"
        ));
    }
    let count = history.interrupt_running_except(session.id)?;
    if count > 0 {
        session.warn(&format!(
            "{count} earlier run(s) were killed before they finished; marked interrupted"
        ));
    }
    for leftover in [
        layout.trash_dir(),
        layout.staging_path(),
        layout.download_dir(),
    ] {
        if fsx::metadata_if_exists(&leftover)?.is_some() {
            fsx::remove_dir_all(&leftover)?;
        }
    }
    Ok(())
}
