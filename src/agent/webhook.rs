//! Push webhooks at `POST /hooks/{app}`: GitHub, GitLab, Gitea/Forgejo,
//! Bitbucket and a generic form, each verified with the app's secret in
//! constant time before its body is read as anything.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::app::Trigger;
use super::{Agent, SharedAgent};

/// Largest body a webhook may have (GitHub's pushes can be big: 25 MiB is
/// their cap; ours is smaller because a push needs none of the file lists).
pub const MAX_BODY: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    GitHub,
    GitLab,
    Gitea,
    Bitbucket,
    Generic,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::GitHub => "github",
            Provider::GitLab => "gitlab",
            Provider::Gitea => "gitea",
            Provider::Bitbucket => "bitbucket",
            Provider::Generic => "generic",
        }
    }
}

/// Why a request was refused: the metrics label and the answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejection {
    MissingSignature,
    BadSignature,
    Malformed(String),
}

impl Rejection {
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::MissingSignature => "missing_signature",
            Rejection::BadSignature => "bad_signature",
            Rejection::Malformed(_) => "malformed",
        }
    }
}

/// What a verified delivery asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    Ping,
    /// A push of `reference` (`refs/heads/x` or `refs/tags/x`) to `commit`;
    /// `default_branch` when the payload names the repository's.
    Push {
        reference: String,
        commit: Option<String>,
        default_branch: Option<String>,
    },
    Other(String),
}

#[derive(Debug, PartialEq, Eq)]
pub struct Delivery {
    pub provider: Provider,
    pub id: Option<String>,
    pub event: Event,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// HMAC-SHA256 of `body` compared in constant time with `hex_signature`.
fn hmac_matches(secret: &str, body: &[u8], hex_signature: &str) -> bool {
    let Ok(signature) = hex::decode(hex_signature) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    mac.verify_slice(&signature).is_ok()
}

/// Which provider sent this and whether its signature holds.
pub fn verify(headers: &HeaderMap, body: &[u8], secret: &str) -> Result<Provider, Rejection> {
    let hmac = |provider, signature: &str| {
        if hmac_matches(secret, body, signature) {
            Ok(provider)
        } else {
            Err(Rejection::BadSignature)
        }
    };
    if let Some(signature) =
        header(headers, "x-gitea-signature").or(header(headers, "x-forgejo-signature"))
    {
        return hmac(Provider::Gitea, signature);
    }
    if let Some(token) = header(headers, "x-gitlab-token") {
        return if bool::from(token.as_bytes().ct_eq(secret.as_bytes())) {
            Ok(Provider::GitLab)
        } else {
            Err(Rejection::BadSignature)
        };
    }
    if let Some(signature) = header(headers, "x-hub-signature-256") {
        let signature = signature.strip_prefix("sha256=").unwrap_or("");
        return hmac(Provider::GitHub, signature);
    }
    if let Some(signature) = header(headers, "x-hub-signature") {
        // Bitbucket signs with SHA-256 under GitHub's old header name;
        // GitHub's own SHA-1 form there is not accepted.
        let Some(signature) = signature.strip_prefix("sha256=") else {
            return Err(Rejection::BadSignature);
        };
        return hmac(Provider::Bitbucket, signature);
    }
    if let Some(signature) = header(headers, "x-zdeploy-signature") {
        let signature = signature.strip_prefix("sha256=").unwrap_or(signature);
        return hmac(Provider::Generic, signature);
    }
    Err(Rejection::MissingSignature)
}

/// Read a verified delivery.
pub fn parse(provider: Provider, headers: &HeaderMap, body: &[u8]) -> Result<Delivery, Rejection> {
    let json = || -> Result<Value, Rejection> {
        serde_json::from_slice(body)
            .map_err(|e| Rejection::Malformed(format!("the body is not JSON: {e}")))
    };
    let text = |value: &Value, pointer: &str| {
        value
            .pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let id_from = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| header(headers, n))
            .map(str::to_string)
    };
    let push = |payload: &Value, default_pointer: &str| -> Result<Event, Rejection> {
        let reference = text(payload, "/ref")
            .ok_or_else(|| Rejection::Malformed("the push names no ref".into()))?;
        Ok(Event::Push {
            reference,
            commit: text(payload, "/after").or_else(|| text(payload, "/checkout_sha")),
            default_branch: text(payload, default_pointer),
        })
    };
    let (id, event) = match provider {
        Provider::GitHub => {
            let kind = header(headers, "x-github-event").unwrap_or("push");
            let event = match kind {
                "ping" => Event::Ping,
                "push" => push(&json()?, "/repository/default_branch")?,
                other => Event::Other(other.to_string()),
            };
            (id_from(&["x-github-delivery"]), event)
        }
        Provider::Gitea => {
            let kind = header(headers, "x-gitea-event")
                .or(header(headers, "x-forgejo-event"))
                .unwrap_or("push");
            let event = match kind {
                "push" => push(&json()?, "/repository/default_branch")?,
                other => Event::Other(other.to_string()),
            };
            (id_from(&["x-gitea-delivery", "x-forgejo-delivery"]), event)
        }
        Provider::GitLab => {
            let kind = header(headers, "x-gitlab-event").unwrap_or("Push Hook");
            let event = match kind {
                "Push Hook" | "Tag Push Hook" => push(&json()?, "/project/default_branch")?,
                other => Event::Other(other.to_string()),
            };
            (id_from(&["x-gitlab-event-uuid", "idempotency-key"]), event)
        }
        Provider::Bitbucket => {
            let kind = header(headers, "x-event-key").unwrap_or("repo:push");
            let event = match kind {
                "diagnostics:ping" => Event::Ping,
                "repo:push" => bitbucket_push(&json()?)?,
                other => Event::Other(other.to_string()),
            };
            (id_from(&["x-request-uuid", "x-hook-uuid"]), event)
        }
        Provider::Generic => {
            let event = if body.iter().all(u8::is_ascii_whitespace) {
                Event::Push {
                    reference: String::new(),
                    commit: None,
                    default_branch: None,
                }
            } else {
                let payload = json()?;
                Event::Push {
                    reference: text(&payload, "/ref").unwrap_or_default(),
                    commit: text(&payload, "/commit"),
                    default_branch: None,
                }
            };
            (id_from(&["x-zdeploy-delivery"]), event)
        }
    };
    Ok(Delivery {
        provider,
        id,
        event,
    })
}

