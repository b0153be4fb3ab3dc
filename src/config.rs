//! Configuration in two stages: `zdeploy.toml` and command-line flags (only
//! what the user typed) become one validated `AppConfig`; nothing past that
//! point reads flags or TOML again.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;
use zdeploy_core::ErrorKind;
use zdeploy_core::apache::ApacheMap;
use zdeploy_core::build::{AfterSwitchCommand, BuildStep};
use zdeploy_core::health::HealthCheck;
use zdeploy_core::layout::Layout;
use zdeploy_core::maintenance::Allowed;
use zdeploy_core::policy::{DEFAULT_SETTLE, DeployPlan, Policy};
use zdeploy_core::privilege::{Privileges, lookup_group, lookup_user, validate_writable_path};
use zdeploy_core::public::validate_public_path;
use zdeploy_core::retention::{DEFAULT_DRAIN, DEFAULT_KEEP};
use zdeploy_core::reuse::Reuse;
use zdeploy_core::shared::validate_shared_path;
use zdeploy_core::source::extract::Limits;
use zdeploy_core::source::{ArchiveLocation, Source, SourceKind};

use crate::fleet::etcd::settings::{EtcdSettings, Membership};
use crate::fleet::settings::BuildOn;
pub use crate::topology::{Role, Topology};
use crate::units::{parse_duration, parse_size};

pub const DEFAULT_CONTEXT: &str = "ROOT";
pub const SYSTEM_CONFIG: &str = "/etc/zdeploy/zdeploy.toml";

/// Why an app could not be configured: bad usage, or a source that cannot be used.
#[derive(Debug)]
pub enum ConfigError {
    Usage(UsageError),
    Source(zdeploy_core::Error),
}

impl From<UsageError> for ConfigError {
    fn from(e: UsageError) -> Self {
        ConfigError::Usage(e)
    }
}

impl From<ConfigError> for anyhow::Error {
    fn from(e: ConfigError) -> Self {
        match e {
            ConfigError::Usage(u) => u.into(),
            ConfigError::Source(s) => s.into(),
        }
    }
}

/// A problem with what the user asked for (flags, config): exit code 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn usage<T>(message: impl Into<String>) -> Result<T, UsageError> {
    Err(UsageError(message.into()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    agent: Option<RawAgent>,
    fleet: Option<Spanned<RawEtcdFleet>>,
    #[serde(default)]
    apps: BTreeMap<String, RawApp>,
}

/// `[fleet]`: how this agent reaches the fleet's etcd cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEtcdFleet {
    etcd: Vec<String>,
    name: Option<String>,
    prefix: Option<String>,
    ca_file: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    user: Option<String>,
    password_file: Option<String>,
    lease_ttl: Option<String>,
    advertise: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    listen: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    shutdown_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    preset: Option<Spanned<String>>,
    webroot: Option<Spanned<String>>,
    context: Option<Spanned<String>>,
    source: Option<Spanned<String>>,
    source_kind: Option<Spanned<String>>,
    #[serde(rename = "ref")]
    reference: Option<Spanned<String>>,
    keep: Option<Spanned<i64>>,
    drain: Option<Spanned<String>>,
    settle: Option<Spanned<String>>,
    zero_downtime: Option<bool>,
    public: Option<Spanned<String>>,
    maintenance_page: Option<Spanned<String>>,
    maintenance_allow: Option<Spanned<Vec<String>>>,
    allow_any_commit: Option<bool>,
    path: Option<Spanned<String>>,
    shared: Option<Spanned<Vec<String>>>,
    shared_files: Option<Spanned<Vec<String>>>,
    build: Option<Spanned<Vec<RawBuildStep>>>,
    reuse: Option<Spanned<Vec<RawReuse>>>,
    build_timeout: Option<Spanned<String>>,
    after_switch: Option<Spanned<Vec<RawAfterSwitch>>>,
    max_archive_size: Option<Spanned<String>>,
    max_disk: Option<Spanned<String>>,
    max_archive_entries: Option<Spanned<i64>>,
    max_archive_ratio: Option<Spanned<i64>>,
    php_fpm: Option<RawPhpFpm>,
    webserver: Option<Spanned<String>>,
    apache: Option<Spanned<RawApache>>,
    health: Option<Spanned<RawHealth>>,
    interval: Option<Spanned<String>>,
    webhook_secret_file: Option<Spanned<String>>,
    webhook_secret_env: Option<Spanned<String>>,
    notify: Option<Spanned<toml::Value>>,
    watch: Option<Spanned<toml::Value>>,
    canary: Option<Spanned<toml::Value>>,
    owner: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    writable: Option<Spanned<Vec<String>>>,
    build_user: Option<Spanned<String>>,
    allow_root_build: Option<bool>,
    hosts: Option<Spanned<Vec<String>>>,
    fleet: Option<Spanned<bool>>,
    strategy: Option<Spanned<String>>,
    stage_timeout: Option<Spanned<String>>,
    parallel: Option<Spanned<i64>>,
    batch: Option<Spanned<toml::Value>>,
    batch_wait: Option<Spanned<String>>,
    delay: Option<Spanned<String>>,
    on_failure: Option<Spanned<String>>,
    ssh_config: Option<Spanned<String>>,
    remote_zdeploy: Option<Spanned<String>>,
    builder: Option<Spanned<String>>,
    build_on: Option<Spanned<String>>,
}

/// A build step: a command, or `{ run = "…", unless_reused = "vendor" }`.
type RawBuildStep = CommandOr<RawBuildTable>;

