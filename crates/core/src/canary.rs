//! Canary releases: a staged release serves a share of clients while the
//! live one serves the rest, each client kept on one of them by a cookie
//! (`zdeploy_canary`, a bucket of 256) that the generated site sets. The
//! canary is a folder the web server reads per request, never its config:
//! `.zdeploy/<ctx>/canary` links to a folder holding `release` (a link to
//! the canary release) and `share/bucket-<xx>` for each bucket it serves
//! (Apache reads the same from its map). Promote switches everyone to the
//! canary release after carrying in what the live one's users wrote;
//! abort sends everyone back and carries what the canary's users wrote
//! into the live release. Either way nothing users wrote is lost.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::carry::{Deployed, Pass};
use crate::error::{Error, Result};
use crate::fsx;
use crate::history::{History, Kind, Outcome, now_ms};
use crate::layout::Layout;
use crate::policy::{DeployOutcome, DeployResult, Policy};
use crate::release::ReleaseState;
use crate::session::{Observer, RunOptions, Session, Step};
use crate::steps::after_switch::{OnFailure, after_switch};
use crate::steps::carry::{carry_logged, late_writes_since};
use crate::steps::discard::discard_release;
use crate::steps::prune::prune_after_switch;
use crate::steps::settle::settle;
use crate::steps::stage::Staged;
use crate::steps::switch::{Synced, check_live, switch, sync};
use crate::switch::{Live, read_live};

/// The cookie that holds a client's bucket: two hex digits.
pub const COOKIE: &str = "zdeploy_canary";
/// How many buckets clients are spread over.
pub const BUCKETS: u16 = 256;
/// What the file for bucket `xx` under `share/` is called.
pub const BUCKET_FILE_PREFIX: &str = "bucket-";

/// The share of clients a canary serves, in buckets of 256.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    pub buckets: u16,
}

impl Share {
    /// "10%" (more than 0, less than 100; rounded to the nearest bucket of
    /// 256, at least one).
    pub fn parse(text: &str) -> std::result::Result<Share, String> {
        let percent = text
            .trim()
            .strip_suffix('%')
            .and_then(|n| n.trim().parse::<f64>().ok())
            .filter(|n| *n > 0.0 && *n < 100.0)
            .ok_or_else(|| {
                format!("a canary's share is a percentage above 0 and below 100, like \"10%\"; got '{text}'")
            })?;
        let buckets = (percent / 100.0 * f64::from(BUCKETS)).round() as u16;
        Ok(Share {
            buckets: buckets.clamp(1, BUCKETS - 1),
        })
    }

    /// The share as a percentage of clients.
    pub fn percent(self) -> f64 {
        100.0 * f64::from(self.buckets) / f64::from(BUCKETS)
    }

    pub fn describe(self) -> String {
        format!(
            "{:.1}% of clients ({} of {BUCKETS} cookie buckets)",
            self.percent(),
            self.buckets
        )
    }
}

/// A canary that is running: what the canary folder's `canary.json` says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Canary {
    /// The release tried on a share of clients.
    pub release: String,
    /// The release live for everyone else.
    pub live: String,
    pub share: Share,
    pub started_ms: i64,
    /// The deploy that staged it.
    pub deployment: i64,
}

impl Canary {
    /// The buckets it serves: `share` consecutive ones from an offset the
    /// release's name decides, so every host of a fleet picks the same
    /// ones and each canary tries a different group of clients.
    pub fn buckets(&self) -> Vec<u8> {
        let offset = Sha256::digest(self.release.as_bytes())[0];
        (0..self.share.buckets)
            .map(|i| offset.wrapping_add(i as u8))
            .collect()
    }
}

/// The canary running on `layout`, if one is.
pub fn current(layout: &Layout) -> Result<Option<Canary>> {
    let path = layout.canary_link().join("canary.json");
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::Invalid(format!(
                "{} is unreadable ({e}); remove {} to end the canary by hand",
                path.display(),
                layout.canary_link().display()
            ))
        }),
        Err(e) if fsx::is_missing(&e) || e.kind() == std::io::ErrorKind::NotADirectory => Ok(None),
        Err(e) => Err(Error::io("read", &path, e)),
    }
}

