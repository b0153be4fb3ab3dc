//! `zdeploy status` for a fleet: each host's live release, and whether the
//! fleet agrees on one.

use anyhow::Result;

use crate::config::AppConfig;
use crate::fleet::remote_command::{fail_if_any_failed, host_args, run_everywhere};
use crate::fleet::settings::FleetSettings;
use crate::output::out;

pub fn show(app: &AppConfig, fleet: &FleetSettings, json: bool) -> Result<()> {
    let mut args = host_args();
    if !args.iter().any(|a| a == "--json") {
        args.push("--json".into());
    }
    let answers = run_everywhere(app, fleet, &args)?;
    let statuses: Vec<Option<serde_json::Value>> = answers
        .iter()
        .map(|a| serde_json::from_str(&a.stdout).ok())
        .collect();
    let live: Vec<Option<String>> = statuses
        .iter()
        .map(|s| {
            s.as_ref()
                .and_then(|s| s["live"].as_str())
                .map(str::to_string)
        })
        .collect();
    let agrees = live.iter().all(|l| l.is_some() && *l == live[0]);
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
