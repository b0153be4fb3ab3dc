//! What an agent serves the other members of its etcd fleet: a release to
//! copy instead of building it — its manifest (whole, or its difference
//! from the release the asker is live on, when the asker's copy of that one
//! is what this host holds) and, as one tar, the files a member lacks — and
//! the commands that look after this host (`releases`, `verify`, `log`,
//! `prune`, `keep`, `doctor`), run here as this host's own, for a CLI on
//! any member, and the list of user files its last carry placed.
//! Only for the agent's bearer token: a release holds the app's code and
//! its built config.

use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path as FsPath, PathBuf};
use std::process::Stdio;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use zdeploy_core::manifest::EntryKind;
use zdeploy_core::release_copy::{delta_bytes, manifest_bytes};

use super::SharedAgent;
use super::api::{ApiError, ApiResult, authorize, bearer_matches, error, find_app, open_history};
use crate::fleet::remote_command::Invocation;

/// The header naming the release's content digest.
pub const DIGEST_HEADER: &str = "x-zdeploy-digest";
/// The header naming the release a delta applies to (absent: the whole
/// manifest).
pub const BASE_HEADER: &str = "x-zdeploy-base";
/// The largest list of lacking files a member may send.
pub const MAX_LIST: usize = 64 << 20;

/// Only members of the fleet, which share the agent's token, may copy.
fn authorize_member(agent: &SharedAgent, headers: &HeaderMap) -> Result<(), ApiError> {
    match agent.token() {
        Some(token) if bearer_matches(&token, headers) => Ok(()),
        Some(_) => Err(error(
            StatusCode::UNAUTHORIZED,
            "copying a release needs this agent's bearer token (every member of a fleet has the same agent.token_file)",
        )),
        None => Err(error(
            StatusCode::FORBIDDEN,
            "this agent has no token (agent.token_file), so it lets no member copy its releases",
        )),
    }
}

/// `?base=RELEASE&base_digest=DIGEST`: the asker is live on `base` with
/// this content digest.
#[derive(Debug, Default, Deserialize)]
pub struct ManifestQuery {
    base: Option<String>,
    base_digest: Option<String>,
}

/// `GET /api/apps/{app}/releases/{release}/manifest`: the release's
/// manifest as `release_copy` exports it, its digest in a header.
pub async fn manifest(
    State(agent): State<SharedAgent>,
    Path((name, release)): Path<(String, String)>,
    Query(query): Query<ManifestQuery>,
    headers: HeaderMap,
) -> ApiResult {
    authorize_member(&agent, &headers)?;
    let app = find_app(&agent, &name)?;
    let exported = tokio::task::spawn_blocking(move || export(&app, &release, &query))
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    let mut response = (StatusCode::OK, exported.bytes).into_response();
    let answer = response.headers_mut();
    answer.insert(
        DIGEST_HEADER,
        exported
            .digest
            .parse()
            .expect("a hex digest is a header value"),
    );
    if let Some(base) = exported.base {
        let value = base
            .parse()
            .map_err(|_| error(StatusCode::BAD_REQUEST, "the base is no release name"))?;
        answer.insert(BASE_HEADER, value);
    }
    answer.insert(
        header::CONTENT_TYPE,
        "application/octet-stream".parse().expect("a content type"),
    );
    Ok(response)
}

struct Exported {
    bytes: Vec<u8>,
    digest: String,
    base: Option<String>,
}

fn export(
    app: &super::app::App,
    release: &str,
    query: &ManifestQuery,
) -> Result<Exported, ApiError> {
    let config = app.config();
    let history = open_history(app)?.ok_or_else(|| not_here(release))?;
    let internal = |e: zdeploy_core::Error| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    let manifest = history
        .manifest(release)
        .map_err(internal)?
        .filter(|_| config.layout.release_path(release).is_dir())
        .ok_or_else(|| not_here(release))?;
    let digest = manifest.content_digest().map_err(internal)?;
    let base = match (&query.base, &query.base_digest) {
        (Some(base), Some(wanted)) if base != release => {
            match history.manifest(base).map_err(internal)? {
                Some(old) if old.content_digest().map_err(internal)? == *wanted => {
                    Some((base.clone(), old))
                }
                _ => None,
            }
        }
        _ => None,
    };
    let bytes = match &base {
        Some((_, old)) => delta_bytes(old, &manifest),
        None => manifest_bytes(&manifest),
    }
    .map_err(internal)?;
    Ok(Exported {
        bytes,
        digest,
        base: base.map(|(name, _)| name),
    })
}

fn not_here(release: &str) -> ApiError {
    error(
        StatusCode::NOT_FOUND,
        format!("this host has no release '{release}' with a manifest to copy"),
    )
}

