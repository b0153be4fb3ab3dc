//! The named steps of every run (DESIGN.md "One deploy"): recover, resolve,
//! materialize, carry, build, check, sync, switch, after_switch, health,
//! settle, prune.
//! A deploy, a rollback, plain mode and a fleet host's stage, switch and
//! converge are compositions of these; none of them holds a step of its own.

pub mod after_switch;
pub mod build;
pub mod carry;
pub mod discard;
pub mod materialize;
pub mod prune;
pub mod recover;
pub mod resolve;
pub mod settle;
pub mod stage;
pub mod switch;
