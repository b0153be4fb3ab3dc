//! A canary on a fleet over ssh ends as one: every host is asked which
//! canary it runs (they must agree on one release), then each promotes or
//! aborts that release with `--release`. A host that did so already (a run
//! cut short, then run again) says so and counts as done, so running the
//! command again brings the whole fleet to one release.

use anyhow::{Result, bail};
use zdeploy_core::canary::{Canary, Ending};

use crate::config::AppConfig;
use crate::fleet::remote_command::{Answer, fail_if_any_failed, host_args, run_everywhere, show};
use crate::fleet::settings::FleetSettings;
use crate::output::out;

/// `zdeploy canary promote|abort` on every host of `fleet`; `why` is told
/// to the app's `notify` targets once, for the fleet.
pub fn end(
    app: &AppConfig,
    fleet: &FleetSettings,
    ending: Ending,
    why: &str,
    json: bool,
) -> Result<()> {
    let release = running_canary(app, fleet)?;
    let mut args = host_args();
    args.extend(["--release".to_string(), release.clone()]);
    let answers = run_everywhere(app, fleet, &args)?;
    show(&answers, json)?;
    let ended = fail_if_any_failed(&answers);
    crate::canary::tell_fleet(app, ending, why, &release, &answers, &ended);
    if ended.is_ok() && !json {
        out!(
            "{}: canary {release} {} on {} hosts",
            app.layout.context(),
            ending.as_str(),
            answers.len()
        );
    }
    ended
}

/// The release of the canary the hosts run: every host must answer, and
/// those running one must run the same.
fn running_canary(app: &AppConfig, fleet: &FleetSettings) -> Result<String> {
    let args = status_args(host_args());
    let answers = run_everywhere(app, fleet, &args)?;
    let mut releases: Vec<String> = Vec::new();
    let mut unanswered = Vec::new();
    for answer in &answers {
        match canary_of(answer) {
            Ok(Some(canary)) if !releases.contains(&canary.release) => {
                releases.push(canary.release)
            }
            Ok(_) => {}
            Err(why) => unanswered.push(format!("{}: {why}", answer.host)),
        }
    }
    if !unanswered.is_empty() {
        bail!(
            "cannot learn which canary every host runs, so nothing was changed: {}",
            unanswered.join("; ")
        );
    }
    match releases.as_slice() {
        [release] => Ok(release.clone()),
        [] => bail!(
            "no canary of {} is running on any host of the fleet",
            app.layout.context()
        ),
        _ => bail!(
            "the hosts run different canaries ({}); end each with `zdeploy canary abort --host HOST`",
            releases.join(", ")
        ),
    }
}

/// `canary promote|abort …` as `canary status … --json`.
fn status_args(mut args: Vec<String>) -> Vec<String> {
    if let Some(action) = args
        .iter()
        .position(|a| a == "canary")
        .map(|i| i + 1)
        .filter(|i| *i < args.len())
    {
        args[action] = "status".into();
    }
    if !args.iter().any(|a| a == "--json") {
        args.push("--json".into());
    }
    args
}

fn canary_of(answer: &Answer) -> Result<Option<Canary>, String> {
    if answer.code != 0 {
        let said = answer.stderr.lines().rfind(|l| !l.trim().is_empty());
        return Err(format!(
            "exit {}: {}",
            answer.code,
            said.unwrap_or("no answer")
        ));
    }
    let status: serde_json::Value =
        serde_json::from_str(&answer.stdout).map_err(|e| format!("unreadable status: {e}"))?;
    serde_json::from_value(status["canary"].clone()).map_err(|e| format!("unreadable canary: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_asked_first_is_the_same_command_as_status() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            status_args(args(&["canary", "promote", "shop", "--reason", "ok"])),
            args(&["canary", "status", "shop", "--reason", "ok", "--json"])
        );
        assert_eq!(
            status_args(args(&["-q", "canary", "abort", "--json"])),
            args(&["-q", "canary", "status", "--json"])
        );
    }
}
