//! Configuration in two stages: `zdeploy.toml` and command-line flags (only
//! what the user typed) become one validated `AppConfig`; nothing past that
//! point reads flags or TOML again.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use zdeploy_core::ErrorKind;
use zdeploy_core::apache::ApacheSwitch;
use zdeploy_core::deploy::{DEFAULT_SETTLE, DeployPlan, Policy};
use zdeploy_core::layout::Layout;
use zdeploy_core::retention::{DEFAULT_DRAIN, DEFAULT_KEEP};
use zdeploy_core::shared::validate_shared_path;
use zdeploy_core::source::extract::Limits;
use zdeploy_core::source::{Source, SourceKind};

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
    #[serde(default)]
    apps: BTreeMap<String, RawApp>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
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
    shared: Option<Spanned<Vec<String>>>,
    build: Option<Spanned<Vec<String>>>,
    build_timeout: Option<Spanned<String>>,
    max_archive_size: Option<Spanned<String>>,
    max_archive_entries: Option<Spanned<i64>>,
    php_fpm: Option<RawPhpFpm>,
    webserver: Option<Spanned<String>>,
    apache: Option<Spanned<RawApache>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApache {
    include: Option<String>,
    reload: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPhpFpm {
    address: Option<String>,
    #[serde(default)]
    opcache_reset: bool,
}

/// Flags that override (or, ad hoc, replace) an app's config keys.
#[derive(Debug, Default, Clone)]
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
    pub shared: Vec<String>,
    pub build: Vec<String>,
    pub build_timeout: Option<String>,
    pub max_archive_size: Option<String>,
    pub max_archive_entries: Option<i64>,
    pub webserver: Option<String>,
    pub apache_include: Option<PathBuf>,
    pub apache_reload: Option<String>,
    /// `--opcache-reset ADDR`: reset PHP-FPM's opcache there after each switch.
    pub opcache_reset: Option<String>,
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
        Ok(DeployPlan {
            source,
            reference: self.reference.clone(),
            policy: self.policy.clone(),
            force,
        })
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
    apps: BTreeMap<String, RawApp>,
}

impl ConfigFile {
    pub fn load(path: &Path) -> Result<Self, UsageError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| UsageError(format!("cannot read config {}: {e}", path.display())))?;
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
            apps: raw.apps,
        })
    }

    pub fn app_names(&self) -> Vec<&str> {
        self.apps.keys().map(String::as_str).collect()
    }

    pub fn has_app(&self, name: &str) -> bool {
        self.apps.contains_key(name)
    }

    /// The app named, or the only one.
    pub fn app(&self, name: Option<&str>, overrides: &Overrides) -> Result<AppConfig, ConfigError> {
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
        resolve(Some(name.clone()), &self.apps[&name], overrides, &origin)
    }
}

/// An app made of flags alone (`--webroot DIR`).
pub fn ad_hoc(overrides: &Overrides) -> Result<AppConfig, ConfigError> {
    resolve(
        None,
        &RawApp::default(),
        overrides,
        &Origin {
            file: None,
            app: None,
        },
    )
}

fn resolve(
    name: Option<String>,
    raw: &RawApp,
    flags: &Overrides,
    origin: &Origin<'_>,
) -> Result<AppConfig, ConfigError> {
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
    let shared_list = if flags.shared.is_empty() {
        pick(None, &raw.shared)
    } else {
        Some((flags.shared.clone(), None))
    };
    let mut shared = Vec::new();
    if let Some((paths, span)) = shared_list {
        for path in paths {
            let path = PathBuf::from(path.trim_end_matches('/'));
            validate_shared_path(&path)
                .map_err(|e| origin.error("shared", "--shared", span.clone(), &e.to_string()))?;
            shared.push(path);
        }
    }
    let build = if flags.build.is_empty() {
        pick(None, &raw.build)
    } else {
        Some((flags.build.clone(), None))
    };
    let build = match build {
        None => Vec::new(),
        Some((commands, span)) => {
            if commands.iter().any(|c| c.trim().is_empty()) {
                return Err(origin
                    .error("build", "--build", span, "a build command is empty")
                    .into());
            }
            commands
        }
    };
    let mut limits = Limits::default();
    if let Some((text, span)) = pick(flags.max_archive_size.clone(), &raw.max_archive_size) {
        limits.max_bytes = parse_size(&text)
            .map_err(|e| origin.error("max_archive_size", "--max-archive-size", span, &e))?;
    }
    match pick(flags.max_archive_entries, &raw.max_archive_entries) {
        None => {}
        Some((n, _)) if n >= 1 => limits.max_entries = n as u64,
        Some((n, span)) => {
            return Err(origin
                .error(
                    "max_archive_entries",
                    "--max-archive-entries",
                    span,
                    &format!("must be at least 1, got {n}"),
                )
                .into());
        }
    }
    let zero_downtime = flags.zero_downtime.or(raw.zero_downtime).unwrap_or(true);
    let apache = apache_switch(raw, flags, origin, zero_downtime)?;
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
            shared,
            build,
            build_timeout,
            limits,
            apache,
            opcache_reset: opcache_reset(raw, flags),
        },
        origin: origin.prefix(),
        php_fpm_address: raw.php_fpm.as_ref().and_then(|p| p.address.clone()),
    })
}

/// Behind Apache the include file and reload command; `apache.include` (or
/// `--apache-include`) implies `webserver = "apache"`.
fn apache_switch(
    raw: &RawApp,
    flags: &Overrides,
    origin: &Origin<'_>,
    zero_downtime: bool,
) -> Result<Option<ApacheSwitch>, ConfigError> {
    let (server, server_span) = match pick(flags.webserver.clone(), &raw.webserver) {
        Some((name, span)) => (Some(name), span),
        None => (None, None),
    };
    let table = raw.apache.as_ref();
    let table_span = table.map(|t| t.span());
    let include = flags
        .apache_include
        .clone()
        .or_else(|| table.and_then(|t| t.get_ref().include.as_ref().map(PathBuf::from)));
    let reload = flags
        .apache_reload
        .clone()
        .or_else(|| table.and_then(|t| t.get_ref().reload.clone()))
        .unwrap_or_else(|| zdeploy_core::apache::DEFAULT_RELOAD.to_string());
    let apache = match (server.as_deref(), include) {
        (Some("nginx"), Some(_)) => {
            return Err(origin
                .error(
                    "apache",
                    "--apache-include",
                    table_span,
                    "an Apache include is set but webserver is nginx",
                )
                .into());
        }
        (Some("nginx"), None) | (None, None) => None,
        (Some("apache") | None, Some(include)) => {
            let include = std::path::absolute(&include).unwrap_or(include);
            Some(ApacheSwitch { include, reload })
        }
        (Some("apache"), None) => {
            return Err(origin
                .error(
                    "webserver",
                    "--webserver",
                    server_span,
                    "Apache needs the include file its vhost reads the document root from: set apache.include (or --apache-include)",
                )
                .into());
        }
        (Some(other), _) => {
            return Err(origin
                .error(
                    "webserver",
                    "--webserver",
                    server_span,
                    &format!("unknown web server '{other}'; use nginx or apache"),
                )
                .into());
        }
    };
    if apache.is_some() && !zero_downtime {
        return Err(UsageError(format!(
            "{}plain mode serves the context folder itself: point Apache's DocumentRoot at it and leave the apache include unset",
            origin.prefix()
        ))
        .into());
    }
    Ok(apache)
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
