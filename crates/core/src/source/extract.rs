//! Writes a stream of entries (from a tar, a zip, `git archive` or a folder walk)
//! into a fresh release folder, refusing anything that would leave the release:
//! absolute paths, `..`, writes through symlinks, links pointing outside, device
//! files, duplicates, and more bytes or entries than the limits allow.

use std::collections::BTreeMap;
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
const MAX_SYMLINK_HOPS: usize = 40;
const UNWRAP_TMP: &str = ".zdeploy-unwrap";

/// How much a source may write into a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: u64,
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: DEFAULT_MAX_BYTES,
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }
}

/// Called with the entries done so far and the total when known.
pub type ProgressFn<'a> = dyn FnMut(u64, Option<u64>) + 'a;

pub struct Extractor<'a> {
    root: PathBuf,
    origin: String,
    limits: Limits,
    manifest: Manifest,
    dir_modes: BTreeMap<PathBuf, u32>,
    written: u64,
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
    /// `root` must exist and be empty; `origin` names the source in errors.
    pub fn new(
        root: &Path,
        origin: &str,
        limits: Limits,
        progress: &'a mut ProgressFn<'a>,
    ) -> Self {
        Extractor {
            root: root.to_path_buf(),
            origin: origin.to_string(),
            limits,
            manifest: Manifest::default(),
            dir_modes: BTreeMap::new(),
            written: 0,
            entries: 0,
            expected: None,
            progress,
            sharer: None,
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
        let found = sharer.candidate(path, mode, digest).or_else(|| {
            let unwrapped: PathBuf = path.components().skip(1).collect();
            sharer.candidate(&unwrapped, mode, digest)
        });
        let Some((from, entry)) = found else {
            return Ok(false);
        };
        let full = self.root.join(path);
        if !sharer
            .share(&from, &full, entry.size)
            .map_err(|e| Error::io("share", &full, e))?
        {
            return Ok(false);
        }
        self.manifest.insert(path.to_path_buf(), entry);
        Ok(true)
    }

    /// A file whose content the caller knows equals the live release's
    /// (git: unchanged between the two commits). Ok(false) if it cannot be
    /// shared and must be written with `file`.
    pub fn unchanged_file(&mut self, raw: &Path, mode: u32) -> Result<bool> {
        let Some(path) = self.checked_path(raw)? else {
            return Ok(false);
        };
        if self.sharer.is_none() || self.manifest.contains(&path) {
            return Ok(false);
        }
        self.ensure_parents(&path)?;
        if !self.try_share(&path, mode & 0o777, None)? {
            return Ok(false);
        }
        self.count_entry(&path)?;
        Ok(true)
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
        // A folder enters the manifest only after its own parents did, so a
        // recorded parent folder vouches for the whole chain (the common
        // case: entries arrive folder by folder).
        match path.parent().filter(|p| !p.as_os_str().is_empty()) {
            None => return Ok(()),
            Some(parent) if self.manifest.get(parent).map(|e| e.kind) == Some(EntryKind::Dir) => {
                return Ok(());
            }
            Some(_) => {}
        }
        let ancestors: Vec<PathBuf> = path
            .ancestors()
            .skip(1)
            .filter(|a| !a.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .collect();
        for ancestor in ancestors.into_iter().rev() {
            match self.manifest.get(&ancestor).map(|e| e.kind) {
                Some(EntryKind::Dir) => {}
                Some(_) => {
                    return Err(self.refuse(
                        path,
                        &format!(
                            "would be written through '{}', which is not a folder",
                            ancestor.display()
                        ),
                    ));
                }
                None => self.make_dir(&ancestor, 0o755)?,
            }
        }
        Ok(())
    }

    fn make_dir(&mut self, path: &Path, mode: u32) -> Result<()> {
        let full = self.root.join(path);
        fsx::create_dir(&full)?;
        self.manifest.insert(
            path.to_path_buf(),
            Entry {
                kind: EntryKind::Dir,
                mode,
                size: 0,
                digest: String::new(),
            },
        );
        self.dir_modes.insert(path.to_path_buf(), mode);
        Ok(())
    }

    fn check_new(&self, path: &Path) -> Result<()> {
        if self.manifest.contains(path) {
            return Err(self.refuse(path, "appears twice"));
        }
        Ok(())
    }

    pub fn dir(&mut self, raw: &Path, mode: u32) -> Result<()> {
        let Some(path) = self.checked_path(raw)? else {
            return Ok(());
        };
        self.count_entry(&path)?;
        let mode = (mode & 0o777) | 0o700;
        match self.manifest.get(&path).map(|e| e.kind) {
            Some(EntryKind::Dir) => {
                self.dir_modes.insert(path, mode);
                Ok(())
            }
            Some(_) => Err(self.refuse(&path, "appears twice")),
            None => {
                self.ensure_parents(&path)?;
                self.make_dir(&path, mode)
            }
        }
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
        self.check_new(&path)?;
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
            .map_err(|e| Error::io("create", &full, e))?;
        let budget = self.limits.max_bytes.saturating_sub(self.written);
        let mut writer = HashingWriter::new(file);
        let copied = copy_limited(content, &mut writer, budget).map_err(|e| match e {
            CopyError::Read(e) => Error::Source(format!(
                "cannot read {} at entry '{}': {e} (corrupt or truncated?)",
                self.origin,
                path.display()
            )),
            CopyError::Write(e) => Error::io("write", &full, e),
            CopyError::Limit => self.refuse(
                &path,
                &format!(
                    "is past the limit of {} bytes written in all",
                    self.limits.max_bytes
                ),
            ),
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
            path,
            Entry {
                kind: EntryKind::File,
                mode,
                size,
                digest,
            },
        );
        Ok(())
    }

    pub fn symlink(&mut self, raw: &Path, target: &Path) -> Result<()> {
        let Some(path) = self.checked_path(raw)? else {
            return Err(self.refuse(raw, "is a symlink at the archive root path"));
        };
        self.count_entry(&path)?;
        self.check_new(&path)?;
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
        fsx::symlink(target, &self.root.join(&path))?;
        self.manifest.insert(
            path,
            Entry {
                kind: EntryKind::Symlink,
                mode: 0o777,
                size: target.as_os_str().len() as u64,
                digest: target.to_string_lossy().into_owned(),
            },
        );
        Ok(())
    }

    /// A hard link to an earlier regular-file entry of the same source.
    pub fn hardlink(&mut self, raw: &Path, target_raw: &Path) -> Result<()> {
        let Some(path) = self.checked_path(raw)? else {
            return Err(self.refuse(raw, "is a hard link at the archive root path"));
        };
        self.count_entry(&path)?;
        self.check_new(&path)?;
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
        let Some(entry) = self
            .manifest
            .get(&target)
            .filter(|e| e.kind == EntryKind::File)
            .cloned()
        else {
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
        fs::hard_link(self.root.join(&target), &full).map_err(|e| Error::io("link", &full, e))?;
        self.manifest.insert(path, entry);
        Ok(())
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
    pub fn finish(mut self, unwrap: bool) -> Result<Manifest> {
        if unwrap && let Some(top) = self.single_top_folder() {
            self.unwrap_top(&top)?;
        }
        for (path, entry) in self.manifest.iter() {
            if entry.kind == EntryKind::Symlink && symlink_escapes(&self.root, path) {
                return Err(self.refuse(
                    path,
                    &format!(
                        "is a symlink to '{}', which resolves outside the release",
                        entry.digest
                    ),
                ));
            }
        }
        for (path, mode) in self.dir_modes.iter().rev() {
            let full = self.root.join(path);
            fs::set_permissions(&full, fs::Permissions::from_mode(*mode))
                .map_err(|e| Error::io("set permissions of", &full, e))?;
        }
        Ok(self.manifest)
    }

    fn single_top_folder(&self) -> Option<PathBuf> {
        let mut tops = self
            .manifest
            .iter_unordered()
            .map(|(p, _)| p.components().next());
        let first = tops.next()??;
        if tops.any(|c| c != Some(first)) {
            return None;
        }
        let top = PathBuf::from(first.as_os_str());
        let is_dir = self.manifest.get(&top).map(|e| e.kind) == Some(EntryKind::Dir);
        (is_dir && self.manifest.len() > 1).then_some(top)
    }

    fn unwrap_top(&mut self, top: &Path) -> Result<()> {
        let holder = self.root.join(UNWRAP_TMP);
        fsx::rename(&self.root.join(top), &holder)?;
        for child in fsx::read_dir(&holder)? {
            let child = child.map_err(|e| Error::io("list folder", &holder, e))?;
            fsx::rename(&child.path(), &self.root.join(child.file_name()))?;
        }
        fs::remove_dir(&holder).map_err(|e| Error::io("remove folder", &holder, e))?;
        let strip = |p: &Path| {
            p.strip_prefix(top)
                .ok()
                .filter(|r| !r.as_os_str().is_empty())
                .map(Path::to_path_buf)
        };
        let mut manifest = Manifest::default();
        for (path, entry) in self.manifest.iter_unordered() {
            if let Some(stripped) = strip(path) {
                manifest.insert(stripped, entry.clone());
            }
        }
        self.manifest = manifest;
        self.dir_modes = std::mem::take(&mut self.dir_modes)
            .into_iter()
            .filter_map(|(p, m)| strip(&p).map(|s| (s, m)))
            .collect();
        Ok(())
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
