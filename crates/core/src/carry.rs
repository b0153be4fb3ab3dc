//! Carrying user content (files the running app created: uploads, saves) from
//! one release into another. The decision per entry is a pure function; the
//! walk applies it, writing each file under a temporary name and renaming it
//! into place so a reader never sees half a file.

use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use walkdir::WalkDir;

use crate::error::{Error, Result};
use crate::manifest::{EntryKind, Manifest};

/// Ending of the temporary name a file is carried under before its rename.
const CARRY_TMP_SUFFIX: &str = ".zdeploy-carry";

/// An entry of the release carried from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceEntry {
    pub kind: EntryKind,
    /// A deployed file of that release (in its manifest), not user content.
    pub deployed: bool,
    /// Changed at or after the `since` mark (always true without a mark).
    pub recent: bool,
    pub mtime_ns: i128,
    pub size: u64,
}

/// The same path in the release carried to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetEntry {
    Missing,
    /// A deployed file of the target (or, when the target has no manifest, any
    /// existing entry): it wins over user content.
    Deployed(EntryKind),
    /// User content already in the target.
    User {
        kind: EntryKind,
        mtime_ns: i128,
        size: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing to do; for a folder, don't look inside.
    Skip,
    /// A folder present on both sides: look inside.
    Descend,
    /// Create it in the target (a folder: then look inside).
    Copy,
    /// The target's user copy is older: overwrite it.
    Replace,
    /// User content hidden by a deployed file at the same path: logged, not copied.
    Shadowed,
}

/// What to do with one entry. Folders are always explored because user files
/// live inside deployed folders (e.g. `uploads/` with a `.gitkeep`).
pub fn decide(source: SourceEntry, target: TargetEntry) -> Action {
    use Action::*;
    use EntryKind::Dir;
    if source.kind == Dir {
        return match target {
            TargetEntry::Missing => Copy,
            TargetEntry::Deployed(Dir) | TargetEntry::User { kind: Dir, .. } => Descend,
            TargetEntry::Deployed(_) if source.deployed => Skip,
            TargetEntry::Deployed(_) => Shadowed,
            TargetEntry::User { .. } => Skip,
        };
    }
    if source.deployed || !source.recent {
        return Skip;
    }
    match target {
        TargetEntry::Missing => Copy,
        TargetEntry::Deployed(_) => Shadowed,
        TargetEntry::User {
            kind,
            mtime_ns,
            size,
        } if kind == source.kind => {
            let newer =
                source.mtime_ns > mtime_ns || (source.mtime_ns == mtime_ns && source.size != size);
            if newer { Replace } else { Skip }
        }
        TargetEntry::User { .. } => Skip,
    }
}

/// What of a release is deployed; the rest is user content.
#[derive(Clone, Copy)]
pub enum Deployed<'a> {
    /// What its manifest lists.
    Listed(&'a Manifest<'a>),
    /// Whatever exists in it (a release the history has no manifest of).
    Everything,
    /// Nothing (a site deployed by other means; a shared store).
    Nothing,
}

impl<'a> Deployed<'a> {
    /// `Listed` when there is a manifest, else `otherwise`.
    pub fn listed_or(manifest: Option<&'a Manifest<'a>>, otherwise: Deployed<'a>) -> Self {
        manifest.map_or(otherwise, Deployed::Listed)
    }

    /// As one walk reads it: a manifest with a window of its own.
    fn for_walk(&self) -> Result<Walking<'a>> {
        Ok(match self {
            Deployed::Listed(manifest) => Walking::Listed(manifest.reread()?),
            Deployed::Everything => Walking::Everything,
            Deployed::Nothing => Walking::Nothing,
        })
    }
}

/// `Deployed`, read by one walk.
enum Walking<'a> {
    Listed(Manifest<'a>),
    Everything,
    Nothing,
}

impl Walking<'_> {
    /// Whether `path` (of `kind`, when known) is deployed.
    fn has(&self, path: &Path, kind: Option<EntryKind>) -> Result<bool> {
        Ok(match self {
            Walking::Listed(manifest) => manifest
                .kind(path)?
                .is_some_and(|found| kind.is_none_or(|k| k == found)),
            Walking::Everything => true,
            Walking::Nothing => false,
        })
    }
}

/// Where to carry from and to.
pub struct Carry<'a> {
    pub from: &'a Path,
    pub from_deployed: Deployed<'a>,
    pub to: &'a Path,
    pub to_deployed: Deployed<'a>,
    /// Shared paths: symlinked, never carried.
    pub skip: &'a [PathBuf],
    /// Only files whose ctime is at or after this (ns since the epoch).
    pub since_ns: Option<i128>,
}

#[derive(Debug, Default, Clone)]
pub struct CarryReport {
    pub copied: u64,
    pub replaced: u64,
    pub bytes: u64,
    pub shadowed: Vec<PathBuf>,
}

impl CarryReport {
    pub fn files(&self) -> u64 {
        self.copied + self.replaced
    }
}

fn mtime_ns(meta: &Metadata) -> i128 {
    meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128
}

