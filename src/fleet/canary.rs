//! A canary on a fleet over ssh ends as one: every host is asked which
//! canary it runs (they must agree on one release), then each promotes or
//! aborts that release with `--release`. A host that did so already (a run
//! cut short, then run again) says so and counts as done, so running the
//! command again brings the whole fleet to one release. Judged by its
//! traffic, a fleet's canary is judged by every host's together, at the end
//! of its window.

use anyhow::{Result, bail};
use serde::Serialize;
use zdeploy_core::canary::{Canary, Ending};
use zdeploy_core::history::Kind;
use zdeploy_core::traffic::{Figures, Tally};
use zdeploy_core::watch::{Verdict, WatchPolicy};

use crate::canary::CanaryTraffic;

use crate::config::AppConfig;
use crate::fleet::remote_command::{Answer, fail_if_any_failed, host_args, run_everywhere, show};
use crate::fleet::settings::FleetSettings;
use crate::notify::{Event, Notice, announce};
use crate::output::out;

/// `zdeploy canary promote|abort` on every host of `fleet`, told to the
/// app's `notify` targets once, for the fleet. With `release` named, the
/// hosts are not asked which canary they run first: each ends that one,
/// or says it did already.
pub fn end(
    app: &AppConfig,
    fleet: &FleetSettings,
    end_as: &EndAs<'_>,
    release: Option<&str>,
    json: bool,
) -> Result<()> {
    let mut args = host_args();
    let release = match release {
        Some(release) => release.to_string(),
        None => {
            let release = running_canary(app, fleet)?;
            args.extend(["--release".to_string(), release.clone()]);
            release
        }
    };
    let ending = end_as.ending;
    let (answers, ended) = end_release(app, fleet, end_as, &release, &args)?;
    show(&answers, json)?;
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

/// End the canary of `release` on every host, as `args` (`canary promote`
/// or `abort` with their options) asks, and tell the app's `notify`
/// targets once: each host's answer, and whether every host did.
fn end_release(
    app: &AppConfig,
    fleet: &FleetSettings,
    end_as: &EndAs<'_>,
    release: &str,
    args: &[String],
) -> Result<(Vec<Answer>, Result<()>)> {
    let answers = run_everywhere(app, fleet, args)?;
    let ended = fail_if_any_failed(&answers);
    tell(app, end_as, release, &answers, &ended);
    Ok((answers, ended))
}

/// Tell the app's `notify` targets how ending the canary of `release`
/// went, once for every host.
fn tell(
    app: &AppConfig,
    end_as: &EndAs<'_>,
    release: &str,
    answers: &[Answer],
    ended: &Result<()>,
) {
    let kind = match end_as.ending {
        Ending::Promoted => Kind::Promote.as_str(),
        Ending::Aborted => Kind::Abort.as_str(),
    };
    let mut notice = Notice::new(app, Event::Failed, kind, end_as.trigger);
    notice.hosts = answers.iter().map(|a| a.host.clone()).collect();
    match (ended, end_as.ending) {
        (Ok(()), Ending::Promoted) => {
            notice.event = Event::Succeeded;
            notice.release = Some(release.to_string());
        }
        (Ok(()), Ending::Aborted) => {
            notice.event = Event::SwitchedBack;
            notice.previous = Some(release.to_string());
            notice.error = Some(format!("the canary {release} was aborted: {}", end_as.why));
        }
        (Err(error), _) => notice.error = Some(format!("{error:#}")),
    }
    announce(app, notice);
}

/// How a fleet's canary ends, why, and who asked.
pub struct EndAs<'a> {
    pub ending: Ending,
    pub why: &'a str,
    pub trigger: &'a str,
}

/// What judging a fleet's canary found, and how it ended.
#[derive(Debug, Serialize)]
pub struct FleetJudged {
    pub release: String,
    #[serde(flatten)]
    pub verdict: Verdict,
    /// What the canary's release served on every host.
    pub canary: Figures,
    /// What the live release served on every host meanwhile.
    pub live: Figures,
    /// `None` when the canary keeps running (a host did not answer).
    pub ending: Option<Ending>,
}

