//! The command line: clap definitions, and the one place that turns a parsed
//! command into an `AppConfig` and runs it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use clap_complete::Shell;

use crate::config::{self, AppConfig, ConfigFile, Overrides, UsageError};

#[derive(Debug, Parser)]
#[command(
    name = "zdeploy",
    version,
    about = "Zero-downtime deployments for PHP and static sites served from a document root",
    args_override_self = true,
    after_help = "Exit codes: 0 success (or nothing to do), 1 deploy failed, 2 bad usage or config, \
                  3 another deploy holds the lock, 4 source unusable, 5 webroot or filesystem problem."
)]
pub struct Cli {
    /// Config file (default: $ZDEPLOY_CONFIG, ./zdeploy.toml, /etc/zdeploy/zdeploy.toml)
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print only errors
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Print every log line, build output included
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Deploy a new release and switch to it atomically.
    ///
    /// Ad hoc: `zdeploy deploy --webroot DIR SOURCE` (SOURCE is a git URL or
    /// path, an archive path or http(s) URL, or a folder). With a config:
    /// `zdeploy deploy [APP]`.
    Deploy(Box<DeployArgs>),
    /// Switch back to the previous release, or the one named.
    ///
    /// `zdeploy rollback [APP] [RELEASE]`.
    Rollback(RollbackArgs),
    /// List the releases on disk.
    Releases(InspectArgs),
    /// Show what is live and the last deployments.
    Status(StatusArgs),
    /// Check a release against its manifest (the live one by default).
    ///
    /// `zdeploy verify [APP] [RELEASE]`: every deployed folder, file and
    /// symlink present with its recorded kind, mode, size and content; user
    /// content is ignored. Exits 1 and lists what differs.
    Verify(VerifyArgs),
    /// Show a deployment's full log (the latest by default).
    ///
    /// `zdeploy log [APP] [ID]`.
    Log(LogArgs),
    /// Delete releases beyond the retention policy now.
    Prune(PruneArgs),
    /// Rename a release to <context>_NAME so retention never removes it.
    ///
    /// `zdeploy keep [APP] RELEASE NAME`.
    Keep(KeepArgs),
    /// Answer every request with 503 and a maintenance page, or stop.
    ///
    /// `zdeploy maintenance on [APP]` opens a window that stays open until
    /// `zdeploy maintenance off [APP]`. The sites `zdeploy webserver`
    /// writes answer 503 with Retry-After and the app's maintenance_page
    /// (else a built-in page), except to --allow addresses and to clients
    /// with the bypass cookie printed once. No web server reload.
    Maintenance(MaintenanceArgs),
    /// Stop automatic deploys: polls and webhooks deploy nothing (and say
    /// so); a person's deploy or rollback needs --force.
    ///
    /// `zdeploy freeze [APP] [--reason TEXT] [--until TIME]`.
    Freeze(FreezeArgs),
    /// Lift a freeze: automatic deploys resume.
    Unfreeze(FreezeArgs),
    /// Promote or abort the canary a `deploy --canary` started, or show it.
    ///
    /// `promote` switches every client to the canary's release (the usual
    /// switch); `abort` sends every client back to the live release. Either
    /// way, what users wrote into the other release is carried over.
    Canary(CanaryArgs),
    /// Write a commented zdeploy.toml for an app, with the preset of the framework found.
    ///
    /// `zdeploy init [SOURCE]` reads SOURCE (a checkout; default: here).
    Init(InitArgs),
    /// Print a web server config for the app that keeps PHP on one release per request.
    ///
    /// `zdeploy webserver nginx [APP]`.
    Webserver(WebserverArgs),
    /// Check what zero downtime needs on this server, through the real web server.
    ///
    /// Places a short-lived probe script in the live release and asks for it
    /// at --url; exits 1 when something would break zero downtime.
    Doctor(DoctorArgs),
    /// Run the agent: auto-deploy on an interval and on push, API, dashboard, metrics.
    ///
    /// One process for every app in the config. SIGTERM stops it (a running
    /// deploy finishes within agent.shutdown_timeout), SIGHUP rereads the config.
    Agent(AgentArgs),
    /// Fleets: `zdeploy fleet converge [APP]` brings every host to one
    /// release; `zdeploy fleet install [APP]` puts this zdeploy on every host.
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// A fleet host's part of a fleet deploy, driven by the controller over
    /// ssh (stdin and stdout speak the fleet protocol).
    #[command(hide = true)]
    FleetHost,
    /// A command run on a fleet host for the controller: the invocation
    /// (config text and arguments) arrives as JSON on stdin.
    #[command(hide = true)]
    FleetRun,
    /// Apache's piped access log: send each line read on stdin to SOCKET
    /// (the app's traffic socket), dropping what nobody reads.
    #[command(hide = true)]
    TrafficRelay { socket: PathBuf },
    /// Print this host's live release of APP for a promotion run elsewhere
    /// (JSON on stdout).
    #[command(hide = true)]
    PromotionExport { app: String },
    /// Write the man pages into DIR (the package build runs this).
    #[command(hide = true)]
    Manpages { dir: PathBuf },
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
}

