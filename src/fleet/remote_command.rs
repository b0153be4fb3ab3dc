//! Commands that look after each host of a fleet (`status`, `releases`,
//! `verify`, `log`, `prune`, `keep`): run on every host with the
//! controller's config (`zdeploy fleet-run`; an etcd fleet's agents run it
//! with their own), each answer shown with its host named.

use std::io::{Read, Write};
use std::process::Stdio;

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

use crate::config::AppConfig;
use crate::fleet::parallel::on_each;
use crate::fleet::settings::FleetSettings;
use crate::fleet::ssh::Connection;
use crate::output::out;

/// What the controller asks a host to run.
#[derive(Debug, Serialize, Deserialize)]
pub struct Invocation {
    /// The controller's config file and its text (absent ad hoc).
    pub config: Option<(String, String)>,
    pub args: Vec<String>,
}

/// One host's answer.
pub struct Answer {
    pub host: String,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// This process's arguments as a host should get them: without the config
/// (sent as text) and the hosts.
pub fn host_args() -> Vec<String> {
    let mut args = Vec::new();
    let mut skip_value = false;
    for arg in std::env::args().skip(1) {
        if skip_value {
            skip_value = false;
            continue;
        }
        match arg.as_str() {
            "--config" | "--host" => skip_value = true,
            a if a.starts_with("--config=") || a.starts_with("--host=") => {}
            _ => args.push(arg),
        }
    }
    args
}

/// Run `zdeploy ARGS` on every host at once.
pub fn run_everywhere(
    app: &AppConfig,
    fleet: &FleetSettings,
    args: &[String],
) -> Result<Vec<Answer>> {
    on_each(&fleet.hosts, |host| {
        let connection = Connection::open(host, fleet)?;
        run_on(&connection, app, fleet, args)
    })
}

/// Run `zdeploy ARGS` on the host of `connection`, with `app`'s config.
pub fn run_on(
    connection: &Connection,
    app: &AppConfig,
    fleet: &FleetSettings,
    args: &[String],
) -> Result<Answer> {
    let invocation = serde_json::to_string(&Invocation {
        config: app
            .file
            .as_ref()
            .map(|(p, t)| (p.display().to_string(), t.clone())),
        args: args.to_vec(),
    })?;
    let shown = &connection.host.shown;
    let mut child = connection
        .command(&fleet.remote("fleet-run"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("{shown}: run ssh"))?;
    let mut stdin = child.stdin.take().expect("piped");
    stdin.write_all(invocation.as_bytes())?;
    drop(stdin);
    let output = child.wait_with_output()?;
    Ok(Answer {
        host: shown.clone(),
        code: output.status.code().unwrap_or(1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// Run this command on every host and show each answer: the host's output
/// under its name, or one JSON object of every host's. Fails if a host did.
pub fn show_everywhere(app: &AppConfig, fleet: &FleetSettings, json: bool) -> Result<()> {
    let answers = run_everywhere(app, fleet, &host_args())?;
    show(&answers, json)?;
    fail_if_any_failed(&answers)
}

/// `zdeploy verify` on every host, then whether they hold one release
/// digest: a fleet that built once serves the same bytes everywhere.
pub fn verify_everywhere(app: &AppConfig, fleet: &FleetSettings, json: bool) -> Result<()> {
    let answers = run_everywhere(app, fleet, &host_args())?;
    show_digests(&answers, json)
}

/// Each host's answer to `zdeploy verify`, and whether they name one
/// release digest. Fails if a host failed or the digests differ.
pub fn show_digests(answers: &[Answer], json: bool) -> Result<()> {
    let digests: Vec<Option<String>> = answers
        .iter()
        .map(|a| match json {
            true => serde_json::from_str::<serde_json::Value>(&a.stdout)
                .ok()
                .and_then(|v| v["digest"].as_str().map(str::to_string)),
            false => a
                .stdout
                .lines()
                .find(|l| l.contains(" matches its manifest ("))
                .and_then(|l| l.rsplit("digest ").next())
                .map(|rest| rest.chars().take_while(char::is_ascii_hexdigit).collect()),
        })
        .collect();
    let one = digests
        .first()
        .cloned()
        .flatten()
        .filter(|first| digests.iter().all(|d| d.as_ref() == Some(first)));
    if json {
        let hosts: Vec<serde_json::Value> = answers.iter().map(answer_json).collect();
        out!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "hosts": hosts, "digest": one }))?
        );
    } else {
        show(answers, false)?;
        match &one {
            Some(digest) => out!("one release digest on every host: {digest}"),
            None => out!("the hosts' release digests differ"),
        }
    }
    fail_if_any_failed(answers)?;
    if one.is_none() {
        bail!("the hosts do not serve the same bytes: their live releases' digests differ");
    }
    Ok(())
}

pub fn answer_json(a: &Answer) -> serde_json::Value {
    serde_json::json!({
        "host": a.host,
        "exit": a.code,
        "output": serde_json::from_str::<serde_json::Value>(&a.stdout)
            .unwrap_or(serde_json::Value::String(a.stdout.clone())),
        "errors": a.stderr,
    })
}

/// Each host's answer under its name (`json`: one object with every host's).
pub fn show(answers: &[Answer], json: bool) -> Result<()> {
    if json {
        let hosts: Vec<serde_json::Value> = answers.iter().map(answer_json).collect();
        out!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "hosts": hosts }))?
        );
    } else {
        for answer in answers {
            out!("== {} ==", answer.host);
            for line in answer.stdout.lines() {
                out!("{line}");
            }
            for line in answer.stderr.lines() {
                eprintln!("{}: {line}", answer.host);
            }
        }
    }
    Ok(())
}

pub fn fail_if_any_failed(answers: &[Answer]) -> Result<()> {
    let failed: Vec<String> = answers
        .iter()
        .filter(|a| a.code != 0)
        .map(|a| {
            let said = a
                .stderr
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or("");
            format!("{} (exit {}): {said}", a.host, a.code)
        })
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(anyhow!("failed on {}", failed.join("; ")))
    }
}

/// The host side: read the invocation, run it here as this host's own
/// command (the fleet in its config is not fanned out again).
pub fn serve() -> Result<std::process::ExitCode> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text)?;
    let invocation: Invocation = serde_json::from_str(&text).context("read the invocation")?;
    let mut args = vec!["zdeploy".to_string()];
    let config_dir = match &invocation.config {
        Some((path, text)) => {
            let dir = TempDir::new("fleet-run")?;
            let name = std::path::Path::new(path)
                .file_name()
                .map(|n| n.to_os_string())
                .unwrap_or_else(|| "zdeploy.toml".into());
            let copy = dir.path.join(name);
            std::fs::write(&copy, text)?;
            args.push("--config".into());
            args.push(copy.display().to_string());
            Some(dir)
        }
        None => None,
    };
    args.extend(invocation.args);
    let code = crate::exit::run_as(args, crate::topology::Role::FleetHost);
    drop(config_dir);
    Ok(code)
}

/// A private temporary folder, removed on drop.
pub struct TempDir {
    pub path: std::path::PathBuf,
}

impl TempDir {
    /// `zdeploy-PURPOSE-PID` in the system's temporary folder, mode 0700.
    pub fn new(purpose: &str) -> Result<TempDir> {
        let path = std::env::temp_dir().join(format!("zdeploy-{purpose}-{}", std::process::id()));
        std::fs::create_dir(&path).with_context(|| format!("create {}", path.display()))?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
