//! Processes that use a release: one whose working directory, an open file
//! or a mapped file lies inside it, as `/proc` shows them. Prune leaves
//! such a release where it is and names the process (a queue worker started
//! from it, say); a later prune removes it once the process is gone. Only
//! the processes this user may inspect are seen (all of them, as root).

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::inventory::releases_on_disk;
use crate::layout::Layout;
use crate::switch::read_live;

/// A process using a release.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Holder {
    pub pid: u32,
    /// Its command line, shortened.
    pub command: String,
}

/// How much of a command line is shown.
const SHOWN_COMMAND: usize = 80;

/// Processes still running code from a release that is not live (a worker
/// started before the last switch): each such release with one of them.
pub fn on_old_releases(layout: &Layout) -> Result<Vec<(String, Holder)>> {
    let live = read_live(layout)?;
    let old: Vec<String> = releases_on_disk(layout)?
        .into_iter()
        .map(|release| release.name)
        .filter(|name| live.record_name(layout) != Some(name.as_str()))
        .collect();
    let dirs: Vec<PathBuf> = old.iter().map(|name| layout.release_path(name)).collect();
    Ok(old
        .into_iter()
        .zip(holders(&dirs))
        .filter_map(|(name, holder)| holder.map(|h| (name, h)))
        .collect())
}

/// For each of `dirs`, a process (other than this one) using something
/// inside it, if any: one walk of `/proc` for all of them.
pub fn holders(dirs: &[PathBuf]) -> Vec<Option<Holder>> {
    let roots: Vec<Option<PathBuf>> = dirs.iter().map(|d| fs::canonicalize(d).ok()).collect();
    let mut found: Vec<Option<Holder>> = vec![None; dirs.len()];
    let Ok(processes) = fs::read_dir("/proc") else {
        return found;
    };
    let own = std::process::id();
    for process in processes.flatten() {
        let Some(pid) = process
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|pid| *pid != own)
        else {
            continue;
        };
        let proc_dir = process.path();
        let mut inside = |path: &Path| {
            for (slot, root) in found.iter_mut().zip(&roots) {
                if slot.is_none() && root.as_ref().is_some_and(|r| path.starts_with(r)) {
                    *slot = Some(Holder {
                        pid,
                        command: command_of(&proc_dir),
                    });
                }
            }
        };
        if let Ok(cwd) = fs::read_link(proc_dir.join("cwd")) {
            inside(&cwd);
        }
        if let Ok(fds) = fs::read_dir(proc_dir.join("fd")) {
            for fd in fds.flatten() {
                if let Ok(target) = fs::read_link(fd.path()) {
                    inside(&target);
                }
            }
        }
        if let Ok(maps) = fs::read_to_string(proc_dir.join("maps")) {
            // address perms offset dev inode path: a path starts with '/'.
            for path in maps.lines().filter_map(|l| l.find('/').map(|at| &l[at..])) {
                inside(Path::new(path.trim_end_matches(" (deleted)")));
            }
        }
        if found.iter().all(Option::is_some) {
            break;
        }
    }
    found
}

/// A process's command line, its arguments joined by spaces, shortened.
fn command_of(proc_dir: &Path) -> String {
    let raw = fs::read(proc_dir.join("cmdline")).unwrap_or_default();
    let words: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    let command = words.join(" ");
    match command.char_indices().nth(SHOWN_COMMAND) {
        Some((cut, _)) => format!("{}…", &command[..cut]),
        None if command.is_empty() => "?".to_string(),
        None => command,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_working_in_a_folder_holds_it_and_others_do_not() {
        let base = std::env::temp_dir().join(format!("zdeploy-holders-{}", std::process::id()));
        let (held, free) = (base.join("held"), base.join("free"));
        fs::create_dir_all(&held).unwrap();
        fs::create_dir_all(&free).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(&held)
            .spawn()
            .unwrap();
        let found = holders(&[held.clone(), free.clone()]);
        child.kill().unwrap();
        child.wait().unwrap();
        let holder = found[0].as_ref().expect("the sleeping process holds it");
        assert_eq!(holder.pid, child.id());
        assert_eq!(holder.command, "sleep 30");
        assert_eq!(found[1], None);
        fs::remove_dir_all(base).unwrap();
    }
}