/// Where the app lives, for ad-hoc use without a config file.
#[derive(Debug, Args, Clone, Default)]
pub struct TargetArgs {
    /// Folder that holds the contexts (ad hoc; the config is then not read)
    #[arg(long, value_name = "DIR")]
    pub webroot: Option<PathBuf>,
    /// Context: the name the web server serves inside the webroot [default: ROOT]
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// The folder of each release the web server serves, e.g. public or web [default: the release itself]
    #[arg(long, value_name = "DIR")]
    pub public: Option<String>,
    /// The web server in front of the app: nginx, caddy, or apache (zdeploy then keeps its map current) [default: nginx]
    #[arg(long, value_name = "nginx|apache|caddy")]
    pub webserver: Option<String>,
    /// Behind Apache: the text map its vhost reads the live release from, rewritten at each switch [default: apache.map in the state dir]
    #[arg(long, value_name = "FILE")]
    pub apache_map: Option<PathBuf>,
    /// Reset PHP-FPM's opcache over FastCGI at this socket or host:port after each switch
    #[arg(long, value_name = "ADDR")]
    pub opcache_reset: Option<String>,
    /// A fleet host, `[user@]name[:port]`, reached over ssh (repeatable; overrides the app's hosts)
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
}

#[derive(Debug, Args, Clone, Default)]
pub struct RetentionArgs {
    /// Releases to keep, counting the live one [default: 3]
    #[arg(long, value_name = "N")]
    pub keep: Option<i64>,
    /// Keep a release at least this long after it stops being live [default: 60s]
    #[arg(long, value_name = "DURATION")]
    pub drain: Option<String>,
    /// Path shared by all releases, kept under the state dir (repeatable)
    #[arg(long = "shared", value_name = "PATH")]
    pub shared: Vec<String>,
    /// A shared file (.env): linked even before anyone wrote it (repeatable)
    #[arg(long = "shared-file", value_name = "PATH")]
    pub shared_files: Vec<String>,
    /// Also prune the oldest releases (never the live or previous one) while all take more than this
    #[arg(long, value_name = "SIZE")]
    pub max_disk: Option<String>,
    /// Wait after the switch before carrying late writes from the old release [default: 1s]
    #[arg(long, value_name = "DURATION")]
    pub settle: Option<String>,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// APP from the config, or SOURCE with --webroot
    #[arg(value_name = "APP|SOURCE")]
    pub positional: Option<String>,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub retention: RetentionArgs,
    /// Source, overriding the app's
    #[arg(long, value_name = "SOURCE")]
    pub source: Option<String>,
    /// Treat a local SOURCE as this kind instead of guessing
    #[arg(long, value_name = "git|archive|folder")]
    pub source_kind: Option<String>,
    /// Branch, tag or commit to deploy [default: the remote's default branch]
    #[arg(long = "ref", value_name = "REF")]
    pub reference: Option<String>,
    /// Build command run inside the new release before the switch (repeatable)
    #[arg(long = "build", value_name = "CMD")]
    pub build: Vec<String>,
    /// Owner of every deployed file and folder (user name or uid)
    #[arg(long, value_name = "USER")]
    pub owner: Option<String>,
    /// Group of every deployed file and folder (the web server's, usually)
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// Release path the group may write, created if missing (repeatable)
    #[arg(long = "writable", value_name = "PATH")]
    pub writable: Vec<String>,
    /// Run build steps and the check before the switch as this unprivileged user
    #[arg(long, value_name = "USER")]
    pub build_user: Option<String>,
    /// Let build steps run as root (also ZDEPLOY_ALLOW_ROOT_BUILD=1)
    #[arg(long)]
    pub allow_root_build: bool,
    /// Command run in the new release right after it goes live (repeatable)
    #[arg(long = "after-switch", value_name = "CMD")]
    pub after_switch: Vec<String>,
    /// A framework's defaults for the keys not given: laravel, symfony, wordpress, drupal, magento, craft, typo3, shopware, codeigniter, mediawiki
    #[arg(long, value_name = "NAME")]
    pub preset: Option<String>,
    /// Time limit for each build command [default: 10m]
    #[arg(long, value_name = "DURATION")]
    pub build_timeout: Option<String>,
    /// Update the context folder in place instead (plain mode)
    #[arg(long, conflicts_with = "zero_downtime")]
    pub no_zero_downtime: bool,
    /// Use releases and an atomic switch (the default; overrides the config)
    #[arg(long)]
    pub zero_downtime: bool,
    /// Largest archive (bytes written in all) [default: 8GiB]
    #[arg(long, value_name = "SIZE")]
    pub max_archive_size: Option<String>,
    /// Most entries an archive may have [default: 1000000]
    #[arg(long, value_name = "N")]
    pub max_archive_entries: Option<i64>,
    /// Most bytes an archive may write per byte of its size, once past 100 MiB; 0 for no limit [default: 100]
    #[arg(long, value_name = "N")]
    pub max_archive_ratio: Option<i64>,
    /// After the switch, GET this URL; if it does not answer --health-status in time, switch back
    #[arg(long, value_name = "URL")]
    pub health_url: Option<String>,
    /// Status the health URL must answer [default: 200]
    #[arg(long, value_name = "CODE")]
    pub health_status: Option<i64>,
    /// Time the health URL has to answer, retries included, and limit of --health-before [default: 10s]
    #[arg(long, value_name = "DURATION")]
    pub health_timeout: Option<String>,
    /// Before the switch, run this shell command inside the new release; it must exit 0
    #[arg(long, value_name = "CMD")]
    pub health_before: Option<String>,
    /// Deploy even if the live release already has this commit or content, or the app is frozen
    #[arg(long)]
    pub force: bool,
    /// Deploy exactly this commit (7 to 40 hex digits), which must be on the app's ref unless allow_any_commit
    #[arg(long, value_name = "SHA")]
    pub commit: Option<String>,
    /// Deploy this archive, built elsewhere (a CI's artifact), instead of the app's source: only `once` build entries run
    #[arg(long, value_name = "FILE", conflicts_with_all = ["commit", "source", "reference"])]
    pub archive: Option<PathBuf>,
    /// Deploy exactly what app APP serves (here, or on its ssh host): its live release's bytes, copied by digest, build not run again
    #[arg(long = "from", value_name = "APP", conflicts_with_all = ["commit", "source", "reference", "archive"])]
    pub from: Option<String>,
    /// After the switch, judge the release by its real traffic for DURATION and switch back on a breach (see the app's `watch`); with a canary, judge the canary that long, then promote or abort it
    #[arg(long, value_name = "DURATION")]
    pub watch: Option<String>,
    /// Do not switch: the new release serves SHARE of clients (like 10%), each kept on its release by a cookie, until `zdeploy canary promote` or `abort` (see the app's `canary`)
    #[arg(long, value_name = "SHARE", conflicts_with = "from")]
    pub canary: Option<String>,
    /// The archive's SHA-256: refuse to deploy bytes that differ
    #[arg(long, value_name = "HEX", requires = "archive")]
    pub sha256: Option<String>,
    /// Queue behind a running deploy instead of failing
    #[arg(long)]
    pub wait: bool,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Bring every host to the newest release any host serves (after a
    /// host was down or a controller was killed mid-deploy).
    Converge(FleetArgs),
    /// Put this zdeploy binary on every host that lacks it or has another
    /// (same architecture; written beside and renamed into place).
    Install(FleetArgs),
}

#[derive(Debug, Args)]
pub struct FleetArgs {
    /// APP from the config
    pub app: Option<String>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// [APP] [RELEASE]
    #[arg(value_name = "APP|RELEASE", num_args = 0..=2)]
    pub positional: Vec<String>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Path shared by all releases (repeatable)
    #[arg(long = "shared", value_name = "PATH")]
    pub shared: Vec<String>,
    /// Wait after the switch before carrying late writes [default: 1s]
    #[arg(long, value_name = "DURATION")]
    pub settle: Option<String>,
    /// Command run in the release right after it goes live again (repeatable)
    #[arg(long = "after-switch", value_name = "CMD")]
    pub after_switch: Vec<String>,
    /// Roll back even while the app is frozen
    #[arg(long)]
    pub force: bool,
    /// Queue behind a running deploy instead of failing
    #[arg(long)]
    pub wait: bool,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// APP from the config
    pub app: Option<String>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub inspect: InspectArgs,
    /// How many deployments to show
    #[arg(long, default_value_t = 10)]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// [APP] [RELEASE]
    #[arg(value_name = "APP|RELEASE", num_args = 0..=2)]
    pub positional: Vec<String>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// [APP] [ID]
    #[arg(value_name = "APP|ID", num_args = 0..=2)]
    pub positional: Vec<String>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// APP from the config
    pub app: Option<String>,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub retention: RetentionArgs,
    /// Queue behind a running deploy instead of failing
    #[arg(long)]
    pub wait: bool,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CanaryArgs {
    pub action: CanaryAction,
    /// APP from the config
    pub app: Option<String>,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub retention: RetentionArgs,
    /// Why, kept in the history (abort: also with the failed release)
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Promote even while the app is frozen
    #[arg(long)]
    pub force: bool,
    /// Queue behind a running deploy instead of failing
    #[arg(long)]
    pub wait: bool,
    /// Only the canary of this release; with none running, succeed when
    /// the release is already where the action leaves it (a fleet's
    /// promote or abort run again)
    #[arg(long, value_name = "RELEASE")]
    pub release: Option<String>,
    /// traffic: collect this host's traffic reports this long first (the
    /// agent's, if it listens; else its own)
    #[arg(long = "for", value_name = "DURATION")]
    pub collect_for: Option<String>,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CanaryAction {
    /// Switch every client to the canary's release
    Promote,
    /// Send every client back to the live release; the canary's is marked failed
    Abort,
    /// Show the running canary
    Status,
    /// Show what the canary's and the live release's clients were served
    /// here since the canary began
    Traffic,
}

#[derive(Debug, Args)]
pub struct FreezeArgs {
    /// APP from the config
    pub app: Option<String>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Why, shown in status and in every skipped deploy
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// End the freeze by itself: a time (2026-12-24T18:00:00Z) or a duration from now (2h)
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Debug, Args)]
pub struct MaintenanceArgs {
    /// on or off
    #[arg(value_enum)]
    pub switch: OnOff,
    /// APP from the config
    pub app: Option<String>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Seconds clients are told to wait before trying again [default: 60]
    #[arg(long, value_name = "SECONDS")]
    pub retry_after: Option<u32>,
    /// An address or IPv4 network that still reaches the app (repeatable)
    #[arg(long = "allow", value_name = "ADDRESS[/PREFIX]")]
    pub allow: Vec<String>,
    /// The bypass secret to use (a fleet's controller gives each host one)
    #[arg(long, hide = true)]
    pub secret: Option<String>,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The app's folder (a checkout) [default: .]
    pub source: Option<PathBuf>,
    /// Replace an existing config
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum WebServer {
    Nginx,
    Apache,
    Caddy,
}

#[derive(Debug, Args)]
pub struct WebserverArgs {
    /// Which server
    #[arg(value_enum)]
    pub server: WebServer,
    /// APP from the config
    pub app: Option<String>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Address and port to listen on
    #[arg(long, value_name = "ADDR", default_value = crate::webserver::DEFAULT_LISTEN)]
    pub listen: String,
    /// server_name
    #[arg(long, value_name = "NAME", default_value = "_")]
    pub server_name: String,
    /// PHP-FPM socket path or host:port [default: the app's php_fpm.address, else /run/php/php8.2-fpm.sock]
    #[arg(long, value_name = "ADDR")]
    pub php_fpm: Option<String>,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// APP from the config
    pub app: Option<String>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Where the site is served
    #[arg(long, default_value = "http://127.0.0.1/")]
    pub url: String,
    /// The drain to check against PHP's time limits [default: the app's, else 60s]
    #[arg(long, value_name = "DURATION")]
    pub drain: Option<String>,
    /// Print the findings as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Address to listen on, overriding agent.listen [default: 127.0.0.1:9470]
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    /// Log lines on stderr as human text or JSON objects
    #[arg(long, value_name = "human|json", default_value = "human")]
    pub log_format: LogFormat,
    /// Validate the config (apps, secrets, token), print what would run, and exit
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Args)]
pub struct KeepArgs {
    /// [APP] RELEASE NAME
    #[arg(value_name = "ARGS", num_args = 2..=3, required = true)]
    pub positional: Vec<String>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Queue behind a running deploy instead of failing
    #[arg(long)]
    pub wait: bool,
}

impl TargetArgs {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            webroot: self.webroot.clone(),
            context: self.context.clone(),
            public: self.public.clone(),
            webserver: self.webserver.clone(),
            apache_map: self.apache_map.clone(),
            opcache_reset: self.opcache_reset.clone(),
            hosts: self.hosts.clone(),
            ..Overrides::default()
        }
    }
}

