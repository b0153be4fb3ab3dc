//! What each kind of receiver is sent: Slack's `text`, Discord's `content`
//! and `embeds`, a Teams Workflows Adaptive Card, or zdeploy's own JSON
//! (with a Slack-compatible `text`), signed like GitHub's webhooks.

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::{Event, Format, Notice, Secret};

/// The header carrying the body's HMAC-SHA256 under the target's secret.
pub const SIGNATURE_HEADER: &str = "X-Zdeploy-Signature-256";

/// Discord refuses longer `content`; Teams and Slack cut long text anyway.
const TEXT_LIMIT: usize = 1900;

/// The body for `format`.
pub fn body(format: Format, notice: &Notice) -> Value {
    let text = summary(notice);
    match format {
        Format::Json => json!({
            "text": text,
            "app": notice.app,
            "event": notice.event.as_str(),
            "kind": notice.kind,
            "deployment": notice.deployment,
            "release": notice.release,
            "previous": notice.previous,
            "commit": notice.commit,
            "hosts": notice.hosts,
            "duration_ms": notice.duration_ms,
            "error": notice.error,
            "trigger": notice.trigger,
            "at": notice.at,
        }),
        Format::Slack => json!({ "text": text }),
        Format::Discord => json!({
            "content": text,
            // A release name or an error text never pings anyone.
            "allowed_mentions": { "parse": [] },
            "embeds": [{
                "title": format!("{} {}", notice.app, notice.event.as_str().replace('_', " ")),
                "color": color(notice.event),
                "fields": facts(notice)
                    .into_iter()
                    .map(|(name, value)| json!({ "name": name, "value": value, "inline": true }))
                    .collect::<Vec<_>>(),
                "timestamp": notice.at,
            }],
        }),
        Format::Teams => json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": null,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [
                        {
                            "type": "TextBlock",
                            "size": "Medium",
                            "weight": "Bolder",
                            "wrap": true,
                            "color": match notice.event {
                                Event::Failed | Event::SwitchedBack => "Attention",
                                Event::Succeeded | Event::RolledBack => "Good",
                                Event::Started | Event::Skipped => "Default",
                                Event::Canary => "Accent",
                            },
                            "text": text,
                        },
                        {
                            "type": "FactSet",
                            "facts": facts(notice)
                                .into_iter()
                                .map(|(title, value)| json!({ "title": title, "value": value }))
                                .collect::<Vec<_>>(),
                        },
                    ],
                },
            }],
        }),
    }
}

/// `sha256=<hex>` of `body` under `secret`.
pub fn signature(secret: &Secret, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.0.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// One line for people: "zdeploy: shop deployed ROOT_… (commit abc1234) on web1 in 12.3s".
fn summary(notice: &Notice) -> String {
    let app = &notice.app;
    let release = notice.release.as_deref().unwrap_or("?");
    let commit = notice
        .commit
        .as_deref()
        .map(|c| format!(" (commit {})", zdeploy_core::release::short(c)))
        .unwrap_or_default();
    let hosts = match notice.hosts.as_slice() {
        [] => String::new(),
        hosts => format!(" on {}", hosts.join(", ")),
    };
    let took = notice
        .duration_ms
        .map(|ms| format!(" in {:.1}s", ms as f64 / 1000.0))
        .unwrap_or_default();
    let error = notice.error.as_deref().unwrap_or("unknown error");
    let text = match notice.event {
        Event::Started => format!("zdeploy: {} of {app} started{hosts}", notice.kind),
        Event::Succeeded => format!("zdeploy: {app} now serves {release}{commit}{hosts}{took}"),
        Event::RolledBack => format!("zdeploy: {app} rolled back to {release}{hosts}{took}"),
        Event::Failed => format!("zdeploy: {} of {app} failed{hosts}: {error}", notice.kind),
        Event::SwitchedBack => {
            format!("zdeploy: {app} switched back{hosts}: {error}")
        }
        Event::Skipped => format!("zdeploy: a deploy of {app} was skipped: {error}"),
        Event::Canary => format!(
            "zdeploy: {app} tries {release}{commit} on a share of clients as a canary{hosts}{took}"
        ),
    };
    truncate(text)
}

/// The notice as name and value pairs, for cards.
fn facts(notice: &Notice) -> Vec<(&'static str, String)> {
    let mut facts = vec![
        ("App", notice.app.clone()),
        ("Event", notice.event.as_str().to_string()),
    ];
    let optional = [
        ("Release", notice.release.clone()),
        ("Previous", notice.previous.clone()),
        ("Commit", notice.commit.clone()),
        (
            "Hosts",
            Some(notice.hosts.join(", ")).filter(|h| !h.is_empty()),
        ),
        (
            "Duration",
            notice
                .duration_ms
                .map(|ms| format!("{:.1}s", ms as f64 / 1000.0)),
        ),
        ("Trigger", Some(notice.trigger.clone())),
        ("Error", notice.error.clone().map(truncate)),
    ];
    facts.extend(
        optional
            .into_iter()
            .filter_map(|(name, value)| Some((name, value?))),
    );
    facts
}

fn color(event: Event) -> u32 {
    match event {
        Event::Succeeded | Event::RolledBack => 0x2e_a0_43,
        Event::Failed | Event::SwitchedBack => 0xd1_24_2f,
        Event::Started | Event::Skipped => 0x6e_77_81,
        Event::Canary => 0xb7_95_0b,
    }
}

fn truncate(mut text: String) -> String {
    if text.len() > TEXT_LIMIT {
        let mut end = TEXT_LIMIT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}
