//! Shared paths: declared paths that live once under the state dir and are
//! symlinked into every release instead of being carried.

use std::path::Path;

use crate::carry::merge_tree;
use crate::error::{Error, Result};
use crate::fsx;
use crate::layout::Layout;
use crate::manifest::Manifest;

/// Check a shared path from the config: relative, inside the release.
pub fn validate_shared_path(path: &Path) -> Result<()> {
    if fsx::is_safe_relative(path) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid shared path '{}': give a relative path inside the app such as data/saves",
            path.display()
        )))
    }
}

/// Make `release/relative` a link to the shared store. The store is seeded
/// from the live release's real content there (merged in if it already
/// exists), else from the release's deployed content, else created empty.
/// Returns a line for the log when deployed files were replaced by the link.
pub fn link_shared(
    layout: &Layout,
    release: &Path,
    live: Option<&Path>,
    relative: &Path,
    file: bool,
    manifest: &Manifest<'_>,
) -> Result<Option<String>> {
    let store = layout.shared_path(relative);
    let in_release = release.join(relative);
    let live_real = live.map(|l| l.join(relative)).and_then(|p| {
        std::fs::symlink_metadata(&p)
            .ok()
            .filter(|m| !m.file_type().is_symlink())
            .map(|m| (p, m))
    });
    if let Some(parent) = store.parent() {
        fsx::create_dir_all(parent)?;
    }
    let store_exists = fsx::metadata_if_exists(&store)?.is_some();
    match live_real {
        Some((path, meta)) if meta.is_dir() => {
            merge_tree(&path, &store)?;
        }
        Some((path, _)) if !store_exists => {
            std::fs::copy(&path, &store)
                .map_err(|e| Error::io("copy shared file to", &store, e))?;
        }
        _ => {}
    }
    let link_target = layout.shared_link_target(relative);
    if std::fs::read_link(&in_release).is_ok_and(|t| t == link_target) {
        return Ok(None);
    }
    let mut note = None;
    if let Some(meta) = fsx::metadata_if_exists(&in_release)? {
        if fsx::metadata_if_exists(&store)?.is_none() {
            fsx::rename(&in_release, &store)?;
        } else if meta.is_dir() {
            fsx::remove_dir_all(&in_release)?;
        } else {
            fsx::remove_file(&in_release)?;
        }
        if manifest.contains(relative)? {
            note = Some(format!(
                "shared path {}: the deployed files there are replaced by the link to the shared copy",
                relative.display()
            ));
        }
        manifest.remove_tree(relative)?;
    }
    // A shared file nobody has yet (a .env, a LocalSettings.php) stays a
    // link to where it will be: the app or the operator writes it there.
    if !file && fsx::metadata_if_exists(&store)?.is_none() {
        fsx::create_dir_all(&store)?;
    }
    if let Some(parent) = in_release.parent() {
        fsx::create_dir_all(parent)?;
    }
    fsx::symlink(&link_target, &in_release)?;
    Ok(note)
}
