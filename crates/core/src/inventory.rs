//! What releases of a context exist on disk, joined with what the history
//! knows of them. The filesystem is the truth for what exists.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use walkdir::WalkDir;

use crate::blocks;
use crate::error::{Error, Result};
use crate::fsx;
use crate::history::{History, ReleaseRecord};
use crate::layout::Layout;
use crate::release::{ReleaseKind, classify, stamp_instant};
use crate::switch::{Live, read_live};

#[derive(Debug, Clone)]
pub struct OnDisk {
    pub name: String,
    pub kind: ReleaseKind,
}

impl OnDisk {
    /// Seconds since the epoch for timestamped releases.
    pub fn stamp(&self) -> Option<i64> {
        match self.kind {
            ReleaseKind::Timestamped(stamp) => Some(stamp_instant(stamp).as_second()),
            ReleaseKind::Kept => None,
        }
    }
}

/// Release folders of this context, oldest timestamp first, kept ones last.
/// Folders that belong to another context with a longer name (`ROOT_api` when
/// `ROOT_api` is itself a context) are left out.
pub fn releases_on_disk(layout: &Layout) -> Result<Vec<OnDisk>> {
    let other_contexts = other_contexts(layout)?;
    let mut found = Vec::new();
    for entry in fsx::read_dir(layout.webroot())? {
        let entry = entry.map_err(|e| Error::io("list folder", layout.webroot(), e))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let Some(kind) = classify(layout.context(), &name) else {
            continue;
        };
        if other_contexts
            .iter()
            .any(|c| name == *c || name.starts_with(&format!("{c}_")))
        {
            continue;
        }
        let is_real_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_real_dir {
            found.push(OnDisk { name, kind });
        }
    }
    found.sort_by(|a, b| match (a.stamp(), b.stamp()) {
        (Some(x), Some(y)) => x.cmp(&y).then_with(|| a.name.cmp(&b.name)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.name.cmp(&b.name),
    });
    Ok(found)
}

fn other_contexts(layout: &Layout) -> Result<Vec<String>> {
    let root = layout.state_root();
    let prefix = format!("{}_", layout.context());
    let Some(_) = fsx::metadata_if_exists(&root)? else {
        return Ok(Vec::new());
    };
    Ok(fsx::read_dir(&root)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(&prefix))
        .collect())
}

/// One release as `zdeploy releases` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ReleaseInfo {
    pub name: String,
    pub live: bool,
    /// "timestamped", "kept", or "folder" (plain mode's real folder).
    pub kind: &'static str,
    pub state: String,
    pub created: Option<String>,
    pub source: Option<String>,
    #[serde(rename = "ref")]
    pub reference: Option<String>,
    pub commit: Option<String>,
    pub size: u64,
    /// Bytes no other release shares (what pruning it frees).
    pub own: u64,
    pub files: u64,
}

/// Every release on disk with what the history knows of it.
pub fn list(layout: &Layout, history: Option<&History>) -> Result<Vec<ReleaseInfo>> {
    let live = read_live(layout)?;
    let canary = crate::canary::current(layout)?;
    let mut infos = Vec::new();
    let record_of = |name: &str| -> Result<Option<ReleaseRecord>> {
        match history {
            Some(h) => h.release(name),
            None => Ok(None),
        }
    };
    for release in releases_on_disk(layout)? {
        let record = record_of(&release.name)?;
        let kind = match release.kind {
            ReleaseKind::Timestamped(_) => "timestamped",
            ReleaseKind::Kept => "kept",
        };
        let is_live = live == Live::Release(release.name.clone());
        let mut info = info(
            layout,
            &release.name,
            kind,
            is_live,
            record,
            release.stamp(),
        );
        // A staged release serving a share of clients.
        if canary.as_ref().is_some_and(|c| c.release == release.name) {
            info.state = "canary".into();
        }
        infos.push(info);
    }
    if live == Live::Folder {
        let record = record_of(layout.context())?;
        infos.push(info(layout, layout.context(), "folder", true, record, None));
    }
    Ok(infos)
}

fn info(
    layout: &Layout,
    name: &str,
    kind: &'static str,
    live: bool,
    record: Option<ReleaseRecord>,
    stamp: Option<i64>,
) -> ReleaseInfo {
    let usage = disk_usage(&layout.release_path(name));
    // A timestamped name is the creation time; otherwise the record knows.
    let created_ms = stamp
        .map(|s| s * 1000)
        .or(record.as_ref().map(|r| r.created_ms));
    let created = created_ms
        .and_then(|ms| jiff::Timestamp::from_second(ms.div_euclid(1000)).ok())
        .map(|t| t.to_string());
    ReleaseInfo {
        name: name.to_string(),
        live,
        kind,
        state: record
            .as_ref()
            .map(|r| r.state.as_str().to_string())
            .unwrap_or_else(|| "unrecorded".into()),
        created,
        source: record.as_ref().and_then(|r| r.source.clone()),
        reference: record.as_ref().and_then(|r| r.reference.clone()),
        commit: record.as_ref().and_then(|r| r.commit.clone()),
        size: usage.bytes,
        own: usage.own,
        files: usage.files,
    }
}

/// What the files under a folder take (not following symlinks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of every file.
    pub bytes: u64,
    /// Bytes of the files no other path links to: what deleting it frees.
    pub own: u64,
    pub files: u64,
}

pub fn disk_usage(path: &Path) -> Usage {
    let clones = blocks::can_share_blocks(path);
    files_under(path).fold(Usage::default(), |usage, (file, meta)| {
        let own = match meta.nlink() {
            1 if clones => blocks::extents(&file)
                .map(|extents| blocks::unshared_bytes(&extents, meta.size()))
                .unwrap_or(meta.size()),
            1 => meta.size(),
            _ => 0,
        };
        Usage {
            bytes: usage.bytes + meta.size(),
            own: usage.own + own,
            files: usage.files + 1,
        }
    })
}

fn files_under(path: &Path) -> impl Iterator<Item = (PathBuf, std::fs::Metadata)> {
    WalkDir::new(path)
        .follow_links(false)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.path().to_path_buf(), e.metadata().ok()?)))
        .filter(|(_, meta)| !meta.is_dir())
}

/// Bytes the releases of a context take together: a hardlinked file once
/// (each of its paths counts its share, size / links: exact when all its
/// links are in these releases, as zdeploy makes them), and blocks
/// reflinked files share once.
pub fn context_usage(layout: &Layout) -> Result<u64> {
    let mut seen_blocks = HashSet::new();
    let mut total = 0;
    let mut folders: Vec<_> = releases_on_disk(layout)?
        .into_iter()
        .map(|r| layout.release_path(&r.name))
        .collect();
    if read_live(layout)? == Live::Folder {
        folders.push(layout.context_path());
    }
    for folder in folders {
        let clones = blocks::can_share_blocks(&folder);
        for (file, meta) in files_under(&folder) {
            let mut size = meta.size() / meta.nlink().max(1);
            if clones && meta.nlink() == 1 {
                // Clones are their own inodes; only their extents say what
                // they share (remembered per extent, not per file).
                for extent in blocks::extents(&file).unwrap_or_default() {
                    if extent.shared && !seen_blocks.insert((meta.dev(), extent.physical)) {
                        size = size.saturating_sub(extent.length);
                    }
                }
            }
            total += size;
        }
    }
    Ok(total)
}
