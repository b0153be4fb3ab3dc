//! The agent's HTTP API (JSON): apps, releases, deployments with their logs
//! (streamed live as server-sent events), and the actions deploy, rollback,
//! keep and prune. Mutations need the bearer token when one is configured,
//! a JSON body (so a cross-site form cannot post one), and without a token a
//! loopback Host (so a rebound DNS name cannot either).

use std::convert::Infallible;
use std::time::Instant;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio_stream::StreamExt;
use zdeploy_core::history::{History, Kind};

use super::app::{App, Event, Trigger};
use super::runner::{Finished, failed, report, run_streamed};
use super::upload;
use super::{Agent, SharedAgent};
use crate::deploying::{self, Done, Request, Watch};

pub type ApiResult = Result<Response, ApiError>;

/// An answer that says what went wrong, as `{"error": "…"}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": self.message}));
        if self.status == StatusCode::UNAUTHORIZED {
            (self.status, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response()
        } else {
            (self.status, body).into_response()
        }
    }
}

pub fn error(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        message: message.into(),
    }
}

pub fn find_app(agent: &Agent, name: &str) -> Result<std::sync::Arc<App>, ApiError> {
    agent
        .app(name)
        .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no app '{name}'")))
}

/// New work is refused once SIGTERM arrived.
pub fn refuse_if_stopping(agent: &Agent) -> Result<(), ApiError> {
    if agent.is_stopping() {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent is shutting down",
        ));
    }
    Ok(())
}

/// Check a mutation's credentials and form; `Err` is the answer to send.
pub fn authorize(agent: &Agent, headers: &HeaderMap) -> Result<(), ApiError> {
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    // A form cannot send the digest header either (it would need a CORS
    // preflight, which the agent never answers).
    if !json_body && !upload::is_archive(headers) {
        return Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "send actions as JSON (Content-Type: application/json), or an archive to deploy with its SHA-256 in {}",
                upload::DIGEST_HEADER
            ),
        ));
    }
    match agent.token() {
        Some(token) => {
            if bearer_matches(&token, headers) {
                Ok(())
            } else {
                tracing::warn!("API action refused: missing or wrong bearer token");
                Err(error(
                    StatusCode::UNAUTHORIZED,
                    "this action needs the agent's bearer token",
                ))
            }
        }
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
            if matches!(name, "127.0.0.1" | "localhost" | "[::1]") {
                Ok(())
            } else {
                Err(error(
                    StatusCode::FORBIDDEN,
                    format!(
                        "without a token, actions are taken only for a loopback Host, not '{host}'"
                    ),
                ))
            }
        }
    }
}

/// The request carries `token` as its bearer token (compared in constant
/// time).
pub fn bearer_matches(token: &str, headers: &HeaderMap) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    bool::from(given.as_bytes().ct_eq(token.as_bytes()))
}

