//! A deploy on one host (DESIGN.md "One deploy"): lock, recover, then the
//! release staged, synced and switched to at once, settled and pruned. Any
//! failure before the switch removes the new release and leaves the live one
//! untouched.

use crate::error::Result;
use crate::history::{Kind, Outcome};
use crate::layout::Layout;
use crate::policy::{DeployOutcome, DeployPlan, DeployResult, Policy};
use crate::release_copy::CopySource;
use crate::session::{Observer, RunOptions, Session, Step};
use crate::steps::after_switch::{OnFailure, after_switch};
use crate::steps::discard::discard_release;
use crate::steps::prune::prune_after_switch;
use crate::steps::recover::recover;
use crate::steps::settle::settle_switched;
use crate::steps::stage::{Staged, Staging, allocate_name, stage, stage_copy, unchanged};
use crate::steps::switch::{check_live, switch, sync};
use crate::switch::{Live, read_live};

pub fn deploy(
    layout: &Layout,
    plan: &DeployPlan,
    options: &RunOptions,
    observer: &dyn Observer,
) -> Result<DeployResult> {
    let shown = plan.source.shown();
    let opened = Opened {
        layout,
        options,
        observer,
    };
    opened.run(plan, &shown, |session| run(session, plan))
}

/// What a deploy's session is opened with.
struct Opened<'a> {
    layout: &'a Layout,
    options: &'a RunOptions,
    observer: &'a dyn Observer,
}

impl Opened<'_> {
    /// Open a deploy's session (its source shown as `shown`), do `work`
    /// in it, and record how it ended.
    fn run(
        &self,
        plan: &DeployPlan,
        shown: &str,
        work: impl FnOnce(&Session<'_>) -> Result<DeployResult>,
    ) -> Result<DeployResult> {
        plan.policy
            .privileges
            .check_commands(plan.policy.release_commands())?;
        let session = Session::open(
            self.layout,
            Kind::Deploy,
            self.options,
            Some(shown),
            plan.reference.as_deref(),
            self.observer,
        )?;
        let result = work(&session);
        session.finish(&result, |r| match r.outcome {
            DeployOutcome::Unchanged => Outcome::Unchanged,
            DeployOutcome::Deployed | DeployOutcome::Canary => Outcome::Success,
        })?;
        // A downloaded archive is only needed during the run (recover
        // removes it when a run is killed).
        let _ = std::fs::remove_dir_all(self.layout.download_dir());
        result
    }
}

fn run(session: &Session<'_>, plan: &DeployPlan) -> Result<DeployResult> {
    session.step(Step::Recover, || {
        recover(session, plan.policy.apache.as_ref())
    })?;
    crate::canary::refuse_while_running(session.layout)?;
    let mut canary = plan.canary;
    if canary.is_some() && !matches!(read_live(session.layout)?, Live::Release(_)) {
        session.info(&format!(
            "no release of {} is live to share clients with: this deploy switches everyone, without a canary",
            session.layout.context()
        ));
        canary = None;
    }
    match stage(session, plan, None)? {
        Staging::Done(result) => Ok(result),
        Staging::Staged(staged) => match canary {
            // A migration that needed a window: the live release cannot
            // serve the new schema, so nobody stays on it.
            Some(_) if migrated_in_window(session)? => {
                session.info(
                    "a build step needed a maintenance window (the live release cannot serve what it changed): switching everyone instead of starting a canary",
                );
                go_live(session, staged, &plan.policy)
            }
            Some(share) => crate::canary::start(session, staged, &plan.policy, share),
            None => go_live(session, staged, &plan.policy),
        },
    }
}

/// Whether this run opened a maintenance window (for a build step that
/// changes what the live release needs).
pub fn migrated_in_window(session: &Session<'_>) -> Result<bool> {
    Ok(crate::maintenance::current(session.layout)?
        .is_some_and(|window| window.deployment == Some(session.id)))
}

/// Deploy `plan` (prebuilt) as a copy of another app's live release, by
/// digest: staging's release promoted to production. Its `once` build
/// entries and `after_switch` run here, with this app's shared paths.
pub fn promote(
    layout: &Layout,
    plan: &DeployPlan,
    promotion: &mut Promotion<'_>,
    options: &RunOptions,
    observer: &dyn Observer,
) -> Result<DeployResult> {
    let opened = Opened {
        layout,
        options,
        observer,
    };
    let shown = promotion.from.clone();
    opened.run(plan, &shown, |session| {
        run_promotion(session, plan, promotion)
    })
}

fn run_promotion(
    session: &Session<'_>,
    plan: &DeployPlan,
    promotion: &mut Promotion<'_>,
) -> Result<DeployResult> {
    let layout = session.layout;
    session.step(Step::Recover, || {
        recover(session, plan.policy.apache.as_ref())
    })?;
    crate::canary::refuse_while_running(layout)?;
    let live = read_live(layout)?;
    let live_digest = match live.record_name(layout) {
        Some(name) => session
            .history
            .release(name)?
            .and_then(|r| r.content_digest),
        None => None,
    };
    if live_digest.as_deref() == Some(promotion.copy.digest.as_str()) && !plan.force {
        session.info(&format!(
            "{} serves this content already (digest {}); nothing to do (--force deploys anyway)",
            layout.context(),
            crate::release::short(&promotion.copy.digest)
        ));
        return Ok(unchanged(session, &live, promotion.commit.clone()));
    }
    session.info(&format!(
        "promoting {} (digest {})",
        promotion.from,
        crate::release::short(&promotion.copy.digest)
    ));
    let name = allocate_name(layout)?;
    let staged = stage_copy(
        session,
        plan,
        &name,
        promotion.commit.clone(),
        &mut promotion.copy,
    )?;
    go_live(session, staged, &plan.policy)
}

/// Another app's live release to promote: its files as a copy source.
pub struct Promotion<'a> {
    /// What is promoted, as the history records the source ("staging's
    /// ROOT_20261207-103000").
    pub from: String,
    pub commit: Option<String>,
    pub copy: CopySource<'a>,
}

/// Sync, switch, settle and prune a staged release: the part of a deploy
/// after its stage.
fn go_live(session: &Session<'_>, staged: Staged<'_>, policy: &Policy) -> Result<DeployResult> {
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