/// A command (`"…"`), or a table of it with its options (`{ run = "…", … }`):
/// a table's own errors (a key zdeploy does not know) reach the user, with
/// their line, instead of "did not match any variant".
#[derive(Debug, Clone)]
enum CommandOr<T> {
    Command(String),
    Table(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for CommandOr<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Either<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Either<T> {
            type Value = CommandOr<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a command, or a table with `run`")
            }
            fn visit_str<E: serde::de::Error>(self, command: &str) -> Result<Self::Value, E> {
                Ok(CommandOr::Command(command.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(CommandOr::Table)
            }
        }
        deserializer.deserialize_any(Either(std::marker::PhantomData))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBuildTable {
    run: String,
    unless_reused: Option<String>,
    if_exists: Option<String>,
    writes: Option<Vec<String>>,
    once: Option<bool>,
    maintenance: Option<bool>,
    when: Option<String>,
}

/// An after_switch command: a command, or `{ run = "…", once = true }`.
type RawAfterSwitch = CommandOr<RawAfterSwitchTable>;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAfterSwitchTable {
    run: String,
    once: Option<bool>,
}

/// `reuse = [{ path = "vendor", key = "composer.lock" }]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReuse {
    path: String,
    key: String,
}

/// `health = { url, expect_status, timeout, before }`, or the `--health-*` flags.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub url: Option<String>,
    pub expect_status: Option<i64>,
    pub timeout: Option<String>,
    pub before: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApache {
    map: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPhpFpm {
    address: Option<String>,
    #[serde(default)]
    opcache_reset: bool,
}

/// Flags that override (or, ad hoc, replace) an app's config keys. A fleet's
/// controller sends them to each host with the config file's text.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Overrides {
    pub webroot: Option<PathBuf>,
    pub context: Option<String>,
    pub source: Option<String>,
    pub source_kind: Option<String>,
    pub reference: Option<String>,
    pub keep: Option<i64>,
    pub drain: Option<String>,
    pub settle: Option<String>,
    pub zero_downtime: Option<bool>,
    /// `--public DIR`: the release folder the web server serves.
    pub public: Option<String>,
    pub shared: Vec<String>,
    pub shared_files: Vec<String>,
    pub build: Vec<String>,
    pub build_timeout: Option<String>,
    /// `--preset NAME`: a framework's defaults for the keys not given.
    pub preset: Option<String>,
    pub after_switch: Vec<String>,
    pub max_archive_size: Option<String>,
    pub max_disk: Option<String>,
    pub max_archive_entries: Option<i64>,
    pub max_archive_ratio: Option<i64>,
    pub webserver: Option<String>,
    pub apache_map: Option<PathBuf>,
    /// `--opcache-reset ADDR`: reset PHP-FPM's opcache there after each switch.
    pub opcache_reset: Option<String>,
    pub health: RawHealth,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub writable: Vec<String>,
    pub build_user: Option<String>,
    pub allow_root_build: bool,
    /// `--watch DURATION`: watch the release this long (the app's other
    /// watch settings, or the defaults).
    pub watch: Option<String>,
    /// `--canary SHARE`: start a canary of this share instead of switching.
    pub canary: Option<String>,
    /// `--host`: deploy to these hosts over ssh instead of here (repeatable).
    pub hosts: Vec<String>,
}

/// One app, validated.
#[derive(Debug, Clone)]
pub struct AppConfig {
    pub name: Option<String>,
    pub layout: Layout,
    pub source: Option<Source>,
    pub reference: Option<String>,
    pub policy: Policy,
    /// "<config path>: " for messages about the app's keys; empty ad hoc.
    pub origin: String,
    /// PHP-FPM's socket path or host:port, for the web server config.
    pub php_fpm_address: Option<String>,
    /// What the agent does for this app.
    pub automation: Automation,
    /// Who is told about its deploys and rollbacks.
    pub notify: Vec<crate::notify::Target>,
    /// How a release is judged by its traffic after its switch.
    pub watch: Option<zdeploy_core::watch::WatchPolicy>,
    /// Deploys start a canary instead of switching.
    pub canary: Option<crate::canary::CanaryPolicy>,
    /// How it is deployed: one host, a fleet over ssh or through etcd, or
    /// one host's part of a fleet run.
    pub topology: Topology,
    /// The config file the app came from and its text, as read: a fleet's
    /// controller sends it to every host.
    pub file: Option<(PathBuf, String)>,
}

/// The agent's settings of one app.
#[derive(Debug, Clone, Default)]
pub struct Automation {
    /// Check the remote this often and deploy what changed.
    pub interval: Option<Duration>,
    /// Where the webhook secret is read from; webhooks are refused without one.
    pub webhook_secret: Option<SecretSource>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

impl SecretSource {
    /// The secret, trimmed; an empty or unreadable one is an error that says where.
    pub fn read(&self) -> Result<String, UsageError> {
        let (text, origin) = match self {
            SecretSource::File(path) => (
                std::fs::read_to_string(path).map_err(|e| {
                    UsageError(format!("cannot read secret {}: {e}", path.display()))
                })?,
                path.display().to_string(),
            ),
            SecretSource::Env(name) => (
                std::env::var(name)
                    .map_err(|_| UsageError(format!("environment variable {name} is not set")))?,
                format!("${name}"),
            ),
        };
        let secret = text.trim().to_string();
        if secret.is_empty() {
            return usage(format!("the secret in {origin} is empty"));
        }
        Ok(secret)
    }
}

impl AppConfig {
    pub fn deploy_plan(&self, force: bool) -> Result<DeployPlan, UsageError> {
        let Some(source) = self.source.clone() else {
            return usage(match &self.name {
                Some(app) => format!(
                    "{}app '{app}' has no source; set apps.{app}.source",
                    self.origin
                ),
                None => "no source given: zdeploy deploy --webroot DIR SOURCE".to_string(),
            });
        };
        if self.reference.is_some() && source.kind() != SourceKind::Git {
            return usage(format!(
                "{}a ref only applies to git sources; {} is {} source",
                self.origin,
                source.shown(),
                match source.kind() {
                    SourceKind::Archive => "an archive",
                    _ => "a folder",
                }
            ));
        }
        if let Some(path) = &self.policy.subfolder
            && source.kind() != SourceKind::Git
        {
            return usage(format!(
                "{}path = \"{}\" only applies to git sources; {} is not one",
                self.origin,
                path.display(),
                source.shown()
            ));
        }
        Ok(DeployPlan {
            source,
            reference: self.reference.clone(),
            commit: None,
            requested: None,
            policy: self.policy.clone(),
            force,
            prebuilt: false,
            canary: self.canary.as_ref().map(|c| c.share),
        })
    }

    /// The deploy plan for an archive built elsewhere (a CI's artifact):
    /// its bytes are the release, whatever the app's own source is, and
    /// only `once` build entries run.
    pub fn artifact_plan(&self, force: bool, archive: &Path) -> DeployPlan {
        DeployPlan {
            source: Source::Archive(ArchiveLocation::Path(archive.to_path_buf())),
            reference: None,
            commit: None,
            requested: None,
            policy: Policy {
                subfolder: None,
                ..self.policy.clone()
            },
            force,
            prebuilt: true,
            canary: self.canary.as_ref().map(|c| c.share),
        }
    }

    /// The deploy plan, for `exact` when a commit was asked for (git
    /// sources only).
    pub fn exact_plan(&self, force: bool, exact: Option<&str>) -> Result<DeployPlan, UsageError> {
        let mut plan = self.deploy_plan(force)?;
        if let Some(commit) = exact {
            if plan.source.kind() != SourceKind::Git {
                return usage(format!(
                    "{}--commit {commit}: only a git source has commits; {} is not one",
                    self.origin,
                    plan.source.shown()
                ));
            }
            plan.requested = Some(commit.to_string());
        }
        Ok(plan)
    }
}

/// Where a value came from, for error messages.
struct Origin<'a> {
    file: Option<(&'a Path, &'a str)>,
    app: Option<&'a str>,
}

impl Origin<'_> {
    fn prefix(&self) -> String {
        self.file
            .map(|(path, _)| format!("{}: ", path.display()))
            .unwrap_or_default()
    }

    fn error(
        &self,
        key: &str,
        flag: &str,
        span: Option<Range<usize>>,
        message: &str,
    ) -> UsageError {
        match (self.file, span) {
            (Some((path, text)), Some(span)) => {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                let app = self.app.unwrap_or("?");
                UsageError(format!(
                    "{}:{line}: apps.{app}.{key}: {message}",
                    path.display()
                ))
            }
            _ => UsageError(format!("{flag}: {message}")),
        }
    }
}

/// Pick the value: flag first, then the file's (with its span).
fn pick<T: Clone>(flag: Option<T>, file: &Option<Spanned<T>>) -> Option<(T, Option<Range<usize>>)> {
    match flag {
        Some(v) => Some((v, None)),
        None => file.as_ref().map(|s| (s.get_ref().clone(), Some(s.span()))),
    }
}

/// Find the config file: --config, $ZDEPLOY_CONFIG, ./zdeploy.toml, /etc/zdeploy/zdeploy.toml.
/// Where a command's config comes from (`--config`, else found), and who
/// reads it.
#[derive(Debug, Clone, Copy)]
pub struct ConfigSource<'a> {
    pub path: Option<&'a Path>,
    pub role: Role,
}

pub fn discover(explicit: Option<&Path>) -> Result<PathBuf, UsageError> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    if let Some(path) = std::env::var_os("ZDEPLOY_CONFIG") {
        return Ok(PathBuf::from(path));
    }
    let candidates = [PathBuf::from("zdeploy.toml"), PathBuf::from(SYSTEM_CONFIG)];
    candidates.iter().find(|p| p.exists()).cloned().ok_or_else(|| {
        UsageError(
            "no --webroot given and no config file found (looked for --config, $ZDEPLOY_CONFIG, ./zdeploy.toml, /etc/zdeploy/zdeploy.toml); \
             deploy ad hoc with: zdeploy deploy --webroot DIR SOURCE"
                .into(),
        )
    })
}

