//! The dashboard at `/`: server-rendered HTML, one panel per app (live
//! release, releases with rollback buttons, history, live log), with a
//! little JavaScript for the buttons, the live feed and a chart of what
//! each release served. No external assets:
//! the agent runs on servers without internet.

use std::fmt::Write;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde_json::Value;
use zdeploy_core::history::{DeploymentRecord, History, now_ms};
use zdeploy_core::inventory::ReleaseInfo;

use crate::agent::SharedAgent;
use crate::agent::app::App;

const STYLE: &str = include_str!("style.css");
const SCRIPT: &str = include_str!("dashboard.js");
const HISTORY_ROWS: usize = 15;

/// Text made safe for HTML content and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// "3 min ago" for a moment in ms since the epoch.
fn ago(ms: i64) -> String {
    let seconds = (now_ms() - ms).max(0) / 1000;
    match seconds {
        0..=59 => format!("{seconds} s ago"),
        60..=3599 => format!("{} min ago", seconds / 60),
        3600..=86_399 => format!("{} h ago", seconds / 3600),
        _ => format!("{} days ago", seconds / 86_400),
    }
}

fn short(commit: Option<&str>) -> String {
    commit
        .map(zdeploy_core::release::short)
        .unwrap_or("—")
        .to_string()
}

/// What one panel shows, read from disk and the history.
struct PanelData {
    summary: Value,
    releases: Vec<ReleaseInfo>,
    history: Vec<DeploymentRecord>,
}

fn read_panel(app: &App) -> PanelData {
    let config = app.config();
    let history = Some(config.layout.history_path())
        .filter(|p| p.exists())
        .and_then(|p| History::open(&p).ok());
    PanelData {
        summary: crate::agent::api::summary(app),
        releases: zdeploy_core::inventory::list(&config.layout, history.as_ref())
            .unwrap_or_default(),
        history: history
            .as_ref()
            .and_then(|h| h.deployments(HISTORY_ROWS).ok())
            .unwrap_or_default(),
    }
}

