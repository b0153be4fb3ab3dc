//! Thin wrappers over `std::fs` whose errors always carry the path, plus the few
//! filesystem primitives the engine needs (fsync of a folder, exchange rename).

use std::fs::{self, File, Metadata};
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Whether a failed open says the path is not there: it, or a folder on
/// its way, is missing (or is a file).
pub fn is_missing(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
    )
}

pub fn create_dir(path: &Path) -> Result<()> {
    fs::create_dir(path).map_err(|e| Error::io("create folder", path, e))
}

pub fn create_dir_all(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(|e| Error::io("create folder", path, e))
}

/// `symlink_metadata`, with "not found" as `None`.
pub fn metadata_if_exists(path: &Path) -> Result<Option<Metadata>> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("inspect", path, e)),
    }
}

pub fn read_link(path: &Path) -> Result<PathBuf> {
    fs::read_link(path).map_err(|e| Error::io("read symlink", path, e))
}

pub fn symlink(target: &Path, link: &Path) -> Result<()> {
    std::os::unix::fs::symlink(target, link).map_err(|e| Error::io("create symlink", link, e))
}

pub fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(|e| {
        Error::io(
            "rename",
            format!("{} to {}", from.display(), to.display()),
            e,
        )
    })
}

/// Swap two paths atomically (renameat2 RENAME_EXCHANGE): both exist before and after.
pub fn exchange(a: &Path, b: &Path) -> Result<()> {
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        a,
        rustix::fs::CWD,
        b,
        rustix::fs::RenameFlags::EXCHANGE,
    )
    .map_err(|e| {
        Error::io(
            "exchange",
            format!("{} with {}", a.display(), b.display()),
            e.into(),
        )
    })
}

pub fn remove_file(path: &Path) -> Result<()> {
    fs::remove_file(path).map_err(|e| Error::io("remove", path, e))
}

pub fn remove_dir_all(path: &Path) -> Result<()> {
    fs::remove_dir_all(path).map_err(|e| Error::io("remove folder", path, e))
}

pub fn read_dir(path: &Path) -> Result<fs::ReadDir> {
    fs::read_dir(path).map_err(|e| Error::io("list folder", path, e))
}

pub fn open(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| Error::io("open", path, e))
}

/// Make a folder's entries (renames, new names) durable.
pub fn fsync_dir(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io("fsync", path, e))
}

/// Put everything written on the filesystem that holds `path` on disk.
pub fn sync_filesystem(path: &Path) -> Result<()> {
    rustix::fs::syncfs(open(path)?).map_err(|e| Error::io("sync filesystem of", path, e.into()))
}

/// Whether a path component sequence is a safe relative path: no root, no `..`,
/// no `.`, not empty.
pub fn is_safe_relative(path: &Path) -> bool {
    use std::path::Component;
    !path.as_os_str().is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)))
}

/// `root/relative` when no part of `relative` under `root` is a symlink
/// (parts that do not exist yet are not links).
pub fn without_symlinks(root: &Path, relative: &Path) -> Option<std::path::PathBuf> {
    let mut full = root.to_path_buf();
    for component in relative.components() {
        full.push(component);
        if full
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink())
        {
            return None;
        }
    }
    Some(full)
}