/// A parsed config file: its apps, unvalidated until one is chosen.
pub struct ConfigFile {
    path: PathBuf,
    text: String,
    agent: RawAgent,
    fleet: Option<Spanned<RawEtcdFleet>>,
    apps: BTreeMap<String, RawApp>,
}

/// The agent listens on loopback at this port unless told otherwise.
pub const DEFAULT_AGENT_PORT: u16 = 9470;
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(300);

/// The `[agent]` table, validated.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub listen: std::net::SocketAddr,
    /// Bearer token for API mutations, read from `token_file`.
    pub token: Option<String>,
    /// How long SIGTERM waits for a running deploy before abandoning it.
    pub shutdown_timeout: Duration,
}

impl ConfigFile {
    pub fn load(path: &Path) -> Result<Self, UsageError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| UsageError(format!("cannot read config {}: {e}", path.display())))?;
        Self::parse(path, text)
    }

    /// The config in `text`, as if read from `path` (named in errors).
    pub fn parse(path: &Path, text: String) -> Result<Self, UsageError> {
        let raw: RawFile = toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map(|s| {
                    format!(
                        ":{}",
                        text[..s.start.min(text.len())].matches('\n').count() + 1
                    )
                })
                .unwrap_or_default();
            UsageError(format!(
                "{}{line}: {}",
                path.display(),
                e.message().trim_end()
            ))
        })?;
        Ok(ConfigFile {
            path: path.to_path_buf(),
            text,
            agent: raw.agent.unwrap_or_default(),
            fleet: raw.fleet,
            apps: raw.apps,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `[agent]` table; `listen` overrides its address. Listening beyond
    /// loopback without a token is refused: anyone could deploy.
    pub fn agent(&self, listen: Option<&str>) -> Result<AgentConfig, UsageError> {
        let raw = &self.agent;
        let at = |span: Option<Range<usize>>, key: &str, message: &str| match span {
            Some(span) => {
                let line = self.text[..span.start.min(self.text.len())]
                    .matches('\n')
                    .count()
                    + 1;
                UsageError(format!(
                    "{}:{line}: agent.{key}: {message}",
                    self.path.display()
                ))
            }
            None => UsageError(format!("--listen: {message}")),
        };
        let (text, span) = match (listen, &raw.listen) {
            (Some(flag), _) => (flag.to_string(), None),
            (None, Some(value)) => (value.get_ref().clone(), Some(value.span())),
            (None, None) => (format!("127.0.0.1:{DEFAULT_AGENT_PORT}"), None),
        };
        let listen: std::net::SocketAddr = text.parse().map_err(|_| {
            at(
                span.clone(),
                "listen",
                &format!("'{text}' is not an address:port such as 127.0.0.1:9470"),
            )
        })?;
        let token = match &raw.token_file {
            None => None,
            Some(file) => {
                let source = SecretSource::File(PathBuf::from(file.get_ref()));
                Some(
                    source
                        .read()
                        .map_err(|e| at(Some(file.span()), "token_file", &e.0))?,
                )
            }
        };
        if token.is_none() && !listen.ip().is_loopback() {
            return Err(at(
                span,
                "listen",
                &format!(
                    "the agent listens on {listen}, beyond loopback, only with a token: set agent.token_file"
                ),
            ));
        }
        let shutdown_timeout = match &raw.shutdown_timeout {
            None => DEFAULT_SHUTDOWN_TIMEOUT,
            Some(value) => parse_duration(value.get_ref())
                .map_err(|e| at(Some(value.span()), "shutdown_timeout", &e))?,
        };
        Ok(AgentConfig {
            listen,
            token,
            shutdown_timeout,
        })
    }

    pub fn app_names(&self) -> Vec<&str> {
        self.apps.keys().map(String::as_str).collect()
    }

    pub fn has_app(&self, name: &str) -> bool {
        self.apps.contains_key(name)
    }

    /// The app named, or the only one, as `role` deploys it.
    pub fn app(
        &self,
        name: Option<&str>,
        overrides: &Overrides,
        role: Role,
    ) -> Result<AppConfig, ConfigError> {
        let names = self.app_names();
        let name = match name {
            Some(n) if self.has_app(n) => n.to_string(),
            Some(n) => {
                return Err(ConfigError::Usage(UsageError(format!(
                    "no app '{n}' in {} (apps: {})",
                    self.path.display(),
                    if names.is_empty() {
                        "none".into()
                    } else {
                        names.join(", ")
                    }
                ))));
            }
            None if names.len() == 1 => names[0].to_string(),
            None if names.is_empty() => {
                return Err(UsageError(format!(
                    "{} defines no apps; add an [apps.NAME] table",
                    self.path.display()
                ))
                .into());
            }
            None => {
                return Err(UsageError(format!(
                    "{} defines several apps ({}); name one",
                    self.path.display(),
                    names.join(", ")
                ))
                .into());
            }
        };
        let origin = Origin {
            file: Some((&self.path, &self.text)),
            app: Some(&name),
        };
        let raw = &self.apps[&name];
        let mut app = resolve(Some(name.clone()), raw, overrides, &origin, role)?;
        if let Some(membership) = self.membership(raw, &app, &origin)? {
            app.topology = match role {
                Role::Operator => Topology::Etcd(membership),
                Role::FleetHost => Topology::OnOrders,
            };
        }
        Ok(app)
    }

    /// The line of the file at byte `at`.
    fn line_of(&self, at: usize) -> usize {
        self.text[..at.min(self.text.len())].matches('\n').count() + 1
    }

    /// The app's place in a fleet in etcd: `fleet = true` with the file's
    /// `[fleet]` table.
    fn membership(
        &self,
        raw: &RawApp,
        app: &AppConfig,
        origin: &Origin<'_>,
    ) -> Result<Option<Membership>, UsageError> {
        let Some(flag) = raw.fleet.as_ref().filter(|f| *f.get_ref()) else {
            return Ok(None);
        };
        let span = Some(flag.span());
        let refuse = |message: &str| Err(origin.error("fleet", "fleet", span.clone(), message));
        if !matches!(app.topology, Topology::OneHost) {
            return refuse(
                "an app is deployed over ssh (hosts) or through etcd (fleet = true), not both",
            );
        }
        if !matches!(app.source, Some(Source::Git { .. })) {
            return refuse(
                "a fleet in etcd deploys from git: every host fetches the commit the leader chose",
            );
        }
        if !app.policy.zero_downtime {
            return refuse(
                "a fleet needs releases to stage and switch together; plain mode (zero_downtime = false) cannot be one",
            );
        }
        let Some(table) = &self.fleet else {
            return refuse(
                "fleet = true needs a [fleet] table naming the etcd cluster (etcd = [\"http://…:2379\"])",
            );
        };
        let etcd = self.etcd_settings(table)?;
        let stage_timeout = match pick(None, &raw.stage_timeout) {
            None => crate::fleet::settings::DEFAULT_STAGE_TIMEOUT,
            Some((text, span)) => parse_duration(&text)
                .map_err(|e| origin.error("stage_timeout", "stage_timeout", span, &e))?,
        };
        let builder = match pick(None, &raw.builder) {
            None => None,
            Some((name, span)) => {
                crate::fleet::etcd::settings::validate_name(&name)
                    .map_err(|e| origin.error("builder", "builder", span, &e))?;
                Some(name)
            }
        };
        let build_on = match pick(None, &raw.build_on) {
            None => BuildOn::Builder,
            Some((text, span)) => {
                BuildOn::parse(&text).map_err(|e| origin.error("build_on", "build_on", span, &e))?
            }
        };
        Ok(Some(Membership {
            etcd,
            stage_timeout,
            builder,
            build_on,
        }))
    }

    /// The `[fleet]` table, checked; errors name its line.
    fn etcd_settings(&self, table: &Spanned<RawEtcdFleet>) -> Result<EtcdSettings, UsageError> {
        use crate::fleet::etcd::settings as etcd;
        let raw = table.get_ref();
        let line = self.line_of(table.span().start);
        let error = |key: &str, message: String| {
            UsageError(format!(
                "{}:{line}: fleet.{key}: {message}",
                self.path.display()
            ))
        };
        if raw.etcd.is_empty() {
            return Err(error("etcd", "lists no etcd endpoint".into()));
        }
        for endpoint in &raw.etcd {
            etcd::validate_endpoint(endpoint).map_err(|e| error("etcd", e))?;
        }
        let name = match &raw.name {
            Some(name) => name.clone(),
            None => etcd::host_name().map_err(|e| error("name", e))?,
        };
        etcd::validate_name(&name).map_err(|e| error("name", e))?;
        let prefix = raw
            .prefix
            .clone()
            .unwrap_or_else(|| etcd::DEFAULT_PREFIX.to_string());
        etcd::validate_prefix(&prefix).map_err(|e| error("prefix", e))?;
        let secure = raw.etcd.iter().any(|e| e.starts_with("https://"));
        let tls = match (&raw.ca_file, &raw.cert_file, &raw.key_file) {
            (None, None, None) if !secure => None,
            (None, _, _) => {
                return Err(error(
                    "ca_file",
                    "https endpoints and client certificates need the cluster's CA (ca_file)"
                        .into(),
                ));
            }
            (Some(ca), None, None) => Some(etcd::TlsFiles {
                ca: PathBuf::from(ca),
                identity: None,
            }),
            (Some(ca), Some(cert), Some(key)) => Some(etcd::TlsFiles {
                ca: PathBuf::from(ca),
                identity: Some((PathBuf::from(cert), PathBuf::from(key))),
            }),
            (Some(_), _, _) => {
                return Err(error(
                    "cert_file",
                    "a client certificate needs both cert_file and key_file".into(),
                ));
            }
        };
        let auth = match (&raw.user, &raw.password_file) {
            (None, None) => None,
            (Some(user), Some(file)) => Some((user.clone(), PathBuf::from(file))),
            _ => {
                return Err(error(
                    "user",
                    "etcd credentials need both user and password_file".into(),
                ));
            }
        };
        let lease_ttl = match &raw.lease_ttl {
            None => etcd::DEFAULT_LEASE_TTL,
            Some(text) => {
                let ttl = parse_duration(text).map_err(|e| error("lease_ttl", e))?;
                if ttl < Duration::from_secs(2) {
                    return Err(error(
                        "lease_ttl",
                        format!(
                            "'{text}' is too short: at least 2s (etcd's leases count whole seconds)"
                        ),
                    ));
                }
                ttl
            }
        };
        if let Some(url) = &raw.advertise {
            etcd::validate_advertise(url).map_err(|e| error("advertise", e))?;
        }
        Ok(EtcdSettings {
            endpoints: raw.etcd.clone(),
            name,
            prefix,
            tls,
            auth,
            lease_ttl,
            advertise: raw
                .advertise
                .as_ref()
                .map(|url| url.trim_end_matches('/').to_string()),
        })
    }
}

/// An app made of flags alone (`--webroot DIR`).
pub fn ad_hoc(overrides: &Overrides, role: Role) -> Result<AppConfig, ConfigError> {
    resolve(
        None,
        &RawApp::default(),
        overrides,
        &Origin {
            file: None,
            app: None,
        },
        role,
    )
}

fn resolve(
    name: Option<String>,
    raw: &RawApp,
    flags: &Overrides,
    origin: &Origin<'_>,
    role: Role,
) -> Result<AppConfig, ConfigError> {
    let with_preset;
    let raw = match pick(flags.preset.clone(), &raw.preset) {
        None => raw,
        Some((preset, span)) => {
            let has_group = flags.group.is_some() || raw.group.is_some();
            with_preset = preset_defaults(raw, &preset, span, has_group, origin)?;
            &with_preset
        }
    };
    let webroot = flags
        .webroot
        .clone()
        .or_else(|| raw.webroot.as_ref().map(|w| PathBuf::from(w.get_ref())))
        .ok_or_else(|| match &name {
            Some(app) => UsageError(format!(
                "{}app '{app}' has no webroot; set apps.{app}.webroot",
                origin.prefix()
            )),
            None => UsageError("--webroot is required".into()),
        })?;
    let (context, context_span) =
        pick(flags.context.clone(), &raw.context).unwrap_or((DEFAULT_CONTEXT.into(), None));
    let layout = Layout::new(&webroot, &context)
        .map_err(|e| origin.error("context", "--context", context_span, &e.to_string()))?;

    let kind = match pick(flags.source_kind.clone(), &raw.source_kind) {
        None => None,
        Some((text, span)) => Some(SourceKind::parse(&text).ok_or_else(|| {
            origin.error(
                "source_kind",
                "--source-kind",
                span,
                &format!("unknown source kind '{text}'; use git, archive or folder"),
            )
        })?),
    };
    let source = match pick(flags.source.clone(), &raw.source) {
        None => None,
        Some((text, span)) => Some(Source::parse(&text, kind).map_err(|e| {
            let located = origin.error("source", "SOURCE", span, &e.to_string());
            match e.kind() {
                ErrorKind::Invalid => ConfigError::Usage(located),
                _ => ConfigError::Source(zdeploy_core::Error::Source(located.0)),
            }
        })?),
    };
    let reference = match pick(flags.reference.clone(), &raw.reference) {
        None => None,
        Some((text, span)) => {
            zdeploy_core::source::git::validate_ref(&text)
                .map_err(|e| origin.error("ref", "--ref", span, &e.to_string()))?;
            Some(text)
        }
    };
    let keep = match pick(flags.keep, &raw.keep) {
        None => DEFAULT_KEEP,
        Some((n, _)) if (1..=10_000).contains(&n) => n as usize,
        Some((n, span)) => {
            return Err(origin
                .error(
                    "keep",
                    "--keep",
                    span,
                    &format!(
                        "keep must be at least 1 (the live release) and at most 10000, got {n}"
                    ),
                )
                .into());
        }
    };
    let duration = |key: &str,
                    flag: &str,
                    value: Option<(String, Option<Range<usize>>)>,
                    default: Duration|
     -> Result<Duration, UsageError> {
        match value {
            None => Ok(default),
            Some((text, span)) => {
                parse_duration(&text).map_err(|e| origin.error(key, flag, span, &e))
            }
        }
    };
    let drain = duration(
        "drain",
        "--drain",
        pick(flags.drain.clone(), &raw.drain),
        DEFAULT_DRAIN,
    )?;
    let settle = duration(
        "settle",
        "--settle",
        pick(flags.settle.clone(), &raw.settle),
        DEFAULT_SETTLE,
    )?;
    let build_timeout = duration(
        "build_timeout",
        "--build-timeout",
        pick(flags.build_timeout.clone(), &raw.build_timeout),
        zdeploy_core::build::DEFAULT_BUILD_TIMEOUT,
    )?;
    let shared = shared_paths(&flags.shared, &raw.shared, "shared", "--shared", origin)?;
    let shared_files = shared_paths(
        &flags.shared_files,
        &raw.shared_files,
        "shared_files",
        "--shared-file",
        origin,
    )?;
    let shared: Vec<PathBuf> = shared
        .into_iter()
        .filter(|p| !shared_files.contains(p))
        .chain(shared_files.iter().cloned())
        .collect();
    let public = match pick(flags.public.clone(), &raw.public) {
        None => None,
        Some((text, span)) => {
            let path = PathBuf::from(text.trim_end_matches('/'));
            validate_public_path(&path)
                .map_err(|e| origin.error("public", "--public", span, &e.to_string()))?;
            Some(path)
        }
    };
    let maintenance_page = match pick(None, &raw.maintenance_page) {
        None => None,
        Some((text, span)) => {
            let path = PathBuf::from(&text);
            validate_shared_path(&path).map_err(|_| {
                origin.error(
                    "maintenance_page",
                    "maintenance_page",
                    span,
                    &format!("\"{text}\" must be a relative path inside the release"),
                )
            })?;
            Some(path)
        }
    };
    let subfolder = match pick(None, &raw.path) {
        None => None,
        Some((text, span)) => {
            let path = PathBuf::from(text.trim_end_matches('/'));
            validate_shared_path(&path).map_err(|_| {
                origin.error(
                    "path",
                    "path",
                    span,
                    &format!(
                        "\"{text}\" must be a folder inside the repository, such as apps/site"
                    ),
                )
            })?;
            Some(path)
        }
    };
    let mut maintenance_allow = Vec::new();
    if let Some((given, span)) = pick(None, &raw.maintenance_allow) {
        for text in given {
            let allowed = text.parse::<Allowed>().map_err(|e| {
                origin.error(
                    "maintenance_allow",
                    "maintenance_allow",
                    span.clone(),
                    &e.to_string().replace("--allow", "maintenance_allow"),
                )
            })?;
            maintenance_allow.push(allowed);
        }
    }
    let reuse = reuse_rules(raw, origin)?;
    let build = build_steps(raw, flags, origin, &reuse)?;
    let after_switch = after_switch_commands(raw, flags, origin)?;
    let max_disk = match pick(flags.max_disk.clone(), &raw.max_disk) {
        None => None,
        Some((text, span)) => {
            Some(parse_size(&text).map_err(|e| origin.error("max_disk", "--max-disk", span, &e))?)
        }
    };
    let mut limits = Limits::default();
    if let Some((text, span)) = pick(flags.max_archive_size.clone(), &raw.max_archive_size) {
        limits.max_bytes = parse_size(&text)
            .map_err(|e| origin.error("max_archive_size", "--max-archive-size", span, &e))?;
    }
    let count = |key: &str, flag: &str, value, least: i64, hint: &str| match value {
        None => Ok(None),
        Some((n, _)) if n >= least => Ok(Some(n as u64)),
        Some((n, span)) => Err(origin.error(key, flag, span, &format!("{hint}, got {n}"))),
    };
    if let Some(n) = count(
        "max_archive_entries",
        "--max-archive-entries",
        pick(flags.max_archive_entries, &raw.max_archive_entries),
        1,
        "must be at least 1",
    )? {
        limits.max_entries = n;
    }
    if let Some(n) = count(
        "max_archive_ratio",
        "--max-archive-ratio",
        pick(flags.max_archive_ratio, &raw.max_archive_ratio),
        0,
        "must be 0 (no limit) or more",
    )? {
        limits.max_ratio = n;
    }
    let health = health(raw, flags, origin)?;
    let automation = automation(raw, origin)?;
    let zero_downtime = flags.zero_downtime.or(raw.zero_downtime).unwrap_or(true);
    let apache = apache_map(raw, flags, origin, &layout, zero_downtime)?;
    Ok(AppConfig {
        name,
        layout,
        source,
        reference,
        policy: Policy {
            keep,
            drain,
            settle,
            zero_downtime,
            public,
            maintenance_page,
            maintenance_allow,
            allow_any_commit: raw.allow_any_commit.unwrap_or(false),
            subfolder,
            shared,
            shared_files,
            build,
            reuse,
            max_disk,
            build_timeout,
            after_switch,
            limits,
            health,
            apache,
            opcache_reset: opcache_reset(raw, flags),
            privileges: privileges(raw, flags, origin)?,
        },
        origin: origin.prefix(),
        php_fpm_address: raw.php_fpm.as_ref().and_then(|p| p.address.clone()),
        automation,
        notify: notify_targets(raw, origin)?,
        watch: watch_policy(raw, flags, origin)?,
        canary: canary_policy(raw, flags, origin, zero_downtime)?,
        topology: match (fleet_settings(raw, flags, origin, zero_downtime)?, role) {
            (Some(_), Role::FleetHost) => Topology::OnOrders,
            (Some(fleet), Role::Operator) => Topology::Ssh(fleet),
            (None, _) => Topology::OneHost,
        },
        file: origin
            .file
            .map(|(path, text)| (path.to_path_buf(), text.to_string())),
    })
}

/// The app's keys, with what its preset fills in for those it leaves
/// unset (located at the `preset` line in messages). The preset's writable
/// paths apply once the app names the web server's group.
fn preset_defaults(
    raw: &RawApp,
    preset: &str,
    span: Option<Range<usize>>,
    has_group: bool,
    origin: &Origin<'_>,
) -> Result<RawApp, UsageError> {
    let Some(found) = crate::preset::find(preset) else {
        return Err(origin.error(
            "preset",
            "--preset",
            span,
            &format!(
                "unknown preset '{preset}'; presets: {}",
                crate::preset::names().join(", ")
            ),
        ));
    };
    let span = span.unwrap_or_default();
    fn at<T>(span: &Range<usize>, value: T) -> Option<Spanned<T>> {
        Some(Spanned::new(span.clone(), value))
    }
    let strings = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut app = raw.clone();
    if app.public.is_none() {
        app.public = found.public.and_then(|p| at(&span, p.to_string()));
    }
    if app.shared.is_none() && !found.shared.is_empty() {
        app.shared = at(&span, strings(found.shared));
    }
    if app.shared_files.is_none() && !found.shared_files.is_empty() {
        app.shared_files = at(&span, strings(found.shared_files));
    }
    // Writable means writable by the release's group: without one there
    // is nobody to give the paths to.
    if app.writable.is_none() && has_group && !found.writable.is_empty() {
        app.writable = at(&span, strings(found.writable));
    }
    if app.after_switch.is_none() && !found.after_switch.is_empty() {
        let commands = found
            .after_switch
            .iter()
            .map(|command| {
                RawAfterSwitch::Table(RawAfterSwitchTable {
                    run: command.run.to_string(),
                    once: Some(command.once),
                })
            })
            .collect();
        app.after_switch = at(&span, commands);
    }
    if app.reuse.is_none() && !found.reuse.is_empty() {
        let rules = found
            .reuse
            .iter()
            .map(|(path, key)| RawReuse {
                path: path.to_string(),
                key: key.to_string(),
            })
            .collect();
        app.reuse = at(&span, rules);
    }
    if app.build.is_none() && !found.build.is_empty() {
        let steps = found
            .build
            .iter()
            .map(|step| {
                RawBuildStep::Table(RawBuildTable {
                    run: step.run.to_string(),
                    unless_reused: step.unless_reused.map(str::to_string),
                    if_exists: step.if_exists.map(str::to_string),
                    writes: step
                        .writes
                        .map(|paths| paths.iter().map(|p| p.to_string()).collect()),
                    once: Some(step.once),
                    maintenance: Some(step.maintenance),
                    when: step.when.map(str::to_string),
                })
            })
            .collect();
        app.build = at(&span, steps);
    }
    Ok(app)
}

/// `shared` or `shared_files`: the flags' paths, else the file's.
fn shared_paths(
    flags: &[String],
    file: &Option<Spanned<Vec<String>>>,
    key: &str,
    flag: &str,
    origin: &Origin<'_>,
) -> Result<Vec<PathBuf>, UsageError> {
    let list = if flags.is_empty() {
        pick(None, file)
    } else {
        Some((flags.to_vec(), None))
    };
    let mut paths = Vec::new();
    if let Some((given, span)) = list {
        for path in given {
            let path = PathBuf::from(path.trim_end_matches('/'));
            validate_shared_path(&path)
                .map_err(|e| origin.error(key, flag, span.clone(), &e.to_string()))?;
            paths.push(path);
        }
    }
    Ok(paths)
}

/// `reuse = [{ path, key }]`: relative paths inside the release.
fn reuse_rules(raw: &RawApp, origin: &Origin<'_>) -> Result<Vec<Reuse>, UsageError> {
    let Some(rules) = &raw.reuse else {
        return Ok(Vec::new());
    };
    let span = Some(rules.span());
    let mut reuse = Vec::new();
    for rule in rules.get_ref() {
        let path = PathBuf::from(rule.path.trim_end_matches('/'));
        let key = PathBuf::from(&rule.key);
        for candidate in [&path, &key] {
            validate_shared_path(candidate)
                .map_err(|e| origin.error("reuse", "reuse", span.clone(), &e.to_string()))?;
        }
        reuse.push(Reuse { path, key });
    }
    Ok(reuse)
}

/// `build`: commands or `{ run, unless_reused }` tables; `--build` commands.
fn build_steps(
    raw: &RawApp,
    flags: &Overrides,
    origin: &Origin<'_>,
    reuse: &[Reuse],
) -> Result<Vec<BuildStep>, UsageError> {
    let (steps, span) = if !flags.build.is_empty() {
        let steps = flags
            .build
            .iter()
            .cloned()
            .map(RawBuildStep::Command)
            .collect();
        (steps, None)
    } else {
        match &raw.build {
            Some(list) => (list.get_ref().clone(), Some(list.span())),
            None => return Ok(Vec::new()),
        }
    };
    let mut build = Vec::new();
    for step in steps {
        let (run, unless_reused, if_exists, writes, once, maintenance, when) = match step {
            RawBuildStep::Command(run) => (run, None, None, None, false, false, None),
            RawBuildStep::Table(RawBuildTable {
                run,
                unless_reused,
                if_exists,
                writes,
                once,
                maintenance,
                when,
            }) => (
                run,
                unless_reused.map(|p| PathBuf::from(p.trim_end_matches('/'))),
                if_exists.map(PathBuf::from),
                writes.map(|paths| {
                    paths
                        .iter()
                        .map(|p| PathBuf::from(p.trim_end_matches('/')))
                        .collect::<Vec<_>>()
                }),
                once.unwrap_or(false),
                maintenance.unwrap_or(false),
                when,
            ),
        };
        let inside = |key: &str, path: &Path| {
            validate_shared_path(path).map_err(|_| {
                origin.error(
                    "build",
                    "--build",
                    span.clone(),
                    &format!(
                        "{key} = \"{}\" must be a relative path inside the release",
                        path.display()
                    ),
                )
            })
        };
        if let Some(path) = &if_exists {
            inside("if_exists", path)?;
        }
        for path in writes.iter().flatten() {
            inside("writes", path)?;
        }
        if run.trim().is_empty() {
            return Err(origin.error("build", "--build", span, "a build command is empty"));
        }
        if when.as_deref().is_some_and(|w| w.trim().is_empty()) {
            return Err(origin.error(
                "build",
                "--build",
                span,
                &format!(
                    "`when` of {run:?} is empty: give the command that says whether it has work"
                ),
            ));
        }
        if let Some(path) = &unless_reused
            && !reuse.iter().any(|r| &r.path == path)
        {
            return Err(origin.error(
                "build",
                "--build",
                span,
                &format!("unless_reused = \"{}\" names no reuse path", path.display()),
            ));
        }
        build.push(BuildStep {
            run,
            unless_reused,
            if_exists,
            writes,
            once,
            maintenance,
            when,
        });
    }
    Ok(build)
}

/// `after_switch` commands (or `{ run, once }` tables), or the
/// `--after-switch` flags.
fn after_switch_commands(
    raw: &RawApp,
    flags: &Overrides,
    origin: &Origin<'_>,
) -> Result<Vec<AfterSwitchCommand>, UsageError> {
    let flagged = (!flags.after_switch.is_empty()).then(|| {
        flags
            .after_switch
            .iter()
            .cloned()
            .map(RawAfterSwitch::Command)
            .collect()
    });
    let (commands, span) = match pick(flagged, &raw.after_switch) {
        Some(picked) => picked,
        None => return Ok(Vec::new()),
    };
    let commands: Vec<AfterSwitchCommand> = commands
        .into_iter()
        .map(|command| match command {
            RawAfterSwitch::Command(run) => AfterSwitchCommand { run, once: false },
            RawAfterSwitch::Table(RawAfterSwitchTable { run, once }) => AfterSwitchCommand {
                run,
                once: once.unwrap_or(false),
            },
        })
        .collect();
    if commands.iter().any(|c| c.run.trim().is_empty()) {
        return Err(origin.error(
            "after_switch",
            "--after-switch",
            span,
            "an after_switch command is empty",
        ));
    }
    Ok(commands)
}

/// `health = { … }` merged with the `--health-*` flags.
fn health(
    raw: &RawApp,
    flags: &Overrides,
    origin: &Origin<'_>,
) -> Result<Option<HealthCheck>, UsageError> {
    let (file, span) = match &raw.health {
        Some(table) => (table.get_ref().clone(), Some(table.span())),
        None => (RawHealth::default(), None),
    };
    let given = &flags.health;
    let url = given.url.clone().or(file.url);
    let before = given.before.clone().or(file.before);
    if url.is_none() && before.is_none() {
        if given.expect_status.is_some() || given.timeout.is_some() || span.is_some() {
            return Err(origin.error(
                "health",
                "--health-url",
                span,
                "a health check needs a url (checked after the switch) or a before command",
            ));
        }
        return Ok(None);
    }
    if let Some(url) = &url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(origin.error(
            "health",
            "--health-url",
            span,
            &format!("health url must be http:// or https://, got '{url}'"),
        ));
    }
    let expect_status = match given.expect_status.or(file.expect_status) {
        None => 200,
        Some(code @ 100..=599) => code as u16,
        Some(code) => {
            return Err(origin.error(
                "health",
                "--health-status",
                span,
                &format!("expect_status must be an HTTP status (100-599), got {code}"),
            ));
        }
    };
    let timeout = match given.timeout.clone().or(file.timeout) {
        None => zdeploy_core::health::DEFAULT_TIMEOUT,
        Some(text) => parse_duration(&text)
            .map_err(|e| origin.error("health", "--health-timeout", span.clone(), &e))?,
    };
    Ok(Some(HealthCheck {
        url,
        expect_status,
        timeout,
        before,
    }))
}

