//! What a person sees of a fleet run: on a terminal, a live table of the
//! hosts (host, state, last line), with the log above it; elsewhere, plain
//! lines led by the host's name.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::fleet::controller::FleetObserver;
use crate::fleet::settings::FleetSettings;

pub struct FleetConsole {
    quiet: bool,
    table: Option<(MultiProgress, Mutex<BTreeMap<String, ProgressBar>>)>,
}

impl FleetConsole {
    pub fn new(fleet: &FleetSettings, quiet: bool) -> Self {
        let table = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let multi = MultiProgress::new();
            let style = ProgressStyle::with_template("{spinner} {prefix:<24} {msg}")
                .expect("valid template");
            let rows = fleet
                .hosts
                .iter()
                .map(|host| {
                    let bar = multi.add(ProgressBar::new_spinner());
                    bar.set_style(style.clone());
                    bar.set_prefix(host.shown.clone());
                    bar.set_message("connecting");
                    bar.enable_steady_tick(Duration::from_millis(120));
                    (host.shown.clone(), bar)
                })
                .collect();
            (multi, Mutex::new(rows))
        });
        FleetConsole { quiet, table }
    }
}

impl FleetObserver for FleetConsole {
    fn line(&self, host: &str, text: &str) {
        if self.quiet {
            return;
        }
        match &self.table {
            Some((multi, _)) => {
                let _ = multi.println(format!("{host}: {text}"));
            }
            None => eprintln!("{host}: {text}"),
        }
    }

    fn host_state(&self, host: &str, state: &str) {
        if let Some((_, rows)) = &self.table
            && let Some(bar) = rows.lock().expect("table lock").get(host)
        {
            bar.set_message(state.to_string());
            if state == "done" || state == "stopped" || state.starts_with("failed") {
                bar.finish();
            }
        }
    }
}

impl Drop for FleetConsole {
    fn drop(&mut self) {
        if let Some((_, rows)) = &self.table {
            for bar in rows.lock().expect("table lock").values() {
                bar.finish();
            }
        }
    }
}
