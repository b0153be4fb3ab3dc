//! Git sources through the git CLI (it carries the user's SSH keys and credential
//! helpers): a bare mirror under the state dir fetched incrementally, refs
//! resolved to commits, and `git archive` streamed into the release.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::{Error, Result};
use crate::source::archive::extract_tar;
use crate::source::extract::Extractor;

/// Transports git may use, for the URL we give and anything it follows.
const ALLOWED_PROTOCOLS: &str = "https:ssh:git:file";

/// A git command with the caller's `GIT_*` environment cleared and prompts off.
pub fn git() -> Command {
    let mut command = Command::new("git");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("GIT_") {
            command.env_remove(key);
        }
    }
    command
        .env("GIT_TERMINAL_PROMPT", "0")
        // ssh must fail, not ask: no password or unknown-host prompt on a
        // terminal (keys and hosts come from ~/.ssh/config as usual).
        .env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
        .env("GIT_ALLOW_PROTOCOL", ALLOWED_PROTOCOLS)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("LC_ALL", "C")
        .stdin(Stdio::null());
    command
}

/// Run git, returning stdout as text; on failure the error holds git's own
/// words with credentials removed.
fn run(command: Command, what: &str, url: Option<(&str, &str)>) -> Result<String> {
    run_raw(command, what, url).map(|out| String::from_utf8_lossy(&out).into_owned())
}

/// Run git, returning stdout as bytes (paths in `-z` output need not be
/// UTF-8); on failure the error holds git's own words with credentials
/// removed (`url` is shown as its redacted form).
fn run_raw(mut command: Command, what: &str, url: Option<(&str, &str)>) -> Result<Vec<u8>> {
    let output = command
        .output()
        .map_err(|e| Error::Source(format!("cannot run git to {what}: {e} (is git installed?)")))?;
    if !output.status.success() {
        let mut stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if let Some((url, shown_url)) = url {
            stderr = stderr.replace(url, shown_url);
        }
        let stderr = super::redact_credentials(&stderr);
        let detail = stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        return Err(Error::Source(format!("cannot {what}: {detail}")));
    }
    Ok(output.stdout)
}

/// Check a ref the user gave before git ever sees it.
pub fn validate_ref(reference: &str) -> Result<()> {
    let bad = reference.is_empty()
        || reference.starts_with('-')
        || reference.contains("..")
        || reference.contains("@{")
        || reference.contains(':')
        || reference
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "~^?*[\\".contains(c));
    if bad {
        return Err(Error::Invalid(format!(
            "invalid ref '{}': give a branch, tag or commit id",
            reference.escape_debug()
        )));
    }
    Ok(())
}