/// `interval` and `webhook_secret_file`/`webhook_secret_env`.
/// `notify`: where every deploy and rollback is told about.
fn notify_targets(
    raw: &RawApp,
    origin: &Origin<'_>,
) -> Result<Vec<crate::notify::Target>, UsageError> {
    match &raw.notify {
        None => Ok(Vec::new()),
        Some(value) => crate::notify::targets::parse(value.get_ref())
            .map_err(|why| origin.error("notify", "notify", Some(value.span()), &why)),
    }
}

/// `watch` (and `--watch DURATION`, which turns it on).
fn watch_policy(
    raw: &RawApp,
    flags: &Overrides,
    origin: &Origin<'_>,
) -> Result<Option<zdeploy_core::watch::WatchPolicy>, UsageError> {
    let mut policy = match &raw.watch {
        None => None,
        Some(value) => Some(
            crate::watch::parse(value.get_ref())
                .map_err(|why| origin.error("watch", "watch", Some(value.span()), &why))?,
        ),
    };
    if let Some(text) = &flags.watch {
        let duration =
            crate::watch::window(text).map_err(|e| UsageError(format!("--watch {e}")))?;
        policy.get_or_insert_with(Default::default).duration = duration;
    }
    Ok(policy)
}

/// `canary` (and `--canary SHARE`, which turns it on).
fn canary_policy(
    raw: &RawApp,
    flags: &Overrides,
    origin: &Origin<'_>,
    zero_downtime: bool,
) -> Result<Option<crate::canary::CanaryPolicy>, UsageError> {
    let mut policy = match &raw.canary {
        None => None,
        Some(value) => Some(
            crate::canary::parse(value.get_ref())
                .map_err(|why| origin.error("canary", "canary", Some(value.span()), &why))?,
        ),
    };
    if let Some(text) = &flags.canary {
        let share = zdeploy_core::canary::Share::parse(text)
            .map_err(|e| UsageError(format!("--canary: {e}")))?;
        match &mut policy {
            Some(policy) => policy.share = share,
            None => {
                policy = Some(crate::canary::CanaryPolicy {
                    share,
                    judge_for: None,
                    limits: None,
                })
            }
        }
    }
    // `--watch` judges the canary that long.
    if let (Some(policy), Some(text)) = (&mut policy, &flags.watch) {
        policy.judge_for =
            Some(crate::watch::window(text).map_err(|e| UsageError(format!("--watch {e}")))?);
    }
    if policy.is_some() {
        let why = if !zero_downtime {
            Some("a canary needs zero_downtime: plain mode has one folder to serve")
        } else if raw.fleet.as_ref().is_some_and(|f| *f.get_ref()) {
            Some(
                "canary releases on a fleet in etcd are not supported yet (fleets over ssh have them)",
            )
        } else {
            None
        };
        if let Some(why) = why {
            return Err(match (&raw.canary, &flags.canary) {
                (_, Some(_)) => UsageError(format!("--canary: {why}")),
                (Some(value), None) => origin.error("canary", "canary", Some(value.span()), why),
                (None, None) => unreachable!("a canary policy comes from one of them"),
            });
        }
    }
    Ok(policy)
}

