//! What each subcommand does, given its parsed arguments.

use std::path::{Path, PathBuf};

use anyhow::Result;
use zdeploy_core::apache::ApacheMap;
use zdeploy_core::history::{History, Kind};
use zdeploy_core::inventory;
use zdeploy_core::layout::Layout;
use zdeploy_core::lock::LockWait;
use zdeploy_core::release::short;
use zdeploy_core::session::RunOptions;
use zdeploy_core::switch::{Live, read_live};
use zdeploy_core::upkeep;

use crate::cli::{
    AgentArgs, DeployArgs, DoctorArgs, FleetArgs, InitArgs, InspectArgs, KeepArgs, LogArgs,
    LogFormat, PruneArgs, RollbackArgs, StatusArgs, VerifyArgs, WebServer, WebserverArgs,
    select_app, split_app,
};
use crate::config::{self, AppConfig, ConfigSource, Topology, UsageError};
use crate::deploying::{self, Done, Request, Watch};
use crate::fleet::console::FleetConsole;
use crate::fleet::controller::{FleetObserver, FleetOutcome, FleetResult, FleetRun, Intent};
use crate::fleet::remote_command;
use crate::output::Console;
use crate::output::out;
use crate::units::human_size;
use zdeploy_core::policy::DeployOutcome;

fn run_options(wait: bool) -> RunOptions {
    RunOptions {
        trigger: "cli".into(),
        wait: if wait {
            LockWait::Queue
        } else {
            LockWait::Fail
        },
    }
}