fn ctime_ns(meta: &Metadata) -> i128 {
    meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128
}

impl Carry<'_> {
    pub fn run(&self, progress: &mut dyn FnMut(u64)) -> Result<CarryReport> {
        let from_deployed = self.from_deployed.for_walk()?;
        let to_deployed = self.to_deployed.for_walk()?;
        let mut report = CarryReport::default();
        let mut seen = 0u64;
        // In name order, so the manifests are read forward as the walk goes.
        let mut walk = WalkDir::new(self.from)
            .min_depth(1)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter();
        while let Some(item) = walk.next() {
            let entry = match item {
                Ok(entry) => entry,
                // Deleted by the app while we walk: nothing left to carry.
                Err(e)
                    if e.io_error()
                        .is_some_and(|io| io.kind() == io::ErrorKind::NotFound) =>
                {
                    continue;
                }
                Err(e) => {
                    let path = e.path().unwrap_or(self.from).to_path_buf();
                    return Err(Error::io("read", path, e.into()));
                }
            };
            seen += 1;
            if seen.is_multiple_of(256) {
                progress(seen);
            }
            let relative = entry
                .path()
                .strip_prefix(self.from)
                .expect("under root")
                .to_path_buf();
            let leftover_tmp = relative.to_string_lossy().ends_with(CARRY_TMP_SUFFIX);
            if leftover_tmp || self.skip.iter().any(|s| relative.starts_with(s)) {
                if entry.file_type().is_dir() {
                    walk.skip_current_dir();
                }
                continue;
            }
            let Some(kind) = EntryKind::of(entry.file_type()) else {
                continue;
            };
            let deployed = from_deployed.has(&relative, Some(kind))?;
            // A deployed file is never carried: no need to look at it (most
            // of a release is deployed files, so this keeps the walk cheap).
            if deployed && kind != EntryKind::Dir {
                continue;
            }
            let Ok(meta) = fs::symlink_metadata(entry.path()) else {
                continue;
            };
            if EntryKind::of(meta.file_type()) != Some(kind) {
                continue; // replaced while we walk: the next carry sees it
            }
            let source = SourceEntry {
                kind,
                deployed,
                recent: self.since_ns.is_none_or(|since| ctime_ns(&meta) >= since),
                mtime_ns: mtime_ns(&meta),
                size: meta.len(),
            };
            let target_path = self.to.join(&relative);
            let target = self.target_entry(&relative, &target_path, &to_deployed)?;
            match decide(source, target) {
                Action::Skip if kind == EntryKind::Dir => walk.skip_current_dir(),
                Action::Skip | Action::Descend => {}
                Action::Shadowed => {
                    if kind == EntryKind::Dir {
                        walk.skip_current_dir();
                    }
                    report.shadowed.push(relative);
                }
                Action::Copy | Action::Replace if kind == EntryKind::Dir => {
                    match fs::create_dir(&target_path) {
                        Ok(()) => {
                            keep_owner(&target_path, &meta)
                                .map_err(|e| Error::io("keep the owner of", &target_path, e))?;
                            let _ = fs::set_permissions(
                                &target_path,
                                fs::Permissions::from_mode(meta.permissions().mode()),
                            );
                        }
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(Error::io("create folder", &target_path, e)),
                    }
                }
                action => {
                    if let Some(bytes) = copy_entry(entry.path(), &target_path, &meta)? {
                        report.bytes += bytes;
                        if action == Action::Replace {
                            report.replaced += 1;
                        } else {
                            report.copied += 1;
                        }
                    }
                }
            }
        }
        progress(seen);
        Ok(report)
    }

    fn target_entry(
        &self,
        relative: &Path,
        target_path: &Path,
        to_deployed: &Walking<'_>,
    ) -> Result<TargetEntry> {
        let meta = match fs::symlink_metadata(target_path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(TargetEntry::Missing),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error()) => {
                // A parent is a file in the target: treat as hidden by it.
                return Ok(TargetEntry::Deployed(EntryKind::File));
            }
            Err(e) => return Err(Error::io("inspect", target_path, e)),
        };
        let kind = EntryKind::of(meta.file_type()).unwrap_or(EntryKind::File);
        let deployed =
            self.skip.iter().any(|s| relative.starts_with(s)) || to_deployed.has(relative, None)?;
        Ok(if deployed {
            TargetEntry::Deployed(kind)
        } else {
            TargetEntry::User {
                kind,
                mtime_ns: mtime_ns(&meta),
                size: meta.len(),
            }
        })
    }
}

