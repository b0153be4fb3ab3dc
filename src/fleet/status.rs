//! `zdeploy status` for a fleet: each host's live release, and whether the
//! fleet agrees on one.

use anyhow::Result;

use crate::config::AppConfig;
use crate::fleet::parallel::on_each;
use crate::fleet::remote_command::{
    Answer, fail_if_any_failed, host_args, run_everywhere, show as show_answers,
};
use crate::fleet::settings::FleetSettings;
use crate::fleet::ssh::Connection;
use crate::fleet::user_content::{Divergence, describe, divergences, fetch_lists, may_differ};
use crate::output::out;
use zdeploy_core::user_content::UserContentSummary;

pub fn show(app: &AppConfig, fleet: &FleetSettings, json: bool) -> Result<()> {
    let mut args = host_args();
    if !args.iter().any(|a| a == "--json") {
        args.push("--json".into());
    }
    let answers = run_everywhere(app, fleet, &args)?;
    let statuses = parsed(&answers);
    let live: Vec<Option<String>> = statuses
        .iter()
        .map(|s| {
            s.as_ref()
                .and_then(|s| s["live"].as_str())
                .map(str::to_string)
        })
        .collect();
    let agrees = live.iter().all(|l| l.is_some() && *l == live[0]);
    let uploads_differ = user_content_differences(app, fleet, &statuses);
    let runs = crate::fleet::record::recent(app, 10);
    if json {
        let hosts: Vec<serde_json::Value> = answers
            .iter()
            .zip(&statuses)
            .map(|(a, s)| serde_json::json!({ "host": a.host, "status": s, "errors": a.stderr }))
            .collect();
        out!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "agrees": agrees,
                "live": if agrees { live[0].clone() } else { None },
                "hosts": hosts,
                "user_content_differs": uploads_differ,
                "runs": runs,
            }))?
        );
        return fail_if_any_failed(&answers);
    }
    for ((answer, status), live) in answers.iter().zip(&statuses).zip(&live) {
        let commit = status
            .as_ref()
            .and_then(|s| s["live_release"]["commit"].as_str())
            .map(|c| format!(" (commit {})", zdeploy_core::release::short(c)))
            .unwrap_or_default();
        match live {
            Some(live) => out!("{}: live {live}{commit}", answer.host),
            None if answer.code == 0 => out!("{}: nothing deployed yet", answer.host),
            None => out!(
                "{}: unknown ({})",
                answer.host,
                answer.stderr.lines().next_back().unwrap_or("no answer")
            ),
        }
    }
    if agrees {
        out!(
            "fleet: every host serves {}",
            live[0].as_deref().unwrap_or("?")
        );
    } else {
        out!(
            "fleet: SPLIT — the hosts serve different releases; `zdeploy fleet converge{}` brings every host to the newest",
            app.name
                .as_ref()
                .map(|n| format!(" {n}"))
                .unwrap_or_default()
        );
    }
    if !uploads_differ.is_empty() {
        out!("fleet: {}", describe(&uploads_differ));
    }
    if !runs.is_empty() {
        out!("recent fleet runs from here:");
    }
    for run in &runs {
        let when = jiff::Timestamp::from_millisecond(run.started_ms)
            .map(|t| t.strftime("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default();
        let what = match (&run.error, &run.release) {
            (Some(error), _) => error.clone(),
            (None, Some(release)) => format!(
                "{release}{}",
                run.skew_ms
                    .map(|s| format!(", skew {s} ms"))
                    .unwrap_or_default()
            ),
            _ => String::new(),
        };
        out!(
            "  {when}  {:<9} {:<11} {:>6.1}s  {what}",
            run.kind,
            run.outcome,
            (run.finished_ms - run.started_ms) as f64 / 1000.0
        );
    }
    fail_if_any_failed(&answers)
}

/// The hosts holding user files others lack, when the hosts' statuses say
/// their user content differs (each host's list is then read).
pub fn user_content_differences(
    app: &AppConfig,
    fleet: &FleetSettings,
    statuses: &[Option<serde_json::Value>],
) -> Vec<Divergence> {
    let summaries: Vec<Option<UserContentSummary>> = statuses
        .iter()
        .map(|s| {
            s.as_ref()
                .and_then(|s| serde_json::from_value(s["user_content"].clone()).ok())
        })
        .collect();
    if !may_differ(&summaries) {
        return Vec::new();
    }
    let lists =
        on_each(&fleet.hosts, |host| Connection::open(host, fleet)).and_then(|connections| {
            let connections: Vec<&Connection> = connections.iter().collect();
            fetch_lists(app, &connections)
        });
    match lists {
        Ok(lists) => divergences(&lists),
        Err(error) => {
            eprintln!(
                "warning: the hosts' user content differs, and reading their lists failed: {error:#}"
            );
            Vec::new()
        }
    }
}

/// Each host's JSON answer.
fn parsed(answers: &[Answer]) -> Vec<Option<serde_json::Value>> {
    answers
        .iter()
        .map(|a| serde_json::from_str(&a.stdout).ok())
        .collect()
}

/// `zdeploy doctor` for a fleet: each host's own findings, then whether
/// the hosts hold the same user content.
pub fn doctor(app: &AppConfig, fleet: &FleetSettings, json: bool) -> Result<()> {
    let answers = run_everywhere(app, fleet, &host_args())?;
    let mut status = vec!["status".to_string()];
    status.extend(app.name.clone());
    status.push("--json".into());
    let statuses = parsed(&run_everywhere(app, fleet, &status)?);
    let uploads_differ = user_content_differences(app, fleet, &statuses);
    show_doctor(&answers, &uploads_differ, json)
}

/// Each host's `doctor`, then whether the hosts hold the same user content;
/// fails if a host's doctor did, or they do not.
pub fn show_doctor(answers: &[Answer], uploads_differ: &[Divergence], json: bool) -> Result<()> {
    if json {
        let hosts: Vec<serde_json::Value> = answers
            .iter()
            .map(|a| serde_json::json!({ "host": a.host, "exit": a.code, "findings": serde_json::from_str::<serde_json::Value>(&a.stdout).ok(), "errors": a.stderr }))
            .collect();
        out!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "hosts": hosts,
                "user_content_differs": uploads_differ,
            }))?
        );
    } else {
        show_answers(answers, false)?;
        if uploads_differ.is_empty() {
            out!("fleet: the hosts hold the same user content (as of each one's last deploy)");
        } else {
            out!("fleet: PROBLEM {}", describe(uploads_differ));
        }
    }
    fail_if_any_failed(answers)?;
    if !uploads_differ.is_empty() {
        anyhow::bail!("the fleet is split by its user content: see above");
    }
    Ok(())
}
