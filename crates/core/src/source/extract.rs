//! Writes a stream of entries (from a tar, a zip, `git archive` or a folder walk)
//! into a fresh release folder, refusing anything that would leave the release:
//! absolute paths, `..`, writes through symlinks, links pointing outside, device
//! files, duplicates, and more bytes or entries than the limits allow.

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use crate::error::{Error, Result};
use crate::fsx;
use sha2::{Digest, Sha256};

use crate::manifest::{Entry, EntryKind, HashingWriter, Manifest, hex};
use crate::share::Sharer;

pub const DEFAULT_MAX_BYTES: u64 = 8 << 30;
pub const DEFAULT_MAX_ENTRIES: u64 = 1_000_000;
/// An archive may write at most this many times its own size…
pub const DEFAULT_MAX_RATIO: u64 = 100;
/// …once past this much: small archives of very compressible files pass.
pub const RATIO_FLOOR_BYTES: u64 = 100 << 20;
const MAX_SYMLINK_HOPS: usize = 40;
const UNWRAP_TMP: &str = ".zdeploy-unwrap";

/// How much a source may write into a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: u64,
    pub max_entries: u64,
    /// Bytes written per byte of archive, past `RATIO_FLOOR_BYTES`; 0 is
    /// no limit. An 8 MB zip of zeros that expands to 8 GiB is a bomb.
    pub max_ratio: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: DEFAULT_MAX_BYTES,
            max_entries: DEFAULT_MAX_ENTRIES,
            max_ratio: DEFAULT_MAX_RATIO,
        }
    }
}

/// Called with the entries done so far and the total when known.
pub type ProgressFn<'a> = dyn FnMut(u64, Option<u64>) + 'a;

pub struct Extractor<'a> {
    root: PathBuf,
    origin: String,
    limits: Limits,
    /// The new release's manifest, written as entries arrive. Checks ask
    /// the release folder itself (fresh, so everything in it came from
    /// this source), not the manifest: nothing is kept per entry.
    manifest: &'a Manifest<'a>,
    /// The last folder whose whole chain of parents was checked to be real
    /// folders of the release (entries arrive folder by folder).
    checked_dir: Option<PathBuf>,
    written: u64,
    /// The archive's own size, for the expansion ratio.
    packed_size: Option<u64>,
    entries: u64,
    expected: Option<u64>,
    progress: &'a mut ProgressFn<'a>,
    sharer: Option<&'a Sharer<'a>>,
}

/// Longest file name and path Linux filesystems take (NAME_MAX, PATH_MAX
/// less the webroot): longer ones are refused before anything is written.
const MAX_NAME_BYTES: usize = 255;
const MAX_PATH_BYTES: usize = 3072;
/// How much of a hostile entry name an error shows.
const SHOWN_NAME_CHARS: usize = 120;

/// Files up to this size are read whole and hashed before anything is
/// written, so one the live release already has is shared instead.
const SHAREABLE_SIZE: u64 = 4 * 1024 * 1024;

impl<'a> Extractor<'a> {
    /// `root` must exist and be empty; `origin` names the source in errors;
    /// what is written is recorded in `manifest`.
    pub fn new(
        root: &Path,
        origin: &str,
        limits: Limits,
        manifest: &'a Manifest<'a>,
        progress: &'a mut ProgressFn<'a>,
    ) -> Self {
        Extractor {
            root: root.to_path_buf(),
            origin: origin.to_string(),
            limits,
            manifest,
            checked_dir: None,
            written: 0,
            packed_size: None,
            entries: 0,
            expected: None,
            progress,
            sharer: None,
        }
    }

    /// The source is an archive of `bytes`: it may expand only so far.
    pub fn packed(&mut self, bytes: u64) {
        self.packed_size = Some(bytes);
    }

    /// How many more bytes may be written, and whether the expansion
    /// ratio (rather than the size limit) is what stops them.
    fn budget(&self) -> (u64, bool) {
        let by_size = self.limits.max_bytes.saturating_sub(self.written);
        let by_ratio = self
            .packed_size
            .filter(|_| self.limits.max_ratio > 0)
            .map(|packed| {
                packed
                    .saturating_mul(self.limits.max_ratio)
                    .max(RATIO_FLOOR_BYTES)
                    .saturating_sub(self.written)
            });
        match by_ratio {
            Some(by_ratio) if by_ratio < by_size => (by_ratio, true),
            _ => (by_size, false),
        }
    }

