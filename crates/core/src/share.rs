//! Building a release from the live one: a deployed file whose content the
//! new release needs unchanged is shared with the live release instead of
//! written again — reflinked where the filesystem can (btrfs, xfs), else
//! hardlinked, else copied in the kernel. Only a file the live release got
//! from its source and that nothing touched since (its mtime is older than
//! the live release) is shared: build outputs and files the app rewrote are
//! written fresh. User content is never shared.

use std::cell::{Cell, RefCell};
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::Result;
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
    /// Hardlinks are only safe when nothing writes into the new release
    /// before it goes live: no build steps.
    allow_hardlink: bool,
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
    pub fn new(
        live: &Path,
        manifest: Option<&'a Manifest<'a>>,
        made_ms: i64,
        allow_hardlink: bool,
    ) -> Self {
        Sharer {
            live: live.to_path_buf(),
            manifest,
            made_ns: made_ms as i128 * 1_000_000,
            method: Cell::new(Method::Reflink),
            allow_hardlink,
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
                        let next = if self.allow_hardlink {
                            Method::Hardlink
                        } else {
                            Method::Copy
                        };
                        self.method.set(next);
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
