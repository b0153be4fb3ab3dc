//! What a person sees while zdeploy works: a spinner with counts per step on
//! a terminal (a bar when the total is known), plain log lines otherwise,
//! all on stderr so stdout stays data.

use std::cell::RefCell;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use zdeploy_core::session::{Level, Observer, Step, human_duration};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

pub struct Console {
    verbosity: Verbosity,
    bar: RefCell<Option<ProgressBar>>,
    terminal: bool,
}

impl Console {
    pub fn new(verbosity: Verbosity) -> Self {
        Console {
            verbosity,
            bar: RefCell::new(None),
            terminal: std::io::stderr().is_terminal(),
        }
    }

    pub fn is_quiet(&self) -> bool {
        self.verbosity == Verbosity::Quiet
    }

    fn print(&self, line: &str) {
        match self.bar.borrow().as_ref() {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }
}

impl Observer for Console {
    fn step_started(&self, step: Step) {
        if self.verbosity == Verbosity::Quiet {
            return;
        }
        if self.terminal {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix:>11} {msg} {elapsed}")
                    .expect("valid template"),
            );
            bar.set_prefix(step.as_str());
            bar.enable_steady_tick(Duration::from_millis(100));
            *self.bar.borrow_mut() = Some(bar);
        } else if self.verbosity == Verbosity::Verbose {
            eprintln!("[{step}] started");
        }
    }

    fn step_finished(&self, step: Step, elapsed: Duration, ok: bool) {
        if let Some(bar) = self.bar.borrow_mut().take() {
            bar.finish_and_clear();
        }
        if self.verbosity == Verbosity::Verbose
            || (self.terminal && self.verbosity == Verbosity::Normal)
        {
            let mark = if ok { "done" } else { "FAILED" };
            eprintln!("[{step}] {mark} in {}", human_duration(elapsed));
        }
    }

    fn log(&self, level: Level, message: &str) {
        let show = match level {
            Level::Debug => self.verbosity == Verbosity::Verbose,
            Level::Info | Level::Warn => self.verbosity >= Verbosity::Normal,
        };
        if show {
            let prefix = if level == Level::Warn {
                "warning: "
            } else {
                ""
            };
            self.print(&format!("{prefix}{message}"));
        }
    }

    fn progress(&self, _step: Step, done: u64, total: Option<u64>) {
        let Some(bar) = self.bar.borrow().as_ref().cloned() else {
            return;
        };
        match total {
            Some(total) => {
                if bar.length() != Some(total) {
                    bar.set_length(total);
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{prefix:>11} [{bar:30}] {pos}/{len} entries {elapsed}",
                        )
                        .expect("valid template")
                        .progress_chars("=> "),
                    );
                }
                bar.set_position(done.min(total));
            }
            None => bar.set_message(format!("{done} entries")),
        }
    }
}

/// `println!` for results on stdout: when the reader went away
/// (`zdeploy releases | head -1`), stop quietly instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_line(format_args!($($arg)*))
    };
}
pub(crate) use out;

pub fn write_line(line: std::fmt::Arguments<'_>) {
    if let Err(error) = writeln!(std::io::stdout().lock(), "{line}") {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {error}");
        std::process::exit(crate::exit::EXIT_FILESYSTEM.into());
    }
}