pub fn print_json(value: &impl serde::Serialize) -> Result<()> {
    out!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Run `intent` on every host of the app's fleet, each host's lines on
/// stderr led by its name.
fn fleet_run(
    app: &config::AppConfig,
    fleet: &crate::fleet::settings::FleetSettings,
    overrides: &config::Overrides,
    intent: &Intent<'_>,
    quiet: bool,
) -> Result<FleetResult> {
    let console = FleetConsole::new(fleet, quiet);
    FleetRun {
        app,
        fleet,
        overrides,
        trigger: "cli".into(),
        watch: &console,
        // Bringing hosts to one release is a repair: a freeze allows it.
        force: true,
    }
    .run(intent)
}

fn report_fleet(app: &config::AppConfig, result: &FleetResult, json: bool) -> Result<()> {
    if json {
        return print_json(result);
    }
    match result.outcome {
        FleetOutcome::Unchanged => out!(
            "{} unchanged on {} hosts: {} is live on every one",
            app.layout.context(),
            result.hosts.len(),
            result.release.as_deref().unwrap_or("it")
        ),
        FleetOutcome::Canary => out!(
            "{}: {} serves {} as a canary on {} hosts; `zdeploy canary promote` or `abort` ends it on every host",
            app.layout.context(),
            result.release.as_deref().unwrap_or("?"),
            canary_share(app),
            result.hosts.len()
        ),
        outcome => out!(
            "{} -> {} on {} hosts, {outcome} (switch skew {} ms{})",
            app.layout.context(),
            result.release.as_deref().unwrap_or("?"),
            result.hosts.len(),
            result.skew_ms.unwrap_or(0),
            result
                .commit
                .as_deref()
                .map(|c| format!(", commit {}", short(c)))
                .unwrap_or_default()
        ),
    }
    Ok(())
}

/// `zdeploy fleet converge [APP]`: every host to the newest release any
/// host serves.
pub fn fleet_converge(config: ConfigSource<'_>, args: &FleetArgs, console: &Console) -> Result<()> {
    let overrides = args.target.overrides();
    let app = select_app(config, args.app.as_deref(), &overrides)?;
    let Topology::Ssh(fleet) = &app.topology else {
        return Err(UsageError(format!(
            "{}is not a fleet: give it hosts = [...] (or --host)",
            app.name
                .as_ref()
                .map(|n| format!("app '{n}' "))
                .unwrap_or_default()
        ))
        .into());
    };
    let result = fleet_run(
        &app,
        fleet,
        &overrides,
        &Intent::Converge,
        console.is_quiet(),
    )?;
    report_fleet(&app, &result, args.json)
}

/// `zdeploy fleet install [APP]`.
pub fn fleet_install(config: ConfigSource<'_>, args: &FleetArgs) -> Result<()> {
    let app = select_app(config, args.app.as_deref(), &args.target.overrides())?;
    let Topology::Ssh(fleet) = &app.topology else {
        return Err(
            UsageError("not a fleet: give the app hosts = [...] (or --host)".into()).into(),
        );
    };
    let installed = crate::fleet::install::install(fleet)?;
    if args.json {
        return print_json(&installed);
    }
    for host in &installed {
        out!("{}: {} {}", host.host, host.outcome, host.path);
    }
    Ok(())
}

pub fn deploy(config: ConfigSource<'_>, args: &DeployArgs, console: &Console) -> Result<()> {
    let mut overrides = args.target.overrides();
    args.retention.apply(&mut overrides);
    overrides.source_kind = args.source_kind.clone();
    overrides.reference = args.reference.clone();
    overrides.build = args.build.clone();
    overrides.after_switch = args.after_switch.clone();
    overrides.preset = args.preset.clone();
    overrides.build_timeout = args.build_timeout.clone();
    overrides.owner = args.owner.clone();
    overrides.group = args.group.clone();
    overrides.writable = args.writable.clone();
    overrides.build_user = args.build_user.clone();
    overrides.allow_root_build = args.allow_root_build;
    overrides.max_archive_size = args.max_archive_size.clone();
    overrides.max_archive_entries = args.max_archive_entries;
    overrides.max_archive_ratio = args.max_archive_ratio;
    overrides.watch = args.watch.clone();
    overrides.canary = args.canary.clone();
    overrides.health = crate::config::RawHealth {
        url: args.health_url.clone(),
        expect_status: args.health_status,
        timeout: args.health_timeout.clone(),
        before: args.health_before.clone(),
    };
    overrides.zero_downtime = match (args.zero_downtime, args.no_zero_downtime) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    };
    let app = if args.target.webroot.is_some() {
        overrides.source = args.source.clone().or(args.positional.clone());
        if args.source.is_some() && args.positional.is_some() {
            return Err(UsageError("give the source once: as SOURCE or as --source".into()).into());
        }
        None
    } else {
        overrides.source = args.source.clone();
        args.positional.as_deref()
    };
    let app = select_app(config, app, &overrides)?;
    let archive = match &args.archive {
        Some(path) => Some(checked_archive(path, args.sha256.as_deref())?),
        None => None,
    };
    crate::freeze::refuse_if_frozen(&app, Kind::Deploy, args.force)?;
    // On a fleet, `--watch` judges a canary only.
    if app.watch.is_some() && app.topology.is_fleet() && app.canary.is_none() {
        let why = "the watch judges one host's traffic; fleets are not watched yet";
        if args.watch.is_some() {
            return Err(UsageError(format!("--watch: {why}")).into());
        }
        eprintln!("warning: watch: {why}");
    }
    let done = match &args.from {
        Some(from) => {
            let from = select_app(config, Some(from), &config::Overrides::default())?;
            let told = crate::notify::Run::start(&app, "deploy", "cli --from");
            let done = crate::promotion::promote(
                &app,
                &from,
                args.force,
                &run_options(args.wait),
                console,
            )
            .map(Done::Deployed);
            told.finish(&done);
            done?
        }
        None => {
            let request = Request::Deploy {
                force: args.force,
                commit: None,
                exact: args.commit.clone(),
                archive,
            };
            run_cli(&app, &request, &overrides, args.wait, console)?
        }
    };
    let watched = match (&done, &app.watch) {
        (Done::Deployed(result), Some(policy)) if result.outcome == DeployOutcome::Deployed => {
            crate::watch::watch(
                &app,
                policy,
                result.deployment,
                &|| None,
                &|line| eprintln!("{line}"),
                console,
            )?
        }
        _ => None,
    };
    if let Some(error) = watched.as_ref().and_then(crate::watch::breach_error) {
        return Err(error);
    }
    let judging = app
        .canary
        .as_ref()
        .and_then(|canary| crate::canary::judging(&app, canary));
    if let (Done::Fleet(result), Some(policy), Topology::Ssh(fleet)) =
        (&done, &judging, &app.topology)
        && result.outcome == FleetOutcome::Canary
    {
        return judge_fleet_canary(&app, fleet, policy, &done, args.json);
    }
    let (Done::Deployed(result), Some(policy)) = (&done, judging) else {
        return report_done(&app, &done, args.json);
    };
    if result.outcome != DeployOutcome::Canary {
        return report_done(&app, &done, args.json);
    }
    // People hear that the canary began before it is judged; JSON gets
    // one document with both.
    if !args.json {
        report_done(&app, &done, false)?;
    }
    let judged = crate::canary::judge(
        &app,
        &policy,
        result.deployment,
        &|line| eprintln!("{line}"),
        console,
    )?;
    if args.json {
        print_json(&serde_json::json!({ "deployed": done, "judged": judged }))?;
    } else if let Some(ended) = judged.as_ref().and_then(|j| j.ended.as_ref()) {
        out!(
            "{} -> {} (canary {}, deployment #{})",
            app.layout.context(),
            ended.release,
            ended.ending.as_str(),
            ended.deployment
        );
    }
    match judged.as_ref().and_then(crate::canary::breach_error) {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Judge the canary a fleet deploy started by every host's traffic, then
/// promote or abort it on every host; a breach fails the deploy.
fn judge_fleet_canary(
    app: &AppConfig,
    fleet: &crate::fleet::settings::FleetSettings,
    policy: &zdeploy_core::watch::WatchPolicy,
    done: &Done,
    json: bool,
) -> Result<()> {
    if !json {
        report_done(app, done, false)?;
    }
    let judged = crate::fleet::canary::judge(app, fleet, policy, &|line| eprintln!("{line}"))?;
    if json {
        print_json(&serde_json::json!({ "deployed": done, "judged": judged }))?;
    } else if let Some(ending) = judged.ending {
        out!(
            "{}: canary {} {} on {} hosts",
            app.layout.context(),
            judged.release,
            ending.as_str(),
            fleet.hosts.len()
        );
    }
    match (&judged.verdict, judged.ending) {
        (zdeploy_core::watch::Verdict::Breached { why }, _) => {
            Err(zdeploy_core::Error::SwitchedBack(format!(
                "the canary {} failed on the fleet: {why}; aborted on every host",
                judged.release
            ))
            .into())
        }
        (verdict, None) => Err(anyhow::anyhow!(
            "the canary {} could not be judged ({}); it keeps serving until `zdeploy canary promote` or `abort`",
            judged.release,
            verdict.describe()
        )),
        _ => Ok(()),
    }
}

/// `--archive FILE` as an absolute path, after its `--sha256` was checked.
fn checked_archive(path: &Path, sha256: Option<&str>) -> Result<PathBuf> {
    let absolute = std::fs::canonicalize(path)
        .map_err(|e| UsageError(format!("--archive {}: {e}", path.display())))?;
    if !absolute.is_file() {
        return Err(UsageError(format!("--archive {}: not a file", path.display())).into());
    }
    if let Some(expected) = sha256 {
        if expected.len() != 64 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(
                UsageError(format!("--sha256 must be 64 hex digits, got '{expected}'")).into(),
            );
        }
        let (actual, _) = zdeploy_core::manifest::digest_file(&absolute)
            .map_err(|e| UsageError(format!("--archive {}: {e}", path.display())))?;
        if !actual.eq_ignore_ascii_case(expected) {
            return Err(UsageError(format!(
                "--archive {}: its SHA-256 is {actual}, not {expected}; nothing was deployed",
                path.display()
            ))
            .into());
        }
    }
    Ok(absolute)
}

/// Do what `request` asks of the app, however it is deployed, watched from
/// the terminal.
fn run_cli(
    app: &AppConfig,
    request: &Request,
    overrides: &config::Overrides,
    wait: bool,
    console: &Console,
) -> Result<Done> {
    let fleet = app
        .topology
        .ssh()
        .map(|fleet| FleetConsole::new(fleet, console.is_quiet()));
    let watch = Watch {
        options: run_options(wait),
        observer: Some(console),
        fleet: fleet.as_ref().map(|f| f as &dyn FleetObserver),
        overrides: Some(overrides),
        trigger: "cli",
        waiting: &|why| eprintln!("{why}"),
    };
    deploying::run(app, request, &watch)
}

/// The share of clients the app's canaries serve, for people.
fn canary_share(app: &AppConfig) -> String {
    app.canary
        .as_ref()
        .map(|c| c.share.describe())
        .unwrap_or_default()
}

/// A deploy's or rollback's outcome, for people (or as JSON).
fn report_done(app: &AppConfig, done: &Done, json: bool) -> Result<()> {
    match done {
        Done::Fleet(result) => return report_fleet(app, result, json),
        Done::Etcd(outcome) => return crate::fleet::etcd::command::report(outcome, json),
        _ if json => return print_json(done),
        Done::Deployed(result) => match result.outcome {
            DeployOutcome::Unchanged => out!(
                "{} unchanged: {} is already live",
                app.layout.context(),
                result.release.as_deref().unwrap_or("it")
            ),
            DeployOutcome::Canary => out!(
                "{}: {} serves {} as a canary beside {} (deployment #{}); `zdeploy canary promote` or `abort` ends it",
                app.layout.context(),
                result.release.as_deref().unwrap_or("?"),
                canary_share(app),
                result.previous.as_deref().unwrap_or("?"),
                result.deployment,
            ),
            DeployOutcome::Deployed => out!(
                "{} -> {} (deployment #{}{})",
                app.layout.context(),
                result.release.as_deref().unwrap_or("?"),
                result.deployment,
                result
                    .commit
                    .as_deref()
                    .map(|c| format!(", commit {}", short(c)))
                    .unwrap_or_default()
            ),
        },
        Done::RolledBack(result) => out!(
            "{} -> {} (was {})",
            app.layout.context(),
            result.release,
            result.previous
        ),
    }
    Ok(())
}

pub fn rollback_command(
    config: ConfigSource<'_>,
    args: &RollbackArgs,
    console: &Console,
) -> Result<()> {
    let (app, rest) = split_app(config, &args.target, &args.positional, 0..=1)?;
    if rest.len() > 1 {
        return Err(UsageError(format!("too many arguments: {}", rest.join(" "))).into());
    }
    let mut overrides = args.target.overrides();
    overrides.shared = args.shared.clone();
    overrides.settle = args.settle.clone();
    overrides.after_switch = args.after_switch.clone();
    let app = select_app(config, app, &overrides)?;
    crate::freeze::refuse_if_frozen(&app, Kind::Rollback, args.force)?;
    let request = Request::Rollback {
        to: rest.first().cloned(),
        force: args.force,
    };
    let done = run_cli(&app, &request, &overrides, args.wait, console)?;
    report_done(&app, &done, args.json)
}

fn open_history(layout: &Layout) -> Result<Option<History>> {
    layout.check_webroot()?;
    let path = layout.history_path();
    Ok(if path.exists() {
        Some(History::open(&path)?)
    } else {
        None
    })
}

pub fn releases(config: ConfigSource<'_>, args: &InspectArgs) -> Result<()> {
    let app = select_app(config, args.app.as_deref(), &args.target.overrides())?;
    if let Some(done) = on_every_host(&app, args.json) {
        return done;
    }
    let history = open_history(&app.layout)?;
    let list = inventory::list(&app.layout, history.as_ref())?;
    if args.json {
        return print_json(&list);
    }
    if list.is_empty() {
        out!(
            "no releases of {} in {}",
            app.layout.context(),
            app.layout.webroot().display()
        );
        return Ok(());
    }
    let width = list.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
    out!(
        "  {:width$}  {:<10}  {:<20}  {:<12}  {:>10}  {:>10}",
        "NAME",
        "STATE",
        "CREATED",
        "COMMIT",
        "SIZE",
        "OWN"
    );
    for release in &list {
        out!(
            "{} {:width$}  {:<10}  {:<20}  {:<12}  {:>10}  {:>10}",
            if release.live { "*" } else { " " },
            release.name,
            if release.kind == "kept" {
                format!("{} (kept)", release.state)
            } else {
                release.state.clone()
            },
            release.created.as_deref().unwrap_or("-"),
            release.commit.as_deref().map(short).unwrap_or("-"),
            human_size(release.size),
            human_size(release.own)
        );
    }
    let total = inventory::context_usage(&app.layout)?;
    let apparent: u64 = list.iter().map(|r| r.size).sum();
    out!(
        "{} releases take {} on disk (sharing files saves {}); OWN is what pruning a release frees",
        list.len(),
        human_size(total),
        human_size(apparent.saturating_sub(total))
    );
    Ok(())
}

pub fn status(config: ConfigSource<'_>, args: &StatusArgs) -> Result<()> {
    let inspect = &args.inspect;
    let app = select_app(config, inspect.app.as_deref(), &inspect.target.overrides())?;
    match &app.topology {
        Topology::Ssh(fleet) => return crate::fleet::status::show(&app, fleet, inspect.json),
        Topology::Etcd(membership) => {
            return crate::fleet::etcd::command::status(&app, membership, inspect.json);
        }
        Topology::OneHost | Topology::OnOrders => {}
    }
    let history = open_history(&app.layout)?;
    let live = match read_live(&app.layout)? {
        Live::Release(name) => Some(name),
        Live::Folder => Some(app.layout.context().to_string()),
        Live::Nothing => None,
    };
    let live_record = match (&history, &live) {
        (Some(h), Some(name)) => h.release(name)?,
        _ => None,
    };
    let deployments = match &history {
        Some(h) => h.deployments(args.limit)?,
        None => Vec::new(),
    };
    let user_content = live
        .as_deref()
        .and_then(|name| zdeploy_core::user_content::summary_of(&app.layout, name));
    let window = zdeploy_core::maintenance::current(&app.layout)?;
    let frozen = zdeploy_core::freeze::current(&app.layout)?;
    let canary = zdeploy_core::canary::current(&app.layout)?;
    let old_code = zdeploy_core::holders::on_old_releases(&app.layout)?;
    if inspect.json {
        let old_code: Vec<serde_json::Value> = old_code
            .iter()
            .map(|(release, holder)| serde_json::json!({ "release": release, "process": holder }))
            .collect();
        return print_json(&serde_json::json!({
            "webroot": app.layout.webroot(),
            "context": app.layout.context(),
            "live": live,
            "live_release": live_record,
            "maintenance": window,
            "freeze": frozen,
            "canary": canary,
            "old_code": old_code,
            "user_content": user_content,
            "deployments": deployments,
        }));
    }
    match (&live, &live_record) {
        (Some(name), Some(record)) => out!(
            "{} in {}: live {name}{}",
            app.layout.context(),
            app.layout.webroot().display(),
            record
                .commit
                .as_deref()
                .map(|c| format!(" (commit {})", short(c)))
                .unwrap_or_default()
        ),
        (Some(name), None) => out!(
            "{} in {}: live {name}",
            app.layout.context(),
            app.layout.webroot().display()
        ),
        (None, _) => out!(
            "{} in {}: nothing deployed yet",
            app.layout.context(),
            app.layout.webroot().display()
        ),
    }
    if let Some(freeze) = &frozen {
        out!(
            "{} {}",
            app.layout.context(),
            crate::freeze::describe(freeze)
        );
    }
    if let Some(window) = &window {
        out!(
            "{}",
            crate::maintenance::describe_window(window, history.as_ref())
        );
    }
    if let Some(canary) = &canary {
        out!(
            "{} {}",
            app.layout.context(),
            crate::canary::describe(canary)
        );
    }
    for (release, holder) in &old_code {
        out!(
            "old code: process {} ({}) still runs from {release}, which is not live",
            holder.pid,
            holder.command
        );
    }
    if let Some(summary) = &user_content {
        out!(
            "user content: {} file{} when it was carried into {}",
            summary.files,
            if summary.files == 1 { "" } else { "s" },
            summary.release
        );
    }
    if !deployments.is_empty() {
        out!("recent deployments:");
    }
    for d in &deployments {
        let took = d
            .finished_ms
            .map(|f| format!("{:.1}s", (f - d.started_ms) as f64 / 1000.0))
            .unwrap_or_else(|| "-".into());
        let started = jiff::Timestamp::from_millisecond(d.started_ms)
            .map(|t| t.strftime("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default();
        out!(
            "  #{:<4} {:<8} {:<11} {started}  {:>6}  {}{}",
            d.id,
            d.kind,
            d.outcome,
            took,
            d.release.as_deref().unwrap_or("-"),
            d.error
                .as_deref()
                .map(|e| format!("  ({})", e.lines().next().unwrap_or("")))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// On a fleet, this command runs on every host instead, each answer shown
/// under the host's name; `None` where it acts here.
fn on_every_host(app: &AppConfig, json: bool) -> Option<Result<()>> {
    match &app.topology {
        Topology::Ssh(fleet) => Some(remote_command::show_everywhere(app, fleet, json)),
        Topology::Etcd(membership) => Some(crate::fleet::etcd::command::show_everywhere(
            app, membership, json,
        )),
        Topology::OneHost | Topology::OnOrders => None,
    }
}

pub fn verify(config: ConfigSource<'_>, args: &VerifyArgs) -> Result<()> {
    let (app, rest) = split_app(config, &args.target, &args.positional, 0..=1)?;
    if rest.len() > 1 {
        return Err(UsageError(format!("too many arguments: {}", rest.join(" "))).into());
    }
    let app = select_app(config, app, &args.target.overrides())?;
    match &app.topology {
        Topology::Ssh(fleet) => return remote_command::verify_everywhere(&app, fleet, args.json),
        Topology::Etcd(membership) => {
            return crate::fleet::etcd::command::verify_everywhere(&app, membership, args.json);
        }
        Topology::OneHost | Topology::OnOrders => {}
    }
    let layout = &app.layout;
    let live = read_live(layout)?;
    let (name, dir) = match rest.first() {
        Some(name) if zdeploy_core::release::classify(layout.context(), name).is_some() => {
            (name.clone(), layout.release_path(name))
        }
        Some(name) => {
            return Err(UsageError(format!(
                "'{name}' is not a release name of {} (see zdeploy releases)",
                layout.context()
            ))
            .into());
        }
        None => match (live.record_name(layout), live.dir(layout)) {
            (Some(name), Some(dir)) => (name.to_string(), dir),
            _ => {
                return Err(UsageError(format!(
                    "nothing is live at {}",
                    layout.context_path().display()
                ))
                .into());
            }
        },
    };
    let no_manifest = || UsageError(format!("the history has no manifest of {name}"));
    let history = open_history(layout)?.ok_or_else(no_manifest)?;
    let manifest = history.manifest(&name)?.ok_or_else(no_manifest)?;
    if !dir.is_dir() {
        return Err(UsageError(format!(
            "no release {name} in {}",
            layout.webroot().display()
        ))
        .into());
    }
    let mismatches = zdeploy_core::verify::verify(&dir, &manifest)?;
    let entries = manifest.entry_count()?;
    let digest = manifest.content_digest()?;
    if args.json {
        print_json(&serde_json::json!({
            "release": name,
            "entries": entries,
            "digest": digest,
            "mismatches": mismatches,
        }))?;
    } else if mismatches.is_empty() {
        out!("{name} matches its manifest ({entries} entries, digest {digest})");
    } else {
        for mismatch in &mismatches {
            out!("{}: {}", mismatch.path.display(), mismatch.problem);
        }
    }
    if mismatches.is_empty() {
        Ok(())
    } else {
        Err(anyhow::anyhow!(
            "{name} differs from its manifest in {} of {} entries",
            mismatches.len(),
            entries
        ))
    }
}

pub fn log(config: ConfigSource<'_>, args: &LogArgs) -> Result<()> {
    let is_id = |s: &str| s.parse::<i64>().is_ok();
    let (app, rest): (Option<&str>, &[String]) = match args.positional.as_slice() {
        [] => (None, &[]),
        [one] if is_id(one) => (None, &args.positional[..]),
        [one] => (Some(one.as_str()), &[]),
        [app, _] => (Some(app.as_str()), &args.positional[1..]),
        _ => return Err(UsageError("too many arguments; zdeploy log [APP] [ID]".into()).into()),
    };
    let id = match rest.first() {
        Some(text) => Some(
            text.parse::<i64>()
                .map_err(|_| UsageError(format!("invalid deployment id '{text}'")))?,
        ),
        None => None,
    };
    let app = select_app(config, app, &args.target.overrides())?;
    if let Some(done) = on_every_host(&app, args.json) {
        return done;
    }
    let Some(history) = open_history(&app.layout)? else {
        return Err(UsageError(format!("no deployments of {} yet", app.layout.context())).into());
    };
    let deployment = match id {
        Some(id) => history.deployment(id)?,
        None => history.deployments(1)?.into_iter().next(),
    }
    .ok_or_else(|| {
        UsageError(format!(
            "no deployment {} of {}",
            id.map(|i| format!("#{i}")).unwrap_or_default(),
            app.layout.context()
        ))
    })?;
    let steps = history.steps(deployment.id)?;
    let logs = history.logs(deployment.id)?;
    let window = history.deployment_window(deployment.id)?;
    let traffic = history.deployment_traffic(&deployment)?;
    let watch = history.deployment_watch(deployment.id)?;
    let canary = history.deployment_canary(deployment.id)?;
    if args.json {
        return print_json(&serde_json::json!({
            "deployment": deployment,
            "steps": steps,
            "log": logs,
            "maintenance_window": window,
            "traffic": traffic,
            "watch": watch,
            "canary": canary,
        }));
    }
    out!(
        "deployment #{} ({}, trigger {}): {}{}",
        deployment.id,
        deployment.kind,
        deployment.trigger,
        deployment.outcome,
        deployment
            .release
            .as_deref()
            .map(|r| format!(" -> {r}"))
            .unwrap_or_default()
    );
    if let Some(source) = &deployment.source {
        out!(
            "source: {source}{}",
            deployment
                .reference
                .as_deref()
                .map(|r| format!(" @ {r}"))
                .unwrap_or_default()
        );
    }
    out!("steps:");
    for step in &steps {
        out!(
            "  {:<12} {:>7}ms  {}",
            step.name,
            step.duration_ms,
            step.outcome
        );
    }
    if let Some(window) = &window {
        match window.seconds {
            Some(seconds) => out!(
                "maintenance window: {seconds:.1}s (closed: {})",
                window.closed_by.as_deref().unwrap_or("?")
            ),
            None => out!("maintenance window: still open"),
        }
    }
    if let Some(traffic) = &traffic {
        out!("traffic while live: {}", traffic.describe());
    }
    if let Some(canary) = &canary {
        out!(
            "canary: {} served {} beside {}; {}{}",
            canary.canary.release,
            canary.canary.share.describe(),
            canary.canary.live,
            canary.outcome,
            match (&canary.why, canary.ended_by) {
                (Some(why), Some(by)) => format!(" by deployment #{by} ({why})"),
                _ => String::new(),
            }
        );
    }
    if let Some(watch) = &watch {
        out!(
            "watch: {} (after: {}; before: {})",
            watch.verdict.describe(),
            watch.after.describe(),
            watch.before.describe()
        );
    }
    out!("log:");
    for line in &logs {
        let at = jiff::Timestamp::from_millisecond(line.at_ms)
            .map(|t| t.strftime("%H:%M:%S%.3f").to_string())
            .unwrap_or_default();
        out!("  {at} {:<5} {}", line.level, line.message);
    }
    if let Some(error) = &deployment.error {
        out!("error: {error}");
    }
    Ok(())
}

pub fn prune(config: ConfigSource<'_>, args: &PruneArgs, console: &Console) -> Result<()> {
    let mut overrides = args.target.overrides();
    args.retention.apply(&mut overrides);
    let app = select_app(config, args.app.as_deref(), &overrides)?;
    if let Some(done) = on_every_host(&app, args.json) {
        return done;
    }
    let pruned = upkeep::prune(&app.layout, &app.policy, &run_options(args.wait), console)?;
    if args.json {
        return print_json(&serde_json::json!({ "pruned": pruned }));
    }
    if pruned.is_empty() {
        out!(
            "nothing to prune (keep {}, drain {}s)",
            app.policy.keep,
            app.policy.drain.as_secs()
        );
    }
    for name in pruned {
        out!("pruned {name}");
    }
    Ok(())
}

pub fn keep(config: ConfigSource<'_>, args: &KeepArgs, console: &Console) -> Result<()> {
    let (app, rest) = split_app(config, &args.target, &args.positional, 2..=2)?;
    let [release, name] = rest else {
        return Err(UsageError("usage: zdeploy keep [APP] RELEASE NAME".into()).into());
    };
    let app = select_app(config, app, &args.target.overrides())?;
    if let Some(done) = on_every_host(&app, false) {
        return done;
    }
    let kept = upkeep::keep(
        &app.layout,
        release,
        name,
        app.policy.apache.as_ref(),
        &run_options(args.wait),
        console,
    )?;
    out!("kept {kept}");
    Ok(())
}

pub fn init(config: ConfigSource<'_>, args: &InitArgs) -> Result<()> {
    let source = args.source.clone().unwrap_or_else(|| PathBuf::from("."));
    let target = config
        .path
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("zdeploy.toml"));
    let (written, detection) = crate::init::init(&source, &target, args.force)?;
    match detection {
        Some(found) => out!(
            "found {} ({}); wrote {} with preset = \"{}\"",
            found.preset.framework,
            found.evidence,
            written.display(),
            found.preset.name
        ),
        None => out!(
            "no framework found; wrote {} serving the release's top folder",
            written.display()
        ),
    }
    Ok(())
}

/// The port the agent of this config listens on (its `[agent] listen`),
/// or the default one without a config file (`--webroot`).
fn agent_port(config: ConfigSource<'_>, args: &WebserverArgs) -> Result<u16> {
    let path = match config::discover(config.path) {
        Ok(path) if args.target.webroot.is_none() => path,
        _ => return Ok(crate::config::DEFAULT_AGENT_PORT),
    };
    Ok(config::ConfigFile::load(&path)?.agent(None)?.listen.port())
}

pub fn webserver(config: ConfigSource<'_>, args: &WebserverArgs) -> Result<()> {
    if let Some(host) = args.target.hosts.first() {
        return Err(UsageError(format!(
            "--host {host}: zdeploy webserver prints the site of the host it runs on; run it on each host"
        ))
        .into());
    }
    let app = select_app(config, args.app.as_deref(), &args.target.overrides())?;
    let php_fpm = args
        .php_fpm
        .clone()
        .or(app.php_fpm_address.clone())
        .unwrap_or_else(|| crate::webserver::DEFAULT_PHP_FPM.to_string());
    let options = crate::webserver::SiteOptions {
        listen: &args.listen,
        server_name: &args.server_name,
        php_fpm: &php_fpm,
        public: app.policy.public.as_deref(),
        agent_port: agent_port(config, args)?,
    };
    let text = match args.server {
        WebServer::Nginx => crate::webserver::nginx(&app.layout, &options)?,
        WebServer::Caddy => crate::webserver::caddy(&app.layout, &options)?,
        WebServer::Apache => {
            // Made now, so kept from now on.
            let map = ApacheMap {
                if_present: false,
                ..app.policy.apache.clone().unwrap_or(ApacheMap {
                    path: app.layout.apache_map(),
                    if_present: false,
                })
            };
            let text = crate::webserver::apache(&app.layout, &map, &options)?;
            // The map names the live release from now on; while nothing is
            // deployed it holds no entry, and its existence tells later
            // deploys that Apache reads it.
            match read_live(&app.layout)? {
                Live::Release(name) => {
                    map.point_at(&app.layout, &name)?;
                    eprintln!("wrote {} for the live release {name}", map.path.display());
                }
                _ => {
                    map.create_empty(&app.layout)?;
                    eprintln!(
                        "nothing is deployed yet: the first deploy writes the live release into {}",
                        map.path.display()
                    );
                }
            }
            text
        }
    };
    out!("{}", text.trim_end_matches('\n'));
    Ok(())
}

pub fn doctor(config: ConfigSource<'_>, args: &DoctorArgs) -> Result<()> {
    let mut overrides = args.target.overrides();
    overrides.drain = args.drain.clone();
    let app = select_app(config, args.app.as_deref(), &overrides)?;
    match &app.topology {
        Topology::Ssh(fleet) => return crate::fleet::status::doctor(&app, fleet, args.json),
        Topology::Etcd(membership) => {
            return crate::fleet::etcd::command::doctor_everywhere(&app, membership, args.json);
        }
        Topology::OneHost | Topology::OnOrders => {}
    }
    let findings = crate::doctor::examine(
        &app.layout,
        app.policy.public.as_deref(),
        &args.url,
        app.policy.drain,
    )?;
    if args.json {
        print_json(&findings)?;
    } else {
        crate::doctor::print(&findings);
    }
    if crate::doctor::has_problem(&findings) {
        return Err(anyhow::anyhow!(
            "zero downtime is not assured on this server: see the fixes above"
        ));
    }
    Ok(())
}

pub fn agent(config: ConfigSource<'_>, args: &AgentArgs, quiet: bool, verbose: bool) -> Result<()> {
    let path = crate::config::discover(config.path)?;
    if args.check {
        let report = crate::agent::check(&path, args.listen.as_deref())?;
        out!("{}", report.trim_end());
        return Ok(());
    }
    let level = match (quiet, verbose) {
        (true, _) => tracing::Level::WARN,
        (_, true) => tracing::Level::DEBUG,
        _ => tracing::Level::INFO,
    };
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_max_level(level)
        .with_target(false);
    match args.log_format {
        LogFormat::Human => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    crate::agent::run(&path, args.listen.as_deref())
}
