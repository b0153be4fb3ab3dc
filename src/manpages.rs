//! `zdeploy manpages DIR` (hidden; the package build calls it): man pages
//! generated from the command line definition itself, `zdeploy.1` and one
//! `zdeploy-<command>.1` per command, so `man zdeploy-deploy` never drifts
//! from `zdeploy deploy --help`.

use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::cli::Cli;

/// Write every page into `dir`; returns how many.
pub fn write_all(dir: &Path) -> Result<usize> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let root = Cli::command().name("zdeploy");
    let mut written = 0;
    write_page(dir, "zdeploy", root.clone())?;
    written += 1;
    for command in root.get_subcommands().filter(|c| !c.is_hide_set()) {
        let name = format!("zdeploy-{}", command.get_name());
        let nested: Vec<_> = command
            .get_subcommands()
            .filter(|c| !c.is_hide_set() && c.get_name() != "help")
            .cloned()
            .collect();
        write_page(dir, &name, command.clone())?;
        written += 1;
        for sub in nested {
            let sub_name = format!("{name}-{}", sub.get_name());
            write_page(dir, &sub_name, sub)?;
            written += 1;
        }
    }
    Ok(written)
}

fn write_page(dir: &Path, name: &str, command: clap::Command) -> Result<()> {
    let spoken = name.replace('-', " ");
    let command = command
        .name(name.to_string())
        .display_name(spoken.clone())
        .bin_name(spoken);
    let mut page = Vec::new();
    clap_mangen::Man::new(command)
        .render(&mut page)
        .with_context(|| format!("cannot render the man page {name}"))?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))
}
