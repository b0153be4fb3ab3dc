//! Rollback: steps lock, recover, carry, sync, switch and settle with an
//! existing release as the target.

use crate::carry::{Deployed, Pass};
use crate::error::{Error, Result};
use crate::history::{Kind, Outcome, now_ms};
use crate::inventory::releases_on_disk;
use crate::layout::Layout;
use crate::maintenance::resolve_release_name;
use crate::policy::Policy;
use crate::release::ReleaseState;
use crate::session::{Observer, RunOptions, Session, Step};
use crate::steps::carry::{MARK_MARGIN_NS, carry_logged, late_writes_since, now_ns};
use crate::steps::settle::settle;
use crate::steps::switch::tell_apache;
use crate::switch::{Live, read_live, switch_to};

#[derive(Debug, Clone, serde::Serialize)]
pub struct RollbackResult {
    pub deployment: i64,
    pub release: String,
    pub previous: String,
}

pub struct RollbackPlan {
    /// `None`: the newest release older than the live one.
    pub target: Option<String>,
    pub policy: Policy,
}

pub fn rollback(
    layout: &Layout,
    plan: &RollbackPlan,
    options: &RunOptions,
    observer: &dyn Observer,
) -> Result<RollbackResult> {
    let session = Session::open(layout, Kind::Rollback, options, None, None, observer)?;
    let result = run(&session, plan);
    session.finish(&result, |_| Outcome::Success)?;
    result
}

fn run(session: &Session<'_>, plan: &RollbackPlan) -> Result<RollbackResult> {
    let layout = session.layout;
    session.step(Step::Recover, || {
        crate::steps::recover::recover(session, plan.policy.apache.as_ref())
    })?;
    let current = match read_live(layout)? {
        Live::Release(name) => name,
        Live::Folder => {
            return Err(Error::Invalid(format!(
                "{} is a real folder (plain mode or never deployed by zdeploy): there is no release to roll back from",
                layout.context_path().display()
            )));
        }
        Live::Nothing => {
            return Err(Error::Invalid(format!(
                "nothing is deployed at {}",
                layout.context_path().display()
            )));
        }
    };
    let target = match &plan.target {
        Some(given) => {
            let name = resolve_release_name(layout, given)?;
            if name == current {
                return Err(Error::Invalid(format!("{name} is already live")));
            }
            if let Some(record) = session.history.release(&name)?
                && matches!(
                    record.state,
                    ReleaseState::Building | ReleaseState::Staged | ReleaseState::Failed
                )
            {
                return Err(Error::Invalid(format!(
                    "{name} is {} ({}); roll back to a complete release",
                    record.state,
                    record.note.unwrap_or_default()
                )));
            }
            name
        }
        None => previous_release(session, &current)?,
    };
    let commit = session.history.release(&target)?.and_then(|r| r.commit);
    session.history.set_deployment_target(
        session.id,
        Some(&target),
        commit.as_deref(),
        None,
        Some(&current),
    )?;
    session.info(&format!(
        "rolling back {} from {current} to {target}",
        layout.context()
    ));

    let current_dir = layout.release_path(&current);
    let target_dir = layout.release_path(&target);
    let current_manifest = session.history.manifest(&current)?;
    // A release without a manifest: everything in it counts as deployed.
    let target_manifest = session.history.manifest(&target)?;
    let target_deployed = Deployed::listed_or(target_manifest.as_ref(), Deployed::Everything);
    let current_deployed = Deployed::listed_or(current_manifest.as_ref(), Deployed::Nothing);
    let target_record = session.history.release(&target)?;
    let carry_started_ns = now_ns();
    let carried = session.step(Step::Carry, || {
        // The target may hold what requests wrote after it stopped being
        // live: bring that into the live release first, so that making the
        // target's user content the live one's loses none of it.
        if let (Some(manifest), Some(record)) = (&target_manifest, &target_record)
            && record.retired_ms.is_some()
        {
            let since = late_writes_since(record.carried_ms);
            carry_logged(
                session,
                Step::Carry,
                &target_dir,
                Deployed::Listed(manifest),
                &current_dir,
                Deployed::listed_or(current_manifest.as_ref(), Deployed::Everything),
                &plan.policy.shared,
                Pass::Late { since },
                false,
            )?;
        }
        carry_logged(
            session,
            Step::Carry,
            &current_dir,
            current_deployed,
            &target_dir,
            target_deployed,
            &plan.policy.shared,
            Pass::Mirror { since: None },
            false,
        )
    })?;
    let sync_started_ms = now_ms();
    let synced = session.step(Step::Sync, || {
        carry_logged(
            session,
            Step::Sync,
            &current_dir,
            current_deployed,
            &target_dir,
            target_deployed,
            &plan.policy.shared,
            Pass::Mirror {
                since: Some(carry_started_ns - MARK_MARGIN_NS),
            },
            carried.all_linked(),
        )
    })?;
    session.step(Step::Switch, || {
        switch_to(layout, &target, None)?;
        match &plan.policy.apache {
            Some(apache) => tell_apache(session, apache, &target, Some(&current)),
            None => Ok(()),
        }
    })?;
    session
        .history
        .mark_retired(&current, now_ms(), sync_started_ms)?;
    session.history.mark_live(&target)?;
    session.info(&format!("{} now serves {target}", layout.context()));
    settle(
        session,
        &current,
        &target,
        target_deployed,
        &plan.policy,
        sync_started_ms,
        carried.all_linked() && synced.all_linked(),
    );
    Ok(RollbackResult {
        deployment: session.id,
        release: target,
        previous: current,
    })
}

/// The newest complete timestamped release older than `current` (or, when
/// `current` is a kept release, the newest timestamped one).
fn previous_release(session: &Session<'_>, current: &str) -> Result<String> {
    let releases = releases_on_disk(session.layout)?;
    let current_stamp = releases
        .iter()
        .find(|r| r.name == current)
        .and_then(|r| r.stamp());
    let mut older: Vec<_> = releases
        .into_iter()
        .filter(|r| r.name != current)
        .filter(|r| match (r.stamp(), current_stamp) {
            (Some(s), Some(c)) => s < c,
            (Some(_), None) => true,
            (None, _) => false,
        })
        .collect();
    older.reverse();
    for candidate in older {
        let usable = session
            .history
            .release(&candidate.name)?
            .is_none_or(|r| r.state == ReleaseState::Complete);
        if usable {
            return Ok(candidate.name);
        }
    }
    Err(Error::Invalid(format!(
        "no earlier release of {} to roll back to (name one: zdeploy releases lists them)",
        session.layout.context()
    )))
}
