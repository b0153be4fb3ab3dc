//! The per-context lock: an exclusive flock on `<state>/lock`. A holder that dies
//! releases it by construction; its identity is written into the file so a
//! refused caller can say who holds it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

use jiff::Timestamp;

use crate::error::{Error, Result};

/// Held for as long as the value lives.
#[derive(Debug)]
pub struct ContextLock {
    _file: File,
}

/// Whether to queue behind a holder or fail at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockWait {
    Fail,
    Queue,
}

impl ContextLock {
    /// Take the lock at `path`; `what` describes this holder for others
    /// (e.g. "zdeploy deploy ROOT").
    pub fn acquire(path: &Path, context: &str, what: &str, wait: LockWait) -> Result<Self> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::io("open lock", path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) if wait == LockWait::Queue => {
                file.lock().map_err(|e| Error::io("lock", path, e))?;
            }
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() {
                    "another process"
                } else {
                    holder
                };
                return Err(Error::Busy(format!(
                    "cannot lock {context}: it is being deployed by {holder}; pass --wait to queue behind it"
                )));
            }
            Err(TryLockError::Error(e)) => return Err(Error::io("lock", path, e)),
        }
        let note = format!(
            "pid {} ({what}) since {}\n",
            std::process::id(),
            Timestamp::now()
                .round(jiff::Unit::Second)
                .unwrap_or(Timestamp::now())
        );
        file.set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| file.write_all(note.as_bytes()))
            .map_err(|e| Error::io("write lock", path, e))?;
        Ok(ContextLock { _file: file })
    }
}
