//! Building a release from the live one: a deployed file whose content the
//! new release needs unchanged is shared with the live release instead of
//! written again — reflinked where the filesystem can (btrfs, xfs), else
//! hardlinked, else copied in the kernel. Only a file the live release got
//! from its source and that nothing touched since (its mtime is older than
//! the live release) is shared: build outputs and files the app rewrote are
//! written fresh. User content is never shared. A hard link is the live
//! release's own inode: before any command may write where one is, it is
//! made a copy of its own ([`own_copies`]).

use std::cell::{Cell, RefCell};
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::manifest::{Entry, EntryKind, Manifest};

/// How shared files are made, from the cheapest the filesystem allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Copy-on-write clone: its own inode, no data written.
    Reflink,
    /// Same inode as the live release's file.
    Hardlink,
    /// A kernel-side copy (`copy_file_range`): its own inode and data.
    Copy,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Reflink => "reflink",
            Method::Hardlink => "hardlink",
            Method::Copy => "copy",
        }
    }
}

pub struct Sharer<'a> {
    live: PathBuf,
    /// The live release's manifest (`None`: files to share are named by
    /// the caller, never looked up).
    manifest: Option<&'a Manifest<'a>>,
    /// Files modified at or after this moment (ns) are not shared.
    made_ns: i128,
    method: Cell<Method>,
    shared: Cell<u64>,
    shared_bytes: Cell<u64>,
    /// The last folder of the live release whose chain of parents was
    /// checked to be real folders, not symlinks (the app could have swapped
    /// one for a link to elsewhere).
    real_dir: RefCell<Option<PathBuf>>,
}

impl<'a> Sharer<'a> {
    /// Share from the live release at `live`, described by `manifest`, whose
    /// files were all written before `made_ms`.
    pub fn new(live: &Path, manifest: Option<&'a Manifest<'a>>, made_ms: i64) -> Self {
        Sharer {
            live: live.to_path_buf(),
            manifest,
            made_ns: made_ms as i128 * 1_000_000,
            method: Cell::new(Method::Reflink),
            shared: Cell::new(0),
            shared_bytes: Cell::new(0),
            real_dir: RefCell::default(),
        }
    }

    pub fn method(&self) -> Method {
        self.method.get()
    }

    /// Files and bytes shared so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.shared.get(), self.shared_bytes.get())
    }

    /// The live release's entry for `path` if its file can be shared as a
    /// file of `mode` (with `digest`, when known): deployed, same mode and
    /// size, untouched since the live release was made.
    pub fn candidate(
        &self,
        path: &Path,
        mode: u32,
        digest: Option<&str>,
    ) -> Result<Option<(PathBuf, Entry)>> {
        let Some(entry) = self.manifest.map(|m| m.get(path)).transpose()?.flatten() else {
            return Ok(None);
        };
        let matches = entry.kind == EntryKind::File
            && entry.mode == mode
            && digest.is_none_or(|d| d == entry.digest);
        if !matches || !self.real_parents(path) {
            return Ok(None);
        }
        let full = self.live.join(path);
        let Ok(meta) = fs::symlink_metadata(&full) else {
            return Ok(None);
        };
        let mtime_ns = meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128;
        let untouched = meta.file_type().is_file()
            && meta.len() == entry.size
            && meta.mode() & 0o777 == mode
            && mtime_ns < self.made_ns;
        Ok(untouched.then_some((full, entry)))
    }

    /// Whether every folder above `path` in the live release is a real
    /// folder. Checked from the top down; the last folder checked vouches
    /// for its whole chain (paths arrive folder by folder).
    fn real_parents(&self, path: &Path) -> bool {
        let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) else {
            return true;
        };
        let mut known = self.real_dir.borrow_mut();
        let checked = |dir: &Path, known: &Option<PathBuf>| {
            known.as_deref().is_some_and(|k| k.starts_with(dir))
        };
        if checked(parent, &known) {
            return true;
        }
        let ancestors: Vec<&Path> = parent
            .ancestors()
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        for ancestor in ancestors.into_iter().rev() {
            if checked(ancestor, &known) {
                continue;
            }
            match fs::symlink_metadata(self.live.join(ancestor)) {
                Ok(meta) if meta.file_type().is_dir() => {}
                _ => return false,
            }
        }
        *known = Some(parent.to_path_buf());
        true
    }

    /// Make `to` (which must not exist) share `from`'s content. `Ok(false)`
    /// when it could not be shared and must be written.
    pub fn share(&self, from: &Path, to: &Path, size: u64) -> io::Result<bool> {
        loop {
            let done = match self.method.get() {
                Method::Reflink => match reflink(from, to) {
                    Ok(()) => true,
                    Err(e) if unsupported(&e) => {
                        let _ = fs::remove_file(to);
                        self.method.set(Method::Hardlink);
                        continue;
                    }
                    Err(e) => return Err(e),
                },
                Method::Hardlink => match fs::hard_link(from, to) {
                    Ok(()) => true,
                    // Too many links to one inode: write this one.
                    Err(e) if e.raw_os_error() == Some(rustix::io::Errno::MLINK.raw_os_error()) => {
                        false
                    }
                    Err(e) if unsupported(&e) => {
                        self.method.set(Method::Copy);
                        continue;
                    }
                    Err(e) => return Err(e),
                },
                Method::Copy => {
                    copy_preserving(from, to)?;
                    true
                }
            };
            if done {
                self.shared.set(self.shared.get() + 1);
                self.shared_bytes.set(self.shared_bytes.get() + size);
            }
            return Ok(done);
        }
    }
}

