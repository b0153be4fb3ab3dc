//! The watch after a deploy (`watch = { for, max_error_rate, max_p95,
//! min_requests }` or `--watch DURATION`): the new release's real traffic,
//! as the agent records it, is compared with the previous release's until
//! the window ends; a breach switches back (a rollback to the previous
//! release that only happens while the judged one is still live), marks
//! the release and the deploy failed, and tells the app's `notify` targets.

use std::time::Duration;

use anyhow::{Result, anyhow};
use serde::Deserialize;
use zdeploy_core::history::{History, now_ms};
use zdeploy_core::lock::LockWait;
use zdeploy_core::rollback::RollbackPlan;
use zdeploy_core::session::{Observer, RunOptions};
use zdeploy_core::switch::read_live;
use zdeploy_core::watch::{Verdict, WatchPolicy, WatchRecord};

use crate::config::AppConfig;
use crate::notify::{Event, Notice, announce};
use crate::units::parse_duration;

/// How often the figures are read while watching.
const LOOK_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWatch {
    #[serde(rename = "for")]
    duration: Option<String>,
    max_error_rate: Option<String>,
    max_p95: Option<String>,
    min_requests: Option<u64>,
}

/// `watch = { … }` from the config; `Err` says which key is wrong and why.
pub fn parse(value: &toml::Value) -> Result<WatchPolicy, String> {
    let raw =
        RawWatch::deserialize(value.clone()).map_err(|e| format!("watch: {}", e.message()))?;
    let mut policy = WatchPolicy::default();
    if let Some(text) = &raw.duration {
        policy.duration = window(text).map_err(|e| format!("watch.for {e}"))?;
    }
    if let Some(text) = &raw.max_error_rate {
        policy.max_error_rate = text
            .strip_suffix('%')
            .and_then(|n| n.trim().parse::<f64>().ok())
            .filter(|n| (0.0..=100.0).contains(n))
            .map(|n| n / 100.0)
            .ok_or_else(|| {
                format!("watch.max_error_rate takes a percentage like \"2%\", got '{text}'")
            })?;
    }
    if let Some(text) = &raw.max_p95 {
        policy.max_p95 = text
            .strip_suffix('x')
            .and_then(|n| n.trim().parse::<f64>().ok())
            .filter(|n| *n >= 1.0 && n.is_finite())
            .ok_or_else(|| {
                format!("watch.max_p95 takes a factor of 1 or more like \"2x\", got '{text}'")
            })?;
    }
    if let Some(n) = raw.min_requests {
        if n == 0 {
            return Err("watch.min_requests must be 1 or more".into());
        }
        policy.min_requests = n;
    }
    Ok(policy)
}

/// The deploy being judged.
struct Judged {
    deployment: i64,
    previous: Option<String>,
    commit: Option<String>,
}

/// A watch's length (`for`, `--watch`): more than 0, at most a day.
pub fn window(text: &str) -> Result<Duration, String> {
    parse_duration(text)
        .ok()
        .filter(|d| !d.is_zero() && *d <= Duration::from_secs(24 * 3600))
        .ok_or_else(|| format!("must be more than 0 and at most 24h, like 2m; got '{text}'"))
}

/// What a watch ended with, for people and for JSON.
#[derive(Debug, serde::Serialize)]
pub struct Watched {
    #[serde(flatten)]
    pub record: WatchRecord,
    /// The rollback that switched back, when there was a breach.
    pub switched_back_by: Option<i64>,
}

/// Watch the release deployment `id` put live for `policy.duration`,
/// unless `ended()` says a newer run took over. `say` hears progress.
pub fn watch(
    app: &AppConfig,
    policy: &WatchPolicy,
    id: i64,
    ended: &dyn Fn() -> Option<String>,
    say: &dyn Fn(&str),
    observer: &dyn Observer,
) -> Result<Option<Watched>> {
    let layout = &app.layout;
    let history = History::open(&layout.history_path())?;
    let Some(done) = history.deployment(id)? else {
        return Ok(None);
    };
    let (Some(release), Some(switched_ms)) = (done.release.clone(), done.finished_ms) else {
        return Ok(None);
    };
    if done.outcome != "success" {
        return Ok(None);
    }
    let done = Judged {
        deployment: id,
        previous: done.previous,
        commit: done.commit,
    };
    let window_ms = policy.duration.as_millis() as i64;
    let before = match &done.previous {
        Some(previous) => history
            .traffic(previous, switched_ms - window_ms, Some(switched_ms))?
            .figures(),
        None => Default::default(),
    };
    say(&format!(
        "watching {release} for {}s against {} before ({})",
        policy.duration.as_secs(),
        done.previous.as_deref().unwrap_or("nothing"),
        before.describe()
    ));
    let end_ms = switched_ms + window_ms;
    let (verdict, after) = loop {
        let after = history.traffic(&release, switched_ms, None)?.figures();
        if let Some(why) = policy.breach(&before, &after) {
            break (Verdict::Breached { why }, after);
        }
        if let Some(why) = ended() {
            break (Verdict::Ended { why }, after);
        }
        if read_live(layout)?.record_name(layout) != Some(release.as_str()) {
            let why = format!("{release} is no longer live");
            break (Verdict::Ended { why }, after);
        }
        if now_ms() >= end_ms {
            break (policy.at_end(&after), after);
        }
        std::thread::sleep(LOOK_EVERY);
    };
    let mut switched_back_by = None;
    if let (Verdict::Breached { why }, Some(previous)) = (&verdict, &done.previous) {
        say(&format!(
            "{release} breached the watch: {why}; switching back to {previous}"
        ));
        let plan = RollbackPlan {
            target: Some(previous.clone()),
            policy: app.policy.clone(),
            only_from: Some(release.clone()),
        };
        let options = RunOptions {
            trigger: format!("watch of deployment #{}", done.deployment),
            wait: LockWait::Queue,
        };
        let back = zdeploy_core::rollback::rollback(layout, &plan, &options, observer)?;
        switched_back_by = Some(back.deployment);
    }
    let record = WatchRecord {
        deployment_id: done.deployment,
        release: release.clone(),
        verdict,
        before,
        after,
        ended_ms: now_ms(),
    };
    history.record_watch(&record)?;
    say(&format!(
        "watch of {release}: {} ({})",
        record.verdict.describe(),
        record.after.describe()
    ));
    if let Verdict::Breached { why } = &record.verdict {
        let mut notice = Notice::new(app, Event::SwitchedBack, "deploy", "watch");
        notice.deployment = Some(done.deployment);
        notice.release = Some(release);
        notice.previous = done.previous.clone();
        notice.commit = done.commit.clone();
        notice.error = Some(format!("the watch switched back: {why}"));
        announce(app, notice);
    }
    Ok(Some(Watched {
        record,
        switched_back_by,
    }))
}

/// The watch's own runs (a switch back) seen by nobody but the history.
pub struct Quiet;

impl Observer for Quiet {}

/// The error a breached watch fails a deploy with.
pub fn breach_error(watched: &Watched) -> Option<anyhow::Error> {
    match &watched.record.verdict {
        Verdict::Breached { why } => Some(anyhow!(zdeploy_core::Error::SwitchedBack(format!(
            "{} failed its watch: {why}; switched back{}",
            watched.record.release,
            watched
                .switched_back_by
                .map(|id| format!(" (deployment #{id})"))
                .unwrap_or_default()
        )))),
        _ => None,
    }
}