fn automation(raw: &RawApp, origin: &Origin<'_>) -> Result<Automation, UsageError> {
    let interval = match &raw.interval {
        None => None,
        Some(text) => {
            let span = Some(text.span());
            let every = parse_duration(text.get_ref())
                .map_err(|e| origin.error("interval", "interval", span.clone(), &e))?;
            if every < Duration::from_secs(1) {
                return Err(origin.error(
                    "interval",
                    "interval",
                    span,
                    "the interval must be at least 1s",
                ));
            }
            Some(every)
        }
    };
    let webhook_secret = match (&raw.webhook_secret_file, &raw.webhook_secret_env) {
        (Some(_), Some(env)) => {
            return Err(origin.error(
                "webhook_secret_env",
                "webhook_secret_env",
                Some(env.span()),
                "set webhook_secret_file or webhook_secret_env, not both",
            ));
        }
        (Some(file), None) => Some(SecretSource::File(PathBuf::from(file.get_ref()))),
        (None, Some(env)) => Some(SecretSource::Env(env.get_ref().clone())),
        (None, None) => None,
    };
    Ok(Automation {
        interval,
        webhook_secret,
    })
}

/// Behind Apache the map its vhost reads the live release from: `apache.map`
/// (or `--apache-map`), by default `apache.map` in the context's state dir.
/// Setting the map implies `webserver = "apache"`, and so does a default map
/// that exists (`zdeploy webserver apache` made it): ad-hoc runs that forget
/// `--webserver apache` still keep Apache on the live release.
fn apache_map(
    raw: &RawApp,
    flags: &Overrides,
    origin: &Origin<'_>,
    layout: &Layout,
    zero_downtime: bool,
) -> Result<Option<ApacheMap>, ConfigError> {
    let (server, server_span) = match pick(flags.webserver.clone(), &raw.webserver) {
        Some((name, span)) => (Some(name), span),
        None => (None, None),
    };
    let table = raw.apache.as_ref();
    let table_span = table.map(|t| t.span());
    let map = flags
        .apache_map
        .clone()
        .or_else(|| table.and_then(|t| t.get_ref().map.as_ref().map(PathBuf::from)));
    let apache = match (server.as_deref(), map) {
        (Some(other @ ("nginx" | "caddy")), Some(_)) => {
            return Err(origin
                .error(
                    "apache",
                    "--apache-map",
                    table_span,
                    &format!("an Apache map is set but webserver is {other}"),
                )
                .into());
        }
        (Some("nginx" | "caddy"), None) => None,
        (None, None) if !zero_downtime => None,
        (Some("apache") | None, Some(path)) => Some(ApacheMap {
            path: std::path::absolute(&path).unwrap_or(path),
            if_present: false,
        }),
        // Plain mode serves the context folder itself: nothing to map.
        (Some("apache"), None) if !zero_downtime => None,
        (Some("apache"), None) => Some(ApacheMap {
            path: layout.apache_map(),
            if_present: false,
        }),
        // Kept once `zdeploy webserver apache` made it, even after an
        // agent read this config.
        (None, None) => Some(ApacheMap {
            path: layout.apache_map(),
            if_present: true,
        }),
        (Some(other), _) => {
            return Err(origin
                .error(
                    "webserver",
                    "--webserver",
                    server_span,
                    &format!("unknown web server '{other}'; use nginx, apache or caddy"),
                )
                .into());
        }
    };
    if apache.is_some() && !zero_downtime {
        return Err(UsageError(format!(
            "{}plain mode serves the context folder itself: point Apache's DocumentRoot at it and leave apache.map unset",
            origin.prefix()
        ))
        .into());
    }
    Ok(apache)
}

