//! Canary releases from the command line: `canary = { share, for }` (or
//! `deploy --canary SHARE`) makes a deploy start a canary instead of
//! switching; `zdeploy canary promote|abort|status APP` ends or shows it.
//! With `for` (or `--watch`), the deploy judges the canary by its traffic
//! against the live release's over the same minutes, then aborts it on a
//! breach or promotes it when the time is up.

use std::time::Duration;

use anyhow::Result;
use serde::Serialize;
use zdeploy_core::canary::{Canary, Ended, Ending, Share};
use zdeploy_core::history::{History, Kind, now_ms};
use zdeploy_core::layout::Layout;
use zdeploy_core::lock::LockWait;
use zdeploy_core::session::{Observer, RunOptions};
use zdeploy_core::switch::read_live;
use zdeploy_core::traffic::{Figures, Tally};
use zdeploy_core::watch::{Verdict, WatchPolicy, WatchRecord};

use crate::cli::{CanaryAction, CanaryArgs, select_app};
use crate::commands::print_json;
use crate::config::{AppConfig, ConfigSource, Role, Topology, UsageError};
use crate::notify::{Event, Notice, announce};
use crate::output::{Console, out};

/// How often the figures are read while judging.
const LOOK_EVERY: Duration = Duration::from_millis(500);

/// `canary = { … }`, validated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CanaryPolicy {
    pub share: Share,
    /// Judge the canary this long, then promote or abort it by itself.
    pub judge_for: Option<Duration>,
    /// The canary's own limits (`max_error_rate`, `max_p95`,
    /// `min_requests` in its table), if it has any.
    pub limits: Option<WatchPolicy>,
}

/// `canary = { share = "10%", for = "10m" }`, and the watch's limits if
/// the canary has its own; `Err` says which key is wrong and why.
pub fn parse(value: &toml::Value) -> Result<CanaryPolicy, String> {
    let mut table = value
        .as_table()
        .cloned()
        .ok_or("canary takes a table like { share = \"10%\", for = \"10m\" }")?;
    let share = match table.remove("share") {
        Some(toml::Value::String(text)) => {
            Share::parse(&text).map_err(|e| format!("canary.share: {e}"))?
        }
        Some(other) => {
            return Err(format!(
                "canary.share takes a string like \"10%\", got {other}"
            ));
        }
        None => return Err("canary needs share, like { share = \"10%\" }".into()),
    };
    let judge_for = match table.get("for") {
        Some(toml::Value::String(text)) => {
            Some(crate::watch::window(text).map_err(|e| format!("canary.for {e}"))?)
        }
        Some(other) => {
            return Err(format!(
                "canary.for takes a duration like \"10m\", got {other}"
            ));
        }
        None => None,
    };
    let has_limits = table.keys().any(|k| k != "for");
    let limits = crate::watch::parse(&toml::Value::Table(table))
        .map_err(|e| e.replacen("watch", "canary", 1))?;
    Ok(CanaryPolicy {
        share,
        judge_for,
        limits: has_limits.then_some(limits),
    })
}

/// How the deploy's canary is judged, if it is: for `--watch`, else
/// `canary.for`, else the app's `watch.for`; with the canary's own
/// limits, else the watch's.
pub fn judging(app: &AppConfig, canary: &CanaryPolicy) -> Option<WatchPolicy> {
    let duration = canary.judge_for.or_else(|| app.watch.map(|w| w.duration))?;
    Some(WatchPolicy {
        duration,
        ..canary.limits.or(app.watch).unwrap_or_default()
    })
}

/// What judging a canary ended with.
#[derive(Debug, Serialize)]
pub struct Judged {
    #[serde(flatten)]
    pub record: WatchRecord,
    /// The promote or abort it ended with.
    pub ended: Option<Ended>,
}

