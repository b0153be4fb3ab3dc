//! The controller's own state for a fleet app: its git mirror and its
//! history of fleet runs (one JSON line per run, newest last). Each host
//! keeps its own history of its part.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Result, anyhow, bail};
use serde::{Deserialize, Serialize};

use crate::config::AppConfig;

/// One fleet run as the controller saw it.
#[derive(Debug, Serialize, Deserialize)]
pub struct FleetRecord {
    pub started_ms: i64,
    pub finished_ms: i64,
    /// "deploy", "rollback" or "converge".
    pub kind: String,
    pub trigger: String,
    /// "deployed", "rolled back", "converged", "unchanged" or "failed".
    pub outcome: String,
    pub release: Option<String>,
    pub commit: Option<String>,
    pub skew_ms: Option<i64>,
    pub hosts: Vec<String>,
    pub error: Option<String>,
}

/// `$ZDEPLOY_STATE_DIR`, `$XDG_STATE_HOME/zdeploy` or
/// `~/.local/state/zdeploy`, then `fleets/<app>-<hash of its context path>`.
pub fn controller_dir(app: &AppConfig) -> Result<PathBuf> {
    let base = match std::env::var_os("ZDEPLOY_STATE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => match (std::env::var_os("XDG_STATE_HOME"), std::env::var_os("HOME")) {
            (Some(state), _) => PathBuf::from(state).join("zdeploy"),
            (None, Some(home)) => PathBuf::from(home).join(".local/state/zdeploy"),
            (None, None) => bail!(
                "neither HOME nor ZDEPLOY_STATE_DIR is set: nowhere to keep the fleet's state"
            ),
        },
    };
    let key = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        app.layout.context_path().display().to_string().as_bytes(),
    ));
    let dir = base.join("fleets").join(format!(
        "{}-{}",
        app.name.as_deref().unwrap_or(app.layout.context()),
        &key[..12]
    ));
    std::fs::create_dir_all(&dir).map_err(|e| anyhow!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

fn history_path(app: &AppConfig) -> Result<PathBuf> {
    Ok(controller_dir(app)?.join("runs.jsonl"))
}

/// Append a run; written and synced as one line, so a crash leaves at
/// worst a last line that `recent` skips.
pub fn append(app: &AppConfig, record: &FleetRecord) -> Result<()> {
    let path = history_path(app)?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| anyhow!("cannot open {}: {e}", path.display()))?;
    let line = serde_json::to_string(record)? + "\n";
    file.write_all(line.as_bytes())
        .and_then(|_| file.sync_data())
        .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))
}

/// The newest `limit` runs, newest first.
pub fn recent(app: &AppConfig, limit: usize) -> Vec<FleetRecord> {
    let Ok(path) = history_path(app) else {
        return Vec::new();
    };
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str(l).ok())
        .take(limit)
        .collect()
}