/// The error a deploy or rollback gets while a canary runs.
pub fn refuse_while_running(layout: &Layout) -> Result<()> {
    match current(layout)? {
        Some(canary) => Err(Error::Busy(format!(
            "a canary of {} serves {} of {}: `zdeploy canary promote` or `zdeploy canary abort` it first",
            canary.release,
            canary.share.describe(),
            layout.context()
        ))),
        None => Ok(()),
    }
}

/// Point the canary link at a new folder whose `release` links to
/// `release` and which serves `canary`'s buckets (none without one), in
/// one rename; older canary folders go. A request that found its bucket
/// just before still resolves `release` through the link.
fn publish(layout: &Layout, release: &str, canary: Option<&Canary>) -> Result<()> {
    let state = layout.state_dir();
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let folder_name = format!(
        "canary-{}-{}-{}",
        now_ms(),
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    );
    let folder = state.join(&folder_name);
    fsx::create_dir(&folder)?;
    // From .zdeploy/<ctx>/canary-…/ up to the webroot.
    fsx::symlink(
        &Path::new("../../..").join(release),
        &folder.join("release"),
    )?;
    if let Some(canary) = canary {
        let share = folder.join("share");
        fsx::create_dir(&share)?;
        for bucket in canary.buckets() {
            let file = share.join(format!("{BUCKET_FILE_PREFIX}{bucket:02x}"));
            std::fs::write(&file, b"").map_err(|e| Error::io("write", &file, e))?;
        }
        let json = folder.join("canary.json");
        let text = serde_json::to_vec_pretty(canary).expect("a canary serializes");
        std::fs::write(&json, text).map_err(|e| Error::io("write", &json, e))?;
        fsx::fsync_dir(&share)?;
    }
    fsx::fsync_dir(&folder)?;
    let tmp = state.join("canary.zdeploy-tmp");
    remove_link(&tmp)?;
    fsx::symlink(Path::new(&folder_name), &tmp)?;
    fsx::rename(&tmp, &layout.canary_link())?;
    fsx::fsync_dir(&state)?;
    crate::failpoint::hit("canary.published");
    remove_folders_but(layout, Some(&folder_name))
}

/// End the canary for the web servers: the link goes, then its folders.
/// Whether there was a link.
fn unpublish(layout: &Layout) -> Result<bool> {
    let removed = remove_link(&layout.canary_link())?;
    if removed {
        fsx::fsync_dir(&layout.state_dir())?;
    }
    remove_folders_but(layout, None)?;
    Ok(removed)
}

/// Remove a link if it is there; whether it was.
fn remove_link(path: &Path) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if fsx::is_missing(&e) => Ok(false),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

fn remove_folders_but(layout: &Layout, keep: Option<&str>) -> Result<()> {
    let state = layout.state_dir();
    for entry in fsx::read_dir(&state)? {
        let entry = entry.map_err(|e| Error::io("read", &state, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("canary-") && Some(name.as_ref()) != keep {
            fsx::remove_dir_all(&entry.path())?;
        }
    }
    Ok(())
}

/// Behind Apache: the map names the live release, and during a canary the
/// canary release for each of its buckets.
fn tell_apache(session: &Session<'_>, policy: &Policy, canary: &Canary) -> Result<()> {
    if let Some(apache) = policy.apache.as_ref().filter(|a| a.in_use()) {
        apache.show_canary(session.layout, &canary.live, canary)?;
        session.info(&format!(
            "Apache's map now names {} for the canary's buckets",
            canary.release
        ));
    }
    Ok(())
}

/// Instead of switching: sync the staged release and let it serve
/// `share` of clients. The deploy ends here; the canary runs until it is
/// promoted or aborted.
pub(crate) fn start(
    session: &Session<'_>,
    staged: Staged<'_>,
    policy: &Policy,
    share: Share,
) -> Result<DeployResult> {
    match sync(session, &staged, policy) {
        Ok(synced) => start_synced(session, staged, &synced, policy, share),
        Err(error) => {
            discard_release(session, &staged.name, &error.to_string())?;
            Err(error)
        }
    }
}

/// Start a canary of `staged`, whose sync is done (a fleet host syncs on
/// the controller's order, then starts its canary on the next).
pub fn start_synced(
    session: &Session<'_>,
    staged: Staged<'_>,
    synced: &Synced,
    policy: &Policy,
    share: Share,
) -> Result<DeployResult> {
    let layout = session.layout;
    let Live::Release(live) = staged.live.clone() else {
        discard_release(
            session,
            &staged.name,
            "a canary needs a live release to share clients with",
        )?;
        return Err(Error::Invalid(format!(
            "a canary needs a release of {} live to share clients with; deploy once without --canary",
            layout.context()
        )));
    };
    let canary = Canary {
        release: staged.name.clone(),
        live: live.clone(),
        share,
        started_ms: now_ms(),
        deployment: session.id,
    };
    let started = session.step(Step::Switch, || {
        if !staged.flushed || synced.wrote {
            fsx::sync_filesystem(layout.webroot())?;
        }
        publish(layout, &canary.release, Some(&canary))?;
        tell_apache(session, policy, &canary)
    });
    if let Err(error) = started {
        let _ = unpublish(layout);
        if let Some(apache) = &policy.apache {
            let _ = apache.point_at(layout, &live);
        }
        discard_release(session, &staged.name, &error.to_string())?;
        return Err(error);
    }
    session.history.record_canary_start(&canary)?;
    session.info(&format!(
        "canary: {} serves {}; {live} serves the rest. `zdeploy canary promote` switches everyone to it, `zdeploy canary abort` sends everyone back",
        canary.release,
        share.describe()
    ));
    Ok(DeployResult {
        deployment: session.id,
        outcome: DeployOutcome::Canary,
        release: Some(canary.release),
        previous: Some(live),
        commit: staged.commit,
        pruned: Vec::new(),
    })
}

/// How a canary ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    Promoted,
    Aborted,
}

impl Ending {
    pub fn as_str(self) -> &'static str {
        match self {
            Ending::Promoted => "promoted",
            Ending::Aborted => "aborted",
        }
    }
}