    /// Why writing stopped at the budget.
    fn past_budget(&self, by_ratio: bool) -> String {
        match self.packed_size.filter(|_| by_ratio) {
            Some(packed) => format!(
                "expands the archive ({packed} bytes) past {} times its size and past {} MiB: refused as a likely decompression bomb (max_archive_ratio allows more)",
                self.limits.max_ratio,
                RATIO_FLOOR_BYTES >> 20
            ),
            None => format!(
                "is past the limit of {} bytes written in all (max_archive_size)",
                self.limits.max_bytes
            ),
        }
    }

    /// The source has `total` entries (for a progress bar).
    pub fn expect_entries(&mut self, total: u64) {
        self.expected = Some(total);
    }

    /// Share files the live release already has instead of writing them.
    pub fn share_from(&mut self, sharer: &'a Sharer<'a>) {
        self.sharer = Some(sharer);
    }

    /// Share `path` from the live release if it has it as a deployed file
    /// of `mode` with `digest` (`None`: the caller knows the content is the
    /// same). Ok(true) when shared and recorded.
    fn try_share(&mut self, path: &Path, mode: u32, digest: Option<&str>) -> Result<bool> {
        let Some(sharer) = self.sharer else {
            return Ok(false);
        };
        // An archive's single top folder is unwrapped at the end: the live
        // release knows its files without it.
        let found = match sharer.candidate(path, mode, digest)? {
            Some(found) => Some(found),
            None => {
                let unwrapped: PathBuf = path.components().skip(1).collect();
                sharer.candidate(&unwrapped, mode, digest)?
            }
        };
        let Some((from, entry)) = found else {
            return Ok(false);
        };
        let full = self.root.join(path);
        match sharer.share(&from, &full, entry.size) {
            Ok(true) => {}
            Ok(false) => return Ok(false),
            Err(e) => return Err(self.write_error(path, "share", e)),
        }
        self.manifest.insert(path, entry)?;
        Ok(true)
    }

    /// A file whose content the caller knows equals the live release's
    /// (git: unchanged between the two commits). Ok(false) if it cannot be
    /// shared and must be written with `file`.
    pub fn unchanged_file(&mut self, raw: &Path, mode: u32) -> Result<bool> {
        self.share_if_live(raw, mode, None)
    }

    /// A file whose digest the caller knows (a release built on another
    /// host): shared if the live release has it with that digest. Ok(false)
    /// if it must be written with `file`.
    pub fn known_file(&mut self, raw: &Path, mode: u32, digest: &str) -> Result<bool> {
        self.share_if_live(raw, mode, Some(digest))
    }

    fn share_if_live(&mut self, raw: &Path, mode: u32, digest: Option<&str>) -> Result<bool> {
        let Some(path) = self.checked_path(raw)? else {
            return Ok(false);
        };
        if self.sharer.is_none() {
            return Ok(false);
        }
        self.ensure_parents(&path)?;
        if !self.try_share(&path, mode & 0o777, digest)? {
            return Ok(false);
        }
        self.count_entry(&path)?;
        Ok(true)
    }

    /// What the manifest recorded for `path` (a file just written, say).
    pub fn written_entry(&self, path: &Path) -> Result<Option<Entry>> {
        self.manifest.get(path)
    }

    /// An error writing `path`: one that already exists appears twice in
    /// the source (the release folder was empty).
    fn write_error(&self, path: &Path, what: &'static str, e: io::Error) -> Error {
        if e.kind() == io::ErrorKind::AlreadyExists {
            self.refuse(path, "appears twice")
        } else {
            Error::io(what, self.root.join(path), e)
        }
    }

    fn refuse(&self, entry: &Path, why: &str) -> Error {
        let name = entry.display().to_string();
        let shown = match name.char_indices().nth(SHOWN_NAME_CHARS) {
            Some((cut, _)) => format!("{}…", &name[..cut]),
            None => name,
        };
        Error::Source(format!("refusing {}: entry '{shown}' {why}", self.origin))
    }

