//! zdeploy's engine: zero-downtime releases of a web app served from a
//! document root. Synchronous, no HTTP: the binary adds the CLI and the agent.

pub mod apache;
pub mod blocks;
pub mod build;
pub mod canary;
pub mod carry;
pub mod confine;
pub mod deploy;
pub mod error;
pub mod failpoint;
pub mod fastcgi;
pub mod freeze;
pub mod fsx;
pub mod health;
pub mod history;
pub mod holders;
pub mod inventory;
pub mod layout;
pub mod lock;
pub mod maintenance;
pub mod manifest;
pub mod once_runs;
pub mod opcache;
mod plain;
pub mod policy;
pub mod privilege;
pub mod public;
pub mod release;
pub mod release_copy;
pub mod retention;
pub mod reuse;
pub mod rollback;
pub mod session;
pub mod share;
pub mod shared;
pub mod source;
pub mod steps;
pub mod switch;
pub mod traffic;
pub mod upkeep;
pub mod user_content;
pub mod verify;
pub mod watch;

pub use error::{Error, ErrorKind, Result};