/// What promote or abort did.
#[derive(Debug, Clone, Serialize)]
pub struct Ended {
    pub deployment: i64,
    pub ending: Ending,
    /// The release live now.
    pub release: String,
    /// The canary's release.
    pub canary: String,
    pub pruned: Vec<String>,
}

/// End the running canary: `Promoted` switches everyone to its release,
/// `Aborted` sends everyone back to the live one (`why` is kept with the
/// release, which is marked failed).
pub fn end(
    layout: &Layout,
    policy: &Policy,
    ending: Ending,
    why: &str,
    options: &RunOptions,
    observer: &dyn Observer,
) -> Result<Ended> {
    let kind = match ending {
        Ending::Promoted => Kind::Promote,
        Ending::Aborted => Kind::Abort,
    };
    let session = Session::open(layout, kind, options, None, None, observer)?;
    let result = end_in_session(&session, policy, ending, why);
    session.finish(&result, |_| Outcome::Success)?;
    result
}

fn end_in_session(
    session: &Session<'_>,
    policy: &Policy,
    ending: Ending,
    why: &str,
) -> Result<Ended> {
    let layout = session.layout;
    session.step(Step::Recover, || {
        crate::steps::recover::recover(session, policy.apache.as_ref())
    })?;
    let Some(canary) = current(layout)? else {
        return Err(Error::Invalid(format!(
            "no canary of {} is running",
            layout.context()
        )));
    };
    if ending == Ending::Promoted && read_live(layout)? != Live::Release(canary.live.clone()) {
        return Err(Error::Invalid(format!(
            "the canary of {} began beside {}, which is no longer live; `zdeploy canary abort` ends it",
            canary.release, canary.live
        )));
    }
    session.history.set_deployment_target(
        session.id,
        Some(&canary.release),
        None,
        Some(why),
        Some(&canary.live),
    )?;
    let ended = match ending {
        Ending::Promoted => promote(session, policy, &canary),
        Ending::Aborted => abort(session, policy, &canary, why),
    };
    match &ended {
        Ok(_) => session
            .history
            .record_canary_end(canary.deployment, ending, session.id, why)?,
        // A promote that failed after its switch (its after_switch or
        // health check switched back) ended the canary all the same.
        Err(error) if current(layout)?.is_none() => session.history.record_canary_end(
            canary.deployment,
            Ending::Aborted,
            session.id,
            &format!("{} failed: {error}", ending.as_str()),
        )?,
        Err(_) => {}
    }
    ended
}

