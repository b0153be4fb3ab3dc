//! Auto-deploy on an interval: ask the remote for the head of the app's ref
//! with `git ls-remote` (no fetch) and queue a deploy when it differs from
//! the live release's commit. A failing remote is retried with backoff
//! (the interval doubled per failure, up to ten minutes) and shown.

use std::sync::Arc;
use std::time::Duration;

use zdeploy_core::history::History;
use zdeploy_core::source::Source;
use zdeploy_core::switch::read_live;

use super::SharedAgent;
use super::app::{App, Trigger};
use crate::config::AppConfig;

const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// The commit of the live release, if the history knows it.
pub fn live_commit(config: &AppConfig) -> Option<String> {
    let live = read_live(&config.layout).ok()?;
    let name = live.record_name(&config.layout)?.to_string();
    let history_path = config.layout.history_path();
    if !history_path.exists() {
        return None;
    }
    History::open(&history_path)
        .ok()?
        .release(&name)
        .ok()??
        .commit
}

/// One check: `Ok(true)` if a deploy was queued.
fn check(app: &App) -> Result<bool, String> {
    let config = app.config();
    let Some(Source::Git { url }) = &config.source else {
        return Err("interval polling needs a git source".into());
    };
    let shown = config
        .source
        .as_ref()
        .map(Source::shown)
        .unwrap_or_default();
    let head = zdeploy_core::source::git::remote_head(url, config.reference.as_deref(), &shown)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| match &config.reference {
            Some(r) => format!("{shown} has no branch or tag '{r}'"),
            None => format!("{shown} has no HEAD"),
        })?;
    app.poll_succeeded(Some(head.clone()));
    let failed_before = app.poll_status().failed_commit.as_deref() == Some(head.as_str());
    if live_commit(&config).as_deref() == Some(head.as_str()) || app.is_busy() || failed_before {
        return Ok(false);
    }
    let mut trigger = Trigger::new("poll");
    trigger.commit = Some(head);
    app.trigger(trigger);
    Ok(true)
}

/// Poll until the agent stops, the app is dropped or its interval removed.
pub async fn poll(agent: SharedAgent, app: Arc<App>) {
    let mut failures = 0u32;
    loop {
        let Some(interval) = app.config().automation.interval else {
            return;
        };
        let delay = if failures == 0 {
            interval
        } else {
            (interval * 2u32.saturating_pow(failures.min(16))).min(MAX_BACKOFF.max(interval))
        };
        if !agent.sleep(delay).await || app.is_removed() {
            return;
        }
        let Ok(_slot) = agent.poll_slots.acquire().await else {
            return;
        };
        let checking = app.clone();
        match tokio::task::spawn_blocking(move || check(&checking)).await {
            Ok(Ok(queued)) => {
                failures = 0;
                if queued {
                    tracing::info!(app = %app.name, "the remote moved; deploy queued");
                }
            }
            Ok(Err(error)) => {
                agent.metrics.poll_error(&app.name);
                failures = app.poll_failed(error.clone());
                tracing::warn!(app = %app.name, %error, failures, "poll failed; retrying with backoff");
            }
            Err(panic) => tracing::error!(app = %app.name, %panic, "poll thread panicked"),
        }
    }
}