pub fn open_history(app: &App) -> Result<Option<History>, ApiError> {
    let path = app.config().layout.history_path();
    if !path.exists() {
        return Ok(None);
    }
    History::open(&path)
        .map(Some)
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// What the dashboard and `GET /api/apps` show of one app.
pub fn summary(app: &App) -> Value {
    let config = app.config();
    let history = open_history(app).ok().flatten();
    let live = zdeploy_core::switch::read_live(&config.layout).ok();
    let live_name = live
        .as_ref()
        .and_then(|l| l.record_name(&config.layout))
        .map(str::to_string);
    let live_record = match (&history, &live_name) {
        (Some(h), Some(name)) => h.release(name).ok().flatten(),
        _ => None,
    };
    let live_deployment = match (&history, live_record.as_ref().and_then(|r| r.deployment_id)) {
        (Some(h), Some(id)) => h.deployment(id).ok().flatten(),
        _ => None,
    };
    let (running, pending) = app.activity();
    let maintenance = zdeploy_core::maintenance::current(&config.layout)
        .ok()
        .flatten()
        .map(|window| {
            json!({
                "window": window,
                "left_open": crate::maintenance::left_open(&window, history.as_ref()),
                "described": crate::maintenance::describe_window(&window, history.as_ref()),
            })
        });
    json!({
        "name": app.name,
        "webroot": config.layout.webroot(),
        "context": config.layout.context(),
        "source": config.source.as_ref().map(|s| s.shown()),
        "ref": config.reference,
        "interval_s": config.automation.interval.map(|d| d.as_secs()),
        "webhooks": app.secret().is_some(),
        "live": live_name.as_ref().map(|name| json!({
            "release": name,
            "commit": live_record.as_ref().and_then(|r| r.commit.clone()),
            "created_ms": live_record.as_ref().map(|r| r.created_ms),
            "message": live_deployment.as_ref().and_then(|d| d.message.clone()),
        })),
        "maintenance": maintenance,
        "freeze": zdeploy_core::freeze::current(&config.layout).ok().flatten().map(|f| json!({
            "freeze": f,
            "described": crate::freeze::describe(&f),
        })),
        "canary": zdeploy_core::canary::current(&config.layout).ok().flatten().map(|c| json!({
            "canary": c,
            "percent": c.share.percent(),
            "described": crate::canary::describe(&c),
        })),
        "last_maintenance_window": history
            .as_ref()
            .and_then(|h| h.last_closed_window(false).ok().flatten()),
        "running": running.map(|id| json!({"deployment": id})),
        "pending": pending.map(|t| t.describe()),
        "poll": app.poll_status(),
        "fleet": config.topology.ssh().map(|_| app.fleet_view().lock().expect("fleet view lock").clone()),
        "etcd_fleet": config.topology.etcd().map(|_| {
            let view = app.member_view().lock().expect("member view lock").clone();
            json!({"ready": view.ready(), "view": view})
        }),
    })
}

/// `GET /ready`, for a load balancer's health check: 200 while this host
/// serves the committed release of every fleet it is a member of (or is
/// switching to it right now), 503 while it is behind. When etcd cannot be
/// reached it answers from what it last knew: losing etcd must not take
/// every host out of rotation.
pub async fn ready(State(agent): State<SharedAgent>) -> Response {
    let mut behind = Vec::new();
    for app in agent.apps() {
        if app.config().topology.etcd().is_none() {
            continue;
        }
        super::member::refresh_for_ready(&app).await;
        let view = app.member_view().lock().expect("member view lock").clone();
        if !view.ready() {
            behind.push(format!(
                "{}: serves {}, the fleet {}",
                app.name,
                view.live.as_deref().unwrap_or("nothing"),
                view.committed.as_ref().map_or(
                    "has no committed release yet".to_string(),
                    |c| format!("committed {}", c.release)
                )
            ));
        }
    }
    if behind.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("behind: {}\n", behind.join("; ")),
        )
            .into_response()
    }
}

pub async fn apps(State(agent): State<SharedAgent>) -> Json<Value> {
    Json(Value::Array(
        agent.apps().iter().map(|a| summary(a)).collect(),
    ))
}

pub async fn app(State(agent): State<SharedAgent>, Path(name): Path<String>) -> ApiResult {
    let app = find_app(&agent, &name)?;
    Ok(Json(summary(&app)).into_response())
}

pub async fn releases(State(agent): State<SharedAgent>, Path(name): Path<String>) -> ApiResult {
    let app = find_app(&agent, &name)?;
    let list = tokio::task::spawn_blocking(move || {
        let history = open_history(&app)?;
        zdeploy_core::inventory::list(&app.config().layout, history.as_ref())
            .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    })
    .await
    .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(Json(list).into_response())
}

#[derive(Deserialize)]
pub struct ListQuery {
    limit: Option<usize>,
}

pub async fn deployments(
    State(agent): State<SharedAgent>,
    Path(name): Path<String>,
    Query(query): Query<ListQuery>,
) -> ApiResult {
    let app = find_app(&agent, &name)?;
    let Some(history) = open_history(&app)? else {
        return Ok(Json(json!([])).into_response());
    };
    let list = history
        .deployments(query.limit.unwrap_or(50).min(1000))
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(list).into_response())
}

#[derive(Deserialize)]
pub struct TrafficQuery {
    minutes: Option<i64>,
}