/// Bitbucket lists the pushed branches in `push.changes[].new`.
fn bitbucket_push(payload: &Value) -> Result<Event, Rejection> {
    let changes = payload
        .pointer("/push/changes")
        .and_then(Value::as_array)
        .ok_or_else(|| Rejection::Malformed("the push lists no changes".into()))?;
    // A deleted branch has no `new`; the first pushed branch or tag counts.
    let new = changes
        .iter()
        .find_map(|c| c.get("new").filter(|n| !n.is_null()))
        .ok_or_else(|| Rejection::Malformed("the push changes no branch".into()))?;
    let name = new.get("name").and_then(Value::as_str).unwrap_or_default();
    let prefix = match new.get("type").and_then(Value::as_str) {
        Some("tag") => "refs/tags/",
        _ => "refs/heads/",
    };
    Ok(Event::Push {
        reference: format!("{prefix}{name}"),
        commit: new
            .pointer("/target/hash")
            .and_then(Value::as_str)
            .map(str::to_string),
        default_branch: payload
            .pointer("/repository/mainbranch/name")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

/// Whether a push of `pushed` concerns an app deploying `configured` (its
/// ref; `None` deploys the default branch). `None` if it does; the reason
/// if not.
pub fn ignore_reason(
    configured: Option<&str>,
    pushed: &str,
    default_branch: Option<&str>,
) -> Option<String> {
    if pushed.is_empty() {
        return None; // the generic form without a ref: deploy what is configured
    }
    let short = pushed
        .strip_prefix("refs/heads/")
        .or_else(|| pushed.strip_prefix("refs/tags/"))
        .unwrap_or(pushed);
    match configured {
        Some(wanted) if wanted == short || wanted == pushed => None,
        Some(wanted) => Some(format!("push to {pushed}; this app deploys {wanted}")),
        None => match default_branch {
            Some(default) if default != short => Some(format!(
                "push to {pushed}; this app deploys the default branch {default}"
            )),
            _ => None,
        },
    }
}

fn answer(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

pub async fn receive(
    State(agent): State<SharedAgent>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(app) = agent.app(&name) else {
        return answer(
            StatusCode::NOT_FOUND,
            json!({"error": format!("no app '{name}'")}),
        );
    };
    let Some(secret) = app.secret() else {
        agent.metrics.webhook_rejected(&name, "no_secret");
        return answer(
            StatusCode::FORBIDDEN,
            json!({"error": format!("webhooks are off for '{name}': set webhook_secret_file or webhook_secret_env")}),
        );
    };
    let delivery = verify(&headers, &body, &secret).and_then(|p| parse(p, &headers, &body));
    let delivery = match delivery {
        Ok(delivery) => delivery,
        Err(rejection) => return reject(&agent, &name, rejection),
    };
    if let Err(stopping) = super::api::refuse_if_stopping(&agent) {
        return stopping.into_response();
    }
    if let Some(id) = &delivery.id
        && !app.first_delivery(id)
    {
        tracing::info!(app = %name, delivery = %id, "webhook delivery seen before; ignored");
        return answer(
            StatusCode::OK,
            json!({"status": "duplicate", "delivery": id}),
        );
    }
    let provider = delivery.provider.as_str();
    match delivery.event {
        Event::Ping => answer(
            StatusCode::OK,
            json!({"status": "pong", "provider": provider}),
        ),
        Event::Other(kind) => answer(
            StatusCode::ACCEPTED,
            json!({"status": "ignored", "reason": format!("{kind} events do not deploy")}),
        ),
        Event::Push {
            reference,
            commit,
            default_branch,
        } => {
            let config = app.config();
            if let Some(reason) = ignore_reason(
                config.reference.as_deref(),
                &reference,
                default_branch.as_deref(),
            ) {
                tracing::info!(app = %name, %reason, "webhook push ignored");
                return answer(
                    StatusCode::ACCEPTED,
                    json!({"status": "ignored", "reason": reason}),
                );
            }
            tracing::info!(app = %name, provider, reference = %reference, "webhook push: deploy queued");
            let mut trigger = Trigger::new(format!("webhook {provider}"));
            trigger.commit = commit;
            let id = app.trigger(trigger);
            answer(
                StatusCode::ACCEPTED,
                json!({"status": "queued", "trigger": id}),
            )
        }
    }
}

fn reject(agent: &Agent, app: &str, rejection: Rejection) -> Response {
    agent.metrics.webhook_rejected(app, rejection.reason());
    tracing::warn!(app, reason = rejection.reason(), "webhook refused");
    match rejection {
        Rejection::MissingSignature => answer(
            StatusCode::UNAUTHORIZED,
            json!({"error": "no signature: send X-Hub-Signature-256, X-Gitlab-Token, X-Gitea-Signature, X-Hub-Signature (sha256=) or X-Zdeploy-Signature"}),
        ),
        Rejection::BadSignature => answer(
            StatusCode::UNAUTHORIZED,
            json!({"error": "the signature does not match"}),
        ),
        Rejection::Malformed(why) => answer(StatusCode::BAD_REQUEST, json!({"error": why})),
    }
}