/// `owner`, `group`, `writable`, `build_user`, `allow_root_build` (or
/// their flags; `ZDEPLOY_ALLOW_ROOT_BUILD=1` too), names looked up now.
fn privileges(
    raw: &RawApp,
    flags: &Overrides,
    origin: &Origin<'_>,
) -> Result<Privileges, UsageError> {
    let owner = match pick(flags.owner.clone(), &raw.owner) {
        None => None,
        Some((name, span)) => Some(
            lookup_user(&name)
                .map_err(|e| origin.error("owner", "--owner", span, &e))?
                .uid,
        ),
    };
    let group = match pick(flags.group.clone(), &raw.group) {
        None => None,
        Some((name, span)) => {
            Some(lookup_group(&name).map_err(|e| origin.error("group", "--group", span, &e))?)
        }
    };
    let writable_list = if flags.writable.is_empty() {
        pick(None, &raw.writable)
    } else {
        Some((flags.writable.clone(), None))
    };
    let mut writable = Vec::new();
    if let Some((paths, span)) = writable_list {
        for path in paths {
            let path = PathBuf::from(path.trim_end_matches('/'));
            validate_writable_path(&path)
                .map_err(|e| origin.error("writable", "--writable", span.clone(), &e))?;
            writable.push(path);
        }
        if group.is_none() && !writable.is_empty() {
            return Err(origin.error(
                "writable",
                "--writable",
                span,
                "writable paths are writable by the release's group: set group = \"GROUP\" \
                 (--group), the web server's group",
            ));
        }
    }
    let build_user = match pick(flags.build_user.clone(), &raw.build_user) {
        None => None,
        Some((name, span)) => {
            let account = lookup_user(&name)
                .map_err(|e| origin.error("build_user", "--build-user", span.clone(), &e))?;
            if account.uid == 0 {
                return Err(origin.error(
                    "build_user",
                    "--build-user",
                    span,
                    &format!("'{name}' is root; name an unprivileged user"),
                ));
            }
            Some(account)
        }
    };
    let allow_root_build = flags.allow_root_build
        || raw.allow_root_build == Some(true)
        || std::env::var("ZDEPLOY_ALLOW_ROOT_BUILD").is_ok_and(|v| v == "1");
    Ok(Privileges {
        owner,
        group,
        writable,
        build_user,
        allow_root_build,
    })
}