/// Judge the canary `deployment` started for `policy.duration`: its
/// release's traffic against the live release's since it began. A breach
/// aborts it; the end of the window promotes it (too little traffic to
/// judge says so and promotes). Someone else ending it ends the judging.
pub fn judge(
    app: &AppConfig,
    policy: &WatchPolicy,
    deployment: i64,
    say: &dyn Fn(&str),
    observer: &dyn Observer,
) -> Result<Option<Judged>> {
    let layout = &app.layout;
    let Some(canary) = zdeploy_core::canary::current(layout)? else {
        return Ok(None);
    };
    if canary.deployment != deployment {
        return Ok(None);
    }
    let history = History::open(&layout.history_path())?;
    say(&format!(
        "judging the canary {} for {}s against {}",
        canary.release,
        policy.duration.as_secs(),
        canary.live
    ));
    let end_ms = canary.started_ms + policy.duration.as_millis() as i64;
    let (mut verdict, before, after) = loop {
        let before = history
            .traffic(&canary.live, canary.started_ms, None)?
            .figures();
        let after = history
            .traffic(&canary.release, canary.started_ms, None)?
            .figures();
        if let Some(why) = policy.breach(&before, &after) {
            break (Verdict::Breached { why }, before, after);
        }
        if zdeploy_core::canary::current(layout)?.as_ref() != Some(&canary) {
            let why = "the canary was promoted or aborted meanwhile".to_string();
            break (Verdict::Ended { why }, before, after);
        }
        if now_ms() >= end_ms {
            break (at_end(policy, &canary, &before, &after), before, after);
        }
        std::thread::sleep(LOOK_EVERY);
    };
    let options = RunOptions {
        trigger: format!("judge of deployment #{deployment}"),
        wait: LockWait::Queue,
    };
    let (ending, why) = match &verdict {
        Verdict::Ended { .. } => (None, String::new()),
        Verdict::Breached { why } => {
            say(&format!(
                "the canary {} breached: {why}; aborting it",
                canary.release
            ));
            (Some(Ending::Aborted), why.clone())
        }
        Verdict::Kept | Verdict::Unjudged { .. } => {
            let why = verdict.describe();
            say(&format!(
                "the canary {}: {why}; promoting it",
                canary.release
            ));
            (Some(Ending::Promoted), why)
        }
    };
    let ended = match ending {
        None => None,
        Some(ending) => match end(app, ending, &why, &options, observer) {
            // Someone else (a newer deploy) ended it while the lock was waited for.
            Err(_) if zdeploy_core::canary::current(layout)?.as_ref() != Some(&canary) => {
                verdict = Verdict::Ended {
                    why: "the canary was promoted or aborted meanwhile".into(),
                };
                None
            }
            ended => {
                tell(app, ending, &why, "canary judge", &ended);
                Some(ended?)
            }
        },
    };
    let record = WatchRecord {
        deployment_id: deployment,
        release: canary.release.clone(),
        verdict,
        before,
        after,
        ended_ms: now_ms(),
    };
    history.record_watch(&record)?;
    Ok(Some(Judged { record, ended }))
}

/// The verdict when the window is over: the watch's, except for a canary
/// that served nothing while the live release served ten or more times
/// what its share should have brought it (chance: under 1 in 20,000): the
/// site ignores canaries (written before them), so it is not promoted
/// untried.
pub fn at_end(policy: &WatchPolicy, canary: &Canary, live: &Figures, tried: &Figures) -> Verdict {
    let share = canary.share.percent() / 100.0;
    let expected = live.requests as f64 * share / (1.0 - share);
    if tried.requests == 0 && expected >= 10.0 {
        return Verdict::Breached {
            why: format!(
                "it served no request while {} served {}: does the site ignore canaries? Sites written before them do: write it again with `zdeploy webserver`",
                canary.live, live.requests
            ),
        };
    }
    policy.at_end(tried)
}

/// The error a deploy whose canary was aborted by its judging fails with.
pub fn breach_error(judged: &Judged) -> Option<anyhow::Error> {
    match &judged.record.verdict {
        Verdict::Breached { why } => {
            Some(anyhow::anyhow!(zdeploy_core::Error::SwitchedBack(format!(
                "the canary {} failed: {why}; aborted, every client is back on {}",
                judged.record.release,
                judged
                    .ended
                    .as_ref()
                    .map(|e| e.release.as_str())
                    .unwrap_or("the live release")
            ))))
        }
        _ => None,
    }
}