    /// The release-relative path of an entry; `None` for the root itself ("./").
    fn checked_path(&self, raw: &Path) -> Result<Option<PathBuf>> {
        if raw.as_os_str().len() > MAX_PATH_BYTES {
            return Err(self.refuse(
                raw,
                &format!("has a path longer than {MAX_PATH_BYTES} bytes"),
            ));
        }
        let mut clean = PathBuf::new();
        for component in raw.components() {
            match component {
                Component::Normal(part) if part.len() > MAX_NAME_BYTES => {
                    return Err(self.refuse(
                        raw,
                        &format!("has a name longer than {MAX_NAME_BYTES} bytes"),
                    ));
                }
                Component::Normal(part) => clean.push(part),
                Component::CurDir => {}
                Component::RootDir | Component::Prefix(_) => {
                    return Err(self.refuse(raw, "has an absolute path"));
                }
                Component::ParentDir => return Err(self.refuse(raw, "contains '..'")),
            }
        }
        Ok((!clean.as_os_str().is_empty()).then_some(clean))
    }

    fn count_entry(&mut self, path: &Path) -> Result<()> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(self.refuse(
                path,
                &format!("is past the limit of {} entries", self.limits.max_entries),
            ));
        }
        (self.progress)(self.entries, self.expected);
        Ok(())
    }

    /// Make every ancestor of `path` a folder of this release, never a symlink.
    fn ensure_parents(&mut self, path: &Path) -> Result<()> {
        let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) else {
            return Ok(());
        };
        let checked = |dir: &Path, checked_dir: &Option<PathBuf>| {
            checked_dir.as_deref().is_some_and(|c| c.starts_with(dir))
        };
        if checked(parent, &self.checked_dir) {
            return Ok(());
        }
        let ancestors: Vec<&Path> = parent
            .ancestors()
            .filter(|a| !a.as_os_str().is_empty())
            .collect();
        for ancestor in ancestors.into_iter().rev() {
            if checked(ancestor, &self.checked_dir) {
                continue;
            }
            let full = self.root.join(ancestor);
            match fs::symlink_metadata(&full) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(self.refuse(
                        path,
                        &format!(
                            "would be written through '{}', which is not a folder",
                            ancestor.display()
                        ),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => self.make_dir(ancestor, 0o755)?,
                Err(e) => return Err(Error::io("inspect", &full, e)),
            }
        }
        self.checked_dir = Some(parent.to_path_buf());
        Ok(())
    }

    fn make_dir(&mut self, path: &Path, mode: u32) -> Result<()> {
        let full = self.root.join(path);
        match fs::create_dir(&full) {
            Ok(()) => {}
            // Named twice (or as a parent first): fine if it is a folder.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if !fs::symlink_metadata(&full).is_ok_and(|m| m.is_dir()) {
                    return Err(self.refuse(path, "appears twice"));
                }
            }
            Err(e) => return Err(Error::io("create folder", &full, e)),
        }
        self.manifest.insert(
            path,
            Entry {
                kind: EntryKind::Dir,
                mode,
                size: 0,
                digest: String::new(),
            },
        )
    }

    pub fn dir(&mut self, raw: &Path, mode: u32) -> Result<()> {
        let Some(path) = self.checked_path(raw)? else {
            return Ok(());
        };
        self.count_entry(&path)?;
        let mode = (mode & 0o777) | 0o700;
        self.ensure_parents(&path)?;
        self.make_dir(&path, mode)
    }

    pub fn file(
        &mut self,
        raw: &Path,
        mode: u32,
        mtime: Option<SystemTime>,
        content: &mut dyn Read,
    ) -> Result<()> {
        let Some(path) = self.checked_path(raw)? else {
            return Err(self.refuse(raw, "is a file at the archive root path"));
        };
        self.count_entry(&path)?;
        self.ensure_parents(&path)?;
        let full = self.root.join(&path);
        let mode = mode & 0o777;
        let mut head = Vec::new();
        if self.sharer.is_some() {
            content
                .take(SHAREABLE_SIZE + 1)
                .read_to_end(&mut head)
                .map_err(|e| {
                    Error::Source(format!(
                        "cannot read {} at entry '{}': {e} (corrupt or truncated?)",
                        self.origin,
                        path.display()
                    ))
                })?;
            if head.len() as u64 <= SHAREABLE_SIZE {
                let digest = hex(&Sha256::digest(&head));
                if self.try_share(&path, mode, Some(&digest))? {
                    return Ok(());
                }
            }
        }
        let content = &mut io::Cursor::new(head).chain(content);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode | 0o200)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&full)
            .map_err(|e| self.write_error(&path, "create", e))?;
        let (budget, by_ratio) = self.budget();
        let mut writer = HashingWriter::new(file);
        let copied = copy_limited(content, &mut writer, budget).map_err(|e| match e {
            CopyError::Read(e) => Error::Source(format!(
                "cannot read {} at entry '{}': {e} (corrupt or truncated?)",
                self.origin,
                path.display()
            )),
            CopyError::Write(e) => Error::io("write", &full, e),
            CopyError::Limit => self.refuse(&path, &self.past_budget(by_ratio)),
        })?;
        self.written += copied;
        let (file, digest, size) = writer.finish();
        if mode & 0o200 == 0 {
            file.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(|e| Error::io("set permissions of", &full, e))?;
        }
        if let Some(mtime) = mtime {
            // Best effort: a wrong mtime never breaks a release.
            let _ = file.set_modified(mtime);
        }
        self.manifest.insert(
            &path,
            Entry {
                kind: EntryKind::File,
                mode,
                size,
                digest,
            },
        )
    }

    pub fn symlink(&mut self, raw: &Path, target: &Path) -> Result<()> {
        let Some(path) = self.checked_path(raw)? else {
            return Err(self.refuse(raw, "is a symlink at the archive root path"));
        };
        self.count_entry(&path)?;
        if target.is_absolute() {
            return Err(self.refuse(
                &path,
                &format!(
                    "is a symlink to absolute path '{}', outside the release",
                    target.display()
                ),
            ));
        }
        if target.as_os_str().is_empty() {
            return Err(self.refuse(&path, "is a symlink with an empty target"));
        }
        self.ensure_parents(&path)?;
        std::os::unix::fs::symlink(target, self.root.join(&path))
            .map_err(|e| self.write_error(&path, "create symlink", e))?;
        self.manifest.insert(
            &path,
            Entry {
                kind: EntryKind::Symlink,
                mode: 0o777,
                size: target.as_os_str().len() as u64,
                digest: target.to_string_lossy().into_owned(),
            },
        )
    }

    /// A hard link to an earlier regular-file entry of the same source.
    pub fn hardlink(&mut self, raw: &Path, target_raw: &Path) -> Result<()> {
        let Some(path) = self.checked_path(raw)? else {
            return Err(self.refuse(raw, "is a hard link at the archive root path"));
        };
        self.count_entry(&path)?;
        let target = match self.checked_path(target_raw) {
            Ok(Some(t)) => t,
            _ => {
                return Err(self.refuse(
                    &path,
                    &format!(
                        "is a hard link to '{}', outside the release",
                        target_raw.display()
                    ),
                ));
            }
        };
        let earlier_file = fs::symlink_metadata(self.root.join(&target)).is_ok_and(|m| m.is_file());
        let entry = match earlier_file {
            true => self.manifest.get(&target)?,
            false => None,
        };
        let Some(entry) = entry.filter(|e| e.kind == EntryKind::File) else {
            return Err(self.refuse(
                &path,
                &format!(
                    "is a hard link to '{}', which is not an earlier file of the archive",
                    target.display()
                ),
            ));
        };
        self.ensure_parents(&path)?;
        let full = self.root.join(&path);
        fs::hard_link(self.root.join(&target), &full)
            .map_err(|e| self.write_error(&path, "link", e))?;
        self.manifest.insert(&path, entry)
    }

    /// Refuse an entry type that has no place in a web app.
    pub fn special(&mut self, raw: &Path, what: &str) -> Result<()> {
        Err(self.refuse(
            raw,
            &format!("is a {what}, which a release may not contain"),
        ))
    }

    /// Finish: unwrap a single top-level folder if asked, check that no symlink
    /// resolves outside the release, and apply folder permissions.
    pub fn finish(self, unwrap: bool) -> Result<()> {
        if unwrap && let Some(top) = self.single_top_folder()? {
            self.unwrap_top(&top)?;
        }
        for item in self.manifest.entries() {
            let (path, entry) = item?;
            match entry.kind {
                EntryKind::Symlink if symlink_escapes(&self.root, &path) => {
                    return Err(self.refuse(
                        &path,
                        &format!(
                            "is a symlink to '{}', which resolves outside the release",
                            entry.digest
                        ),
                    ));
                }
                EntryKind::Dir => {
                    let full = self.root.join(&path);
                    fs::set_permissions(&full, fs::Permissions::from_mode(entry.mode))
                        .map_err(|e| Error::io("set permissions of", &full, e))?;
                }
                _ => {}
            }
        }
        self.manifest.flush()
    }

    /// The release's only top-level entry, if it is a folder holding more.
    fn single_top_folder(&self) -> Result<Option<PathBuf>> {
        let mut tops = fsx::read_dir(&self.root)?;
        let (Some(first), None) = (tops.next(), tops.next()) else {
            return Ok(None);
        };
        let first = first.map_err(|e| Error::io("list folder", &self.root, e))?;
        let top = PathBuf::from(first.file_name());
        let is_dir = fs::symlink_metadata(first.path()).is_ok_and(|m| m.is_dir());
        Ok((is_dir && self.manifest.entry_count()? > 1).then_some(top))
    }

    fn unwrap_top(&self, top: &Path) -> Result<()> {
        let holder = self.root.join(UNWRAP_TMP);
        fsx::rename(&self.root.join(top), &holder)?;
        for child in fsx::read_dir(&holder)? {
            let child = child.map_err(|e| Error::io("list folder", &holder, e))?;
            fsx::rename(&child.path(), &self.root.join(child.file_name()))?;
        }
        fs::remove_dir(&holder).map_err(|e| Error::io("remove folder", &holder, e))?;
        self.manifest.unwrap_top(top)
    }
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
    Limit,
}

