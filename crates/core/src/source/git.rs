//! Git sources through the git CLI (it carries the user's SSH keys and credential
//! helpers): a bare mirror under the state dir fetched incrementally, refs
//! resolved to commits, and `git archive` streamed into the release.

use std::io::{BufRead, BufReader, Read, Write};
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
    init_mirror(mirror)?;
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

/// Create the bare mirror if it is missing.
pub fn init_mirror(mirror: &Path) -> Result<()> {
    if mirror.join("HEAD").exists() {
        return Ok(());
    }
    let mut init = git();
    init.args(["init", "--quiet", "--bare", "--end-of-options"])
        .arg(mirror);
    run(init, "create the git mirror", None).map(|_| ())
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

/// The commit `spec` names in the mirror, if it names one.
fn verify(mirror: &Path, spec: &str) -> Option<String> {
    verify_object(mirror, &format!("{spec}^{{commit}}"))
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

/// `text` as a commit id (7 to 40 hex digits, lowercased), or why not.
pub fn commit_id(text: &str) -> Result<String> {
    let is_id = (7..=40).contains(&text.len()) && text.chars().all(|c| c.is_ascii_hexdigit());
    if !is_id {
        return Err(Error::Invalid(format!(
            "commit '{}' is not a commit id: give 7 to 40 hex digits",
            text.escape_debug()
        )));
    }
    Ok(text.to_ascii_lowercase())
}

/// The exact commit a deploy was asked for (`requested`: 7 to 40 hex
/// digits), checked to be on `reference` (reachable from its head `tip`
/// in the fetched mirror) unless `allow_any`; a commit off every branch is
/// then fetched by id, as far as the remote allows.
pub fn pin(
    mirror: &Path,
    url: &str,
    shown_url: &str,
    (reference, tip): (&str, &str),
    requested: &str,
    allow_any: bool,
) -> Result<String> {
    let requested = commit_id(requested)?;
    let found = match verify(mirror, &requested) {
        Some(found) => found,
        None if allow_any => {
            let mut fetch = git();
            fetch.arg("--git-dir").arg(mirror).args([
                "fetch",
                "--quiet",
                "--no-write-fetch-head",
                "--end-of-options",
                url,
                &requested,
            ]);
            let _ = run(
                fetch,
                &format!("fetch commit {requested} of {shown_url}"),
                Some((url, shown_url)),
            );
            verify(mirror, &requested)
                .ok_or_else(|| Error::Source(format!("commit {requested} is not in {shown_url}")))?
        }
        None => {
            return Err(Error::Invalid(format!(
                "commit {requested} is not on {reference} of {shown_url} (no such commit there); \
                 set allow_any_commit = true to deploy a commit off the app's ref"
            )));
        }
    };
    if !allow_any {
        let mut ancestor = git();
        ancestor.arg("--git-dir").arg(mirror).args([
            "merge-base",
            "--is-ancestor",
            "--end-of-options",
            &found,
            tip,
        ]);
        let on_ref = ancestor
            .output()
            .map_err(|e| Error::Source(format!("cannot run git merge-base: {e}")))?
            .status
            .success();
        if !on_ref {
            return Err(Error::Invalid(format!(
                "commit {found} is not on {reference} of {shown_url} (not reachable from its head {}); \
                 set allow_any_commit = true to deploy a commit off the app's ref",
                &tip[..tip.len().min(12)]
            )));
        }
    }
    Ok(found)
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

/// What a deploy writes of `commit`: the whole commit, or its folder
/// `subfolder` (a monorepo's app) as `commit:path`, a tree.
pub fn treeish(commit: &str, subfolder: Option<&Path>) -> String {
    match subfolder {
        Some(path) => format!("{commit}:{}", path.display()),
        None => commit.to_string(),
    }
}

/// The tree `subfolder` of `commit` is, if `commit` has that folder (not
/// a file).
pub fn tree_id(mirror: &Path, commit: &str, subfolder: &Path) -> Option<String> {
    // `<commit>:<path>` takes the rest as the path: no `^{tree}` after it.
    let object = verify_object(mirror, &format!("{commit}:{}", subfolder.display()))?;
    let mut kind = git();
    kind.arg("--git-dir")
        .arg(mirror)
        .args(["cat-file", "-t", "--end-of-options", &object]);
    let out = kind.output().ok()?;
    (out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "tree")
        .then_some(object)
}

/// The object `spec` names in the mirror, if any.
fn verify_object(mirror: &Path, spec: &str) -> Option<String> {
    let mut rev = git();
    rev.arg("--git-dir").arg(mirror).args([
        "rev-parse",
        "--verify",
        "--quiet",
        "--end-of-options",
        spec,
    ]);
    let out = rev.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Stream `git archive` of `commit` (a commit or a tree) into the extractor.
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
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let result = extract_tar(&format!("commit {commit}"), &mut stdout, extractor);
    if result.is_err() {
        let _ = child.kill();
    } else {
        // The tar reader stops at the end marker; git may still be writing
        // the padding after it. Closing the pipe first would fail git with
        // SIGPIPE (and no message) on a busy machine.
        let _ = std::io::copy(&mut stdout, &mut std::io::sink());
    }
    drop(stdout);
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    let status = child
        .wait()
        .map_err(|e| Error::Source(format!("git archive failed: {e}")))?;
    result?;
    if !status.success() {
        let said = match stderr.trim() {
            "" => status.to_string(),
            said => said.to_string(),
        };
        return Err(Error::Source(format!(
            "git archive of {commit} failed: {said}"
        )));
    }
    Ok(())
}

/// Mode bits git archive gives a blob of git mode `mode` (with umask 022).
fn file_mode(mode: &str) -> u32 {
    if mode == "100755" { 0o755 } else { 0o644 }
}

/// NUL-terminated records from a git command's output, read as they come.
struct Records {
    child: std::process::Child,
    reader: BufReader<std::process::ChildStdout>,
    what: String,
}

impl Records {
    fn spawn(mut command: Command, what: &str) -> Result<Self> {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Source(format!("cannot run git to {what}: {e}")))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        Ok(Records {
            child,
            reader: BufReader::with_capacity(256 * 1024, stdout),
            what: what.to_string(),
        })
    }

    fn next(&mut self) -> Result<Option<Vec<u8>>> {
        let mut record = Vec::new();
        let read = self
            .reader
            .read_until(0, &mut record)
            .map_err(|e| Error::Source(format!("cannot {}: {e}", self.what)))?;
        if read == 0 {
            return Ok(None);
        }
        if record.last() == Some(&0) {
            record.pop();
        }
        Ok(Some(record))
    }

    /// Wait for git and report how it ended.
    fn finish(mut self) -> Result<()> {
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        let status = self
            .child
            .wait()
            .map_err(|e| Error::Source(format!("cannot {}: {e}", self.what)))?;
        if !status.success() {
            let detail = stderr.trim().replace('\n', "; ");
            return Err(Error::Source(format!("cannot {}: {detail}", self.what)));
        }
        Ok(())
    }
}

impl Drop for Records {
    fn drop(&mut self) {
        // Ended early (an error): do not leave git running.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

struct TreeEntry {
    mode: String,
    kind: String,
    object: String,
    path: Vec<u8>,
}

impl TreeEntry {
    /// One record of `git ls-tree -z`: "<mode> <kind> <object>\t<path>".
    fn parse(record: &[u8]) -> Option<TreeEntry> {
        let tab = record.iter().position(|b| *b == b'\t')?;
        let meta = std::str::from_utf8(&record[..tab]).ok()?;
        let mut parts = meta.split(' ');
        Some(TreeEntry {
            mode: parts.next()?.to_string(),
            kind: parts.next()?.to_string(),
            object: parts.next()?.to_string(),
            path: record[tab + 1..].to_vec(),
        })
    }

    fn path(&self) -> &Path {
        use std::os::unix::ffi::OsStrExt;
        Path::new(std::ffi::OsStr::from_bytes(&self.path))
    }
}

/// Every entry of `commit`, folders included, in git's order (byte order
/// of the full paths of its files), read as git lists them.
fn list_tree(mirror: &Path, commit: &str) -> Result<Records> {
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
    Records::spawn(ls, &format!("list commit {commit}"))
}

/// How many entries `commit` has, and whether a `.gitattributes` in it
/// changes what `git archive` writes (export-ignore, export-subst): then
/// only `git archive` is right.
fn survey(mirror: &Path, commit: &str) -> Result<(u64, bool)> {
    let mut listing = list_tree(mirror, commit)?;
    let mut entries = 0u64;
    let mut attributes = Vec::new();
    while let Some(record) = listing.next()? {
        entries += 1;
        if let Some(entry) = TreeEntry::parse(&record)
            && entry.kind == "blob"
            && entry.path.ends_with(b".gitattributes")
        {
            attributes.push(entry.object);
        }
    }
    listing.finish()?;
    for object in attributes {
        let mut show = git();
        show.arg("--git-dir")
            .arg(mirror)
            .args(["cat-file", "blob", &object]);
        let text = run(show, "read .gitattributes", None)?;
        if text.contains("export-ignore") || text.contains("export-subst") {
            return Ok((entries, true));
        }
    }
    Ok((entries, false))
}

/// Paths that differ between two commits, in git's order, asked for one
/// path at a time as the listing of the new commit goes forward.
struct Changes {
    records: Records,
    next: Option<Vec<u8>>,
}

impl Changes {
    fn between(mirror: &Path, base: &str, commit: &str) -> Result<Self> {
        let mut diff = git();
        // Plumbing: no diff.orderFile or other porcelain settings apply.
        diff.arg("--git-dir").arg(mirror).args([
            "diff-tree",
            "-r",
            "-z",
            "--name-only",
            "--no-renames",
            "--end-of-options",
            base,
            commit,
        ]);
        let mut records = Records::spawn(diff, &format!("compare {base} with {commit}"))?;
        let next = records.next()?;
        Ok(Changes { records, next })
    }

    /// Whether `path` changed; paths must be asked in increasing order.
    fn contains(&mut self, path: &[u8]) -> Result<bool> {
        while let Some(next) = self.next.as_deref().filter(|next| *next < path) {
            let following = self.records.next()?;
            if following.as_deref().is_some_and(|f| f <= next) {
                // Never seen; refusing beats sharing a file that changed.
                return Err(Error::Source(
                    "git diff-tree listed paths out of order".to_string(),
                ));
            }
            self.next = following;
        }
        Ok(self.next.as_deref() == Some(path))
    }

    fn finish(self) -> Result<()> {
        self.records.finish()
    }
}

/// `git cat-file --batch`, asked for objects ahead of reading them: a
/// feeder thread writes the requests while answers are read in order.
struct CatFile {
    child: std::process::Child,
    requests: Option<std::sync::mpsc::SyncSender<String>>,
    feeder: Option<std::thread::JoinHandle<()>>,
    reader: BufReader<std::process::ChildStdout>,
}

/// How many objects may be asked for and not yet read.
const IN_FLIGHT: usize = 256;

impl CatFile {
    fn spawn(mirror: &Path) -> Result<Self> {
        let mut child = git()
            .arg("--git-dir")
            .arg(mirror)
            .args(["cat-file", "--batch"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::Source(format!("cannot run git cat-file: {e}")))?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let (requests, incoming) = std::sync::mpsc::sync_channel::<String>(IN_FLIGHT * 2);
        let feeder = std::thread::spawn(move || {
            let mut stdin = std::io::BufWriter::new(stdin);
            while let Ok(object) = incoming.recv() {
                if writeln!(stdin, "{object}").is_err() {
                    return;
                }
                // Send what is queued at once, then let git see it.
                while let Ok(object) = incoming.try_recv() {
                    if writeln!(stdin, "{object}").is_err() {
                        return;
                    }
                }
                if stdin.flush().is_err() {
                    return;
                }
            }
        });
        let reader = BufReader::new(child.stdout.take().expect("stdout is piped"));
        Ok(CatFile {
            child,
            requests: Some(requests),
            feeder: Some(feeder),
            reader,
        })
    }

    fn ask(&self, object: &str) -> Result<()> {
        self.requests
            .as_ref()
            .and_then(|r| r.send(object.to_string()).ok())
            .ok_or_else(|| Error::Source("git cat-file stopped reading".to_string()))
    }

    /// The next answer's size; its content follows in `reader`, then a newline.
    fn next_size(&mut self) -> std::io::Result<u64> {
        let mut header = String::new();
        self.reader.read_line(&mut header)?;
        header
            .split_whitespace()
            .nth(2)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("unexpected answer {header:?}"),
                )
            })
    }

    fn finish(mut self) -> Result<()> {
        self.requests = None;
        if let Some(feeder) = self.feeder.take() {
            let _ = feeder.join();
        }
        let status = self
            .child
            .wait()
            .map_err(|e| Error::Source(format!("git cat-file failed: {e}")))?;
        if !status.success() {
            return Err(Error::Source("git cat-file failed".to_string()));
        }
        Ok(())
    }
}

impl Drop for CatFile {
    fn drop(&mut self) {
        self.requests = None;
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(feeder) = self.feeder.take() {
            let _ = feeder.join();
        }
    }
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
/// the rest, read with `git cat-file --batch`. The listing, the changes and
/// the writes all stream: nothing is held per entry. Ok(false), with
/// nothing written, when the commit needs `git archive` (export attributes).
pub fn materialize_changes(
    mirror: &Path,
    base: &str,
    commit: &str,
    extractor: &mut Extractor<'_>,
) -> Result<bool> {
    let (entries, export_attributes) = survey(mirror, commit)?;
    if export_attributes {
        return Ok(false);
    }
    extractor.expect_entries(entries);
    let mtime = commit_time(mirror, commit);
    let mut listing = list_tree(mirror, commit)?;
    let mut changes = Changes::between(mirror, base, commit)?;
    let mut cat = CatFile::spawn(mirror)?;
    let mut in_flight = std::collections::VecDeque::with_capacity(IN_FLIGHT);
    while let Some(record) = listing.next()? {
        let Some(entry) = TreeEntry::parse(&record) else {
            continue;
        };
        match (entry.kind.as_str(), entry.mode.as_str()) {
            ("tree", _) | ("commit", _) => extractor.dir(entry.path(), 0o755)?,
            ("blob", mode) => {
                let unchanged = mode != "120000" && !changes.contains(&entry.path)?;
                if !(unchanged && extractor.unchanged_file(entry.path(), file_mode(mode))?) {
                    cat.ask(&entry.object)?;
                    in_flight.push_back(entry);
                    if in_flight.len() >= IN_FLIGHT {
                        let entry = in_flight.pop_front().expect("in flight");
                        write_blob(&mut cat, &entry, commit, mtime, extractor)?;
                    }
                }
            }
            _ => {}
        }
    }
    while let Some(entry) = in_flight.pop_front() {
        write_blob(&mut cat, &entry, commit, mtime, extractor)?;
    }
    listing.finish()?;
    changes.finish()?;
    cat.finish()?;
    Ok(true)
}

/// Read the next answer of `cat` (the blob of `entry`) into the release.
fn write_blob(
    cat: &mut CatFile,
    entry: &TreeEntry,
    commit: &str,
    mtime: Option<std::time::SystemTime>,
    extractor: &mut Extractor<'_>,
) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let corrupt = |e: std::io::Error| Error::Source(format!("git cat-file of {commit}: {e}"));
    let size = cat.next_size().map_err(corrupt)?;
    let mut content = (&mut cat.reader).take(size);
    if entry.mode == "120000" {
        let mut target = Vec::new();
        content.read_to_end(&mut target).map_err(corrupt)?;
        extractor.symlink(
            entry.path(),
            Path::new(std::ffi::OsStr::from_bytes(&target)),
        )?;
    } else {
        extractor.file(entry.path(), file_mode(&entry.mode), mtime, &mut content)?;
        // A refused or short write leaves the rest unread: read it, so the
        // next answer starts where it should.
        std::io::copy(&mut content, &mut std::io::sink()).map_err(corrupt)?;
    }
    let mut newline = [0u8; 1];
    cat.reader.read_exact(&mut newline).map_err(corrupt)
}