/// Collect every host's traffic for `policy.duration`, then judge the
/// fleet's canary by all of it: a breach aborts it on every host, the end
/// of the window promotes it. A host that cannot say what it served leaves
/// the canary running for people to decide.
pub fn judge(
    app: &AppConfig,
    fleet: &FleetSettings,
    policy: &WatchPolicy,
    say: &dyn Fn(&str),
) -> Result<FleetJudged> {
    let release = running_canary(app, fleet)?;
    say(&format!(
        "judging the canary {release} on {} hosts for {}s",
        fleet.hosts.len(),
        policy.duration.as_secs()
    ));
    let mut args = canary_args(app, "traffic");
    args.extend([
        "--for".to_string(),
        format!("{}s", policy.duration.as_secs().max(1)),
        "--json".to_string(),
    ]);
    let answers = run_everywhere(app, fleet, &args)?;
    if running_canary_if_any(app, fleet)?.as_ref() != Some(&release) {
        let why = "the canary was promoted or aborted meanwhile".to_string();
        say(&format!("stopped judging the canary {release}: {why}"));
        return Ok(FleetJudged {
            release,
            verdict: Verdict::Ended { why },
            canary: Figures::default(),
            live: Figures::default(),
            ending: None,
        });
    }
    let (mut tried, mut live) = (Tally::default(), Tally::default());
    let mut canary = None;
    let mut silent = Vec::new();
    for answer in &answers {
        match serde_json::from_str::<CanaryTraffic>(&answer.stdout) {
            Ok(traffic) if answer.code == 0 && traffic.canary.release == release => {
                tried.merge(&traffic.tried);
                live.merge(&traffic.live);
                canary = Some(traffic.canary);
            }
            _ => silent.push(answer.host.clone()),
        }
    }
    let (tried, live) = (tried.figures(), live.figures());
    let (Some(canary), []) = (canary, silent.as_slice()) else {
        say(&format!(
            "cannot judge the canary {release}: no figures from {}; it keeps serving until `zdeploy canary promote` or `abort`",
            silent.join(", ")
        ));
        return Ok(FleetJudged {
            release,
            verdict: Verdict::Unjudged {
                why: format!("no figures from {}", silent.join(", ")),
            },
            canary: tried,
            live,
            ending: None,
        });
    };
    let verdict = match policy.breach(&live, &tried) {
        Some(why) => Verdict::Breached { why },
        None => crate::canary::at_end(policy, &canary, &live, &tried),
    };
    let ending = match verdict {
        Verdict::Breached { .. } => Ending::Aborted,
        _ => Ending::Promoted,
    };
    let why = verdict.describe();
    say(&format!(
        "the canary {release} on every host: {why} (canary: {}; live: {}); {}",
        tried.describe(),
        live.describe(),
        match ending {
            Ending::Promoted => "promoting it",
            Ending::Aborted => "aborting it",
        }
    ));
    let mut args = canary_args(app, ending_action(ending));
    // As on one host, the window's verdict ends the canary, frozen or not.
    args.extend([
        "--release".into(),
        release.clone(),
        "--reason".into(),
        why.clone(),
        "--force".into(),
    ]);
    let end_as = EndAs {
        ending,
        why: &why,
        trigger: "canary judge",
    };
    let (_, ended) = end_release(app, fleet, &end_as, &release, &args)?;
    ended?;
    Ok(FleetJudged {
        release,
        verdict,
        canary: tried,
        live,
        ending: Some(ending),
    })
}

/// Before a newer deploy: abort the canary the fleet runs, if it runs one
/// (the newest deploy wins, as on one host); whether there was one.
pub fn abort_for_newer(app: &AppConfig, fleet: &FleetSettings, trigger: &str) -> Result<bool> {
    let Some(release) = running_canary_if_any(app, fleet)? else {
        return Ok(false);
    };
    let why = format!("a newer deploy replaces it ({trigger})");
    let mut args = canary_args(app, "abort");
    args.extend([
        "--release".into(),
        release.clone(),
        "--reason".into(),
        why.clone(),
    ]);
    let end_as = EndAs {
        ending: Ending::Aborted,
        why: &why,
        trigger,
    };
    let (_, ended) = end_release(app, fleet, &end_as, &release, &args)?;
    ended.map(|()| true)
}

/// `canary ACTION APP` for a host (the app by name, or by its webroot
/// and context when it has none).
fn canary_args(app: &AppConfig, action: &str) -> Vec<String> {
    let mut args = vec!["canary".to_string(), action.to_string()];
    match &app.name {
        Some(name) => args.push(name.clone()),
        None => args.extend([
            "--webroot".to_string(),
            app.layout.webroot().display().to_string(),
            "--context".to_string(),
            app.layout.context().to_string(),
        ]),
    }
    args
}

fn ending_action(ending: Ending) -> &'static str {
    match ending {
        Ending::Promoted => "promote",
        Ending::Aborted => "abort",
    }
}

/// The release of the canary the hosts run: every host must answer, and
/// those running one must run the same.
fn running_canary(app: &AppConfig, fleet: &FleetSettings) -> Result<String> {
    running_canary_if_any(app, fleet)?.ok_or_else(|| {
        anyhow::anyhow!(
            "no canary of {} is running on any host of the fleet",
            app.layout.context()
        )
    })
}

/// The release of the canary the hosts run, if they run one.
fn running_canary_if_any(app: &AppConfig, fleet: &FleetSettings) -> Result<Option<String>> {
    let mut args = canary_args(app, "status");
    args.push("--json".into());
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
        [release] => Ok(Some(release.clone())),
        [] => Ok(None),
        _ => bail!(
            "the hosts run different canaries ({}); end each with `zdeploy canary abort --host HOST`",
            releases.join(", ")
        ),
    }
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