impl RetentionArgs {
    pub fn apply(&self, overrides: &mut Overrides) {
        overrides.keep = self.keep;
        overrides.drain = self.drain.clone();
        overrides.max_disk = self.max_disk.clone();
        overrides.shared = self.shared.clone();
        overrides.shared_files = self.shared_files.clone();
        overrides.settle = self.settle.clone();
    }
}

/// The app a command works on: ad hoc with --webroot, else from the config.
pub fn select_app(
    config: config::ConfigSource<'_>,
    app: Option<&str>,
    overrides: &Overrides,
) -> anyhow::Result<AppConfig> {
    if overrides.webroot.is_some() {
        if let Some(app) = app {
            return Err(UsageError(format!(
                "unexpected argument '{app}': with --webroot no app is read from the config"
            ))
            .into());
        }
        return Ok(config::ad_hoc(overrides, config.role)?);
    }
    let path = config::discover(config.path)?;
    Ok(ConfigFile::load(&path)?.app(app, overrides, config.role)?)
}

/// Split `[APP] REST...` where APP is optional: with a config, a first
/// argument that names an app is the app.
pub fn split_app<'a>(
    config: config::ConfigSource<'_>,
    target: &TargetArgs,
    positional: &'a [String],
    rest_len: std::ops::RangeInclusive<usize>,
) -> Result<(Option<&'a str>, &'a [String]), UsageError> {
    let Some((first, rest)) = positional.split_first() else {
        return Ok((None, positional));
    };
    if target.webroot.is_some() {
        return Ok((None, positional));
    }
    let too_many = positional.len() > *rest_len.end();
    let names_app = too_many || {
        let path = config::discover(config.path)?;
        ConfigFile::load(&path)?.has_app(first)
    };
    if names_app && rest_len.contains(&rest.len()) {
        Ok((Some(first.as_str()), rest))
    } else {
        Ok((None, positional))
    }
}
