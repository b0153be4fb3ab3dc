//! `zdeploy doctor`: checks, through the real web server, what zero downtime
//! needs on this server, and says how to fix what it finds. A short-lived
//! probe script in the live release shows what PHP is handed.

use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;
use zdeploy_core::layout::Layout;
use zdeploy_core::switch::{Live, read_live};

use crate::output::out;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Ok,
    Warning,
    /// Breaks zero downtime: doctor exits non-zero.
    Problem,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub check: &'static str,
    pub message: String,
    pub fix: Option<String>,
}

impl Finding {
    fn ok(check: &'static str, message: impl Into<String>) -> Self {
        Finding {
            severity: Severity::Ok,
            check,
            message: message.into(),
            fix: None,
        }
    }

    fn bad(
        severity: Severity,
        check: &'static str,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Finding {
            severity,
            check,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }
}

const PROBE: &str = r#"<?php
header('Content-Type: application/json');
header('Cache-Control: no-store');
echo json_encode([
    'script_filename' => $_SERVER['SCRIPT_FILENAME'] ?? null,
    'document_root' => $_SERVER['DOCUMENT_ROOT'] ?? null,
    'opcache_enabled' => function_exists('opcache_get_status') && (bool) ini_get('opcache.enable'),
    'validate_timestamps' => ini_get('opcache.validate_timestamps'),
    'revalidate_path' => ini_get('opcache.revalidate_path'),
    'realpath_cache_ttl' => ini_get('realpath_cache_ttl'),
    'max_execution_time' => ini_get('max_execution_time'),
]);
"#;

#[derive(Debug, serde::Deserialize)]
struct ProbeReport {
    script_filename: Option<String>,
    document_root: Option<String>,
    opcache_enabled: bool,
    validate_timestamps: Option<String>,
    revalidate_path: Option<String>,
    max_execution_time: Option<String>,
}

fn get(url: &str) -> Result<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(15)))
        .http_status_as_error(false)
        .build()
        .into();
    let response = agent
        .get(url)
        .call()
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status().as_u16();
    let body = response.into_body().read_to_string().unwrap_or_default();
    Ok((status, body))
}