/// `POST /api/apps/{app}/releases/{release}/files`, the body the paths a
/// member lacks (each ended by a NUL): those files as one tar, streamed.
/// Each path must be a file of the release's manifest.
pub async fn files(
    State(agent): State<SharedAgent>,
    Path((name, release)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    authorize_member(&agent, &headers)?;
    let app = find_app(&agent, &name)?;
    let list = body.to_vec();
    let (dir, list) = tokio::task::spawn_blocking(move || checked_list(&app, &release, list))
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    let mut child = tokio::process::Command::new("tar")
        .args(["--null", "--no-recursion", "--hard-dereference", "-C"])
        .arg(&dir)
        .args(["-T", "-", "-cf", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot run tar: {e}"),
            )
        })?;
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let (chunks, body) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(8);
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let writing = async move {
            let written = stdin.write_all(&list).await;
            drop(stdin);
            written
        };
        let reading = async {
            let mut buffer = vec![0u8; 256 << 10];
            loop {
                match stdout.read(&mut buffer).await {
                    Ok(0) => return true,
                    Ok(n) => {
                        if chunks
                            .send(Ok(Bytes::copy_from_slice(&buffer[..n])))
                            .await
                            .is_err()
                        {
                            return false;
                        }
                    }
                    Err(e) => {
                        let _ = chunks.send(Err(e)).await;
                        return false;
                    }
                }
            }
        };
        let (written, read) = tokio::join!(writing, reading);
        let mut stderr = String::new();
        if let Some(mut err) = child.stderr.take() {
            let _ = err.read_to_string(&mut stderr).await;
        }
        let status = child.wait().await;
        if read && (written.is_err() || !status.is_ok_and(|s| s.success())) {
            // Cut the body short: the member's copy fails its check.
            let why = format!("tar failed: {}", stderr.trim());
            tracing::warn!(%why, "a member's copy of a release was cut short");
            let _ = chunks.send(Err(std::io::Error::other(why))).await;
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(body);
    Ok((
        [(header::CONTENT_TYPE, "application/x-tar")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// The release's folder and the list, once every path in it names a file
/// of the release's manifest (nothing outside it, nothing it does not list).
fn checked_list(
    app: &super::app::App,
    release: &str,
    list: Vec<u8>,
) -> Result<(PathBuf, Vec<u8>), ApiError> {
    let config = app.config();
    let history = open_history(app)?.ok_or_else(|| not_here(release))?;
    let internal = |e: zdeploy_core::Error| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    let dir = config.layout.release_path(release);
    let manifest = history
        .manifest(release)
        .map_err(internal)?
        .filter(|_| dir.is_dir())
        .ok_or_else(|| not_here(release))?;
    if list.last().is_some_and(|b| *b != 0) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "the list of files must end each path with a NUL",
        ));
    }
    for raw in list.split(|b| *b == 0).filter(|p| !p.is_empty()) {
        let path = FsPath::new(std::ffi::OsStr::from_bytes(raw));
        let plain = path.components().all(|c| matches!(c, Component::Normal(_)));
        let is_file = plain && manifest.kind(path).map_err(internal)? == Some(EntryKind::File);
        if !is_file {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!(
                    "'{}' is not a file of release {release}",
                    String::from_utf8_lossy(raw)
                ),
            ));
        }
    }
    Ok((dir, list))
}

/// The commands a member may run on this host for a CLI: those that look
/// after one host, the same an ssh fleet runs on each of its hosts.
const RUNNABLE: [&str; 7] = [
    "releases",
    "verify",
    "log",
    "prune",
    "keep",
    "doctor",
    "maintenance",
];

#[derive(Debug, Deserialize)]
pub struct RunRequest {
    args: Vec<String>,
}

/// How the command ended on this host, and what it said.
#[derive(Debug, Serialize, Deserialize)]
pub struct RunAnswer {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// `POST /api/apps/{app}/run` with `{"args": ["releases", …]}`: run that
/// command here with this agent's config, as this host's own (not fanned
/// out again), and answer with its exit code and output.
pub async fn run(
    State(agent): State<SharedAgent>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    authorize(&agent, &headers)?;
    authorize_member(&agent, &headers)?;
    find_app(&agent, &name)?;
    let request: RunRequest = serde_json::from_slice(&body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("not a run request: {e}")))?;
    let Some(verb) = request
        .args
        .first()
        .filter(|v| RUNNABLE.contains(&v.as_str()))
    else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("a member may run only {} here", RUNNABLE.join(", ")),
        ));
    };
    let verb = verb.clone();
    let config = agent.config_path().to_path_buf();
    let text = std::fs::read_to_string(&config).map_err(|e| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read {}: {e}", config.display()),
        )
    })?;
    let invocation = Invocation {
        config: Some((config.display().to_string(), text)),
        args: request.args,
    };
    let output = tokio::task::spawn_blocking(move || run_here(&invocation))
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot run {verb}: {e:#}"),
            )
        })?;
    Ok(axum::Json(output).into_response())
}

/// Run `zdeploy fleet-run` (this binary) with `invocation` on its stdin.
fn run_here(invocation: &Invocation) -> anyhow::Result<RunAnswer> {
    use std::io::Write;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg("fleet-run")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped");
    stdin.write_all(serde_json::to_string(invocation)?.as_bytes())?;
    drop(stdin);
    let output = child.wait_with_output()?;
    Ok(RunAnswer {
        code: output.status.code().unwrap_or(1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// `GET /api/apps/{app}/user-content`: the user files this host's last
/// carry placed in its live release (each path ended by a NUL), to name
/// what one member holds that another lacks.
pub async fn user_content(
    State(agent): State<SharedAgent>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    authorize_member(&agent, &headers)?;
    let app = find_app(&agent, &name)?;
    let list = app.config().layout.user_content_list();
    // A small file on local disk: read where the request is served.
    let bytes = std::fs::read(&list).map_err(|e| {
        error(
            StatusCode::NOT_FOUND,
            format!(
                "this host has no list of user files ({}: {e})",
                list.display()
            ),
        )
    })?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}
