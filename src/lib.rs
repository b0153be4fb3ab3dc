//! The `zdeploy` command line and agent. The binary is a thin `main`; being
//! a library also lets the fuzz targets reach the config and webhook parsers.

pub mod agent;
pub mod canary;
pub mod cli;
pub mod collect;
pub mod commands;
pub mod config;
pub mod deploying;
pub mod doctor;
pub mod exit;
pub mod fleet;
pub mod freeze;
pub mod init;
pub mod maintenance;
pub mod manpages;
pub mod notify;
pub mod output;
pub mod preset;
pub mod promotion;
pub mod relay;
pub mod topology;
pub mod units;
pub mod watch;
pub mod web;
pub mod webserver;
