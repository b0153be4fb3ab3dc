//! Freezes: while an app is frozen (an incident, a sale), polls and
//! webhooks deploy nothing and record why; a person's deploy or rollback
//! must say `--force`. The freeze is a file in the state dir, so it
//! outlives an agent restart, and it may end by itself (`until`).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsx;
use crate::history::{History, Kind, now_ms};
use crate::layout::Layout;

/// A freeze in force.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Freeze {
    pub reason: Option<String>,
    pub since_ms: i64,
    /// When it ends by itself; `None`: at `unfreeze`.
    pub until_ms: Option<i64>,
}

impl Freeze {
    /// "frozen (reason)" or "frozen", as skipped runs record it.
    pub fn describe(&self) -> String {
        match &self.reason {
            Some(reason) => format!("frozen ({reason})"),
            None => "frozen".to_string(),
        }
    }
}

/// The freeze in force now, if any (one whose `until` passed is not).
pub fn current(layout: &Layout) -> Result<Option<Freeze>> {
    let path = layout.freeze_path();
    let freeze: Freeze = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| Error::Invalid(format!("{} is unreadable: {e}", path.display())))?,
        // No state dir (nothing deployed), or no webroot folder at all: the
        // deploy itself says what is wrong with it.
        Err(e) if fsx::is_missing(&e) => return Ok(None),
        Err(e) => return Err(Error::io("read", path, e)),
    };
    Ok(Some(freeze).filter(|f| f.until_ms.is_none_or(|until| until > now_ms())))
}

/// Freeze the app (replacing a freeze in force).
pub fn freeze(layout: &Layout, reason: Option<&str>, until_ms: Option<i64>) -> Result<Freeze> {
    if let Some(reason) = reason
        && (reason.trim().is_empty() || reason.len() > 500 || reason.chars().any(char::is_control))
    {
        return Err(Error::Invalid(
            "a freeze's reason is one line of at most 500 characters".into(),
        ));
    }
    if until_ms.is_some_and(|until| until <= now_ms()) {
        return Err(Error::Invalid("--until is in the past".into()));
    }
    let freeze = Freeze {
        reason: reason.map(str::to_string),
        since_ms: now_ms(),
        until_ms,
    };
    fsx::create_dir_all(&layout.state_dir())?;
    let path = layout.freeze_path();
    let temporary = path.with_extension("json.new");
    std::fs::write(
        &temporary,
        serde_json::to_vec_pretty(&freeze).expect("a freeze serializes"),
    )
    .map_err(|e| Error::io("write", &temporary, e))?;
    fsx::rename(&temporary, &path)?;
    Ok(freeze)
}

/// Lift the freeze; the one that was in force, if any.
pub fn unfreeze(layout: &Layout) -> Result<Option<Freeze>> {
    let was = current(layout)?;
    match std::fs::remove_file(layout.freeze_path()) {
        Ok(()) => Ok(was),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("remove", layout.freeze_path(), e)),
    }
}

/// The refusal a person's deploy or rollback gets while `freeze` holds.
pub fn refusal(layout: &Layout, freeze: &Freeze, kind: Kind) -> Error {
    Error::Invalid(format!(
        "{} is {}: a {} needs --force (\"force\": true through the API), or `zdeploy unfreeze`",
        layout.context(),
        freeze.describe(),
        kind.as_str()
    ))
}

impl History {
    /// Record a run that did not happen because the app is frozen.
    pub fn record_skipped(&self, kind: Kind, trigger: &str, why: &str) -> Result<i64> {
        let id = self.start_deployment(kind, trigger, None, None)?;
        self.conn
            .execute(
                "UPDATE deployments SET outcome = 'skipped', error = ?2, finished_ms = ?3 WHERE id = ?1",
                rusqlite::params![id, format!("skipped: {why}"), now_ms()],
            )
            .map_err(|e| self.fail(e))?;
        Ok(id)
    }
}
