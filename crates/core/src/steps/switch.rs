//! Steps `sync` and `switch`, and switching back: the staged release takes
//! what users wrote since its carry, then the context is pointed at it in one
//! rename (and Apache's map follows).

use jiff::Timestamp;

use crate::apache::ApacheMap;
use crate::carry::{Deployed, Pass};
use crate::error::{Error, Result};
use crate::fsx;
use crate::history::{ReleaseRecord, now_ms};
use crate::layout::Layout;
use crate::policy::Policy;
use crate::release::{ReleaseState, release_name};
use crate::session::{Session, Step};
use crate::steps::carry::{MARK_MARGIN_NS, carry_logged, live_manifest};
use crate::steps::discard::discard_release;
use crate::steps::settle::settle;
use crate::steps::stage::Staged;
use crate::switch::{Live, read_live, switch_to};

/// What the sync found, for the settle after the switch.
pub struct Synced {
    pub started_ms: i64,
    /// Every user file of the staged release is a link to the live one's.
    pub all_linked: bool,
    /// The sync changed the staged release (carried, replaced or removed
    /// something).
    pub wrote: bool,
}

/// A release that went live, and the one it replaced.
pub struct Switched {
    pub name: String,
    pub previous: Option<String>,
    pub at_ms: i64,
}

/// Step `sync`: carry into the staged release what users wrote in the live
/// one since the carry started, and remove what they deleted.
pub fn sync(session: &Session<'_>, staged: &Staged<'_>, policy: &Policy) -> Result<Synced> {
    let layout = session.layout;
    let started_ms = now_ms();
    let (Some(from), Some(carry_started_ns)) = (staged.live.dir(layout), staged.carry_started_ns)
    else {
        return Ok(Synced {
            started_ms,
            all_linked: false,
            wrote: false,
        });
    };
    let live_manifest = live_manifest(session, &staged.live)?;
    let synced = session.step(Step::Sync, || {
        carry_logged(
            session,
            Step::Sync,
            &from,
            Deployed::listed_or(live_manifest.as_ref(), Deployed::Nothing),
            &layout.release_path(&staged.name),
            staged.deployed(),
            &policy.shared,
            Pass::Mirror {
                since: Some(carry_started_ns - MARK_MARGIN_NS),
            },
            staged.carried_all_linked,
            None,
        )
    })?;
    Ok(Synced {
        started_ms,
        all_linked: staged.carried_all_linked && synced.all_linked(),
        wrote: synced.created + synced.replaced + synced.removed > 0,
    })
}

/// Step `switch`: make the staged release live. A real folder in the way is
/// kept as a release of its own. If the switch fails before the release is
/// live, the release is removed and the live one is untouched.
pub fn switch(
    session: &Session<'_>,
    staged: &Staged<'_>,
    synced: &Synced,
    policy: &Policy,
) -> Result<Switched> {
    let layout = session.layout;
    let name = &staged.name;
    // A fresh release is complete now; an existing one that once failed a
    // check (a fleet converging to it) is given another chance.
    let state = session.history.release(name)?.map(|r| r.state);
    if staged.fresh || state == Some(ReleaseState::Failed) {
        session
            .history
            .set_release_state(name, ReleaseState::Complete, None)?;
    }
    let displaced = match staged.live {
        Live::Folder => Some(displaced_name(layout, name)?),
        _ => None,
    };
    if let Some(displaced) = &displaced {
        record_displaced(session, displaced, synced.started_ms)?;
        session
            .history
            .set_deployment_target(session.id, None, None, None, Some(displaced))?;
    }
    let previous = match &staged.live {
        Live::Release(n) => Some(n.clone()),
        _ => None,
    };
    let switched = session.step(Step::Switch, || {
        // New files must be on disk before a name points at them.
        if !staged.flushed || synced.wrote {
            fsx::sync_filesystem(layout.webroot())?;
        }
        switch_to(layout, name, displaced.as_deref())?;
        match &policy.apache {
            Some(apache) if apache.in_use() => {
                tell_apache(session, apache, name, previous.as_deref())
            }
            _ => Ok(()),
        }
    });
    if let Err(error) = switched {
        // The rename may have happened before a later part failed: only a
        // release that did not go live is discarded.
        if staged.fresh && read_live(layout)? != Live::Release(name.clone()) {
            if let Some(displaced) = &displaced {
                session
                    .history
                    .rename_release(displaced, layout.context())?;
            }
            discard_release(session, name, &error.to_string())?;
        }
        return Err(error);
    }
    let previous = previous.or(displaced);
    let at_ms = now_ms();
    if !staged.fresh {
        session.history.mark_live(name)?;
    }
    if let Some(previous) = &previous {
        session
            .history
            .mark_retired(previous, at_ms, synced.started_ms)?;
    }
    session.info(&format!("{} now serves {name}", layout.context()));
    Ok(Switched {
        name: name.clone(),
        previous,
        at_ms,
    })
}

/// Step `health` after the switch: a failed check switches back.
pub fn check_live(session: &Session<'_>, switched: &Switched, policy: &Policy) -> Result<()> {
    let Some(url) = policy.health.as_ref().and_then(|h| h.url.as_ref()) else {
        return Ok(());
    };
    let healthy = session.step(Step::Health, || {
        let health = policy.health.as_ref().expect("checked above");
        health.check_url(url).map_err(Error::Health)
    });
    let Err(error) = healthy else {
        return Ok(());
    };
    Err(switched_back_after(session, switched, policy, &error))
}

/// Switch back because of `error` (a failed check after the switch), and
/// say where that left the context.
pub(crate) fn switched_back_after(
    session: &Session<'_>,
    switched: &Switched,
    policy: &Policy,
    error: &Error,
) -> Error {
    match switch_back(session, switched, policy, &error.to_string()) {
        Ok(previous) => Error::SwitchedBack(format!("{error}; switched back to {previous}")),
        Err(e) => Error::Health(format!("{error}; {e}")),
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

/// Put the release that was live before `switched` back (with what users
/// wrote meanwhile) and mark `switched` failed with `why`, so rollbacks skip
/// it. Returns the release live again; with none to go back to, the new one
/// stays live and that is the error.
pub fn switch_back(
    session: &Session<'_>,
    switched: &Switched,
    policy: &Policy,
    why: &str,
) -> Result<String> {
    let failed = &switched.name;
    let Some(previous) = switched.previous.as_deref() else {
        return Err(Error::Invalid(format!(
            "there is no earlier release to go back to; {failed} stays live"
        )));
    };
    let layout = session.layout;
    switch_to(layout, previous, None)?;
    if let Some(apache) = &policy.apache {
        apache.point_at(layout, previous)?;
    }
    session.history.mark_live(previous)?;
    session
        .history
        .mark_retired(failed, now_ms(), switched.at_ms)?;
    session
        .history
        .set_release_state(failed, ReleaseState::Failed, Some(why))?;
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
        switched.at_ms,
        false,
    );
    Ok(previous.to_string())
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
