//! One run against a context: the lock held, the history open, a deployment
//! record started, and every step named, timed and logged to both the history
//! and the caller's `Observer`.

use std::fmt;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::fsx;
use crate::history::{History, Kind, Outcome, now_ms};
use crate::layout::Layout;
use crate::lock::{ContextLock, LockWait};

/// The named steps of a deploy (DESIGN.md); the same names appear in logs,
/// progress, history and failpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Lock,
    Recover,
    Resolve,
    Materialize,
    Carry,
    Build,
    Check,
    Sync,
    Switch,
    AfterSwitch,
    Health,
    Settle,
    Prune,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Lock => "lock",
            Step::Recover => "recover",
            Step::Resolve => "resolve",
            Step::Materialize => "materialize",
            Step::Carry => "carry",
            Step::Build => "build",
            Step::Check => "check",
            Step::Sync => "sync",
            Step::Switch => "switch",
            Step::AfterSwitch => "after_switch",
            Step::Health => "health",
            Step::Settle => "settle",
            Step::Prune => "prune",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
        }
    }
}

/// Receives what a run does, for display. Every method has a no-op default.
pub trait Observer {
    /// The run has its history record (after the lock was taken).
    fn opened(&self, _deployment: i64) {}
    fn step_started(&self, _step: Step) {}
    fn step_finished(&self, _step: Step, _elapsed: Duration, _ok: bool) {}
    fn log(&self, _level: Level, _message: &str) {}
    /// `done` entries so far, of `total` when known.
    fn progress(&self, _step: Step, _done: u64, _total: Option<u64>) {}
    /// A build step that needs a maintenance window is about to run, and
    /// this host's window opens next: a fleet host has every other host
    /// open theirs first. An error stops the deploy.
    fn window_opening(&self) -> std::result::Result<(), String> {
        Ok(())
    }
}

/// Who runs and why, for the lock note and the history.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub trigger: String,
    pub wait: LockWait,
}

pub struct Session<'a> {
    pub layout: &'a Layout,
    pub history: History,
    pub id: i64,
    observer: &'a dyn Observer,
    _lock: ContextLock,
}

impl<'a> Session<'a> {
    /// Check the webroot, take the lock, open the history and start a record.
    pub fn open(
        layout: &'a Layout,
        kind: Kind,
        options: &RunOptions,
        source: Option<&str>,
        reference: Option<&str>,
        observer: &'a dyn Observer,
    ) -> Result<Self> {
        layout.check_webroot()?;
        fsx::create_dir_all(&layout.state_dir())?;
        observer.step_started(Step::Lock);
        let lock_started = (Instant::now(), now_ms());
        let what = format!(
            "zdeploy {} {}, trigger {}",
            kind.as_str(),
            layout.context(),
            options.trigger
        );
        let lock = ContextLock::acquire(&layout.lock_path(), layout.context(), &what, options.wait);
        observer.step_finished(Step::Lock, lock_started.0.elapsed(), lock.is_ok());
        let lock = lock?;
        let history = History::open(&layout.history_path())?;
        let id = history.start_deployment(kind, &options.trigger, source, reference)?;
        observer.opened(id);
        history.record_step(
            id,
            Step::Lock.as_str(),
            lock_started.1,
            lock_started.0.elapsed().as_millis() as i64,
            "ok",
        )?;
        Ok(Session {
            layout,
            history,
            id,
            observer,
            _lock: lock,
        })
    }

    /// Have the fleet open its windows before this host's (see `Observer`).
    pub fn window_opening(&self) -> Result<()> {
        self.observer.window_opening().map_err(|why| {
            crate::error::Error::Invalid(format!("the fleet's maintenance window: {why}"))
        })
    }

    pub fn log(&self, level: Level, message: &str) {
        self.observer.log(level, message);
        // A log line that cannot be stored must not fail the deploy.
        let _ = self.history.log(self.id, level.as_str(), message);
    }

    pub fn info(&self, message: &str) {
        self.log(Level::Info, message);
    }

    pub fn warn(&self, message: &str) {
        self.log(Level::Warn, message);
    }

    pub fn debug(&self, message: &str) {
        self.log(Level::Debug, message);
    }

    pub fn progress(&self, step: Step, done: u64, total: Option<u64>) {
        self.observer.progress(step, done, total);
    }

    /// Run `work` as step `step`: announced, timed, recorded.
    pub fn step<T>(&self, step: Step, work: impl FnOnce() -> Result<T>) -> Result<T> {
        crate::failpoint::hit(step.as_str());
        self.observer.step_started(step);
        let started = (Instant::now(), now_ms());
        let result = work();
        let elapsed = started.0.elapsed();
        self.observer.step_finished(step, elapsed, result.is_ok());
        let outcome = if result.is_ok() { "ok" } else { "failed" };
        let _ = self.history.record_step(
            self.id,
            step.as_str(),
            started.1,
            elapsed.as_millis() as i64,
            outcome,
        );
        result
    }

    /// Close the record with the outcome of `result`.
    pub fn finish<T>(&self, result: &Result<T>, outcome: impl FnOnce(&T) -> Outcome) -> Result<()> {
        // A window this run opened never outlasts it, whatever failed.
        let closed_by = if result.is_ok() { "end" } else { "failure" };
        if let Err(error) = crate::maintenance::close_own(self, closed_by) {
            self.log(
                Level::Warn,
                &format!("could not close this run's maintenance window: {error}"),
            );
        }
        match result {
            Ok(value) => self
                .history
                .finish_deployment(self.id, outcome(value), None),
            Err(error) => {
                let message = error.to_string();
                self.log(Level::Warn, &format!("failed: {message}"));
                self.history
                    .finish_deployment(self.id, Outcome::Failed, Some(&message))
            }
        }
    }
}

/// Render a duration for logs: "1.2s", "340ms".
pub fn human_duration(d: Duration) -> String {
    if d.as_secs() >= 1 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}ms", d.as_millis())
    }
}