/// Before a newer deploy: abort the canary running, if one is (the newest
/// deploy wins, as it ends a watch).
pub fn end_for_newer(app: &AppConfig, trigger: &str) -> Result<Option<Ended>> {
    if zdeploy_core::canary::current(&app.layout)?.is_none() {
        return Ok(None);
    }
    let options = RunOptions {
        trigger: trigger.to_string(),
        wait: LockWait::Queue,
    };
    let why = format!("a newer deploy replaces it ({trigger})");
    match end(app, Ending::Aborted, &why, &options, &crate::watch::Quiet) {
        // Its judging ended it meanwhile.
        Err(_) if zdeploy_core::canary::current(&app.layout)?.is_none() => Ok(None),
        ended => {
            tell(app, Ending::Aborted, &why, trigger, &ended);
            ended.map(Some)
        }
    }
}

/// Promote or abort the running canary of `app`.
fn end(
    app: &AppConfig,
    ending: Ending,
    why: &str,
    options: &RunOptions,
    observer: &dyn Observer,
) -> Result<Ended> {
    Ok(zdeploy_core::canary::end(
        &app.layout,
        &app.policy,
        ending,
        why,
        options,
        observer,
    )?)
}

/// `zdeploy canary promote|abort|status [APP]`.
pub fn command(config: ConfigSource<'_>, args: &CanaryArgs, console: &Console) -> Result<()> {
    let mut overrides = args.target.overrides();
    args.retention.apply(&mut overrides);
    let app = select_app(config, args.app.as_deref(), &overrides)?;
    let ending = match args.action {
        CanaryAction::Status | CanaryAction::Traffic => None,
        CanaryAction::Promote => Some(Ending::Promoted),
        CanaryAction::Abort => Some(Ending::Aborted),
    };
    let why = args.reason.clone().unwrap_or_else(|| match ending {
        Some(Ending::Promoted) => "promoted from the command line".into(),
        _ => "aborted from the command line".into(),
    });
    match &app.topology {
        Topology::OneHost | Topology::OnOrders => {}
        Topology::Ssh(fleet) => {
            return match ending {
                None => crate::fleet::remote_command::show_everywhere(&app, fleet, args.json),
                Some(ending) => {
                    let end_as = crate::fleet::canary::EndAs {
                        ending,
                        why: &why,
                        trigger: "cli",
                    };
                    crate::fleet::canary::end(
                        &app,
                        fleet,
                        &end_as,
                        args.release.as_deref(),
                        args.json,
                    )
                }
            };
        }
        Topology::Etcd(_) => {
            return Err(UsageError(
                "canary releases on a fleet in etcd are not supported yet".into(),
            )
            .into());
        }
    }
    let layout = &app.layout;
    layout.check_webroot()?;
    if args.action == CanaryAction::Traffic {
        return show_traffic(layout, args);
    }
    let Some(ending) = ending else {
        let running = zdeploy_core::canary::current(layout)?;
        if args.json {
            return print_json(&serde_json::json!({ "canary": running }));
        }
        match &running {
            Some(canary) => out!("{} {}", layout.context(), describe(canary)),
            None => out!("{}: no canary is running", layout.context()),
        }
        return Ok(());
    };
    if ending == Ending::Promoted {
        crate::freeze::refuse_if_frozen(&app, Kind::Promote, args.force)?;
    }
    if let Some(release) = &args.release
        && let Some(done) = already_ended(layout, release, ending)?
    {
        if args.json {
            return print_json(&serde_json::json!({ "already": done }));
        }
        out!("{done}");
        return Ok(());
    }
    let options = RunOptions {
        trigger: "cli".into(),
        wait: if args.wait {
            LockWait::Queue
        } else {
            LockWait::Fail
        },
    };
    // A fleet's controller tells once for every host.
    let ended = match config.role {
        Role::FleetHost => end(&app, ending, &why, &options, console)?,
        Role::Operator => end_and_tell(&app, ending, &why, &options, console)?,
    };
    if args.json {
        return print_json(&ended);
    }
    match ended.ending {
        Ending::Promoted => out!(
            "{} -> {} (canary promoted, deployment #{})",
            layout.context(),
            ended.release,
            ended.deployment
        ),
        Ending::Aborted => out!(
            "{} stays on {}: canary {} aborted (deployment #{})",
            layout.context(),
            ended.release,
            ended.canary,
            ended.deployment
        ),
    }
    Ok(())
}

/// The traffic of the canary running here and of the live release since
/// it began, after collecting `--for` that long.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct CanaryTraffic {
    pub canary: Canary,
    /// What the canary's release served.
    pub tried: Tally,
    /// What the live release served meanwhile.
    pub live: Tally,
}

