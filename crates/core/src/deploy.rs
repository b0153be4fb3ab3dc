//! A deploy on one host (DESIGN.md "One deploy"): lock, recover, then the
//! release staged, synced and switched to at once, settled and pruned. Any
//! failure before the switch removes the new release and leaves the live one
//! untouched.

use crate::error::Result;
use crate::history::{Kind, Outcome};
use crate::layout::Layout;
use crate::policy::{DeployOutcome, DeployPlan, DeployResult};
use crate::session::{Observer, RunOptions, Session, Step};
use crate::steps::after_switch::{OnFailure, after_switch};
use crate::steps::discard::discard_release;
use crate::steps::prune::prune_after_switch;
use crate::steps::recover::recover;
use crate::steps::settle::settle_switched;
use crate::steps::stage::{Staging, stage};
use crate::steps::switch::{check_live, switch, sync};

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
    session.finish(&result, |r| match r.outcome {
        DeployOutcome::Unchanged => Outcome::Unchanged,
        DeployOutcome::Deployed => Outcome::Success,
    })?;
    // A downloaded archive is only needed during the run (recover removes
    // it when a run is killed).
    let _ = std::fs::remove_dir_all(layout.download_dir());
    result
}

fn run(session: &Session<'_>, plan: &DeployPlan) -> Result<DeployResult> {
    let policy = &plan.policy;
    session.step(Step::Recover, || recover(session, policy.apache.as_ref()))?;
    let staged = match stage(session, plan, None)? {
        Staging::Done(result) => return Ok(result),
        Staging::Staged(staged) => staged,
    };
    let synced = match sync(session, &staged, policy) {
        Ok(synced) => synced,
        Err(error) => {
            discard_release(session, &staged.name, &error.to_string())?;
            return Err(error);
        }
    };
    let switched = switch(session, &staged, &synced, policy)?;
    crate::maintenance::close_after_switch(session);
    let kept_failure = after_switch(session, &switched, policy, OnFailure::SwitchBackIfChecked)?;
    check_live(session, &switched, policy)?;
    settle_switched(session, &staged, &synced, &switched, policy);
    let pruned = prune_after_switch(session, policy);
    if let Some(error) = kept_failure {
        return Err(error);
    }
    Ok(DeployResult {
        deployment: session.id,
        outcome: DeployOutcome::Deployed,
        release: Some(switched.name),
        previous: switched.previous,
        commit: staged.commit,
        pruned,
    })
}