/// Carry into the canary release what the live one's users wrote since
/// the canary began, switch everyone to it (the usual switch, settle and
/// prune), then retire the canary folder.
fn promote(session: &Session<'_>, policy: &Policy, canary: &Canary) -> Result<Ended> {
    let layout = session.layout;
    let started_ms = now_ms();
    let manifest = session.history.manifest(&canary.release)?;
    let live_manifest = session.history.manifest(&canary.live)?;
    let deployed = Deployed::listed_or(manifest.as_ref(), Deployed::Everything);
    // Both releases were written by users since the canary began: the
    // canary's own writes stay, the live one's newer ones are carried in.
    session.step(Step::Sync, || {
        carry_logged(
            session,
            Step::Sync,
            &layout.release_path(&canary.live),
            Deployed::listed_or(live_manifest.as_ref(), Deployed::Nothing),
            &layout.release_path(&canary.release),
            deployed,
            &policy.shared,
            Pass::Late {
                since: late_writes_since(Some(canary.started_ms)),
            },
            false,
            None,
        )
    })?;
    session
        .history
        .set_release_state(&canary.release, ReleaseState::Complete, None)?;
    let staged = Staged {
        name: canary.release.clone(),
        commit: session
            .history
            .release(&canary.release)?
            .and_then(|r| r.commit),
        manifest,
        fresh: false,
        live: Live::Release(canary.live.clone()),
        carry_started_ns: None,
        carried_all_linked: false,
        flushed: false,
    };
    let synced = Synced {
        started_ms,
        all_linked: false,
        wrote: true,
    };
    let switched = switch(session, &staged, &synced, policy)?;
    // Clients of the canary's buckets resolve it through the canary folder
    // until the folder names the release everyone has now.
    publish(layout, &canary.release, None)?;
    let kept_failure = after_switch(session, &switched, policy, OnFailure::SwitchBackIfChecked)?;
    check_live(session, &switched, policy)?;
    crate::steps::settle::settle_switched(session, &staged, &synced, &switched, policy);
    unpublish(layout)?;
    session.info(&format!(
        "canary promoted: {} serves everyone",
        canary.release
    ));
    let pruned = prune_after_switch(session, policy);
    if let Some(error) = kept_failure {
        return Err(error);
    }
    Ok(Ended {
        deployment: session.id,
        ending: Ending::Promoted,
        release: canary.release.clone(),
        canary: canary.release.clone(),
        pruned,
    })
}

/// Abort the canary this session started (a fleet host whose fleet failed
/// after the hosts' canaries began), as `zdeploy canary abort` would.
pub fn abort_started(session: &Session<'_>, policy: &Policy, why: &str) -> Result<Ended> {
    let Some(canary) = current(session.layout)? else {
        return Err(Error::Invalid(format!(
            "no canary of {} is running to abort",
            session.layout.context()
        )));
    };
    let ended = abort(session, policy, &canary, why)?;
    session
        .history
        .record_canary_end(canary.deployment, Ending::Aborted, session.id, why)?;
    Ok(ended)
}

/// Send everyone back to the live release, then carry into it what the
/// canary's users wrote; the canary release is marked failed.
fn abort(session: &Session<'_>, policy: &Policy, canary: &Canary, why: &str) -> Result<Ended> {
    let layout = session.layout;
    let live = match read_live(layout)? {
        Live::Release(name) => name,
        _ => canary.live.clone(),
    };
    // Failed and retired first: a run killed after the switch below
    // leaves a release that prune carries late writes out of, never one
    // recover removes as unfinished.
    session
        .history
        .mark_retired(&canary.release, now_ms(), canary.started_ms)?;
    session.history.set_release_state(
        &canary.release,
        ReleaseState::Failed,
        Some(&format!("canary aborted: {why}")),
    )?;
    session.step(Step::Switch, || {
        publish(layout, &live, None)?;
        if let Some(apache) = &policy.apache {
            apache.point_at(layout, &live)?;
        }
        Ok(())
    })?;
    session.info(&format!(
        "canary aborted: {live} serves everyone again; {} is marked failed and rollbacks skip it",
        canary.release
    ));
    let live_manifest = session.history.manifest(&live)?;
    settle(
        session,
        &canary.release,
        &live,
        Deployed::listed_or(live_manifest.as_ref(), Deployed::Everything),
        policy,
        canary.started_ms,
        false,
    );
    unpublish(layout)?;
    Ok(Ended {
        deployment: session.id,
        ending: Ending::Aborted,
        release: live,
        canary: canary.release.clone(),
        pruned: Vec::new(),
    })
}

