//! Outgoing notifications: a JSON POST per finished deploy (with a
//! Slack-compatible `text`), retried a few times on a thread of its own so
//! it never holds up a deploy.

use std::time::Duration;

use serde_json::json;

use super::runner::{Finished, RunOutcome};
use crate::config::Notify;

const ATTEMPTS: u32 = 4;
const FIRST_RETRY: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_secs(10);

/// The message for `finished`, or `None` when this outcome is not wanted.
pub fn message(
    notify: &Notify,
    app: &str,
    kind: &str,
    finished: &Finished,
) -> Option<serde_json::Value> {
    let wanted = match finished.outcome {
        RunOutcome::Success => notify.on_success,
        RunOutcome::Failed => notify.on_failure,
        RunOutcome::Unchanged | RunOutcome::Skipped => false,
    };
    if !wanted {
        return None;
    }
    let text = match (&finished.error, &finished.release) {
        (Some(error), _) => format!("zdeploy: {kind} of {app} failed: {error}"),
        (None, Some(release)) => {
            let commit = finished
                .commit
                .as_deref()
                .map(|c| format!(" (commit {})", zdeploy_core::release::short(c)))
                .unwrap_or_default();
            format!("zdeploy: {app} now serves {release}{commit}")
        }
        (None, None) => format!("zdeploy: {kind} of {app} succeeded"),
    };
    Some(json!({
        "text": text,
        "app": app,
        "kind": kind,
        "outcome": finished.outcome,
        "deployment": finished.deployment,
        "release": finished.release,
        "commit": finished.commit,
        "error": finished.error,
    }))
}

/// Send in the background; failures are logged, never returned.
pub fn send(notify: &Notify, app: &str, kind: &str, finished: &Finished) {
    let Some(body) = message(notify, app, kind, finished) else {
        return;
    };
    let (url, app) = (notify.url.clone(), app.to_string());
    // Webhook URLs carry their secret in the path: logs name the host only.
    let host = host_of(&url).to_string();
    std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .build()
            .into();
        let mut wait = FIRST_RETRY;
        for attempt in 1..=ATTEMPTS {
            let sent = agent
                .post(&url)
                .header("content-type", "application/json")
                .send(body.to_string());
            match sent {
                Ok(_) => return,
                Err(e) if attempt == ATTEMPTS => {
                    tracing::warn!(%app, %host, error = %e, "notification not delivered; giving up");
                }
                Err(e) => {
                    tracing::info!(%app, %host, error = %e, attempt, "notification failed; retrying");
                    std::thread::sleep(wait);
                    wait *= 4;
                }
            }
        }
    });
}

/// `https://hooks.example.com/services/T0/B0/x` -> `hooks.example.com`.
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
}