/// Copy one file or symlink to `to` via a temporary name and a rename.
/// `None` when the source vanished meanwhile.
fn copy_entry(from: &Path, to: &Path, meta: &Metadata) -> Result<Option<u64>> {
    let name = to
        .file_name()
        .expect("a carried path has a name")
        .to_string_lossy();
    let tmp = to.with_file_name(format!(".{name}{CARRY_TMP_SUFFIX}"));
    let copied = if meta.file_type().is_symlink() {
        fs::read_link(from).and_then(|target| {
            let _ = fs::remove_file(&tmp);
            std::os::unix::fs::symlink(target, &tmp)?;
            keep_owner(&tmp, meta).map(|_| 0)
        })
    } else {
        copy_file(from, &tmp, meta)
    };
    match copied {
        Ok(bytes) => {
            fs::rename(&tmp, to).map_err(|e| {
                let _ = fs::remove_file(&tmp);
                Error::io("write", to, e)
            })?;
            Ok(Some(bytes))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound && !from.exists() => {
            let _ = fs::remove_file(&tmp);
            Ok(None)
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(Error::io("copy user file to", to, e))
        }
    }
}

/// Copy content, permissions and mtime with one open on each side (the
/// kernel copies the bytes: copy_file_range, a reflink where supported).
fn copy_file(from: &Path, to: &Path, meta: &Metadata) -> io::Result<u64> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut source = fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(from)?;
    let create = || {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(to)
    };
    let mut target = match create() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // A temporary left by a killed run.
            fs::remove_file(to)?;
            create()?
        }
        other => other?,
    };
    let bytes = io::copy(&mut source, &mut target)?;
    // Before the mode: a change of owner clears setuid and setgid bits.
    if rustix::process::geteuid().is_root() {
        use std::os::unix::fs::MetadataExt;
        rustix::fs::fchown(
            &target,
            Some(rustix::fs::Uid::from_raw(meta.uid())),
            Some(rustix::fs::Gid::from_raw(meta.gid())),
        )?;
    }
    target.set_permissions(fs::Permissions::from_mode(
        meta.permissions().mode() & 0o7777,
    ))?;
    target.set_modified(meta.modified()?)?;
    Ok(bytes)
}

/// Give a copy the owner and group of the user file it copies (the app's
/// user, usually, which must still be able to change it). Only root may;
/// anyone else copies only files it could write itself anyway.
fn keep_owner(copy: &Path, original: &Metadata) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if rustix::process::geteuid().is_root() {
        let current = copy.symlink_metadata()?;
        crate::privilege::set_owner(copy, &current, Some(original.uid()), Some(original.gid()))?;
    }
    Ok(())
}

/// Copy everything under `from` into `to` (created if missing), keeping what
/// is already there unless `from` has a newer copy.
pub fn merge_tree(from: &Path, to: &Path) -> Result<CarryReport> {
    crate::fsx::create_dir_all(to)?;
    Carry {
        from,
        from_deployed: Deployed::Nothing,
        to,
        to_deployed: Deployed::Nothing,
        skip: &[],
        since_ns: None,
    }
    .run(&mut |_| {})
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use EntryKind::*;

    fn src(kind: EntryKind, deployed: bool, recent: bool, mtime: i128, size: u64) -> SourceEntry {
        SourceEntry {
            kind,
            deployed,
            recent,
            mtime_ns: mtime,
            size,
        }
    }

    #[test]
    fn decision_table() {
        let user = |kind, mtime, size| TargetEntry::User {
            kind,
            mtime_ns: mtime,
            size,
        };
        let cases = [
            // user file, nothing in the target: copy
            (src(File, false, true, 10, 1), TargetEntry::Missing, Copy),
            // deployed file of the old release: never carried
            (src(File, true, true, 10, 1), TargetEntry::Missing, Skip),
            // user file under a deployed file of the new release: deployed wins
            (
                src(File, false, true, 10, 1),
                TargetEntry::Deployed(File),
                Shadowed,
            ),
            // user file already carried, unchanged: nothing
            (src(File, false, true, 10, 1), user(File, 10, 1), Skip),
            // user file rewritten since: replace
            (src(File, false, true, 20, 1), user(File, 10, 1), Replace),
            // same mtime, different size (a write within one clock tick): replace
            (src(File, false, true, 10, 2), user(File, 10, 1), Replace),
            // the target's copy is newer (written after the switch): keep it
            (src(File, false, true, 10, 1), user(File, 20, 1), Skip),
            // not changed since the last full carry: skip
            (src(File, false, false, 10, 1), TargetEntry::Missing, Skip),
            // folders are always explored
            (
                src(Dir, true, false, 10, 0),
                TargetEntry::Deployed(Dir),
                Descend,
            ),
            (src(Dir, false, false, 10, 0), TargetEntry::Missing, Copy),
            (
                src(Dir, false, true, 10, 0),
                TargetEntry::Deployed(File),
                Shadowed,
            ),
            (
                src(Dir, true, true, 10, 0),
                TargetEntry::Deployed(File),
                Skip,
            ),
            // a user symlink is carried like a file
            (src(Symlink, false, true, 10, 3), TargetEntry::Missing, Copy),
            // kinds differ between user entries: leave the target alone
            (src(File, false, true, 20, 1), user(Dir, 10, 0), Skip),
        ];
        for (i, (source, target, expected)) in cases.into_iter().enumerate() {
            assert_eq!(
                decide(source, target),
                expected,
                "case {i}: {source:?} -> {target:?}"
            );
        }
    }
}