/// Step `recover`, for canaries. A promote killed after its switch left
/// the canary naming the release now live: it is over. A canary whose
/// release is gone would send its buckets nowhere: it ends. A canary
/// folder left without a canary (a killed promote or abort) goes.
pub(crate) fn recover(
    session: &Session<'_>,
    live: &Live,
    apache: Option<&crate::apache::ApacheMap>,
) -> Result<()> {
    let layout = session.layout;
    let ended = match current(layout)? {
        None => {
            if unpublish(layout)? {
                session.info("removed the canary folder a killed promote or abort left");
            }
            return Ok(());
        }
        Some(canary) if *live == Live::Release(canary.release.clone()) => Some((
            canary,
            Ending::Promoted,
            "a promote was killed after its switch; recover finished it",
        )),
        Some(canary)
            if fsx::metadata_if_exists(&layout.release_path(&canary.release))?.is_none() =>
        {
            Some((canary, Ending::Aborted, "its release is gone"))
        }
        Some(_) => None,
    };
    if let Some((canary, ending, why)) = ended {
        if let (Some(apache), Live::Release(name)) = (apache, live) {
            apache.point_at(layout, name)?;
        }
        unpublish(layout)?;
        session
            .history
            .record_canary_end(canary.deployment, ending, session.id, why)?;
        session.warn(&format!(
            "the canary of {} is {}: {why}",
            canary.release,
            ending.as_str()
        ));
    }
    Ok(())
}

/// A canary as the history keeps it.
#[derive(Debug, Clone, Serialize)]
pub struct CanaryRecord {
    #[serde(flatten)]
    pub canary: Canary,
    /// "running", "promoted" or "aborted".
    pub outcome: String,
    pub ended_ms: Option<i64>,
    /// The promote or abort run.
    pub ended_by: Option<i64>,
    pub why: Option<String>,
}

impl History {
    fn record_canary_start(&self, canary: &Canary) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO canaries (deployment_id, release, live, buckets, started_ms, outcome)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'running')",
                params![
                    canary.deployment,
                    canary.release,
                    canary.live,
                    canary.share.buckets,
                    canary.started_ms
                ],
            )
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    fn record_canary_end(&self, deployment: i64, ending: Ending, by: i64, why: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE canaries SET outcome = ?2, ended_ms = ?3, ended_by = ?4, why = ?5 WHERE deployment_id = ?1",
                params![deployment, ending.as_str(), now_ms(), by, why],
            )
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    /// The canary `deployment` started, if it started one.
    pub fn deployment_canary(&self, deployment: i64) -> Result<Option<CanaryRecord>> {
        self.conn
            .query_row(
                "SELECT deployment_id, release, live, buckets, started_ms, outcome, ended_ms, ended_by, why
                 FROM canaries WHERE deployment_id = ?1",
                params![deployment],
                |row| {
                    Ok(CanaryRecord {
                        canary: Canary {
                            deployment: row.get(0)?,
                            release: row.get(1)?,
                            live: row.get(2)?,
                            share: Share {
                                buckets: row.get(3)?,
                            },
                            started_ms: row.get(4)?,
                        },
                        outcome: row.get(5)?,
                        ended_ms: row.get(6)?,
                        ended_by: row.get(7)?,
                        why: row.get(8)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.fail(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_round_to_buckets_and_refuse_what_is_no_share() {
        assert_eq!(Share::parse("10%").unwrap().buckets, 26);
        assert_eq!(Share::parse(" 50 %").unwrap().buckets, 128);
        assert_eq!(Share::parse("0.1%").unwrap().buckets, 1);
        assert_eq!(Share::parse("99.9%").unwrap().buckets, 255);
        for bad in ["0%", "100%", "10", "-5%", "ten%", "", "nan%"] {
            assert!(Share::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_canary_serves_as_many_distinct_buckets_as_its_share() {
        let canary = Canary {
            release: "ROOT_20261207-101010".into(),
            live: "ROOT_20261207-090000".into(),
            share: Share { buckets: 200 },
            started_ms: 0,
            deployment: 1,
        };
        let mut buckets = canary.buckets();
        assert_eq!(buckets, canary.buckets(), "the same on every host");
        buckets.sort();
        buckets.dedup();
        assert_eq!(buckets.len(), 200);
    }
}
