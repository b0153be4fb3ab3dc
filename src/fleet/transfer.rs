//! Bytes the controller moves over the hosts' own connections (hosts never
//! connect to each other): a file to a host, a file from a host, and the
//! files of the builder's release that another host lacks, as one tar.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, Result, anyhow, bail};

use crate::fleet::ssh::{Connection, shell_quote};

/// Write the local file `local` to `remote` on the host.
pub fn send_file(connection: &Connection, local: &Path, remote: &str) -> Result<()> {
    let file =
        std::fs::File::open(local).map_err(|e| anyhow!("cannot read {}: {e}", local.display()))?;
    let script = format!("cat > {}", shell_quote(remote));
    let output = connection
        .command(&["sh", "-c", &script])
        .stdin(file)
        .output()
        .context("run ssh")?;
    if !output.status.success() {
        bail!(
            "{}: writing {remote} failed: {}",
            connection.host.shown,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Read the file `remote` on the host into `local`.
pub fn fetch_file(connection: &Connection, remote: &str, local: &Path) -> Result<()> {
    let file = std::fs::File::create(local)
        .map_err(|e| anyhow!("cannot write {}: {e}", local.display()))?;
    let output = connection
        .command(&["cat", "--", remote])
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(Stdio::piped())
        .output()
        .context("run ssh")?;
    if !output.status.success() {
        bail!(
            "{}: reading {remote} failed: {}",
            connection.host.shown,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// `tar` writing to `out` the files `list` names (NUL-separated paths
/// relative to `dir`), links as their content, folders without theirs.
pub fn release_files_tar<'a>(dir: &'a str, list: &'a str, out: &'a str) -> [&'a str; 10] {
    [
        "tar",
        "--null",
        "--no-recursion",
        "--hard-dereference",
        "-C",
        dir,
        "-T",
        list,
        "-cf",
        out,
    ]
}

/// The files named in `list` (NUL-separated paths relative to
/// `release_dir`) as one tar from the builder, written to `local`. Hard
/// links are sent as content: the other host links by digest itself.
pub fn fetch_release_files(
    builder: &Connection,
    release_dir: &Path,
    list: &[u8],
    local: &Path,
) -> Result<()> {
    let file = std::fs::File::create(local)
        .map_err(|e| anyhow!("cannot write {}: {e}", local.display()))?;
    let dir = release_dir.display().to_string();
    let mut child = builder
        .command(&release_files_tar(&dir, "-", "-"))
        .stdin(Stdio::piped())
        .stdout(file)
        .stderr(Stdio::piped())
        .spawn()
        .context("run ssh")?;
    let mut stdin = child.stdin.take().expect("piped");
    let written = stdin.write_all(list);
    drop(stdin);
    let output = child.wait_with_output().context("run ssh")?;
    if !output.status.success() || written.is_err() {
        bail!(
            "{}: reading the release's files from {dir} failed: {}",
            builder.host.shown,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