/// Run every check; `url` is where the site is served.
pub fn examine(
    layout: &Layout,
    public: Option<&std::path::Path>,
    url: &str,
    drain: Duration,
) -> Result<Vec<Finding>> {
    let mut findings = Vec::new();
    let live = match read_live(layout)? {
        Live::Release(name) => name,
        Live::Folder => {
            findings.push(Finding::bad(
                Severity::Problem,
                "layout",
                format!(
                    "{} is a real folder (plain mode or not yet deployed by zdeploy)",
                    layout.context_path().display()
                ),
                "deploy with zero_downtime = true: the first deploy converts it",
            ));
            return Ok(findings);
        }
        Live::Nothing => anyhow::bail!(
            "nothing is deployed at {}; deploy first",
            layout.context_path().display()
        ),
    };
    for (release, holder) in zdeploy_core::holders::on_old_releases(layout)? {
        findings.push(Finding::bad(
            Severity::Warning,
            "old code",
            format!(
                "process {} ({}) still runs code from {release}, which is not live",
                holder.pid, holder.command
            ),
            "restart it after each switch (an after_switch command: the presets run queue:restart, horizon:terminate, octane:reload, messenger:stop-workers); prune keeps the release while it runs",
        ));
    }
    if let Some(window) = zdeploy_core::maintenance::current(layout)? {
        let history = zdeploy_core::history::History::open(&layout.history_path()).ok();
        let left_open = crate::maintenance::left_open(&window, history.as_ref());
        findings.push(Finding::bad(
            if left_open {
                Severity::Problem
            } else {
                Severity::Warning
            },
            "maintenance",
            crate::maintenance::describe_window(&window, history.as_ref()),
            "zdeploy maintenance off, then run doctor again (the probe needs the site serving)",
        ));
        return Ok(findings);
    }
    let base = url.trim_end_matches('/');
    let probe_name = format!(
        "zdeploy-probe-{}-{}.php",
        std::process::id(),
        jiff::Timestamp::now().as_nanosecond()
    );
    let served = zdeploy_core::public::served_dir(&layout.release_path(&live), public);
    let probe_path = served.join(&probe_name);
    std::fs::write(&probe_path, PROBE)
        .with_context(|| format!("cannot write the probe {}", probe_path.display()))?;
    let answer = get(&format!("{base}/{probe_name}"));
    let through_webroot = get(&format!("{base}/{}/{probe_name}", layout.context()));
    let _ = std::fs::remove_file(&probe_path);

    findings.push(match through_webroot {
        Ok((200, _)) => Finding::bad(
            Severity::Problem,
            "exposure",
            format!("{base}/{}/ is served: the document root is the webroot, so old releases and .zdeploy (history, git mirror) are reachable over HTTP", layout.context()),
            format!(
                "set the document root to {}",
                zdeploy_core::public::served_dir(&layout.context_path(), public).display()
            ),
        ),
        _ => Finding::ok("exposure", "old releases and the state dir are not served"),
    });
    let (status, body) = answer?;
    if status != 200 {
        findings.push(Finding::bad(
            Severity::Problem,
            "probe",
            format!("{base}/{probe_name} answered {status}: the site at {url} does not serve {}", layout.context_path().display()),
            "point the web server's document root at the context, or its public folder (zdeploy webserver nginx|apache|caddy prints a config), or pass --url",
        ));
        return Ok(findings);
    }
    let report: ProbeReport = serde_json::from_str(&body).with_context(|| {
        format!(
            "the probe answered something else: {}",
            body.chars().take(200).collect::<String>()
        )
    })?;
    let symlinked = layout.context_path().display().to_string();
    let release_path = layout.release_path(&live).display().to_string();
    let sees = report.script_filename.clone().unwrap_or_default();
    if sees.starts_with(&format!("{symlinked}/")) {
        findings.push(Finding::bad(
            Severity::Problem,
            "php-path",
            format!("PHP is handed the symlinked path {sees}: its realpath cache and opcache keep old code after a switch and fail once old releases are pruned"),
            "nginx: after `include fastcgi_params;` set `fastcgi_param SCRIPT_FILENAME $realpath_root$fastcgi_script_name;` and `fastcgi_param DOCUMENT_ROOT $realpath_root;`; Apache: use the vhost `zdeploy webserver apache` prints (a mod_rewrite map that zdeploy keeps on the live release); Caddy: `resolve_root_symlink` inside `php_fastcgi`",
        ));
    } else if sees.starts_with(&format!("{release_path}/")) {
        findings.push(Finding::ok(
            "php-path",
            format!("PHP is handed the release path {sees}"),
        ));
    } else {
        findings.push(Finding::bad(
            Severity::Warning,
            "php-path",
            format!("PHP is handed {sees}, neither the context nor the live release"),
            "check the document root of the vhost",
        ));
    }
    if report
        .document_root
        .as_deref()
        .map(|d| d.trim_end_matches('/'))
        .is_some_and(|d| d == symlinked || d.starts_with(&format!("{symlinked}/")))
    {
        findings.push(Finding::bad(
            Severity::Problem,
            "document-root",
            "PHP's DOCUMENT_ROOT is the symlink: code that builds paths from it mixes releases",
            "nginx: `fastcgi_param DOCUMENT_ROOT $realpath_root;` after the fastcgi_params include; Caddy: `resolve_root_symlink` inside `php_fastcgi`",
        ));
    }
    if report.opcache_enabled
        && report.validate_timestamps.as_deref() == Some("0")
        && sees.starts_with(&format!("{symlinked}/"))
    {
        findings.push(Finding::bad(
            Severity::Problem,
            "opcache",
            "opcache.validate_timestamps=0 with symlinked paths: PHP serves the first release's code until restarted",
            "hand PHP the release path (see php-path), or reset opcache after each switch (php_fpm.opcache_reset = true)",
        ));
    } else if report.opcache_enabled
        && report.revalidate_path.as_deref() == Some("0")
        && sees.starts_with(&format!("{symlinked}/"))
    {
        findings.push(Finding::bad(
            Severity::Warning,
            "opcache",
            "opcache.revalidate_path=0 keys scripts by the symlinked path",
            "hand PHP the release path (see php-path)",
        ));
    } else {
        findings.push(Finding::ok(
            "opcache",
            "opcache settings do not defeat the switch",
        ));
    }
    let max_execution = report
        .max_execution_time
        .as_deref()
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(0);
    if max_execution > 0 && drain < Duration::from_secs(max_execution) {
        findings.push(Finding::bad(
            Severity::Problem,
            "drain",
            format!("drain is {}s but PHP requests may run {max_execution}s (max_execution_time): a release can be pruned under a running request", drain.as_secs()),
            format!("set drain = \"{max_execution}s\" or more"),
        ));
    } else {
        findings.push(Finding::ok(
            "drain",
            format!(
                "drain {}s covers PHP's max_execution_time ({max_execution}s, 0 = unlimited)",
                drain.as_secs()
            ),
        ));
    }
    findings.extend(hard_coded_paths(layout, &live)?);
    findings.extend(nginx_open_file_cache());
    Ok(findings)
}

