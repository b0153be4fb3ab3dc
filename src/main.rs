//! The `zdeploy` binary: parse, run, map the outcome to an exit code.

mod agent;
mod cli;
mod commands;
mod config;
mod doctor;
mod exit;
mod output;
mod units;
mod web;
mod webserver;

fn main() -> std::process::ExitCode {
    exit::run()
}