/// `php_fpm = { address, opcache_reset = true }`, or `--opcache-reset ADDR`.
fn opcache_reset(raw: &RawApp, flags: &Overrides) -> Option<zdeploy_core::fastcgi::Address> {
    use zdeploy_core::fastcgi::Address;
    if let Some(address) = &flags.opcache_reset {
        return Some(Address::parse(address));
    }
    match &raw.php_fpm {
        Some(RawPhpFpm {
            opcache_reset: true,
            address,
        }) => Some(Address::parse(
            address
                .as_deref()
                .unwrap_or(crate::webserver::DEFAULT_PHP_FPM),
        )),
        _ => None,
    }
}

/// `hosts = [...]` (or `--host`) and how the fleet is deployed.
fn fleet_settings(
    raw: &RawApp,
    flags: &Overrides,
    origin: &Origin<'_>,
    zero_downtime: bool,
) -> Result<Option<crate::fleet::settings::FleetSettings>, UsageError> {
    use crate::fleet::settings::{FleetSettings, HostAddress};
    let Some((hosts, span)) = pick(
        (!flags.hosts.is_empty()).then(|| flags.hosts.clone()),
        &raw.hosts,
    ) else {
        return Ok(None);
    };
    let mut addresses: Vec<HostAddress> = Vec::new();
    for host in &hosts {
        let address = HostAddress::parse(host)
            .map_err(|e| origin.error("hosts", "--host", span.clone(), &e))?;
        if addresses.iter().any(|a| a.shown == address.shown) {
            return Err(origin.error(
                "hosts",
                "--host",
                span,
                &format!("host '{host}' is listed twice"),
            ));
        }
        addresses.push(address);
    }
    if addresses.is_empty() {
        return Err(origin.error("hosts", "--host", span, "hosts is empty"));
    }
    if !zero_downtime {
        return Err(origin.error(
            "hosts",
            "--host",
            span,
            "a fleet needs releases to stage and switch together; plain mode (zero_downtime = false) cannot be one",
        ));
    }
    let strategy = rollout(raw, origin)?;
    let stage_timeout = match pick(None, &raw.stage_timeout) {
        None => crate::fleet::settings::DEFAULT_STAGE_TIMEOUT,
        Some((text, span)) => parse_duration(&text)
            .map_err(|e| origin.error("stage_timeout", "stage_timeout", span, &e))?,
    };
    let parallel = match pick(None, &raw.parallel) {
        None => addresses.len(),
        Some((n, _)) if n >= 1 => (n as usize).min(addresses.len()),
        Some((n, span)) => {
            return Err(origin.error(
                "parallel",
                "parallel",
                span,
                &format!("must be at least 1, got {n}"),
            ));
        }
    };
    let builder = match pick(None, &raw.builder) {
        None => 0,
        Some((name, span)) => addresses
            .iter()
            .position(|a| a.shown == name || a.name == name)
            .ok_or_else(|| {
                let hosts: Vec<&str> = addresses.iter().map(|a| a.shown.as_str()).collect();
                origin.error(
                    "builder",
                    "builder",
                    span,
                    &format!(
                        "builder \"{name}\" is not one of the hosts ({})",
                        hosts.join(", ")
                    ),
                )
            })?,
    };
    let build_on = match pick(None, &raw.build_on) {
        None => BuildOn::Builder,
        Some((text, span)) => {
            BuildOn::parse(&text).map_err(|e| origin.error("build_on", "build_on", span, &e))?
        }
    };
    Ok(Some(FleetSettings {
        builder,
        build_on,
        hosts: addresses,
        strategy,
        stage_timeout,
        parallel,
        ssh_config: raw.ssh_config.as_ref().map(|p| PathBuf::from(p.get_ref())),
        remote_zdeploy: raw
            .remote_zdeploy
            .as_ref()
            .map_or_else(|| "zdeploy".to_string(), |p| p.get_ref().clone()),
    }))
}

