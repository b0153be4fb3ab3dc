//! Shell commands zdeploy runs (build steps inside the new release, a web
//! server reload), with a timeout that kills the whole process group.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::confine::Confinement;
use crate::privilege::Account;

pub const DEFAULT_BUILD_TIMEOUT: Duration = Duration::from_secs(600);

/// One build step: a shell command, skipped when the folder it only
/// produces was reused from the live release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildStep {
    pub run: String,
    pub unless_reused: Option<std::path::PathBuf>,
    /// Run only when the release has this file (a preset's `npm ci` when
    /// there is a package-lock.json).
    pub if_exists: Option<std::path::PathBuf>,
    /// What the step writes in the release: folders (made if missing) and
    /// files it has; the rest is read-only while it runs. `None`: it may
    /// write anywhere, so no file of the release is a hard link to the
    /// live release's.
    pub writes: Option<Vec<std::path::PathBuf>>,
    /// Acts on state every host shares (a migration): in a fleet it runs on
    /// the builder only, once per deploy.
    pub once: bool,
    /// Needs a maintenance window: it runs last, after everything else is
    /// staged, with the window open until the switch.
    pub maintenance: bool,
    /// Run only when this command exits 0 (a framework's "anything
    /// pending?"); skipped, with its window, otherwise.
    pub when: Option<String>,
}

/// A command run in the new live release right after the switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfterSwitchCommand {
    pub run: String,
    /// In a fleet, run on the builder only.
    pub once: bool,
}
/// What every command zdeploy runs in a release is told: the release, the
/// context and the webroot.
pub fn release_env(layout: &crate::layout::Layout, release: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("ZDEPLOY_RELEASE", release.display().to_string()),
        ("ZDEPLOY_CONTEXT", layout.context().to_string()),
        ("ZDEPLOY_WEBROOT", layout.webroot().display().to_string()),
    ]
}

/// How much of a failed step's output goes into the error message.
const ERROR_TAIL_LINES: usize = 20;

/// Run `command` with `sh -c` in `dir`, as `user` when given (its uid, gid
/// and home; no supplementary groups), confined to what it may write when
/// `confinement` says; every output line goes to `on_line`. The error says
/// why, with the last lines of output.
pub fn run_command(
    command: &str,
    dir: &Path,
    env: &[(&str, String)],
    user: Option<&Account>,
    confinement: Option<&Confinement>,
    timeout: Duration,
    on_line: &mut dyn FnMut(&str),
) -> Result<(), String> {
    let (status, output) = execute(command, dir, env, user, confinement, timeout, on_line)?;
    if !status.success() {
        let code = status
            .code()
            .map(|c| format!("exit code {c}"))
            .unwrap_or_else(|| "a signal".into());
        return Err(format!("'{command}' failed with {code}; output:\n{output}"));
    }
    Ok(())
}

/// Run `command` as `run_command` does and say whether it exited 0 (a
/// `when` check); only one that cannot start, is killed by a signal or
/// times out is an error.
pub fn check_command(
    command: &str,
    dir: &Path,
    env: &[(&str, String)],
    user: Option<&Account>,
    confinement: Option<&Confinement>,
    timeout: Duration,
    on_line: &mut dyn FnMut(&str),
) -> Result<bool, String> {
    let (status, output) = execute(command, dir, env, user, confinement, timeout, on_line)?;
    match status.code() {
        Some(code) => Ok(code == 0),
        None => Err(format!(
            "'{command}' was killed by a signal; output:\n{output}"
        )),
    }
}

/// Run `command`; its exit status and the last lines of its output, or why
/// it did not finish.
fn execute(
    command: &str,
    dir: &Path,
    env: &[(&str, String)],
    user: Option<&Account>,
    confinement: Option<&Confinement>,
    timeout: Duration,
    on_line: &mut dyn FnMut(&str),
) -> Result<(std::process::ExitStatus, String), String> {
    let mut shell = Command::new("sh");
    if let Some(user) = user {
        // As root, std drops the supplementary groups when the uid is set.
        shell
            .uid(user.uid)
            .gid(user.gid)
            .env("HOME", &user.home)
            .env("USER", &user.name)
            .env("LOGNAME", &user.name);
    }
    shell
        .arg("-c")
        .arg(format!("exec 2>&1; {command}"))
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0);
    let mut child = match confinement {
        Some(confinement) => confinement.spawn(&mut shell),
        None => shell.spawn(),
    }
    .map_err(|e| format!("cannot start '{command}': {e}"))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let (lines_tx, lines_rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + timeout;
    let mut tail: Vec<String> = Vec::new();
    let mut timed_out = false;
    loop {
        match lines_rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                on_line(&line);
                tail.push(line);
                if tail.len() > ERROR_TAIL_LINES {
                    tail.remove(0);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if Instant::now() >= deadline {
            timed_out = true;
            break;
        }
    }
    if timed_out {
        let _ = rustix::process::kill_process_group(
            rustix::process::Pid::from_child(&child),
            rustix::process::Signal::KILL,
        );
    }
    let status = child
        .wait()
        .map_err(|e| format!("'{command}' could not be waited for: {e}"))?;
    let _ = reader.join();
    for line in lines_rx.try_iter() {
        on_line(&line);
        tail.push(line);
    }
    let output = tail.join("\n");
    if timed_out {
        return Err(format!(
            "'{command}' timed out after {}s and was killed; output:\n{output}",
            timeout.as_secs()
        ));
    }
    Ok((status, output))
}