/// `zdeploy canary traffic`: on a fleet host, what the controller judges
/// the fleet's canary by.
fn show_traffic(layout: &Layout, args: &CanaryArgs) -> Result<()> {
    let collect_for = match &args.collect_for {
        Some(text) => {
            Some(crate::watch::window(text).map_err(|e| UsageError(format!("--for {e}")))?)
        }
        None => None,
    };
    let Some(canary) = zdeploy_core::canary::current(layout)? else {
        return Err(UsageError(format!("no canary of {} is running", layout.context())).into());
    };
    if let Some(duration) = collect_for {
        crate::collect::record_for(layout, duration)?;
    }
    let history = History::open(&layout.history_path())?;
    let traffic = CanaryTraffic {
        tried: history.traffic(&canary.release, canary.started_ms, None)?,
        live: history.traffic(&canary.live, canary.started_ms, None)?,
        canary,
    };
    if args.json {
        return print_json(&traffic);
    }
    out!(
        "{} {}
  canary: {}
  live:   {}",
        layout.context(),
        describe(&traffic.canary),
        traffic.tried.figures().describe(),
        traffic.live.figures().describe()
    );
    Ok(())
}

/// With no canary running here: what says `release` is already where
/// `ending` leaves it (`None` while its canary runs). Anything else, a
/// canary of another release included, is an error.
fn already_ended(layout: &Layout, release: &str, ending: Ending) -> Result<Option<String>> {
    let context = layout.context();
    if let Some(canary) = zdeploy_core::canary::current(layout)? {
        if canary.release == release {
            return Ok(None);
        }
        return Err(UsageError(format!(
            "the canary of {context} here is {}, not {release}",
            canary.release
        ))
        .into());
    }
    let live = read_live(layout)?;
    let is_live = live.record_name(layout) == Some(release);
    match (ending, is_live) {
        (Ending::Promoted, true) => Ok(Some(format!(
            "{context}: {release} is live for everyone already (its canary was promoted)"
        ))),
        (Ending::Aborted, false) => Ok(Some(format!(
            "{context}: no canary of {release} runs; it serves nobody here already"
        ))),
        (Ending::Promoted, false) => Err(UsageError(format!(
            "no canary of {release} runs on {context} and it is not live: it was aborted here"
        ))
        .into()),
        (Ending::Aborted, true) => Err(UsageError(format!(
            "{release} is live for everyone on {context}: its canary was promoted here, so it cannot be aborted; `zdeploy rollback` goes back"
        ))
        .into()),
    }
}

/// Promote or abort the running canary of `app` as `options.trigger`
/// asks, and tell the app's `notify` targets.
pub fn end_and_tell(
    app: &AppConfig,
    ending: Ending,
    why: &str,
    options: &RunOptions,
    observer: &dyn Observer,
) -> Result<Ended> {
    let ended = end(app, ending, why, options, observer);
    tell(app, ending, why, &options.trigger, &ended);
    ended
}

/// Tell the app's `notify` targets how a promote or abort went: a
/// promote succeeded, an abort switched back, or either failed.
fn tell(app: &AppConfig, ending: Ending, why: &str, trigger: &str, result: &Result<Ended>) {
    let kind = match ending {
        Ending::Promoted => Kind::Promote.as_str(),
        Ending::Aborted => Kind::Abort.as_str(),
    };
    let mut notice = Notice::new(app, Event::Failed, kind, trigger);
    match result {
        Ok(ended) => {
            notice.event = match ending {
                Ending::Promoted => Event::Succeeded,
                Ending::Aborted => Event::SwitchedBack,
            };
            notice.deployment = Some(ended.deployment);
            notice.release = Some(ended.release.clone());
            notice.previous = Some(ended.canary.clone());
            if ending == Ending::Aborted {
                notice.error = Some(format!("the canary {} was aborted: {why}", ended.canary));
            }
        }
        Err(error) => notice.error = Some(format!("{error:#}")),
    }
    announce(app, notice);
}

/// ": ROOT_… serves 10.2% of clients (26 of 256 cookie buckets) beside
/// ROOT_…, since …": for status.
pub fn describe(canary: &Canary) -> String {
    let since = jiff::Timestamp::from_millisecond(canary.started_ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default();
    format!(
        "canary: {} serves {} beside {}, since {since}",
        canary.release,
        canary.share.describe(),
        canary.live
    )
}