/// `strategy` and the keys that shape a rolling or sequential rollout.
fn rollout(
    raw: &RawApp,
    origin: &Origin<'_>,
) -> Result<crate::fleet::settings::Strategy, UsageError> {
    use crate::fleet::settings::{Batch, OnFailure, Strategy};
    let strategy = pick(None, &raw.strategy).unwrap_or(("atomic".into(), None));
    let duration =
        |key: &str, value: &Option<Spanned<String>>| -> Result<Option<Duration>, UsageError> {
            match pick(None, value) {
                None => Ok(None),
                Some((text, span)) => parse_duration(&text)
                    .map(Some)
                    .map_err(|e| origin.error(key, key, span, &e)),
            }
        };
    let on_failure = match pick(None, &raw.on_failure) {
        None => OnFailure::Revert,
        Some((text, span)) => OnFailure::parse(&text)
            .map_err(|e| origin.error("on_failure", "on_failure", span, &e))?,
    };
    let misplaced = |key: &str, given: bool, span: Option<Range<usize>>| {
        if given {
            Err(origin.error(
                key,
                key,
                span,
                &format!("{key} does not apply to strategy \"{}\"", strategy.0),
            ))
        } else {
            Ok(())
        }
    };
    match strategy.0.as_str() {
        "atomic" => {
            misplaced(
                "batch",
                raw.batch.is_some(),
                raw.batch.as_ref().map(|b| b.span()),
            )?;
            misplaced(
                "delay",
                raw.delay.is_some(),
                raw.delay.as_ref().map(|b| b.span()),
            )?;
            Ok(Strategy::Atomic)
        }
        "rolling" => {
            misplaced(
                "delay",
                raw.delay.is_some(),
                raw.delay.as_ref().map(|b| b.span()),
            )?;
            let batch = match &raw.batch {
                None => Batch::Count(1),
                Some(value) => {
                    let text = match value.get_ref() {
                        toml::Value::Integer(n) => n.to_string(),
                        toml::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    Batch::parse(&text)
                        .map_err(|e| origin.error("batch", "batch", Some(value.span()), &e))?
                }
            };
            Ok(Strategy::Rolling {
                batch,
                wait: duration("batch_wait", &raw.batch_wait)?.unwrap_or(Duration::ZERO),
                on_failure,
            })
        }
        "sequential" => {
            misplaced(
                "batch",
                raw.batch.is_some(),
                raw.batch.as_ref().map(|b| b.span()),
            )?;
            Ok(Strategy::Rolling {
                batch: Batch::Count(1),
                wait: duration("delay", &raw.delay)?.unwrap_or(Duration::ZERO),
                on_failure,
            })
        }
        other => Err(origin.error(
            "strategy",
            "strategy",
            strategy.1,
            &format!("unknown strategy '{other}'; use \"atomic\", \"rolling\" or \"sequential\""),
        )),
    }
}
