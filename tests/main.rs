//! Integration tests: they drive the built `zdeploy` binary against real git
//! repositories, archives and folders made at test time.

mod support;

mod agent;
// Named to start early: on a fresh machine it builds cargo-deb and a
// Debian root, the suite's longest test.
mod apt_package;
mod archives;
mod canary;
mod carry;
mod cli;
mod concurrency;
mod config;
mod crash;
mod dashboard;
mod etcd_fleet;
mod faults;
mod fleet;
mod fleet_build_once;
mod flood;
mod git_sources;
mod health;
mod hostile;
mod incremental;
mod maintenance;
mod mediawiki;
mod modes;
mod notify;
mod pipeline;
mod presets;
mod privilege;
mod public;
mod releases;
mod secrets;
mod serving;
mod shared_storage;
mod traffic;
mod triggers;
mod user_content;
mod wordpress;
