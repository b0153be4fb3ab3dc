//! `zdeploy fleet install`: this very binary on every host that lacks it or
//! has another, after checking the host's architecture; written beside the
//! target and renamed into place, so a running agent never sees half a
//! binary.

use std::io::Write;
use std::process::Stdio;

use anyhow::{Context, Result, bail};

use crate::fleet::parallel::on_each;
use crate::fleet::settings::{FleetSettings, HostAddress};
use crate::fleet::ssh::{Connection, shell_quote};

/// Where a host's zdeploy goes when `remote_zdeploy` names no path.
const DEFAULT_REMOTE_PATH: &str = "/usr/local/bin/zdeploy";

/// What happened on one host.
#[derive(Debug, serde::Serialize)]
pub struct Installed {
    pub host: String,
    /// "installed", "replaced" or "current".
    pub outcome: &'static str,
    pub path: String,
}

pub fn install(fleet: &FleetSettings) -> Result<Vec<Installed>> {
    let binary = std::env::current_exe().context("find this zdeploy's binary")?;
    let bytes = std::fs::read(&binary).with_context(|| format!("read {}", binary.display()))?;
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    on_each(&fleet.hosts, |host| {
        install_on(host, fleet, &bytes, &digest)
    })
}

fn install_on(
    host: &HostAddress,
    fleet: &FleetSettings,
    bytes: &[u8],
    digest: &str,
) -> Result<Installed> {
    let connection = Connection::open(host, fleet)?;
    let path = if fleet.remote_zdeploy.contains('/') {
        fleet.remote_zdeploy.clone()
    } else {
        DEFAULT_REMOTE_PATH.to_string()
    };
    let quoted = shell_quote(&path);
    // One line back: the architecture, then the digest of what is there.
    let probe = format!(
        "uname -m; if [ -e {quoted} ]; then sha256sum {quoted} | cut -d' ' -f1; else echo missing; fi"
    );
    let output = connection
        .command(&["sh", "-c", &probe])
        .stdin(Stdio::null())
        .output()?;
    if !output.status.success() {
        bail!(
            "{}: cannot look at {path}: {}",
            host.shown,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let said = String::from_utf8_lossy(&output.stdout);
    let mut lines = said.lines();
    let arch = lines.next().unwrap_or("").trim();
    let present = lines.next().unwrap_or("missing").trim();
    if arch != std::env::consts::ARCH {
        bail!(
            "{}: the host is {arch}, this zdeploy is built for {}; install a {arch} build there",
            host.shown,
            std::env::consts::ARCH
        );
    }
    if present == digest {
        return Ok(Installed {
            host: host.shown.clone(),
            outcome: "current",
            path,
        });
    }
    let dir = std::path::Path::new(&path)
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|| "/".into());
    let temporary = format!("{path}.zdeploy-new");
    let write = format!(
        "set -e; mkdir -p {d}; cat > {t}; chmod 755 {t}; mv -f {t} {p}",
        d = shell_quote(&dir),
        t = shell_quote(&temporary),
        p = quoted
    );
    let mut child = connection
        .command(&["sh", "-c", &write])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(bytes)
        .with_context(|| format!("{}: send the binary", host.shown))?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "{}: writing {path} failed: {}",
            host.shown,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(Installed {
        host: host.shown.clone(),
        outcome: if present == "missing" {
            "installed"
        } else {
            "replaced"
        },
        path,
    })
}
