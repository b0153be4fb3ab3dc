//! The atomic switch of `<context>` to a release: a symlink built beside it and
//! renamed over it, then an fsync of the webroot. When `<context>` is still a
//! real folder, renameat2(RENAME_EXCHANGE) swaps it for the symlink, so there
//! is never an instant without a complete app.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::failpoint;
use crate::fsx;
use crate::layout::Layout;

/// What `<context>` is right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Live {
    /// Nothing deployed yet.
    Nothing,
    /// A symlink to the release with this name.
    Release(String),
    /// A real folder (plain mode, or a site deployed by other means).
    Folder,
}

impl Live {
    /// The name the history records the live release under: the release, or
    /// the context itself for a real folder (plain mode).
    pub fn record_name<'a>(&'a self, layout: &'a Layout) -> Option<&'a str> {
        match self {
            Live::Release(name) => Some(name),
            Live::Folder => Some(layout.context()),
            Live::Nothing => None,
        }
    }

    /// Where the live files are.
    pub fn dir(&self, layout: &Layout) -> Option<PathBuf> {
        match self {
            Live::Release(name) => Some(layout.release_path(name)),
            Live::Folder => Some(layout.context_path()),
            Live::Nothing => None,
        }
    }
}

pub fn read_live(layout: &Layout) -> Result<Live> {
    let path = layout.context_path();
    let Some(meta) = fsx::metadata_if_exists(&path)? else {
        return Ok(Live::Nothing);
    };
    if meta.file_type().is_symlink() {
        let target = fsx::read_link(&path)?;
        let name = release_name_of_target(&target).ok_or_else(|| {
            Error::Webroot(format!(
                "{} is a symlink to {}, which is not a release beside it; zdeploy will not touch it",
                path.display(),
                target.display()
            ))
        })?;
        Ok(Live::Release(name))
    } else if meta.is_dir() {
        Ok(Live::Folder)
    } else {
        Err(Error::Webroot(format!(
            "{} is a file, not a folder or a symlink to a release",
            path.display()
        )))
    }
}

/// A symlink target names a release when it is one plain name (relative, beside the context).
fn release_name_of_target(target: &Path) -> Option<String> {
    let mut components = target.components();
    match (components.next(), components.next()) {
        (Some(std::path::Component::Normal(name)), None) => name.to_str().map(str::to_string),
        _ => None,
    }
}

/// Point `<context>` at `release` in one rename. If `<context>` is a real
/// folder it is exchanged out and moved to `displaced_name` (which must be
/// given then); returns whether that happened.
pub fn switch_to(layout: &Layout, release: &str, displaced_name: Option<&str>) -> Result<bool> {
    let context = layout.context_path();
    let tmp = layout.switch_tmp_path();
    clear_tmp(&tmp)?;
    fsx::symlink(Path::new(release), &tmp)?;
    failpoint::hit("switch.linked");
    let displaced = match fsx::metadata_if_exists(&context)? {
        Some(meta) if meta.is_dir() && !meta.file_type().is_symlink() => {
            let displaced_name = displaced_name
                .ok_or_else(|| Error::Webroot(format!("{} is a real folder", context.display())))?;
            fsx::exchange(&tmp, &context)?;
            failpoint::hit("switch.exchanged");
            fsx::rename(&tmp, &layout.release_path(displaced_name))?;
            true
        }
        _ => {
            fsx::rename(&tmp, &context)?;
            false
        }
    };
    failpoint::hit("switch.renamed");
    fsx::fsync_dir(layout.webroot())?;
    Ok(displaced)
}

/// Remove a leftover switch symlink; a leftover *folder* there is a displaced
/// site that a killed run did not finish moving, so it is never deleted here.
fn clear_tmp(tmp: &Path) -> Result<()> {
    match fsx::metadata_if_exists(tmp)? {
        None => Ok(()),
        Some(meta) if meta.file_type().is_symlink() => fsx::remove_file(tmp),
        Some(_) => Err(Error::Webroot(format!(
            "{} exists and is not a symlink; it may hold a site displaced by an interrupted run: move it aside and retry",
            tmp.display()
        ))),
    }
}
