//! Fleets: one release on several web servers, decided once and switched
//! together (DESIGN.md "Fleets"). The hosts run the core's steps; this is the
//! coordination beside it: ssh, the protocol, the controller's strategy.

pub mod canary;
pub mod console;
pub mod controller;
pub mod etcd;
pub mod host;
pub mod install;
pub mod parallel;
pub mod protocol;
pub mod record;
pub mod remote_command;
pub mod settings;
pub mod ssh;
pub mod status;
pub mod transfer;
pub mod user_content;
