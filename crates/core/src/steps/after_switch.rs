//! Step `after_switch`: the app's commands that run in the new live release
//! once it is live (a queue restart, a cache warmup, a FrankenPHP reload),
//! as build steps run: as the build user, each within the build timeout.
//! With a health URL a failing command counts as a failed check and the
//! previous release comes back; without one the release stays live and the
//! failure is the run's.

use crate::build::{release_env, run_command};
use crate::error::{Error, Result};
use crate::once_runs::run_once;
use crate::policy::Policy;
use crate::session::{Session, Step, human_duration};
use crate::steps::switch::{Switched, switched_back_after};

/// What a failed command does to the release that just went live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Switch back when the app has a health URL (a deploy).
    SwitchBackIfChecked,
    /// Keep it live (a rollback the operator asked for).
    Keep,
}

/// Run the after_switch commands. `Err` when the release was switched back
/// (or could not be); `Ok(Some(error))` when a command failed and the
/// release stays live, for the caller to report once the run is settled.
pub fn after_switch(
    session: &Session<'_>,
    switched: &Switched,
    policy: &Policy,
    on_failure: OnFailure,
) -> Result<Option<Error>> {
    if policy.after_switch.is_empty() {
        return Ok(None);
    }
    let layout = session.layout;
    let release_dir = layout.release_path(&switched.name);
    let mut env = release_env(layout, &release_dir);
    env.push((
        "ZDEPLOY_PREVIOUS",
        switched.previous.clone().unwrap_or_default(),
    ));
    let ran = session.step(Step::AfterSwitch, || {
        for command in &policy.after_switch {
            let once = command.once;
            let command = &command.run;
            session.info(&format!("after_switch: running {command}"));
            let started = std::time::Instant::now();
            let run = || {
                run_command(
                    command,
                    &release_dir,
                    &env,
                    policy.privileges.build_user.as_ref(),
                    None,
                    policy.build_timeout,
                    &mut |line| session.debug(&format!("after_switch | {line}")),
                )
                .map_err(|why| Error::Build(format!("after_switch: {why}")))
            };
            if once {
                let commit = session
                    .history
                    .release(&switched.name)?
                    .and_then(|r| r.commit);
                run_once(session, command, &switched.name, commit.as_deref(), run)?;
            } else {
                run()?;
            }
            session.info(&format!(
                "after_switch: {command} done in {}",
                human_duration(started.elapsed())
            ));
        }
        Ok(())
    });
    let Err(error) = ran else {
        return Ok(None);
    };
    let checked = policy.health.as_ref().is_some_and(|h| h.url.is_some());
    if checked && on_failure == OnFailure::SwitchBackIfChecked {
        return Err(switched_back_after(session, switched, policy, &error));
    }
    session.warn(&format!("{error}; {} stays live", switched.name));
    Ok(Some(Error::Build(format!(
        "{error}; {} serves {} (a deploy with a health url switches back when an after_switch command fails)",
        layout.context(),
        switched.name
    ))))
}
