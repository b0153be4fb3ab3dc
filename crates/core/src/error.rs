//! The engine's one error type: every variant says what failed and on what, so a
//! user-facing message never has to guess.

use std::io;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem call failed; `action` is a verb phrase ("create", "read").
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// Input the user gave is unusable (context, release name, option value).
    #[error("{0}")]
    Invalid(String),
    /// The source cannot be used: unreachable, unknown ref, hostile or corrupt archive.
    #[error("{0}")]
    Source(String),
    /// Another process holds the context's lock.
    #[error("{0}")]
    Busy(String),
    /// A build step failed or timed out.
    #[error("{0}")]
    Build(String),
    /// The web server or PHP-FPM could not be told about a switch.
    #[error("{0}")]
    Server(String),
    /// A health check before or after the switch failed.
    #[error("{0}")]
    Health(String),
    /// The new release failed after its switch and the one before it went
    /// live again (the message says why and which).
    #[error("{0}")]
    SwitchedBack(String),
    /// The webroot is missing, not a folder or not writable.
    #[error("{0}")]
    Webroot(String),
    /// The history database failed.
    #[error("history database {}: {source}", path.display())]
    History {
        path: PathBuf,
        source: rusqlite::Error,
    },
}

/// What kind of failure an error is: the binary maps this to exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Invalid,
    Source,
    Busy,
    Failed,
    Filesystem,
}

impl Error {
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Invalid(_) => ErrorKind::Invalid,
            Error::Source(_) => ErrorKind::Source,
            Error::Busy(_) => ErrorKind::Busy,
            Error::Build(_) | Error::Server(_) | Error::Health(_) | Error::SwitchedBack(_) => {
                ErrorKind::Failed
            }
            Error::Io { .. } | Error::Webroot(_) | Error::History { .. } => ErrorKind::Filesystem,
        }
    }
}
