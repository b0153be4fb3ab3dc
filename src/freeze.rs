//! `zdeploy freeze APP [--reason TEXT] [--until TIME]` and `zdeploy
//! unfreeze APP`: no automatic deploy while frozen, and a person's deploy or
//! rollback must force it. On an ssh fleet, every host is frozen at once.

use anyhow::Result;
use zdeploy_core::freeze::{self, Freeze};
use zdeploy_core::history::{Kind, now_ms};

use crate::cli::{FreezeArgs, select_app};
use crate::commands::print_json;
use crate::config::{AppConfig, ConfigSource, Topology, UsageError};
use crate::fleet::remote_command;
use crate::output::out;

pub fn freeze_command(config: ConfigSource<'_>, args: &FreezeArgs, frozen: bool) -> Result<()> {
    if !frozen && (args.reason.is_some() || args.until.is_some()) {
        return Err(UsageError("--reason and --until go with `zdeploy freeze`".into()).into());
    }
    let until_ms = match &args.until {
        Some(text) => Some(parse_until(text)?),
        None => None,
    };
    let app = select_app(config, args.app.as_deref(), &args.target.overrides())?;
    match &app.topology {
        Topology::Ssh(fleet) => return remote_command::show_everywhere(&app, fleet, args.json),
        Topology::Etcd(_) => {
            return Err(UsageError(
                "freezing a fleet in etcd is not supported yet: its leader deploys on its own"
                    .into(),
            )
            .into());
        }
        Topology::OneHost | Topology::OnOrders => {}
    }
    let layout = &app.layout;
    layout.check_webroot()?;
    if frozen {
        let freeze = freeze::freeze(layout, args.reason.as_deref(), until_ms)?;
        if args.json {
            return print_json(&freeze);
        }
        out!("{} {}", layout.context(), describe(&freeze));
    } else {
        let was = freeze::unfreeze(layout)?;
        if args.json {
            return print_json(&serde_json::json!({ "was": was }));
        }
        match was {
            Some(_) => out!("{} unfrozen: automatic deploys resume", layout.context()),
            None => out!("{} was not frozen", layout.context()),
        }
    }
    Ok(())
}

/// "is frozen (reason) since …, until …": for status and the commands.
pub fn describe(freeze: &Freeze) -> String {
    let at = |ms: i64| {
        jiff::Timestamp::from_millisecond(ms)
            .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_default()
    };
    format!(
        "is {} since {}{}: polls and webhooks deploy nothing; a deploy or rollback needs --force",
        freeze.describe(),
        at(freeze.since_ms),
        freeze
            .until_ms
            .map(|u| format!(", until {}", at(u)))
            .unwrap_or_default()
    )
}

/// `--until`: an RFC 3339 time (`2026-12-24T18:00:00Z`) or a duration from
/// now (`2h`).
fn parse_until(text: &str) -> Result<i64, UsageError> {
    if let Ok(duration) = crate::units::parse_duration(text) {
        return Ok(now_ms() + duration.as_millis() as i64);
    }
    text.parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|_| {
            UsageError(format!(
                "--until {text:?}: give a time such as 2026-12-24T18:00:00Z or a duration such as 2h"
            ))
        })
}

/// A person's deploy, rollback or promote of a frozen app fails unless
/// forced (on this host; a fleet's hosts answer for themselves).
pub fn refuse_if_frozen(app: &AppConfig, kind: Kind, force: bool) -> Result<()> {
    if force || !matches!(app.topology, Topology::OneHost | Topology::OnOrders) {
        return Ok(());
    }
    match freeze::current(&app.layout)? {
        Some(freeze) => Err(freeze::refusal(&app.layout, &freeze, kind).into()),
        None => Ok(()),
    }
}