/// What the app's releases served over the last `minutes` (60 by default,
/// at most a day), per release and ten seconds, with the moments a release
/// went live, was switched back or rolled back, or a canary began, was
/// promoted or aborted.
pub async fn traffic(
    State(agent): State<SharedAgent>,
    Path(name): Path<String>,
    Query(query): Query<TrafficQuery>,
) -> ApiResult {
    let app = find_app(&agent, &name)?;
    let minutes = query.minutes.unwrap_or(60).clamp(1, 24 * 60);
    let Some(history) = open_history(&app)? else {
        return Ok(Json(json!({"buckets": [], "marks": []})).into_response());
    };
    let internal = |e: zdeploy_core::Error| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    let from = zdeploy_core::history::now_ms() - minutes * 60_000;
    let buckets = history.traffic_since(from).map_err(internal)?;
    let marks: Vec<Value> = history
        .deployments(500)
        .map_err(internal)?
        .into_iter()
        .filter(|d| d.finished_ms.is_some_and(|at| at >= from))
        .filter_map(|d| {
            let canary = history.deployment_canary(d.id).ok().flatten().is_some();
            let kind = match (d.kind.as_str(), d.outcome.as_str()) {
                ("deploy", "success") if canary => "canary",
                ("deploy", "success") => "switch",
                ("rollback", "success") => "rollback",
                ("promote", "success") => "promote",
                ("abort", "success") => "abort",
                ("deploy", "failed")
                    if d.error.as_deref().is_some_and(|e| e.contains("switched back")) =>
                {
                    "switch back"
                }
                _ => return None,
            };
            Some(json!({"at_ms": d.finished_ms, "kind": kind, "release": d.release, "deployment": d.id}))
        })
        .collect();
    Ok(Json(json!({"buckets": buckets, "marks": marks})).into_response())
}

fn deployment_detail(app: &App, id: i64) -> Result<Value, ApiError> {
    let not_found = || {
        error(
            StatusCode::NOT_FOUND,
            format!("no deployment {id} of '{}'", app.name),
        )
    };
    let history = open_history(app)?.ok_or_else(not_found)?;
    let internal = |e: zdeploy_core::Error| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    let record = history
        .deployment(id)
        .map_err(internal)?
        .ok_or_else(not_found)?;
    Ok(json!({
        "traffic": history.deployment_traffic(&record).map_err(internal)?,
        "watch": history.deployment_watch(id).map_err(internal)?,
        "deployment": record,
        "steps": history.steps(id).map_err(internal)?,
        "log": history.logs(id).map_err(internal)?,
    }))
}

pub async fn deployment(
    State(agent): State<SharedAgent>,
    Path((name, id)): Path<(String, i64)>,
) -> ApiResult {
    let app = find_app(&agent, &name)?;
    Ok(Json(deployment_detail(&app, id)?).into_response())
}

fn sse_event(event: &Event) -> Result<SseEvent, Infallible> {
    let name = match event {
        Event::Queued { .. } => "queued",
        Event::Started { .. } => "started",
        Event::Step { .. } => "step",
        Event::Log { .. } => "log",
        Event::Finished { .. } => "finished",
        Event::Poll { .. } => "poll",
        Event::Fleet => "fleet",
    };
    Ok(SseEvent::default()
        .event(name)
        .data(serde_json::to_string(event).unwrap_or_default()))
}