fn render_panel(data: &PanelData) -> String {
    let s = &data.summary;
    let name = esc(s["name"].as_str().unwrap_or_default());
    let mut html = String::new();
    let (badge, badge_text) = if !s["maintenance"].is_null() {
        ("warn", "maintenance".to_string())
    } else if !s["running"].is_null() {
        ("running", "deploying".to_string())
    } else if !s["poll"]["error"].is_null() {
        ("warn", "remote unreachable".to_string())
    } else {
        match data.history.first().map(|d| d.outcome.as_str()) {
            Some("failed") => ("failed", "last run failed".to_string()),
            Some("interrupted") => ("failed", "last run interrupted".to_string()),
            _ => ("ok", "idle".to_string()),
        }
    };
    let _ = write!(
        html,
        r#"<div class="app-head"><h2>{name}</h2><span class="badge {badge}">{badge_text}</span>
<button class="primary" data-action="deploy">Deploy now</button></div>"#
    );
    match s["live"].as_object() {
        Some(live) => {
            let release = esc(live["release"].as_str().unwrap_or_default());
            let message = live["message"]
                .as_str()
                .map(|m| format!(r#"<div class="message">{}</div>"#, esc(m)))
                .unwrap_or_default();
            let age = live["created_ms"]
                .as_i64()
                .map(|ms| format!(r#" · <span class="age">made {}</span>"#, ago(ms)))
                .unwrap_or_default();
            let _ = write!(
                html,
                r#"<div class="live"><div class="label">Live</div><div class="live-release">{release}</div>
<div class="meta">commit <code class="live-commit">{}</code>{age}</div>{message}</div>"#,
                esc(&short(live["commit"].as_str()))
            );
        }
        None => html.push_str(r#"<div class="live empty"><div class="label">Live</div><div class="live-release">nothing deployed yet</div></div>"#),
    }
    let interval = s["interval_s"]
        .as_u64()
        .map(|n| {
            let every = crate::units::config_duration(std::time::Duration::from_secs(n));
            format!("checks the remote every {every}")
        })
        .unwrap_or_else(|| "no interval".into());
    let _ = write!(
        html,
        r#"<p class="meta source"><code>{}</code>{} → <code>{}/{}</code> · {interval} · webhooks {}</p>"#,
        esc(s["source"].as_str().unwrap_or("no source")),
        s["ref"]
            .as_str()
            .map(|r| format!(" @ <code>{}</code>", esc(r)))
            .unwrap_or_default(),
        esc(s["webroot"].as_str().unwrap_or_default()),
        esc(s["context"].as_str().unwrap_or_default()),
        if s["webhooks"] == true { "on" } else { "off" },
    );
    if let Some(error) = s["poll"]["error"].as_str() {
        let _ = write!(
            html,
            r#"<p class="alert">Last check of the remote failed: {}</p>"#,
            esc(error)
        );
    }
    if let Some(described) = s["freeze"]["described"].as_str() {
        let _ = write!(
            html,
            r#"<p class="alert frozen">Frozen: {name} {}</p>"#,
            esc(described)
        );
    }
    if let Some(described) = s["canary"]["described"].as_str() {
        let _ = write!(
            html,
            r#"<p class="alert canary">{name} {} <button data-action="canary/promote">Promote</button> <button data-action="canary/abort">Abort</button></p>"#,
            esc(described)
        );
    }
    if let Some(described) = s["maintenance"]["described"].as_str() {
        let _ = write!(
            html,
            r#"<p class="alert maintenance">{}</p>"#,
            esc(described)
        );
    }
    if let Some(seconds) = s["last_maintenance_window"]["seconds"].as_f64() {
        let _ = write!(
            html,
            r#"<p class="meta">Last maintenance window: {seconds:.1}s</p>"#
        );
    }
    if let Some(pending) = s["pending"].as_str() {
        let _ = write!(html, r#"<p class="meta">Queued: {}</p>"#, esc(pending));
    }
    if let Some(fleet) = s["fleet"].as_object() {
        render_fleet(&mut html, fleet);
    }
    if let Some(fleet) = s["etcd_fleet"].as_object() {
        render_etcd_fleet(&mut html, fleet);
    }
    html.push_str(r#"<h3>Releases</h3><div class="scroll"><table class="releases"><thead><tr><th>Release</th><th>State</th><th>Commit</th><th>Size</th><th></th></tr></thead><tbody>"#);
    for release in data.releases.iter().rev() {
        let action = if release.live {
            r#"<span class="badge ok">live</span>"#.to_string()
        } else if release.state == "complete" || release.state == "unrecorded" {
            format!(
                r#"<button data-action="rollback" data-release="{0}">Roll back</button>"#,
                esc(&release.name)
            )
        } else {
            String::new()
        };
        let _ = write!(
            html,
            r#"<tr{live}><td class="name">{name}</td><td><span class="state {state}">{state}</span></td><td><code>{commit}</code></td><td class="num">{size}</td><td class="act">{action}</td></tr>"#,
            live = if release.live {
                r#" class="is-live""#
            } else {
                ""
            },
            name = esc(&release.name),
            state = esc(&release.state),
            commit = esc(&short(release.commit.as_deref())),
            size = crate::units::human_size(release.size),
        );
    }
    html.push_str("</tbody></table></div>");
    html.push_str(r#"<h3>History</h3><div class="scroll"><table class="history"><thead><tr><th>#</th><th>Run</th><th>Trigger</th><th>Outcome</th><th>Took</th><th>When</th></tr></thead><tbody>"#);
    for run in &data.history {
        let took = run
            .finished_ms
            .map(|f| format!("{:.1} s", (f - run.started_ms) as f64 / 1000.0))
            .unwrap_or_else(|| "…".into());
        let what = match (&run.release, &run.error) {
            (_, Some(error)) => format!(r#"<div class="error">{}</div>"#, esc(error)),
            (Some(release), None) => format!(r#"<div class="meta">{}</div>"#, esc(release)),
            _ => String::new(),
        };
        let _ = write!(
            html,
            r#"<tr><td class="num">{id}</td><td>{kind}{what}</td><td>{trigger}</td><td><span class="state {outcome}">{outcome}</span></td><td class="num">{took}</td><td>{when}</td></tr>"#,
            id = run.id,
            kind = esc(&run.kind),
            trigger = esc(&run.trigger),
            outcome = esc(&run.outcome),
            when = ago(run.started_ms),
        );
    }
    html.push_str("</tbody></table></div>");
    html
}

/// A fleet's hosts: each one's release, state and failures, and the last
/// switch's skew.
fn render_fleet(html: &mut String, fleet: &serde_json::Map<String, Value>) {
    let skew = fleet["skew_ms"]
        .as_i64()
        .map(|ms| format!(" · last switch skew <span class=\"skew\">{ms} ms</span>"))
        .unwrap_or_default();
    let hosts = fleet["hosts"].as_object().cloned().unwrap_or_default();
    let releases: Vec<&str> = hosts
        .values()
        .filter_map(|h| h["release"].as_str())
        .collect();
    let agrees = !releases.is_empty()
        && releases.len() == hosts.len()
        && releases.iter().all(|r| *r == releases[0]);
    let _ = write!(
        html,
        r#"<h3>Fleet</h3><p class="meta">{} hosts · {}{skew}</p><div class="scroll"><table class="fleet"><thead><tr><th>Host</th><th>Release</th><th>State</th><th>Failures</th></tr></thead><tbody>"#,
        hosts.len(),
        if agrees {
            "every host on one release"
        } else {
            "hosts not known to agree"
        },
    );
    for (host, view) in &hosts {
        let error = view["last_error"]
            .as_str()
            .map(|e| format!(r#"<div class="error">{}</div>"#, esc(e)))
            .unwrap_or_default();
        let _ = write!(
            html,
            r#"<tr><td class="name">{}</td><td>{}</td><td>{}{error}</td><td class="num">{}</td></tr>"#,
            esc(host),
            esc(view["release"].as_str().unwrap_or("unknown")),
            esc(view["state"].as_str().unwrap_or("")),
            view["failures"].as_u64().unwrap_or(0),
        );
    }
    html.push_str("</tbody></table></div>");
}

/// A fleet in etcd as this host's agent last read it: the leader, the
/// committed release, each member's state and live release, the last
/// deploy and its skew, and whether this host is in rotation.
fn render_etcd_fleet(html: &mut String, fleet: &serde_json::Map<String, Value>) {
    let view = &fleet["view"];
    let ready = fleet["ready"].as_bool().unwrap_or(false);
    let committed = view["committed"]["release"]
        .as_str()
        .unwrap_or("nothing yet");
    let skew = view["skew_ms"]
        .as_i64()
        .map(|ms| format!(" · last switch skew <span class=\"skew\">{ms} ms</span>"))
        .unwrap_or_default();
    let reach = match view["connected"].as_bool() {
        Some(true) => String::new(),
        _ => format!(
            r#"<p class="alert">etcd cannot be reached: {} (this host keeps serving what it serves)</p>"#,
            esc(view["error"].as_str().unwrap_or("not yet connected"))
        ),
    };
    let _ = write!(
        html,
        r#"<h3>Fleet (etcd)</h3>{reach}<p class="meta">this host <b>{name}</b> is <span class="state {ready_class}">{ready_word}</span> · leader {leader} · committed <code class="fleet-committed">{committed}</code>{skew}</p><div class="scroll"><table class="fleet"><thead><tr><th>Host</th><th>Live</th><th>State</th></tr></thead><tbody>"#,
        name = esc(view["name"].as_str().unwrap_or("")),
        ready_class = if ready { "success" } else { "failed" },
        ready_word = if ready { "ready" } else { "behind" },
        leader = esc(view["leader"].as_str().unwrap_or("none")),
        committed = esc(committed),
    );
    let members: Vec<&str> = view["members"]
        .as_array()
        .map(|m| m.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let hosts = view["hosts"].as_object().cloned().unwrap_or_default();
    for (host, status) in &hosts {
        let gone = if members.contains(&host.as_str()) {
            ""
        } else {
            r#" <span class="meta">(left the fleet)</span>"#
        };
        let error = status["error"]
            .as_str()
            .map(|e| format!(r#"<div class="error">{}</div>"#, esc(e)))
            .unwrap_or_default();
        let _ = write!(
            html,
            r#"<tr><td class="name">{}{gone}</td><td>{}</td><td>{}{error}</td></tr>"#,
            esc(host),
            esc(status["live"].as_str().unwrap_or("-")),
            esc(status["state"].as_str().unwrap_or("")),
        );
    }
    html.push_str("</tbody></table></div>");
}

async fn panel_html(app: std::sync::Arc<App>) -> String {
    tokio::task::spawn_blocking(move || render_panel(&read_panel(&app)))
        .await
        .unwrap_or_else(|e| format!("<p class=\"alert\">{}</p>", esc(&e.to_string())))
}

pub async fn dashboard(State(agent): State<SharedAgent>) -> Response {
    let mut sections = String::new();
    for app in agent.apps() {
        let name = esc(&app.name);
        let panel = panel_html(app).await;
        let _ = write!(
            sections,
            r#"<section class="app" id="app-{name}" data-app="{name}"><div class="panel">{panel}</div>
<figure class="traffic" hidden><canvas width="720" height="180"></canvas><figcaption></figcaption></figure>
<div class="log" hidden><h3>Live log</h3><pre></pre></div></section>"#
        );
    }
    let page = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>zdeploy</title><style>{STYLE}</style></head>
<body><header><h1>zdeploy</h1><span class="sub">zero-downtime deploys</span></header>
<main>{sections}</main><div id="toast" role="status" hidden></div><script>{SCRIPT}</script></body></html>"#
    );
    ([(header::CACHE_CONTROL, "no-store")], Html(page)).into_response()
}

/// One app's panel, for the page to refresh after a run.
pub async fn panel(State(agent): State<SharedAgent>, Path(name): Path<String>) -> Response {
    match agent.app(&name) {
        Some(app) => (
            [(header::CACHE_CONTROL, "no-store")],
            Html(panel_html(app).await),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such app").into_response(),
    }
}