/// Fetch every branch and tag of `url` into the bare mirror at `mirror`
/// (created on first use); later fetches transfer only what is new.
pub fn fetch(mirror: &Path, url: &str, shown_url: &str) -> Result<()> {
    if !mirror.join("HEAD").exists() {
        let mut init = git();
        init.args(["init", "--quiet", "--bare", "--end-of-options"])
            .arg(mirror);
        run(init, "create the git mirror", Some((url, shown_url)))?;
    }
    let mut fetch = git();
    fetch
        .arg("--git-dir")
        .arg(mirror)
        .args([
            "fetch",
            "--quiet",
            "--prune",
            "--force",
            "--no-write-fetch-head",
            "--end-of-options",
            url,
        ])
        .args(["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]);
    run(fetch, &format!("fetch {shown_url}"), Some((url, shown_url))).map(|_| ())
}

/// The remote's default branch (what HEAD points to), if it says.
pub fn default_branch(url: &str, shown_url: &str) -> Result<Option<String>> {
    let mut ls = git();
    ls.args(["ls-remote", "--symref", "--end-of-options", url, "HEAD"]);
    let out = run(
        ls,
        &format!("read the default branch of {shown_url}"),
        Some((url, shown_url)),
    )?;
    Ok(out.lines().find_map(|line| {
        line.strip_prefix("ref: refs/heads/")
            .and_then(|rest| rest.split('\t').next())
            .map(str::to_string)
    }))
}

fn verify(mirror: &Path, spec: &str) -> Option<String> {
    let mut rev = git();
    rev.arg("--git-dir")
        .arg(mirror)
        .args(["rev-parse", "--verify", "--quiet", "--end-of-options"])
        .arg(format!("{spec}^{{commit}}"));
    let out = rev.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The commit `reference` (a branch or tag; the default branch when `None`)
/// points to on the remote, asked with `git ls-remote` (no fetch). `None`
/// when the remote has no such ref; a commit id is its own answer.
pub fn remote_head(url: &str, reference: Option<&str>, shown_url: &str) -> Result<Option<String>> {
    // Asked for, then looked for in this order: a branch wins over a tag,
    // and an annotated tag's `^{}` line names its commit.
    let (asked, wanted) = match reference {
        None => (vec!["HEAD".to_string()], vec!["HEAD".to_string()]),
        Some(r) => {
            validate_ref(r)?;
            if r.len() == 40 && r.chars().all(|c| c.is_ascii_hexdigit()) {
                return Ok(Some(r.to_ascii_lowercase()));
            }
            let (branch, tag) = (format!("refs/heads/{r}"), format!("refs/tags/{r}"));
            let peeled = format!("{tag}^{{}}");
            (vec![branch.clone(), tag.clone()], vec![branch, peeled, tag])
        }
    };
    let mut ls = git();
    ls.args(["ls-remote", "--end-of-options", url]).args(&asked);
    let out = run(
        ls,
        &format!("ask {shown_url} for its head"),
        Some((url, shown_url)),
    )?;
    let lines: Vec<(&str, &str)> = out.lines().filter_map(|l| l.split_once('\t')).collect();
    let found = wanted.iter().find_map(|pattern| {
        lines
            .iter()
            .find(|(_, name)| name == pattern)
            .map(|(id, _)| id.to_string())
    });
    Ok(found)
}

/// Resolve a branch, tag or commit id to a commit of the mirror.
pub fn resolve(mirror: &Path, reference: &str, shown_url: &str) -> Result<String> {
    validate_ref(reference)?;
    let candidates = [
        format!("refs/heads/{reference}"),
        format!("refs/tags/{reference}"),
    ];
    let by_name = candidates.iter().find_map(|c| verify(mirror, c));
    let by_id = || {
        let is_hex = reference.len() >= 4
            && reference.len() <= 64
            && reference.chars().all(|c| c.is_ascii_hexdigit());
        if is_hex || reference.starts_with("refs/") {
            verify(mirror, reference)
        } else {
            None
        }
    };
    by_name.or_else(by_id).ok_or_else(|| {
        let branches = branches(mirror).unwrap_or_default();
        let listed = if branches.is_empty() {
            "none".to_string()
        } else {
            branches.join(", ")
        };
        Error::Source(format!(
            "ref '{reference}' not found in {shown_url} (branches: {listed})"
        ))
    })
}

pub fn branches(mirror: &Path) -> Result<Vec<String>> {
    let mut list = git();
    list.arg("--git-dir").arg(mirror).args([
        "for-each-ref",
        "--format=%(refname:short)",
        "refs/heads/",
    ]);
    let out = run(list, "list branches", None)?;
    Ok(out.lines().map(str::to_string).collect())
}

/// One line about a commit for the history: "subject (author)".
pub fn describe(mirror: &Path, commit: &str) -> Option<String> {
    let mut show = git();
    show.arg("--git-dir").arg(mirror).args([
        "show",
        "-s",
        "--format=%s (%an)",
        "--end-of-options",
        commit,
    ]);
    let out = show.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Stream `git archive` of `commit` into the extractor.
pub fn archive_into(mirror: &Path, commit: &str, extractor: &mut Extractor<'_>) -> Result<()> {
    let mut archive = git();
    archive
        .arg("--git-dir")
        .arg(mirror)
        // Modes as committed (0644/0755), whatever the user's tar.umask.
        .args(["-c", "tar.umask=0022"])
        .args(["archive", "--format=tar", "--end-of-options", commit])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = archive
        .spawn()
        .map_err(|e| Error::Source(format!("cannot run git archive: {e}")))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let result = extract_tar(&format!("commit {commit}"), stdout, extractor);
    if result.is_err() {
        let _ = child.kill();
    }
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    let status = child
        .wait()
        .map_err(|e| Error::Source(format!("git archive failed: {e}")))?;
    result?;
    if !status.success() {
        return Err(Error::Source(format!(
            "git archive of {commit} failed: {}",
            stderr.trim()
        )));
    }
    Ok(())
}

/// Mode bits git archive gives a blob of git mode `mode` (with umask 022).
fn file_mode(mode: &str) -> u32 {
    if mode == "100755" { 0o755 } else { 0o644 }
}

/// Whether `commit` has a `.gitattributes` that changes what `git archive`
/// writes (export-ignore, export-subst): then only `git archive` is right.
fn has_export_attributes(mirror: &Path, tree: &[TreeEntry]) -> Result<bool> {
    for entry in tree
        .iter()
        .filter(|e| e.path.ends_with(b".gitattributes") && e.kind == "blob")
    {
        let mut show = git();
        show.arg("--git-dir")
            .arg(mirror)
            .args(["cat-file", "blob", &entry.object]);
        let text = run(show, "read .gitattributes", None)?;
        if text.contains("export-ignore") || text.contains("export-subst") {
            return Ok(true);
        }
    }
    Ok(false)
}

struct TreeEntry {
    mode: String,
    kind: String,
    object: String,
    path: Vec<u8>,
}

fn list_tree(mirror: &Path, commit: &str) -> Result<Vec<TreeEntry>> {
    let mut ls = git();
    ls.arg("--git-dir").arg(mirror).args([
        "ls-tree",
        "-r",
        "-t",
        "-z",
        "--full-tree",
        "--end-of-options",
        commit,
    ]);
    let out = run_raw(ls, &format!("list commit {commit}"), None)?;
    let mut entries = Vec::new();
    for record in out.split(|b| *b == 0).filter(|r| !r.is_empty()) {
        let tab = record.iter().position(|b| *b == b'\t');
        let (meta, path) = match tab {
            Some(i) => (&record[..i], &record[i + 1..]),
            None => continue,
        };
        let meta = String::from_utf8_lossy(meta);
        let mut parts = meta.split(' ');
        let (Some(mode), Some(kind), Some(object)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        entries.push(TreeEntry {
            mode: mode.to_string(),
            kind: kind.to_string(),
            object: object.to_string(),
            path: path.to_vec(),
        });
    }
    Ok(entries)
}

/// Paths that differ between `base` and `commit`.
fn changed_paths(
    mirror: &Path,
    base: &str,
    commit: &str,
) -> Result<std::collections::HashSet<Vec<u8>>> {
    let mut diff = git();
    diff.arg("--git-dir").arg(mirror).args([
        "diff",
        "--name-only",
        "-z",
        "--no-renames",
        "--end-of-options",
        base,
        commit,
    ]);
    let out = run_raw(diff, &format!("compare {base} with {commit}"), None)?;
    Ok(out
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

/// The committer time of `commit`.
fn commit_time(mirror: &Path, commit: &str) -> Option<std::time::SystemTime> {
    let mut show = git();
    show.arg("--git-dir").arg(mirror).args([
        "show",
        "-s",
        "--format=%ct",
        "--end-of-options",
        commit,
    ]);
    let seconds: u64 = run(show, "read the commit time", None)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds))
}

/// Write `commit` into the extractor as `git archive` would, but share every
/// file unchanged since `base` (the live release's commit) and write only
/// the rest, read with `git cat-file --batch`. Ok(false), with nothing
/// written, when the commit needs `git archive` (export attributes).
pub fn materialize_changes(
    mirror: &Path,
    base: &str,
    commit: &str,
    extractor: &mut Extractor<'_>,
) -> Result<bool> {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::ffi::OsStrExt;
    let tree = list_tree(mirror, commit)?;
    if has_export_attributes(mirror, &tree)? {
        return Ok(false);
    }
    extractor.expect_entries(tree.len() as u64);
    let changed = changed_paths(mirror, base, commit)?;
    let mtime = commit_time(mirror, commit);
    let mut to_write = Vec::new();
    for entry in &tree {
        let path = Path::new(std::ffi::OsStr::from_bytes(&entry.path));
        match (entry.kind.as_str(), entry.mode.as_str()) {
            ("tree", _) | ("commit", _) => extractor.dir(path, 0o755)?,
            ("blob", "120000") => to_write.push(entry),
            ("blob", mode) => {
                let same = !changed.contains(&entry.path);
                if !(same && extractor.unchanged_file(path, file_mode(mode))?) {
                    to_write.push(entry);
                }
            }
            _ => {}
        }
    }
    if to_write.is_empty() {
        return Ok(true);
    }
    let mut child = git()
        .arg("--git-dir")
        .arg(mirror)
        .args(["cat-file", "--batch"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Source(format!("cannot run git cat-file: {e}")))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let objects: Vec<String> = to_write.iter().map(|e| e.object.clone()).collect();
    let feeder = std::thread::spawn(move || {
        for object in objects {
            if writeln!(stdin, "{object}").is_err() {
                return;
            }
        }
    });
    let mut reader = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let result = (|| -> Result<()> {
        let corrupt = |what: String| Error::Source(format!("git cat-file of {commit}: {what}"));
        for entry in &to_write {
            let mut header = String::new();
            reader
                .read_line(&mut header)
                .map_err(|e| corrupt(e.to_string()))?;
            let size: u64 = header
                .split_whitespace()
                .nth(2)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| corrupt(format!("unexpected answer {header:?}")))?;
            let path = Path::new(std::ffi::OsStr::from_bytes(&entry.path));
            let mut content = (&mut reader).take(size);
            if entry.mode == "120000" {
                let mut target = Vec::new();
                content
                    .read_to_end(&mut target)
                    .map_err(|e| corrupt(e.to_string()))?;
                extractor.symlink(path, Path::new(std::ffi::OsStr::from_bytes(&target)))?;
            } else {
                extractor.file(path, file_mode(&entry.mode), mtime, &mut content)?;
            }
            let mut newline = [0u8; 1];
            reader
                .read_exact(&mut newline)
                .map_err(|e| corrupt(e.to_string()))?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = child.kill();
    }
    drop(reader);
    let _ = feeder.join();
    let status = child
        .wait()
        .map_err(|e| Error::Source(format!("git cat-file failed: {e}")))?;
    result?;
    if !status.success() {
        return Err(Error::Source(format!("git cat-file of {commit} failed")));
    }
    Ok(true)
}
