//! The history database (SQLite under the state dir): every deployment and
//! rollback with its steps and full log, and every release with its manifest.
//! The filesystem says what exists and what is live; this says how it got there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::manifest::{Entry, EntryKind, Manifest};
use crate::release::ReleaseState;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS deployments (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    trigger TEXT NOT NULL,
    source TEXT,
    ref TEXT,
    commit_id TEXT,
    message TEXT,
    release TEXT,
    previous TEXT,
    outcome TEXT NOT NULL,
    error TEXT,
    started_ms INTEGER NOT NULL,
    finished_ms INTEGER,
    pid INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS steps (
    deployment_id INTEGER NOT NULL REFERENCES deployments(id),
    name TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    outcome TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS logs (
    id INTEGER PRIMARY KEY,
    deployment_id INTEGER NOT NULL REFERENCES deployments(id),
    at_ms INTEGER NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_by_deployment ON logs(deployment_id, id);
CREATE TABLE IF NOT EXISTS releases (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    source TEXT,
    ref TEXT,
    commit_id TEXT,
    content_digest TEXT,
    deployment_id INTEGER,
    retired_ms INTEGER,
    carried_ms INTEGER,
    note TEXT
);
CREATE TABLE IF NOT EXISTS manifest (
    release TEXT NOT NULL,
    path BLOB NOT NULL,
    kind TEXT NOT NULL,
    mode INTEGER NOT NULL,
    size INTEGER NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (release, path)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS once_runs (
    id INTEGER PRIMARY KEY,
    release TEXT NOT NULL,
    commit_id TEXT,
    command TEXT NOT NULL,
    deployment_id INTEGER NOT NULL,
    started_ms INTEGER NOT NULL,
    finished_ms INTEGER,
    outcome TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS maintenance_windows (
    id INTEGER PRIMARY KEY,
    deployment_id INTEGER,
    opened_ms INTEGER NOT NULL,
    closed_ms INTEGER,
    closed_by TEXT
);
CREATE TABLE IF NOT EXISTS traffic (
    release TEXT NOT NULL,
    bucket_ms INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    histogram TEXT NOT NULL,
    PRIMARY KEY (release, bucket_ms)
);
CREATE INDEX IF NOT EXISTS traffic_by_time ON traffic (bucket_ms);
CREATE TABLE IF NOT EXISTS canaries (
    deployment_id INTEGER PRIMARY KEY,
    release TEXT NOT NULL,
    live TEXT NOT NULL,
    buckets INTEGER NOT NULL,
    started_ms INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    ended_ms INTEGER,
    ended_by INTEGER,
    why TEXT
);
CREATE TABLE IF NOT EXISTS watches (
    deployment_id INTEGER PRIMARY KEY,
    release TEXT NOT NULL,
    verdict TEXT NOT NULL,
    before TEXT NOT NULL,
    after TEXT NOT NULL,
    ended_ms INTEGER NOT NULL
);
";

pub fn now_ms() -> i64 {
    Timestamp::now().as_millisecond()
}

/// What started a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Deploy,
    Rollback,
    Prune,
    Keep,
    /// A canary's release switched to for everyone.
    Promote,
    /// A canary ended, everyone back on the live release.
    Abort,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Deploy => "deploy",
            Kind::Rollback => "rollback",
            Kind::Prune => "prune",
            Kind::Keep => "keep",
            Kind::Promote => "promote",
            Kind::Abort => "abort",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Running,
    Success,
    Unchanged,
    Failed,
    Interrupted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Running => "running",
            Outcome::Success => "success",
            Outcome::Unchanged => "unchanged",
            Outcome::Failed => "failed",
            Outcome::Interrupted => "interrupted",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DeploymentRecord {
    pub id: i64,
    pub kind: String,
    pub trigger: String,
    pub source: Option<String>,
    #[serde(rename = "ref")]
    pub reference: Option<String>,
    pub commit: Option<String>,
    pub message: Option<String>,
    pub release: Option<String>,
    pub previous: Option<String>,
    pub outcome: String,
    pub error: Option<String>,
    pub started_ms: i64,
    pub finished_ms: Option<i64>,
    pub pid: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    pub name: String,
    pub started_ms: i64,
    pub duration_ms: i64,
    pub outcome: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct LogLine {
    pub at_ms: i64,
    pub level: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReleaseRecord {
    pub name: String,
    #[serde(serialize_with = "serialize_state")]
    pub state: ReleaseState,
    pub created_ms: i64,
    pub source: Option<String>,
    #[serde(rename = "ref")]
    pub reference: Option<String>,
    pub commit: Option<String>,
    pub content_digest: Option<String>,
    pub deployment_id: Option<i64>,
    /// When it stopped being live.
    pub retired_ms: Option<i64>,
    /// When the last full carry of user content out of it started: later
    /// carries only need what changed since.
    pub carried_ms: Option<i64>,
    pub note: Option<String>,
}

fn serialize_state<S: serde::Serializer>(
    state: &ReleaseState,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(state.as_str())
}

pub struct History {
    pub(crate) conn: Connection,
    path: PathBuf,
}

impl History {
    /// Open (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let fail = |source| Error::History {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(fail)?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(fail)?;
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
            .map_err(fail)?;
        conn.execute_batch(SCHEMA).map_err(fail)?;
        Ok(History {
            conn,
            path: path.to_path_buf(),
        })
    }

    pub(crate) fn fail(&self, source: rusqlite::Error) -> Error {
        Error::History {
            path: self.path.clone(),
            source,
        }
    }

    pub fn start_deployment(
        &self,
        kind: Kind,
        trigger: &str,
        source: Option<&str>,
        reference: Option<&str>,
    ) -> Result<i64> {
        self.conn
            .execute(
                "INSERT INTO deployments (kind, trigger, source, ref, outcome, started_ms, pid)
                 VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?6)",
                params![
                    kind.as_str(),
                    trigger,
                    source,
                    reference,
                    now_ms(),
                    std::process::id()
                ],
            )
            .map_err(|e| self.fail(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn set_deployment_target(
        &self,
        id: i64,
        release: Option<&str>,
        commit: Option<&str>,
        message: Option<&str>,
        previous: Option<&str>,
    ) -> Result<()> {
        self.conn
            .execute(
                "UPDATE deployments SET release = coalesce(?2, release), commit_id = coalesce(?3, commit_id),
                 message = coalesce(?4, message), previous = coalesce(?5, previous) WHERE id = ?1",
                params![id, release, commit, message, previous],
            )
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    pub fn finish_deployment(&self, id: i64, outcome: Outcome, error: Option<&str>) -> Result<()> {
        self.conn
            .execute(
                "UPDATE deployments SET outcome = ?2, error = ?3, finished_ms = ?4 WHERE id = ?1",
                params![id, outcome.as_str(), error, now_ms()],
            )
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    /// Deployments still "running" belong to dead processes once we hold the lock.
    pub fn interrupt_running_except(&self, current: i64) -> Result<usize> {
        self.conn
            .execute(
                "UPDATE deployments SET outcome = 'interrupted', finished_ms = ?1,
                 error = coalesce(error, 'the process was killed before it finished')
                 WHERE outcome = 'running' AND id != ?2",
                params![now_ms(), current],
            )
            .map_err(|e| self.fail(e))
    }

    pub fn record_step(
        &self,
        id: i64,
        name: &str,
        started_ms: i64,
        duration_ms: i64,
        outcome: &str,
    ) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO steps (deployment_id, name, started_ms, duration_ms, outcome) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, name, started_ms, duration_ms, outcome],
            )
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    pub fn log(&self, id: i64, level: &str, message: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO logs (deployment_id, at_ms, level, message) VALUES (?1, ?2, ?3, ?4)",
                params![id, now_ms(), level, message],
            )
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    fn deployment_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<DeploymentRecord> {
        Ok(DeploymentRecord {
            id: row.get(0)?,
            kind: row.get(1)?,
            trigger: row.get(2)?,
            source: row.get(3)?,
            reference: row.get(4)?,
            commit: row.get(5)?,
            message: row.get(6)?,
            release: row.get(7)?,
            previous: row.get(8)?,
            outcome: row.get(9)?,
            error: row.get(10)?,
            started_ms: row.get(11)?,
            finished_ms: row.get(12)?,
            pid: row.get(13)?,
        })
    }

    const DEPLOYMENT_COLUMNS: &str =
        "id, kind, trigger, source, ref, commit_id, message, release, previous,
        outcome, error, started_ms, finished_ms, pid";

    /// The newest `limit` deployments, newest first.
    pub fn deployments(&self, limit: usize) -> Result<Vec<DeploymentRecord>> {
        let sql = format!(
            "SELECT {} FROM deployments ORDER BY id DESC LIMIT ?1",
            Self::DEPLOYMENT_COLUMNS
        );
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.fail(e))?;
        let rows = stmt
            .query_map(params![limit as i64], Self::deployment_from_row)
            .map_err(|e| self.fail(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.fail(e))
    }

    pub fn deployment(&self, id: i64) -> Result<Option<DeploymentRecord>> {
        let sql = format!(
            "SELECT {} FROM deployments WHERE id = ?1",
            Self::DEPLOYMENT_COLUMNS
        );
        self.conn
            .query_row(&sql, params![id], Self::deployment_from_row)
            .optional()
            .map_err(|e| self.fail(e))
    }

    pub fn steps(&self, id: i64) -> Result<Vec<StepRecord>> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, started_ms, duration_ms, outcome FROM steps WHERE deployment_id = ?1 ORDER BY rowid")
            .map_err(|e| self.fail(e))?;
        let rows = stmt
            .query_map(params![id], |r| {
                Ok(StepRecord {
                    name: r.get(0)?,
                    started_ms: r.get(1)?,
                    duration_ms: r.get(2)?,
                    outcome: r.get(3)?,
                })
            })
            .map_err(|e| self.fail(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.fail(e))
    }

    pub fn logs(&self, id: i64) -> Result<Vec<LogLine>> {
        let mut stmt = self
            .conn
            .prepare("SELECT at_ms, level, message FROM logs WHERE deployment_id = ?1 ORDER BY id")
            .map_err(|e| self.fail(e))?;
        let rows = stmt
            .query_map(params![id], |r| {
                Ok(LogLine {
                    at_ms: r.get(0)?,
                    level: r.get(1)?,
                    message: r.get(2)?,
                })
            })
            .map_err(|e| self.fail(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.fail(e))
    }

    pub fn insert_release(&self, record: &ReleaseRecord) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO releases (name, state, created_ms, source, ref, commit_id, content_digest,
                 deployment_id, retired_ms, carried_ms, note) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    record.name,
                    record.state.as_str(),
                    record.created_ms,
                    record.source,
                    record.reference,
                    record.commit,
                    record.content_digest,
                    record.deployment_id,
                    record.retired_ms,
                    record.carried_ms,
                    record.note
                ],
            )
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    fn release_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ReleaseRecord> {
        let state: String = row.get(1)?;
        Ok(ReleaseRecord {
            name: row.get(0)?,
            state: ReleaseState::parse(&state).unwrap_or(ReleaseState::Complete),
            created_ms: row.get(2)?,
            source: row.get(3)?,
            reference: row.get(4)?,
            commit: row.get(5)?,
            content_digest: row.get(6)?,
            deployment_id: row.get(7)?,
            retired_ms: row.get(8)?,
            carried_ms: row.get(9)?,
            note: row.get(10)?,
        })
    }

    const RELEASE_COLUMNS: &str = "name, state, created_ms, source, ref, commit_id, content_digest,
        deployment_id, retired_ms, carried_ms, note";

    pub fn release(&self, name: &str) -> Result<Option<ReleaseRecord>> {
        let sql = format!(
            "SELECT {} FROM releases WHERE name = ?1",
            Self::RELEASE_COLUMNS
        );
        self.conn
            .query_row(&sql, params![name], Self::release_from_row)
            .optional()
            .map_err(|e| self.fail(e))
    }

    pub fn releases(&self) -> Result<Vec<ReleaseRecord>> {
        let sql = format!(
            "SELECT {} FROM releases ORDER BY created_ms",
            Self::RELEASE_COLUMNS
        );
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.fail(e))?;
        let rows = stmt
            .query_map([], Self::release_from_row)
            .map_err(|e| self.fail(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.fail(e))
    }

    pub fn set_release_state(
        &self,
        name: &str,
        state: ReleaseState,
        note: Option<&str>,
    ) -> Result<()> {
        self.conn
            .execute(
                "UPDATE releases SET state = ?2, note = coalesce(?3, note) WHERE name = ?1",
                params![name, state.as_str(), note],
            )
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    /// Record that `name` stopped being live at `retired_ms`, its user content
    /// fully carried as of `carried_ms`.
    pub fn mark_retired(&self, name: &str, retired_ms: i64, carried_ms: i64) -> Result<()> {
        // A release zdeploy has no record of (made by hand, then rolled back
        // to) gets one, so retention knows it was live.
        self.conn
            .execute(
                "INSERT INTO releases (name, state, created_ms, retired_ms, carried_ms)
                 VALUES (?1, 'complete', ?2, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET retired_ms = excluded.retired_ms, carried_ms = excluded.carried_ms",
                params![name, retired_ms, carried_ms],
            )
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    /// A release that becomes live again is no longer retired.
    pub fn mark_live(&self, name: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE releases SET retired_ms = NULL WHERE name = ?1",
                params![name],
            )
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    /// Follow a folder rename (`zdeploy keep`, plain-mode conversion).
    pub fn rename_release(&self, old: &str, new: &str) -> Result<()> {
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(|e| self.fail(e))?;
        tx.execute("DELETE FROM releases WHERE name = ?1", params![new])
            .and_then(|_| {
                tx.execute(
                    "UPDATE releases SET name = ?2 WHERE name = ?1",
                    params![old, new],
                )
            })
            .and_then(|_| move_manifest_rows(&tx, old, new))
            .map_err(|e| self.fail(e))?;
        tx.commit().map_err(|e| self.fail(e))
    }

    /// The manifest of `release`, if the history knows what it deployed:
    /// it has entries, or a content digest (an empty release).
    pub fn manifest(&self, release: &str) -> Result<Option<Manifest<'_>>> {
        let any: Option<i64> = self
            .conn
            .query_row(
                "SELECT 1 FROM manifest WHERE release = ?1 LIMIT 1",
                params![release],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.fail(e))?;
        let known = any.is_some()
            || self
                .release(release)?
                .is_some_and(|r| r.content_digest.is_some());
        Ok(known.then(|| Manifest::of(self, release)))
    }

    pub(crate) fn write_manifest_rows(
        &self,
        release: &str,
        rows: &BTreeMap<Vec<u8>, Entry>,
    ) -> Result<()> {
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(|e| self.fail(e))?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO manifest (release, path, kind, mode, size, digest)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(|e| self.fail(e))?;
            for (path, entry) in rows {
                insert
                    .execute(params![
                        release,
                        path,
                        entry.kind.as_str(),
                        entry.mode,
                        entry.size as i64,
                        entry.digest
                    ])
                    .map_err(|e| self.fail(e))?;
            }
        }
        tx.commit().map_err(|e| self.fail(e))
    }

    pub(crate) fn manifest_row(&self, release: &str, path: &[u8]) -> Result<Option<Entry>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT kind, mode, size, digest FROM manifest WHERE release = ?1 AND path = ?2",
            )
            .map_err(|e| self.fail(e))?;
        stmt.query_row(params![release, path], |row| entry_at(row, 0))
            .optional()
            .map_err(|e| self.fail(e))
    }

    /// Up to `limit` entries from the path `first` on, in path order.
    pub(crate) fn manifest_rows_from(
        &self,
        release: &str,
        first: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Entry)>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT path, kind, mode, size, digest FROM manifest
                 WHERE release = ?1 AND path >= ?2 ORDER BY path LIMIT ?3",
            )
            .map_err(|e| self.fail(e))?;
        stmt.query_map(params![release, first, limit as i64], path_and_entry)
            .and_then(|rows| rows.collect())
            .map_err(|e| self.fail(e))
    }

    /// As `manifest_rows`, only `under` and the entries below it.
    pub(crate) fn manifest_rows_under(
        &self,
        release: &str,
        under: Option<&[u8]>,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Entry)>> {
        let mut found = Vec::new();
        // `top` itself first (it sorts before `top/`), then its subtree.
        if let Some(top) = under.filter(|t| after.is_none_or(|a| a < *t))
            && let Some(entry) = self.manifest_row(release, top)?
        {
            found.push((top.to_vec(), entry));
        }
        // One exclusive lower bound, so SQLite seeks straight to it
        // (`top/` itself is never a path).
        let start = under.map(subtree_start).unwrap_or_default();
        let after = match after {
            Some(after) if after > start.as_slice() => after.to_vec(),
            _ => start,
        };
        let limit = (limit - found.len()) as i64;
        let row = path_and_entry;
        let rows = match under {
            Some(top) => self
                .conn
                .prepare_cached(
                    "SELECT path, kind, mode, size, digest FROM manifest
                     WHERE release = ?1 AND path > ?2 AND path < ?3 ORDER BY path LIMIT ?4",
                )
                .and_then(|mut stmt| {
                    stmt.query_map(params![release, after, subtree_end(top), limit], row)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                }),
            None => self
                .conn
                .prepare_cached(
                    "SELECT path, kind, mode, size, digest FROM manifest
                     WHERE release = ?1 AND path > ?2 ORDER BY path LIMIT ?3",
                )
                .and_then(|mut stmt| {
                    stmt.query_map(params![release, after, limit], row)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                }),
        };
        found.extend(rows.map_err(|e| self.fail(e))?);
        Ok(found)
    }
    /// How many entries, and how many bytes of files.
    pub(crate) fn manifest_totals(&self, release: &str) -> Result<(u64, u64)> {
        self.conn
            .query_row(
                "SELECT count(*), coalesce(sum(size), 0) FROM manifest WHERE release = ?1",
                params![release],
                |row| Ok((row.get::<_, i64>(0)? as u64, row.get::<_, i64>(1)? as u64)),
            )
            .map_err(|e| self.fail(e))
    }

    pub(crate) fn delete_manifest_tree(&self, release: &str, top: &[u8]) -> Result<()> {
        self.conn
            .execute(
                "DELETE FROM manifest WHERE release = ?1 AND path = ?2",
                params![release, top],
            )
            .and_then(|_| {
                self.conn.execute(
                    "DELETE FROM manifest WHERE release = ?1 AND path > ?2 AND path < ?3",
                    params![release, subtree_start(top), subtree_end(top)],
                )
            })
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    pub(crate) fn unwrap_manifest_top(&self, release: &str, top: &[u8]) -> Result<()> {
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(|e| self.fail(e))?;
        tx.execute(
            "DELETE FROM manifest WHERE release = ?1 AND path = ?2",
            params![release, top],
        )
        .and_then(|_| {
            tx.execute(
                "UPDATE manifest SET path = substr(path, ?4)
                 WHERE release = ?1 AND path > ?2 AND path < ?3",
                params![
                    release,
                    subtree_start(top),
                    subtree_end(top),
                    top.len() as i64 + 2
                ],
            )
        })
        .map_err(|e| self.fail(e))?;
        tx.commit().map_err(|e| self.fail(e))
    }

    /// `from`'s entries become `to`'s (whose own entries go).
    pub(crate) fn move_manifest(&self, from: &str, to: &str) -> Result<()> {
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(|e| self.fail(e))?;
        move_manifest_rows(&tx, from, to).map_err(|e| self.fail(e))?;
        tx.commit().map_err(|e| self.fail(e))
    }

    /// A copy of `from`'s entries as `to`'s (whose own entries go).
    pub fn copy_manifest(&self, from: &str, to: &str) -> Result<()> {
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(|e| self.fail(e))?;
        tx.execute("DELETE FROM manifest WHERE release = ?1", params![to])
            .and_then(|_| {
                tx.execute(
                    "INSERT INTO manifest (release, path, kind, mode, size, digest)
                     SELECT ?2, path, kind, mode, size, digest FROM manifest WHERE release = ?1",
                    params![from, to],
                )
            })
            .map_err(|e| self.fail(e))?;
        tx.commit().map_err(|e| self.fail(e))
    }

    /// Every entry in component order (`a/b` before `a-b`), as content
    /// digests have always been made; SQLite sorts, spilling to disk.
    pub(crate) fn manifest_in_component_order(
        &self,
        release: &str,
        each: &mut dyn FnMut(&[u8], &Entry),
    ) -> Result<()> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT path, kind, mode, size, digest FROM manifest WHERE release = ?1
                 ORDER BY replace(CAST(path AS TEXT), '/', char(1))",
            )
            .map_err(|e| self.fail(e))?;
        let mut rows = stmt.query(params![release]).map_err(|e| self.fail(e))?;
        while let Some(row) = rows.next().map_err(|e| self.fail(e))? {
            let path: Vec<u8> = row.get(0).map_err(|e| self.fail(e))?;
            let entry = entry_at(row, 1).map_err(|e| self.fail(e))?;
            each(&path, &entry);
        }
        Ok(())
    }

    /// Drop the manifest of `release` and any scratch manifest made while
    /// building it (`<release>/…`).
    pub fn drop_manifest(&self, release: &str) -> Result<()> {
        self.conn
            .execute(
                "DELETE FROM manifest WHERE release = ?1
                   OR (release > ?1 || '/' AND release < ?1 || '0')",
                params![release],
            )
            .map_err(|e| self.fail(e))?;
        Ok(())
    }
}

/// `from`'s manifest rows become `to`'s, whose own go first.
fn move_manifest_rows(
    tx: &rusqlite::Transaction<'_>,
    from: &str,
    to: &str,
) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM manifest WHERE release = ?1", params![to])?;
    tx.execute(
        "UPDATE manifest SET release = ?2 WHERE release = ?1",
        params![from, to],
    )?;
    Ok(())
}

/// Paths below `top` are those from `top/` up to (not including) `top0`
/// in byte order ('0' follows '/').
fn subtree_start(top: &[u8]) -> Vec<u8> {
    let mut start = top.to_vec();
    start.push(b'/');
    start
}

/// See `subtree_start`.
fn subtree_end(top: &[u8]) -> Vec<u8> {
    let mut end = top.to_vec();
    end.push(b'0');
    end
}

/// A manifest row: its path, then its entry.
fn path_and_entry(row: &rusqlite::Row<'_>) -> rusqlite::Result<(Vec<u8>, Entry)> {
    Ok((row.get(0)?, entry_at(row, 1)?))
}

/// The entry in the columns from `first` on: kind, mode, size, digest.
fn entry_at(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Entry> {
    let kind = row.get_ref(first)?.as_str()?;
    let size: i64 = row.get(first + 2)?;
    Ok(Entry {
        kind: EntryKind::parse(kind).unwrap_or(EntryKind::File),
        mode: row.get(first + 1)?,
        size: size as u64,
        digest: row.get(first + 3)?,
    })
}