fn copy_limited(
    reader: &mut dyn Read,
    writer: &mut dyn Write,
    budget: u64,
) -> Result<u64, CopyError> {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        total += n as u64;
        if total > budget {
            return Err(CopyError::Limit);
        }
        writer.write_all(&buffer[..n]).map_err(CopyError::Write)?;
    }
}

/// Follow the symlink at `root/link` through the real tree, as the kernel would,
/// and say whether it ever leaves `root`.
pub fn symlink_escapes(root: &Path, link: &Path) -> bool {
    let mut resolved: Vec<OsString> = link
        .parent()
        .map(|p| p.iter().map(|c| c.to_os_string()).collect())
        .unwrap_or_default();
    let Ok(target) = fs::read_link(root.join(link)) else {
        return true;
    };
    let mut pending: Vec<OsString> = Vec::new();
    if !push_target(&mut pending, &target) {
        return true;
    }
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            if resolved.pop().is_none() {
                return true;
            }
            continue;
        }
        resolved.push(part);
        let here: PathBuf = resolved.iter().fold(root.to_path_buf(), |p, c| p.join(c));
        if let Ok(meta) = fs::symlink_metadata(&here)
            && meta.file_type().is_symlink()
        {
            hops += 1;
            let Ok(next) = fs::read_link(&here) else {
                return true;
            };
            if hops > MAX_SYMLINK_HOPS || !push_target(&mut pending, &next) {
                return true;
            }
            resolved.pop();
        }
    }
    false
}

