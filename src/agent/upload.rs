//! An archive sent to the agent to deploy (a CI's artifact): streamed to the
//! app's state folder under the archive size limit, its SHA-256 checked
//! against the one the sender named, and removed once no trigger holds it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio_stream::StreamExt;

use super::api::{ApiError, error};
use crate::config::AppConfig;

/// The header that names the archive's SHA-256 (64 hex digits).
pub const DIGEST_HEADER: &str = "x-zdeploy-archive-sha256";
/// The longest pause allowed between two parts of an archive's body.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest an archive may take to arrive in all.
pub const UPLOAD_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// An archive received whole, with the digest it was checked against. The
/// file goes when the last trigger holding it does.
#[derive(Debug, PartialEq, Eq)]
pub struct Upload {
    pub path: PathBuf,
    pub sha256: String,
}

impl Drop for Upload {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether the request carries an archive (it names its digest).
pub fn is_archive(headers: &HeaderMap) -> bool {
    headers.contains_key(DIGEST_HEADER)
}

/// The digest the sender named, as lowercase hex.
fn named_digest(headers: &HeaderMap) -> Result<String, ApiError> {
    let value = headers
        .get(DIGEST_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim();
    let hex = value.strip_prefix("sha256=").unwrap_or(value);
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!(
                "{DIGEST_HEADER} must be the archive's SHA-256 as 64 hex digits, got '{}'",
                value.chars().take(80).collect::<String>()
            ),
        ));
    }
    Ok(hex.to_ascii_lowercase())
}

/// Receive the archive in `body` for `app`; nothing is kept unless it
/// arrived whole, within the limit, with the digest named.
pub async fn receive(app: &AppConfig, headers: &HeaderMap, body: Body) -> Result<Upload, ApiError> {
    let expected = named_digest(headers)?;
    let limit = app.policy.limits.max_bytes;
    let too_big = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the archive is larger than the app's limit of {limit} bytes (max_archive_size)"
            ),
        )
    };
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(too_big());
    }
    let internal = |what: &str, path: &Path, e: std::io::Error| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot {what} {}: {e}", path.display()),
        )
    };
    // A webroot that is missing is the deploy's error, not made here.
    app.layout
        .check_webroot()
        .map_err(|e| error(StatusCode::CONFLICT, format!("{e}; nothing was deployed")))?;
    let dir = app.layout.upload_dir();
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| internal("create", &dir, e))?;
    let upload = Upload {
        path: dir.join(format!("{}-{}", &expected[..12], next_number())),
        sha256: expected,
    };
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&upload.path)
        .await
        .map_err(|e| internal("create", &upload.path, e))?;
    let mut hasher = Sha256::new();
    let mut received: u64 = 0;
    let mut stream = body.into_data_stream();
    loop {
        let chunk = match tokio::time::timeout(IDLE_TIMEOUT, stream.next()).await {
            Err(_) => {
                return Err(error(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the archive stopped arriving after {received} bytes (nothing for {} s)",
                        IDLE_TIMEOUT.as_secs()
                    ),
                ));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    format!("the archive was cut off after {received} bytes: {e}"),
                ));
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        received += chunk.len() as u64;
        if received > limit {
            return Err(too_big());
        }
        hasher.update(&chunk);
        file.write_all(&chunk)
            .await
            .map_err(|e| internal("write", &upload.path, e))?;
    }
    file.flush()
        .await
        .map_err(|e| internal("write", &upload.path, e))?;
    if declared.is_some_and(|length| length != received) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!(
                "the archive was cut off: {received} of {} bytes arrived",
                declared.unwrap_or_default()
            ),
        ));
    }
    let actual = hex::encode(hasher.finalize());
    if actual != upload.sha256 {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!(
                "the archive's SHA-256 is {actual}, but {DIGEST_HEADER} says {}; nothing was deployed",
                upload.sha256
            ),
        ));
    }
    Ok(upload)
}

/// Uploads left by an agent that stopped: no trigger holds them any more.
pub fn remove_leftovers(app: &AppConfig) {
    let dir = app.layout.upload_dir();
    if let Err(e) = std::fs::remove_dir_all(&dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot remove old uploads");
    }
}

/// Unique names within this agent.
fn next_number() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
