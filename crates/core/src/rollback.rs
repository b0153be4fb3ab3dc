//! Rollback: lock and recover, then an existing release staged (late writes
//! rescued out of it, the live user content carried in), synced, switched
//! to and settled: the deploy's own steps with another target.

use crate::error::{Error, Result};
use crate::history::{Kind, Outcome};
use crate::inventory::releases_on_disk;
use crate::layout::Layout;
use crate::policy::Policy;
use crate::release::ReleaseState;
use crate::session::{Observer, RunOptions, Session, Step};
use crate::steps::after_switch::{OnFailure, after_switch};
use crate::steps::stage::stage_existing;
use crate::steps::switch::{switch, sync};
use crate::switch::{Live, read_live};
use crate::upkeep::resolve_release_name;

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
    /// Roll back only if this release is still the live one (the watch
    /// switching back the release it judged, not a newer one).
    pub only_from: Option<String>,
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
    crate::canary::refuse_while_running(layout)?;
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
    if let Some(judged) = plan
        .only_from
        .as_deref()
        .filter(|judged| *judged != current)
    {
        return Err(Error::Invalid(format!(
            "{judged} is no longer live ({current} is): nothing switched back"
        )));
    }
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
    warn_of_schema_steps_since(session, &target)?;

    let staged = stage_existing(session, &target, &plan.policy)?;
    let synced = sync(session, &staged, &plan.policy)?;
    let switched = switch(session, &staged, &synced, &plan.policy)?;
    let kept_failure = after_switch(session, &switched, &plan.policy, OnFailure::Keep)?;
    crate::steps::settle::settle_switched(session, &staged, &synced, &switched, &plan.policy);
    if let Some(error) = kept_failure {
        return Err(error);
    }
    Ok(RollbackResult {
        deployment: session.id,
        release: target,
        previous: current,
    })
}

/// A rollback brings back code, not the database: name each schema step
/// (a `once` step, a migration) that ran since `target` was made.
fn warn_of_schema_steps_since(session: &Session<'_>, target: &str) -> Result<()> {
    let Some(made_ms) = session.history.release(target)?.map(|r| r.created_ms) else {
        return Ok(());
    };
    for run in session.history.once_runs_since(target, made_ms)? {
        session.warn(&format!(
            "{target} is older than the schema step '{}' (deployment #{}, for {}): the rollback does not undo it, \
             so {target}'s code meets the schema it left; migrations that only add are safe, others need \
             their own way back",
            run.command, run.deployment, run.release
        ));
    }
    Ok(())
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