/// Queue a link target's parts (reversed, for popping); false when it is absolute.
fn push_target(pending: &mut Vec<OsString>, target: &Path) -> bool {
    let mut parts = Vec::new();
    for component in target.components() {
        match component {
            Component::Normal(p) => parts.push(p.to_os_string()),
            Component::ParentDir => parts.push(OsString::from("..")),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    pending.extend(parts.into_iter().rev());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_escape_table() {
        let root = std::env::temp_dir().join(format!("zdeploy-escape-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("a/b")).unwrap();
        let links: &[(&str, &str, bool)] = &[
            ("ok_sibling", "a", false),
            ("a/ok_up", "../a/b", false),
            ("a/b/ok_dangling", "nothing/here", false),
            ("up", "..", true),
            ("a/up2", "../..", true),
            ("root_alias", "a/..", false),
            // Lexically inside, but `root_alias` is the release root, so `..` leaves it.
            ("sneaky", "root_alias/../x", true),
            ("abs", "/etc/passwd", true),
            ("loop1", "loop2", true),
            ("loop2", "loop1", true),
        ];
        for (link, target, _) in links {
            std::os::unix::fs::symlink(target, root.join(link)).unwrap();
        }
        for (link, target, escapes) in links {
            assert_eq!(
                symlink_escapes(&root, Path::new(link)),
                *escapes,
                "{link} -> {target}"
            );
        }
        fs::remove_dir_all(&root).unwrap();
    }
}
