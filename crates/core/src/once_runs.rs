//! Steps marked `once` (a migration) act on state every host shares, so a
//! fleet runs them on its builder only. Each run is recorded before it
//! starts, so a deploy retried after a crash says whether the step already
//! ran for the release or its commit, and how that run ended.

use rusqlite::{OptionalExtension, params};

use crate::error::Result;
use crate::history::{History, now_ms};
use crate::session::Session;

/// An earlier run of the same `once` command for the same release or commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarlierRun {
    pub command: String,
    pub release: String,
    pub deployment: i64,
    /// `ok`, `failed`, or `running` when its process died during it.
    pub outcome: String,
}

impl History {
    /// The latest run of `command` for `release` or `commit`.
    pub fn earlier_once_run(
        &self,
        command: &str,
        release: &str,
        commit: Option<&str>,
    ) -> Result<Option<EarlierRun>> {
        self.conn
            .query_row(
                "SELECT release, deployment_id, outcome FROM once_runs
                 WHERE command = ?1 AND (release = ?2 OR (?3 IS NOT NULL AND commit_id = ?3))
                 ORDER BY id DESC LIMIT 1",
                params![command, release, commit],
                |row| {
                    Ok(EarlierRun {
                        command: command.to_string(),
                        release: row.get(0)?,
                        deployment: row.get(1)?,
                        outcome: row.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.fail(e))
    }

    /// Record that `command` starts now; returns the run's id.
    pub fn start_once_run(
        &self,
        deployment: i64,
        command: &str,
        release: &str,
        commit: Option<&str>,
    ) -> Result<i64> {
        self.conn
            .execute(
                "INSERT INTO once_runs (release, commit_id, command, deployment_id, started_ms, outcome)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'running')",
                params![release, commit, command, deployment, now_ms()],
            )
            .map_err(|e| self.fail(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// `once` steps (migrations) that ran, and ended ok, for releases
    /// other than `release` since `since_ms`: what a rollback to `release`
    /// (made then) does not undo.
    pub fn once_runs_since(&self, release: &str, since_ms: i64) -> Result<Vec<EarlierRun>> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT command, release, deployment_id FROM once_runs
                 WHERE outcome = 'ok' AND release != ?1 AND started_ms >= ?2 ORDER BY id",
            )
            .map_err(|e| self.fail(e))?;
        let rows = statement
            .query_map(params![release, since_ms], |row| {
                Ok(EarlierRun {
                    command: row.get(0)?,
                    release: row.get(1)?,
                    deployment: row.get(2)?,
                    outcome: "ok".into(),
                })
            })
            .map_err(|e| self.fail(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.fail(e))
    }

    pub fn finish_once_run(&self, id: i64, ok: bool) -> Result<()> {
        self.conn
            .execute(
                "UPDATE once_runs SET outcome = ?2, finished_ms = ?3 WHERE id = ?1",
                params![id, if ok { "ok" } else { "failed" }, now_ms()],
            )
            .map_err(|e| self.fail(e))?;
        Ok(())
    }
}

/// Run a `once` command through `run`, recorded before it starts; an
/// earlier run for the same release or commit is named first.
pub fn run_once<T>(
    session: &Session<'_>,
    command: &str,
    release: &str,
    commit: Option<&str>,
    run: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let history = &session.history;
    if let Some(earlier) = history.earlier_once_run(command, release, commit)? {
        let ended = match earlier.outcome.as_str() {
            "running" => "was cut off (its process died)".to_string(),
            outcome => format!("ended {outcome}"),
        };
        session.info(&format!(
            "once: {command} already ran for {} in deployment {} and {ended}; this deploy runs it again",
            if earlier.release == release {
                format!("release {release}")
            } else {
                format!(
                    "commit {} (release {})",
                    crate::release::short(commit.unwrap_or_default()),
                    earlier.release
                )
            },
            earlier.deployment
        ));
    }
    let id = history.start_once_run(session.id, command, release, commit)?;
    let result = run();
    history.finish_once_run(id, result.is_ok())?;
    result
}