/// Ending of the temporary name a file's own copy is written under.
const OWN_COPY_SUFFIX: &str = ".zdeploy-own";

/// Make every deployed file of `release` at or under `paths` (relative;
/// the empty path is the whole release) that is a hard link a copy of its
/// own, with the same content, mode and mtime, renamed over the link: a
/// command about to write there can no longer change the live release.
/// User files carried by link stay links (they are one file for every
/// release by design); paths through a symlink lead out of the release.
/// Returns how many files were copied.
pub fn own_copies(release: &Path, paths: &[PathBuf], manifest: &Manifest<'_>) -> Result<u64> {
    let mut copied = 0;
    for path in paths {
        let Some(top) = crate::fsx::without_symlinks(release, path) else {
            continue;
        };
        let walk = walkdir::WalkDir::new(&top)
            .follow_links(false)
            .follow_root_links(false);
        for entry in walk {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e)
                    if e.io_error()
                        .is_some_and(|e| e.kind() == io::ErrorKind::NotFound) =>
                {
                    continue;
                }
                Err(e) => return Err(Error::io("read", &top, e.into())),
            };
            if !entry.file_type().is_file() {
                continue;
            }
            let full = entry.path();
            let meta = entry
                .metadata()
                .map_err(|e| Error::io("inspect", full, e.into()))?;
            let relative = full
                .strip_prefix(release)
                .expect("walked under the release");
            if meta.nlink() < 2 || !manifest.contains(relative)? {
                continue;
            }
            let mut tmp = full.as_os_str().to_owned();
            tmp.push(OWN_COPY_SUFFIX);
            let tmp = PathBuf::from(tmp);
            let _ = fs::remove_file(&tmp);
            copy_preserving(full, &tmp).map_err(|e| Error::io("copy", full, e))?;
            fs::rename(&tmp, full).map_err(|e| {
                let _ = fs::remove_file(&tmp);
                Error::io("replace", full, e)
            })?;
            copied += 1;
        }
    }
    Ok(copied)
}

/// The filesystem cannot clone: fall back, do not fail.
fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == rustix::io::Errno::OPNOTSUPP.raw_os_error()
            || code == rustix::io::Errno::XDEV.raw_os_error()
            || code == rustix::io::Errno::INVAL.raw_os_error()
            || code == rustix::io::Errno::NOTTY.raw_os_error()
            || code == rustix::io::Errno::PERM.raw_os_error()
    )
}

fn open_new(to: &Path, mode: u32) -> io::Result<fs::File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(to)
}

fn open_source(from: &Path) -> io::Result<fs::File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(from)
}

fn reflink(from: &Path, to: &Path) -> io::Result<()> {
    let source = open_source(from)?;
    let meta = source.metadata()?;
    let target = open_new(to, meta.mode() & 0o777)?;
    rustix::fs::ioctl_ficlone(&target, &source)?;
    target.set_modified(meta.modified()?)?;
    Ok(())
}

/// A copy with the same mode and mtime (so it stays shareable next time).
fn copy_preserving(from: &Path, to: &Path) -> io::Result<()> {
    let mut source = open_source(from)?;
    let meta = source.metadata()?;
    let mut target = open_new(to, meta.mode() & 0o777)?;
    io::copy(&mut source, &mut target)?;
    target.set_modified(meta.modified()?)?;
    Ok(())
}
