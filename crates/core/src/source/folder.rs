//! Folder sources: a local folder copied into the release (its top-level `.git`
//! left out), through the same checks as archives.

use std::path::Path;
use std::time::SystemTime;

use walkdir::WalkDir;

use crate::error::{Error, Result};
use crate::fsx;
use crate::manifest::Manifest;
use crate::share::Sharer;
use crate::source::extract::{Extractor, Limits, ProgressFn};

pub fn copy(
    source: &Path,
    root: &Path,
    limits: Limits,
    manifest: &Manifest<'_>,
    sharer: Option<&Sharer>,
    progress: &mut ProgressFn<'_>,
) -> Result<()> {
    let origin = format!("folder {}", source.display());
    let mut extractor = Extractor::new(root, &origin, limits, manifest, progress);
    if let Some(sharer) = sharer {
        extractor.share_from(sharer);
    }
    let walk = WalkDir::new(source)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| !(e.depth() == 1 && e.file_name() == ".git"));
    for entry in walk {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(source).to_path_buf();
            Error::io("read", path, e.into())
        })?;
        let relative = entry
            .path()
            .strip_prefix(source)
            .expect("walkdir yields paths under its root");
        let meta = entry
            .metadata()
            .map_err(|e| Error::io("inspect", entry.path(), e.into()))?;
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode();
        let file_type = entry.file_type();
        if file_type.is_dir() {
            extractor.dir(relative, mode)?;
        } else if file_type.is_file() {
            let mut file = fsx::open(entry.path())?;
            let mtime: Option<SystemTime> = meta.modified().ok();
            extractor.file(relative, mode, mtime, &mut file)?;
        } else if file_type.is_symlink() {
            let target = fsx::read_link(entry.path())?;
            extractor.symlink(relative, &target)?;
        } else {
            extractor.special(relative, "device, pipe or socket")?;
        }
    }
    extractor.finish(false)
}
