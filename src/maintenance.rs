//! `zdeploy maintenance on|off [APP]`: a window opened by hand, on this
//! host or on every host of a fleet at once (one bypass secret for all, so
//! a cookie works behind the balancer).

use anyhow::Result;
use zdeploy_core::history::History;
use zdeploy_core::maintenance::{
    self, Allowed, BYPASS_COOKIE, DEFAULT_RETRY_AFTER, Opening, Origin, Window,
};
use zdeploy_core::switch::read_live;

use crate::cli::{MaintenanceArgs, OnOff, select_app};
use crate::commands::print_json;
use crate::config::{AppConfig, ConfigSource, Topology, UsageError};
use crate::fleet::remote_command::{self, Answer, host_args};
use crate::output::out;

/// The longest Retry-After a window asks for: a day.
const RETRY_AFTER_LIMIT: u32 = 86_400;

pub fn maintenance(config: ConfigSource<'_>, args: &MaintenanceArgs) -> Result<()> {
    let allow = args
        .allow
        .iter()
        .map(|text| {
            text.parse::<Allowed>()
                .map_err(|e| UsageError(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if args.switch == OnOff::Off && (args.retry_after.is_some() || !allow.is_empty()) {
        return Err(UsageError(
            "--retry-after and --allow go with `zdeploy maintenance on`".into(),
        )
        .into());
    }
    let retry_after = args.retry_after.unwrap_or(DEFAULT_RETRY_AFTER);
    if !(1..=RETRY_AFTER_LIMIT).contains(&retry_after) {
        return Err(UsageError(format!(
            "--retry-after {retry_after}: give 1 to {RETRY_AFTER_LIMIT} seconds"
        ))
        .into());
    }
    let app = select_app(config, args.app.as_deref(), &args.target.overrides())?;
    let everywhere = match &app.topology {
        Topology::Ssh(fleet) => Some(Fleet::Ssh(fleet)),
        Topology::Etcd(membership) => Some(Fleet::Etcd(membership)),
        Topology::OneHost | Topology::OnOrders => None,
    };
    if let Some(fleet) = everywhere {
        return on_every_host(&app, fleet, args);
    }
    match args.switch {
        OnOff::On => switch_on(&app, args, retry_after, allow),
        OnOff::Off => switch_off(&app, args.json),
    }
}

fn switch_on(
    app: &AppConfig,
    args: &MaintenanceArgs,
    retry_after: u32,
    allow: Vec<Allowed>,
) -> Result<()> {
    let layout = &app.layout;
    layout.check_webroot()?;
    // The page of the release that serves now, checked to lie inside it.
    let page = match (&app.policy.maintenance_page, read_live(layout)?.dir(layout)) {
        (Some(relative), Some(live)) => Some(maintenance::page_in_release(&live, relative)?),
        _ => None,
    };
    zdeploy_core::fsx::create_dir_all(&layout.state_dir())?;
    let history = History::open(&layout.history_path())?;
    let opening = Opening {
        retry_after,
        allow,
        page,
        origin: Origin::Manual,
        secret: args.secret.clone(),
    };
    let opened = maintenance::open(layout, &history, &opening)?
        .expect("a window opened by hand replaces any other");
    if args.json {
        return print_json(&serde_json::json!({
            "maintenance": "on",
            "retry_after": retry_after,
            "allow": opened.window.allow,
            "cookie": BYPASS_COOKIE,
            "secret": opened.secret,
        }));
    }
    let allowed = match opened.window.allow.is_empty() {
        true => String::new(),
        false => format!(", except from {}", opened.window.allow.join(", ")),
    };
    out!(
        "maintenance on for {}: every request gets 503 with Retry-After {retry_after}s{allowed}, until `zdeploy maintenance off`",
        layout.context()
    );
    if args.secret.is_none() {
        print_cookie(&opened.secret);
    }
    Ok(())
}

fn print_cookie(secret: &str) {
    out!(
        "to reach the app meanwhile, send the cookie {BYPASS_COOKIE}={secret} (shown only now), e.g. curl -b '{BYPASS_COOKIE}={secret}' …"
    );
}

fn switch_off(app: &AppConfig, json: bool) -> Result<()> {
    let layout = &app.layout;
    let closed = match History::open(&layout.history_path()) {
        Ok(history) if layout.state_dir().is_dir() => {
            maintenance::close(layout, &history, "off", |_| true)?
        }
        _ => None,
    };
    if json {
        return print_json(&serde_json::json!({
            "maintenance": "off",
            "was_on_seconds": closed.as_ref().map(|c| c.seconds),
        }));
    }
    match closed {
        Some(closed) => out!(
            "maintenance off for {} after {:.1}s{}",
            layout.context(),
            closed.seconds,
            closed
                .window
                .deployment
                .map(|d| format!(" (deployment #{d} had opened it)"))
                .unwrap_or_default()
        ),
        None => out!("maintenance was not on for {}", layout.context()),
    }
    Ok(())
}

enum Fleet<'a> {
    Ssh(&'a crate::fleet::settings::FleetSettings),
    Etcd(&'a crate::fleet::etcd::settings::Membership),
}

/// Switch every host at once, all with one bypass secret.
fn on_every_host(app: &AppConfig, fleet: Fleet<'_>, args: &MaintenanceArgs) -> Result<()> {
    let mut host_args = host_args();
    let secret = match (args.switch, &args.secret) {
        (OnOff::On, None) => Some(maintenance::new_secret()?),
        _ => None,
    };
    if let Some(secret) = &secret {
        host_args.extend(["--secret".to_string(), secret.clone()]);
    }
    let answers: Vec<Answer> = match fleet {
        Fleet::Ssh(fleet) => remote_command::run_everywhere(app, fleet, &host_args)?,
        Fleet::Etcd(membership) => {
            crate::fleet::etcd::command::run_everywhere(app, membership, &host_args)?
        }
    };
    if args.json {
        let hosts: Vec<serde_json::Value> =
            answers.iter().map(remote_command::answer_json).collect();
        print_json(&serde_json::json!({
            "hosts": hosts,
            "cookie": secret.as_ref().map(|_| BYPASS_COOKIE),
            "secret": secret,
        }))?;
        return remote_command::fail_if_any_failed(&answers);
    }
    remote_command::show(&answers, false)?;
    if let Some(secret) = &secret {
        let on = answers.iter().filter(|a| a.code == 0).count();
        if on > 0 {
            out!("maintenance on for {on} of {} hosts", answers.len());
            print_cookie(secret);
        }
    }
    remote_command::fail_if_any_failed(&answers)
}

/// One line on an open window: since when, who opened it, and whether it
/// was left open by a deploy that is no longer running.
pub fn describe_window(window: &Window, history: Option<&History>) -> String {
    let since = jiff::Timestamp::from_millisecond(window.opened_ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default();
    let allowed = match window.allow.is_empty() {
        true => String::new(),
        false => format!(", allowed: {}", window.allow.join(", ")),
    };
    let by = match window.deployment {
        None => "by hand, until `zdeploy maintenance off`".to_string(),
        Some(id) => match !left_open(window, history) {
            true => format!("by deployment #{id}, until its switch"),
            false => format!(
                "LEFT OPEN by deployment #{id}, which is no longer running: the next deploy closes it, or `zdeploy maintenance off`"
            ),
        },
    };
    format!(
        "maintenance: ON since {since} ({by}); requests get 503, Retry-After {}s{allowed}",
        window.retry_after
    )
}

/// Whether a deploy opened `window` and is no longer running (killed in
/// it): nothing but the next run's recover, or `off`, closes it.
pub fn left_open(window: &Window, history: Option<&History>) -> bool {
    window.deployment.is_some_and(|id| {
        !history
            .and_then(|h| h.deployment(id).ok().flatten())
            .is_some_and(|d| d.outcome == "running" && pid_alive(d.pid))
    })
}

fn pid_alive(pid: i64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}