/// Every event of the app as it happens (the dashboard's feed).
pub async fn events(State(agent): State<SharedAgent>, Path(name): Path<String>) -> ApiResult {
    let app = find_app(&agent, &name)?;
    let mut live = app.subscribe();
    let (sender, receiver) = tokio::sync::mpsc::channel::<Event>(256);
    let stopped = agent.stopped();
    tokio::spawn(async move {
        tokio::pin!(stopped);
        loop {
            let event = tokio::select! {
                event = live.recv() => event,
                _ = &mut stopped => return,
                // The client left: do not wait for the next event to notice.
                _ = sender.closed() => return,
            };
            match event {
                Ok(event) => {
                    if sender.send(event).await.is_err() {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(receiver).map(|e| sse_event(&e));
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The end of deployment `id` as its history `record` tells it.
fn finished_event(id: i64, record: &Value) -> Event {
    Event::Finished {
        deployment: Some(id),
        outcome: record["outcome"].as_str().unwrap_or_default().to_string(),
        release: record["release"].as_str().map(str::to_string),
        error: record["error"].as_str().map(str::to_string),
    }
}

/// One deployment's log: what is recorded so far, then live lines until it
/// finishes. A finished deployment's stream ends at once.
pub async fn deployment_log(
    State(agent): State<SharedAgent>,
    Path((name, id)): Path<(String, i64)>,
) -> ApiResult {
    let app = find_app(&agent, &name)?;
    // Subscribe first, so no line falls between the history and the stream.
    let mut live = app.subscribe();
    let detail = deployment_detail(&app, id)?;
    let recorded: Vec<Event> = detail["log"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(seq, line)| Event::Log {
            deployment: id,
            seq: seq as u64,
            at_ms: line["at_ms"].as_i64().unwrap_or_default(),
            level: line["level"].as_str().unwrap_or_default().to_string(),
            message: line["message"].as_str().unwrap_or_default().to_string(),
        })
        .collect();
    let running = detail["deployment"]["outcome"] == "running";
    let done = finished_event(id, &detail["deployment"]);
    let (sender, receiver) = tokio::sync::mpsc::channel::<Event>(256);
    let mut stopped = Box::pin(agent.stopped());
    tokio::spawn(async move {
        let seen = recorded.len() as u64;
        for event in recorded {
            if sender.send(event).await.is_err() {
                return;
            }
        }
        if !running {
            let _ = sender.send(done).await;
            return;
        }
        // A run by the CLI sends no live events: its end shows in the history.
        let mut check = tokio::time::interval(std::time::Duration::from_secs(2));
        loop {
            let event = tokio::select! {
                event = live.recv() => event,
                _ = &mut stopped => return,
                _ = sender.closed() => return,
                _ = check.tick() => {
                    match deployment_detail(&app, id) {
                        Ok(detail) if detail["deployment"]["outcome"] != "running" => {
                            let _ = sender.send(finished_event(id, &detail["deployment"])).await;
                            return;
                        }
                        _ => continue,
                    }
                }
            };
            match event {
                Ok(event) if event.deployment() == Some(id) => {
                    if matches!(event, Event::Log { seq, .. } if seq < seen) {
                        continue; // already sent from the history
                    }
                    let last = matches!(event, Event::Finished { .. });
                    if sender.send(event).await.is_err() || last {
                        return;
                    }
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(receiver).map(|e| sse_event(&e));
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DeployBody {
    #[serde(default)]
    force: bool,
    /// Deploy exactly this commit.
    commit: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RollbackBody {
    release: Option<String>,
    /// Even while the app is frozen.
    #[serde(default)]
    force: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CanaryBody {
    reason: Option<String>,
    /// Promote even while the app is frozen.
    #[serde(default)]
    force: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeepBody {
    release: String,
    name: String,
}

fn parse_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("bad JSON body: {e}")))
}

/// 409 for an action on a frozen app that does not say `"force": true`.
fn refuse_if_frozen(app: &App, force: bool, kind: Kind) -> Result<(), ApiError> {
    crate::freeze::refuse_if_frozen(&app.config(), kind, force)
        .map_err(|e| error(StatusCode::CONFLICT, format!("{e:#}")))
}

/// The largest JSON body an action takes.
const MAX_JSON_BODY: usize = 64 * 1024;

/// `?force=true` for an archive deploy (its body is the archive).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ArchiveQuery {
    #[serde(default)]
    force: bool,
}

/// Queue a deploy: of the source's head, of the commit the JSON body
/// names, or of the archive that is the body (its digest in a header).
pub async fn deploy(
    State(agent): State<SharedAgent>,
    Path(name): Path<String>,
    Query(query): Query<ArchiveQuery>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> ApiResult {
    authorize(&agent, &headers)?;
    let app = find_app(&agent, &name)?;
    refuse_if_stopping(&agent)?;
    let trigger = if upload::is_archive(&headers) {
        let force = query.force;
        let config = app.config();
        if matches!(config.topology, crate::config::Topology::Etcd(_)) {
            return Err(error(
                StatusCode::CONFLICT,
                "a fleet in etcd deploys the head of its ref; deploying an archive there is not supported yet",
            ));
        }
        refuse_if_frozen(&app, force, Kind::Deploy)?;
        let upload = upload::receive(&config, &headers, body).await?;
        // Frozen while the archive arrived: refused all the same.
        refuse_if_frozen(&app, force, Kind::Deploy)?;
        let mut trigger = Trigger::new(format!("api archive sha256:{}", &upload.sha256[..12]));
        trigger.force = force;
        trigger.archive = Some(std::sync::Arc::new(upload));
        trigger
    } else {
        let body = axum::body::to_bytes(body, MAX_JSON_BODY)
            .await
            .map_err(|e| {
                error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the JSON body is too large or was cut off: {e}"),
                )
            })?;
        let body: DeployBody = parse_body(&body)?;
        let exact = match &body.commit {
            Some(commit) => Some(
                zdeploy_core::source::git::commit_id(commit)
                    .map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))?,
            ),
            None => None,
        };
        refuse_if_frozen(&app, body.force, Kind::Deploy)?;
        let mut trigger = Trigger::new("api");
        trigger.force = body.force;
        trigger.exact = exact;
        trigger
    };
    let sha256 = trigger.archive.as_ref().map(|upload| upload.sha256.clone());
    let id = app.trigger(trigger);
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "status": "queued",
            "trigger": id,
            "sha256": sha256,
            "status_url": format!("/api/apps/{name}/triggers/{id}"),
        })),
    )
        .into_response())
}

/// Where a trigger is: queued, running, or done with how its deploy ended
/// (the release and commit that went live, or the error).
pub async fn trigger_state(
    State(agent): State<SharedAgent>,
    Path((name, id)): Path<(String, u64)>,
) -> ApiResult {
    let app = find_app(&agent, &name)?;
    let state = app.trigger_state(id).ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            format!("no trigger {id} of '{name}' (never accepted, or ended too long ago to be remembered)"),
        )
    })?;
    let mut answer = serde_json::to_value(state)
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    answer["trigger"] = json!(id);
    Ok(Json(answer).into_response())
}

/// Run an upkeep action (prune, keep) now (waiting for the lock) and answer its result.
async fn act(
    agent: SharedAgent,
    app: std::sync::Arc<App>,
    kind: &'static str,
    work: impl Fn(
        &App,
        &zdeploy_core::session::RunOptions,
        &dyn zdeploy_core::session::Observer,
    ) -> anyhow::Result<(Value, Option<String>)>
    + Send
    + 'static,
) -> ApiResult {
    refuse_if_stopping(&agent)?;
    let started = Instant::now();
    let (worker_agent, worker_app) = (agent.clone(), app.clone());
    let (finished, answer) = tokio::task::spawn_blocking(move || {
        let (id, result) = run_streamed(
            &worker_agent,
            &worker_app,
            kind,
            "api",
            |options, observer| work(&worker_app, options, observer),
        );
        match result {
            Ok((value, release)) => (
                Finished {
                    deployment: id,
                    outcome: super::runner::RunOutcome::Success,
                    release,
                    commit: None,
                    error: None,
                },
                Ok(value),
            ),
            Err(e) => {
                let kind = e
                    .downcast_ref::<zdeploy_core::Error>()
                    .map(zdeploy_core::Error::kind);
                let status = match kind {
                    Some(zdeploy_core::ErrorKind::Invalid) => StatusCode::UNPROCESSABLE_ENTITY,
                    Some(zdeploy_core::ErrorKind::Busy) => StatusCode::CONFLICT,
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
                let message = format!("{e:#}");
                (failed(id, message.clone()), Err(error(status, message)))
            }
        }
    })
    .await
    .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    report(&agent, &app, kind, &finished, started.elapsed());
    answer.map(|value| Json(value).into_response())
}

pub async fn rollback(
    State(agent): State<SharedAgent>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult {
    authorize(&agent, &headers)?;
    let app = find_app(&agent, &name)?;
    let body: RollbackBody = parse_body(&body)?;
    refuse_if_frozen(&app, body.force, Kind::Rollback)?;
    let request = Request::Rollback {
        to: body.release,
        force: body.force,
    };
    if app.config().topology.is_fleet() {
        // A fleet rolls back as a whole: its controller's run, or a deploy
        // of the older release its leader decides.
        refuse_if_stopping(&agent)?;
        let started = Instant::now();
        let (worker_agent, worker_app) = (agent.clone(), app.clone());
        let finished = tokio::task::spawn_blocking(move || {
            let trigger = Trigger::new("api rollback");
            super::runner::run(&worker_agent, &worker_app, &request, &trigger)
        })
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        report(&agent, &app, "rollback", &finished, started.elapsed());
        return match &finished.error {
            None => Ok(Json(json!(finished)).into_response()),
            Some(why) => Err(error(StatusCode::CONFLICT, why.clone())),
        };
    }
    act(agent, app, "rollback", move |app, options, observer| {
        let config = app.config();
        let watch = Watch {
            options: options.clone(),
            observer: Some(observer),
            ..Watch::quiet("api", &|_| {})
        };
        match deploying::run(&config, &request, &watch)? {
            Done::RolledBack(done) => {
                let release = done.release.clone();
                Ok((json!(done), Some(release)))
            }
            other => Err(anyhow::anyhow!(
                "a rollback on this host answered {other:?}"
            )),
        }
    })
    .await
}

/// `POST /api/apps/{app}/canary/{promote|abort}`, with an optional
/// `{"reason": …}` (and `force` to promote while frozen).
pub async fn canary(
    State(agent): State<SharedAgent>,
    Path((name, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult {
    authorize(&agent, &headers)?;
    let app = find_app(&agent, &name)?;
    let body: CanaryBody = parse_body(&body)?;
    let (ending, kind) = match action.as_str() {
        "promote" => (zdeploy_core::canary::Ending::Promoted, Kind::Promote),
        "abort" => (zdeploy_core::canary::Ending::Aborted, Kind::Abort),
        _ => {
            return Err(error(
                StatusCode::NOT_FOUND,
                format!("no canary action {action:?}: promote or abort"),
            ));
        }
    };
    if !matches!(app.config().topology, crate::config::Topology::OneHost) {
        return Err(error(
            StatusCode::CONFLICT,
            "a fleet's canary ends on every host at once: run `zdeploy canary promote|abort` from the controller",
        ));
    }
    if kind == Kind::Promote {
        refuse_if_frozen(&app, body.force, kind)?;
    }
    let why = body
        .reason
        .unwrap_or_else(|| format!("{} through the API", ending.as_str()));
    act(agent, app, kind.as_str(), move |app, options, observer| {
        let ended = crate::canary::end_and_tell(&app.config(), ending, &why, options, observer)?;
        let release = ended.release.clone();
        Ok((json!(ended), Some(release)))
    })
    .await
}

pub async fn keep(
    State(agent): State<SharedAgent>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult {
    authorize(&agent, &headers)?;
    let app = find_app(&agent, &name)?;
    let body: KeepBody = serde_json::from_slice(&body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("bad JSON body: {e} (send release and name)"),
        )
    })?;
    act(agent, app, "keep", move |app, options, observer| {
        let config = app.config();
        let kept = zdeploy_core::upkeep::keep(
            &config.layout,
            &body.release,
            &body.name,
            config.policy.apache.as_ref(),
            options,
            observer,
        )?;
        Ok((json!({"kept": kept}), None))
    })
    .await
}

pub async fn prune(
    State(agent): State<SharedAgent>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    authorize(&agent, &headers)?;
    let app = find_app(&agent, &name)?;
    act(agent, app, "prune", move |app, options, observer| {
        let config = app.config();
        let pruned =
            zdeploy_core::upkeep::prune(&config.layout, &config.policy, options, observer)?;
        Ok((json!({"pruned": pruned}), None))
    })
    .await
}

pub async fn metrics(State(agent): State<SharedAgent>) -> Response {
    let ages: Vec<(String, f64)> = agent
        .apps()
        .iter()
        .filter_map(|app| {
            let created = summary(app)["live"]["created_ms"].as_i64()?;
            let age = (zdeploy_core::history::now_ms() - created) as f64 / 1000.0;
            Some((app.name.clone(), age))
        })
        .collect();
    let windows: Vec<(String, super::metrics::Windows)> = agent
        .apps()
        .iter()
        .map(|app| {
            let layout = &app.config().layout;
            let (count, seconds) = open_history(app)
                .ok()
                .flatten()
                .and_then(|h| h.window_totals().ok())
                .unwrap_or_default();
            let windows = super::metrics::Windows {
                open: matches!(zdeploy_core::maintenance::current(layout), Ok(Some(_))),
                count,
                seconds,
            };
            (app.name.clone(), windows)
        })
        .collect();
    let fleets: Vec<(String, super::fleet::FleetView)> = agent
        .apps()
        .iter()
        .filter(|app| app.config().topology.ssh().is_some())
        .map(|app| {
            (
                app.name.clone(),
                app.fleet_view().lock().expect("fleet view lock").clone(),
            )
        })
        .collect();
    let members: Vec<(String, crate::fleet::etcd::member::MemberView)> = agent
        .apps()
        .iter()
        .filter(|app| app.config().topology.etcd().is_some())
        .map(|app| {
            (
                app.name.clone(),
                app.member_view().lock().expect("member view lock").clone(),
            )
        })
        .collect();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        agent.metrics.render(&ages, &windows, &fleets, &members),
    )
        .into_response()
}
