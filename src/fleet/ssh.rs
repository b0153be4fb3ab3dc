//! The system's OpenSSH client, so the user's ~/.ssh/config, keys, agent,
//! known_hosts and ProxyJump all apply: one master connection per host for
//! the whole run, every command multiplexed over it, never a prompt.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};

use crate::fleet::settings::{FleetSettings, HostAddress};

/// How long the first connection to a host may take.
const CONNECT_TIMEOUT_SECS: u64 = 10;

/// A master connection to one host.
pub struct Connection {
    pub host: HostAddress,
    /// Holds the control socket; removed with it.
    dir: PathBuf,
    base: Vec<OsString>,
    master: Child,
    /// The master's stdin: when this process dies, however, the remote end
    /// reads EOF and the master exits with it.
    _lifeline: Option<std::process::ChildStdin>,
}

impl Connection {
    /// Connect: authenticate once, in batch mode. An unknown host key or a
    /// refused key is an error naming the host, never a question.
    pub fn open(host: &HostAddress, settings: &FleetSettings) -> Result<Self> {
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        static SWEEP: std::sync::Once = std::sync::Once::new();
        SWEEP.call_once(sweep_dead_controllers);
        // A folder of our own for the master's socket. A controller that
        // was killed leaves its folder behind, and pids come round again:
        // a name taken is passed over, never reused.
        let dir = loop {
            let dir = std::env::temp_dir().join(format!(
                "zdeploy-ssh-{}-{}",
                std::process::id(),
                SEQUENCE.fetch_add(1, Ordering::Relaxed)
            ));
            match std::fs::create_dir(&dir) {
                Ok(()) => break dir,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(anyhow!("cannot create {}: {e}", dir.display())),
            }
        };
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        let mut base: Vec<OsString> = Vec::new();
        if let Some(config) = &settings.ssh_config {
            base.push("-F".into());
            base.push(config.into());
        }
        for option in [
            "BatchMode=yes".to_string(),
            format!("ConnectTimeout={CONNECT_TIMEOUT_SECS}"),
            "ServerAliveInterval=3".into(),
            "ServerAliveCountMax=3".into(),
        ] {
            base.push("-o".into());
            base.push(option.into());
        }
        base.push("-o".into());
        let mut control = OsString::from("ControlPath=");
        control.push(dir.join("s"));
        base.push(control);
        if let Some(port) = host.port {
            base.push("-p".into());
            base.push(port.to_string().into());
        }
        let mut master = Command::new("ssh")
            .args(&base)
            .args(["-o", "ControlMaster=yes", "-o", "ControlPersist=no", "-T"])
            .arg("--")
            .arg(host.destination())
            .arg("cat >/dev/null")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                anyhow!(
                    "{}: cannot run ssh: {e} (is OpenSSH's client installed?)",
                    host.shown
                )
            })?;
        let lifeline = master.stdin.take();
        let mut connection = Connection {
            host: host.clone(),
            dir,
            base,
            master,
            _lifeline: lifeline,
        };
        connection.wait_ready()?;
        Ok(connection)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(CONNECT_TIMEOUT_SECS + 5);
        loop {
            if let Some(status) = self.master.try_wait()? {
                let mut said = String::new();
                if let Some(mut stderr) = self.master.stderr.take() {
                    let _ = stderr.read_to_string(&mut said);
                }
                return Err(anyhow!(
                    "{}",
                    explain_failure(&self.host, &said, status.code())
                ));
            }
            let ready = Command::new("ssh")
                .args(&self.base)
                .args(["-O", "check", "--"])
                .arg(self.host.destination())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?
                .success();
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(anyhow!(
                    "{}: no ssh connection within {CONNECT_TIMEOUT_SECS}s",
                    self.host.shown
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `ssh` running `words` on the host over this connection (each word
    /// quoted for the remote shell).
    pub fn command(&self, words: &[&str]) -> Command {
        let mut command = Command::new("ssh");
        command
            .args(&self.base)
            .args(["-o", "ControlMaster=no", "-T", "--"])
            .arg(self.host.destination())
            .arg(
                words
                    .iter()
                    .map(|w| shell_quote(w))
                    .collect::<Vec<_>>()
                    .join(" "),
            );
        command
    }

    /// The ssh command git runs to reach the host over this connection.
    pub fn git_ssh_command(&self) -> String {
        let mut words = vec!["ssh".to_string()];
        words.extend(self.base.iter().map(|w| shell_quote(&w.to_string_lossy())));
        words.push("-o".into());
        words.push("ControlMaster=no".into());
        words.join(" ")
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let _ = self.master.kill();
        let _ = self.master.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// ssh's last words, said plainly with the host named.
fn explain_failure(host: &HostAddress, said: &str, code: Option<i32>) -> String {
    let last = said
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with("Warning: Permanently added"))
        .unwrap_or("")
        .to_string();
    let name = &host.shown;
    if said.contains("Host key verification failed") {
        format!(
            "{name}: its host key is not in known_hosts (or has changed); check it and add it (ssh-keyscan, or one ssh by hand) — ssh said: {last}"
        )
    } else if said.contains("Permission denied") {
        format!("{name}: the host refused our key — ssh said: {last}")
    } else if last.is_empty() {
        format!("{name}: ssh failed (exit {})", code.unwrap_or(-1))
    } else {
        format!("{name}: cannot connect — ssh said: {last}")
    }
}

/// `word` quoted for a POSIX shell.
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@,+%".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Remove the socket folders that controllers killed mid-run left behind:
/// ours (same uid), named after a process that no longer exists.
fn sweep_dead_controllers() {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    let uid = rustix::process::geteuid().as_raw();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("zdeploy-ssh-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let ours = entry.metadata().is_ok_and(|m| m.is_dir() && m.uid() == uid);
        if ours && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
