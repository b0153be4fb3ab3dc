//! Running a parsed command and the one mapping from errors to exit codes.

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use zdeploy_core::ErrorKind;

use crate::cli::{Cli, Command, FleetCommand};
use crate::commands;
use crate::config::{ConfigSource, UsageError};
use crate::output::{Console, Verbosity};
use crate::topology::Role;

pub const EXIT_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_BUSY: u8 = 3;
pub const EXIT_SOURCE: u8 = 4;
pub const EXIT_FILESYSTEM: u8 = 5;

pub fn run() -> ExitCode {
    run_args(std::env::args())
}

/// Run the command these arguments (program name first) describe.
pub fn run_args(args: impl IntoIterator<Item = String>) -> ExitCode {
    run_as(args, Role::Operator)
}

/// Run a command line as `role` reads configs: a fleet host running its
/// part of a fleet command reads the controller's config as its own.
pub fn run_as(args: impl IntoIterator<Item = String>, role: Role) -> ExitCode {
    let cli = Cli::parse_from(args);
    let verbosity = match (cli.quiet, cli.verbose) {
        (true, _) => Verbosity::Quiet,
        (_, true) => Verbosity::Verbose,
        _ => Verbosity::Normal,
    };
    let console = Console::new(verbosity);
    let config = ConfigSource {
        path: cli.config.as_deref(),
        role,
    };
    let result = match &cli.command {
        Command::Deploy(args) => commands::deploy(config, args, &console),
        Command::Rollback(args) => commands::rollback_command(config, args, &console),
        Command::Releases(args) => commands::releases(config, args),
        Command::Status(args) => commands::status(config, args),
        Command::Verify(args) => commands::verify(config, args),
        Command::Log(args) => commands::log(config, args),
        Command::Prune(args) => commands::prune(config, args, &console),
        Command::Keep(args) => commands::keep(config, args, &console),
        Command::Maintenance(args) => crate::maintenance::maintenance(config, args),
        Command::Freeze(args) => crate::freeze::freeze_command(config, args, true),
        Command::Unfreeze(args) => crate::freeze::freeze_command(config, args, false),
        Command::Canary(args) => crate::canary::command(config, args, &console),
        Command::Init(args) => commands::init(config, args),
        Command::Webserver(args) => commands::webserver(config, args),
        Command::Doctor(args) => commands::doctor(config, args),
        Command::Agent(args) => commands::agent(config, args, cli.quiet, cli.verbose),
        Command::Fleet(FleetCommand::Converge(args)) => {
            commands::fleet_converge(config, args, &console)
        }
        Command::Fleet(FleetCommand::Install(args)) => commands::fleet_install(config, args),
        Command::FleetHost => crate::fleet::host::serve(),
        Command::TrafficRelay { socket } => crate::relay::relay(socket),
        Command::PromotionExport { app } => {
            crate::cli::select_app(config, Some(app), &Default::default())
                .and_then(|app| crate::promotion::print_export(&app))
        }
        Command::FleetRun => {
            return crate::fleet::remote_command::serve().unwrap_or_else(|e| {
                eprintln!("error: {e:#}");
                ExitCode::from(EXIT_FAILED)
            });
        }
        Command::Manpages { dir } => crate::manpages::write_all(dir).map(|count| {
            eprintln!("wrote {count} man pages into {}", dir.display());
        }),
        Command::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "zdeploy",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    };
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(exit_code(&error))
        }
    };
    // The run is over; its notifications get a moment more, never longer.
    crate::notify::wait_for_deliveries(NOTIFY_GRACE);
    code
}

/// How long a command waits at its end for notifications still being sent.
const NOTIFY_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

fn exit_code(error: &anyhow::Error) -> u8 {
    if error.downcast_ref::<UsageError>().is_some() {
        return EXIT_USAGE;
    }
    match error
        .downcast_ref::<zdeploy_core::Error>()
        .map(|e| e.kind())
    {
        Some(ErrorKind::Invalid) => EXIT_USAGE,
        Some(ErrorKind::Busy) => EXIT_BUSY,
        Some(ErrorKind::Source) => EXIT_SOURCE,
        Some(ErrorKind::Filesystem) => EXIT_FILESYSTEM,
        Some(ErrorKind::Failed) | None => EXIT_FAILED,
    }
}