/// Absolute paths to timestamped releases written into the app's files break
/// as soon as that release is pruned.
fn hard_coded_paths(layout: &Layout, live: &str) -> Result<Vec<Finding>> {
    let root = layout.release_path(live);
    let prefix = format!("{}_", layout.context());
    let mut hits = Vec::new();
    for entry in walkdir::WalkDir::new(&root)
        .follow_links(false)
        .into_iter()
        .flatten()
    {
        if !entry.file_type().is_file()
            || entry.metadata().map(|m| m.len() > 1 << 20).unwrap_or(true)
        {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        for (number, line) in text.lines().enumerate() {
            let mentions_release = line.match_indices(&prefix).any(|(i, _)| {
                line[i + prefix.len()..]
                    .get(..19)
                    .is_some_and(zdeploy_core::release::looks_like_stamp)
            });
            if mentions_release {
                let relative = entry.path().strip_prefix(&root).unwrap_or(entry.path());
                hits.push(format!("{}:{}", relative.display(), number + 1));
            }
        }
    }
    Ok(vec![if hits.is_empty() {
        Finding::ok("hard-coded", "no file names a timestamped release")
    } else {
        Finding::bad(
            Severity::Problem,
            "hard-coded",
            format!(
                "files name a timestamped release, which breaks once it is pruned: {}",
                hits.iter().take(10).cloned().collect::<Vec<_>>().join(", ")
            ),
            format!(
                "use paths relative to the app (__DIR__) or {}",
                layout.context_path().display()
            ),
        )
    }])
}

/// nginx's open_file_cache can keep serving files of a pruned release.
fn nginx_open_file_cache() -> Vec<Finding> {
    let Ok(output) = std::process::Command::new("nginx").arg("-T").output() else {
        return Vec::new();
    };
    let config = String::from_utf8_lossy(&output.stdout);
    let enabled = config
        .lines()
        .map(str::trim)
        .any(|l| l.starts_with("open_file_cache ") && !l.starts_with("open_file_cache off"));
    if enabled {
        vec![Finding::bad(
            Severity::Warning,
            "open-file-cache",
            "nginx's open_file_cache is on: static files may be served from a release after the switch, until open_file_cache_valid expires",
            "set `open_file_cache off;` in the site, or keep open_file_cache_valid below drain",
        )]
    } else {
        Vec::new()
    }
}

pub fn print(findings: &[Finding]) {
    for f in findings {
        let label = match f.severity {
            Severity::Ok => "ok     ",
            Severity::Warning => "warning",
            Severity::Problem => "PROBLEM",
        };
        out!("{label} [{}] {}", f.check, f.message);
        if let Some(fix) = &f.fix {
            out!("        fix: {fix}");
        }
    }
}

/// Did anything break zero downtime?
pub fn has_problem(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.severity == Severity::Problem)
}
