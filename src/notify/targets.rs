//! The `notify` key: a list of targets, each `{ url, format, on,
//! secret_file }` (one table alone is a list of one), checked when the
//! config is loaded so a typo fails then, not at the first deploy.

use std::path::PathBuf;

use serde::Deserialize;

use super::{Event, Format, Secret, Target};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    url: String,
    format: Option<String>,
    on: Option<Vec<String>>,
    secret_file: Option<String>,
}

/// The targets `value` lists; `Err` says what is wrong, naming the target
/// (`notify[2]`) when there are several.
pub fn parse(value: &toml::Value) -> Result<Vec<Target>, String> {
    match value {
        toml::Value::Table(_) => Ok(vec![parse_one(value, "notify")?]),
        toml::Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| parse_one(item, &format!("notify[{i}]")))
            .collect(),
        other => Err(format!(
            "notify takes a list of targets like [{{ url = \"https://…\", format = \"slack\" }}], got a {}",
            other.type_str()
        )),
    }
}

fn parse_one(value: &toml::Value, key: &str) -> Result<Target, String> {
    let raw =
        RawTarget::deserialize(value.clone()).map_err(|e| format!("{key}: {}", e.message()))?;
    if !(raw.url.starts_with("http://") || raw.url.starts_with("https://")) {
        return Err(format!(
            "{key}.url must be http:// or https://, got '{}'",
            super::shown_url(&raw.url)
        ));
    }
    let format = match raw.format.as_deref() {
        None | Some("json") => Format::Json,
        Some("slack") => Format::Slack,
        Some("discord") => Format::Discord,
        Some("teams") => Format::Teams,
        Some(other) => {
            return Err(format!(
                "{key}.format takes \"slack\", \"discord\", \"teams\" or \"json\", got '{other}'"
            ));
        }
    };
    let on = match raw.on {
        None => Event::DEFAULT.to_vec(),
        Some(names) => {
            let mut events = Vec::new();
            for name in &names {
                let found = Event::parse(name).ok_or_else(|| {
                    format!(
                        "{key}.on takes {}, got '{name}'",
                        Event::ALL
                            .iter()
                            .map(|e| format!("\"{}\"", e.as_str()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })?;
                for event in found {
                    if !events.contains(event) {
                        events.push(*event);
                    }
                }
            }
            events
        }
    };
    let secret = match raw.secret_file {
        None => None,
        Some(file) => {
            let path = PathBuf::from(file);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("{key}.secret_file {}: {e}", path.display()))?;
            let text = text.trim();
            if text.is_empty() {
                return Err(format!("{key}.secret_file {} is empty", path.display()));
            }
            Some(Secret(text.to_string()))
        }
    };
    Ok(Target {
        url: raw.url,
        format,
        on,
        secret,
    })
}
