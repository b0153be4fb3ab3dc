//! The user files a release holds, listed as the carry places them into it
//! (no walk of its own): how many, one digest of their paths, and the paths.
//! Hosts of a fleet compare digests; where they differ, the lists name the
//! uploads one host has and another lacks.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::manifest::hex;

/// What the last carry into a release found there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserContentSummary {
    pub release: String,
    pub files: u64,
    /// sha256 of the paths in the order the carry walks them (sorted per
    /// folder): equal digests, equal sets of paths.
    pub digest: String,
    pub at_ms: i64,
}

/// A list being written while a carry fills a new release.
pub struct UserContentList {
    release: String,
    out: RefCell<BufWriter<File>>,
    hasher: RefCell<Sha256>,
    files: Cell<u64>,
    partial: PathBuf,
}

impl UserContentList {
    pub fn create(layout: &Layout, release: &str) -> Result<Self> {
        let partial = partial_path(&layout.user_content_list());
        let file = File::create(&partial).map_err(|e| Error::io("create", &partial, e))?;
        Ok(UserContentList {
            release: release.to_string(),
            out: RefCell::new(BufWriter::new(file)),
            hasher: RefCell::new(Sha256::new()),
            files: Cell::new(0),
            partial,
        })
    }

    /// A user file placed at `path` (relative to the release).
    pub(crate) fn add(&self, path: &Path) -> Result<()> {
        let bytes = path.as_os_str().as_bytes();
        self.hasher.borrow_mut().update(bytes);
        self.hasher.borrow_mut().update([0]);
        self.files.set(self.files.get() + 1);
        let mut out = self.out.borrow_mut();
        out.write_all(bytes)
            .and_then(|_| out.write_all(b"\0"))
            .map_err(|e| Error::io("write", &self.partial, e))
    }

    /// Put the list and its summary in place of the last ones.
    pub fn finish(self, layout: &Layout) -> Result<UserContentSummary> {
        let summary = UserContentSummary {
            release: self.release,
            files: self.files.get(),
            digest: hex(&self.hasher.into_inner().finalize()),
            at_ms: crate::history::now_ms(),
        };
        self.out
            .into_inner()
            .into_inner()
            .map_err(|e| Error::io("write", &self.partial, e.into_error()))?;
        let list = layout.user_content_list();
        std::fs::rename(&self.partial, &list).map_err(|e| Error::io("replace", &list, e))?;
        let path = layout.user_content_summary();
        let partial = partial_path(&path);
        let text = serde_json::to_vec(&summary).expect("a summary serializes");
        std::fs::write(&partial, text).map_err(|e| Error::io("write", &partial, e))?;
        std::fs::rename(&partial, &path).map_err(|e| Error::io("replace", &path, e))?;
        Ok(summary)
    }
}

fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// The summary of the last carry into `release`, if it is the last listed.
pub fn summary_of(layout: &Layout, release: &str) -> Option<UserContentSummary> {
    let text = std::fs::read(layout.user_content_summary()).ok()?;
    serde_json::from_slice::<UserContentSummary>(&text)
        .ok()
        .filter(|s| s.release == release)
}

/// The paths of a list as written (NUL-ended).
pub fn parse_list(bytes: &[u8]) -> Vec<PathBuf> {
    bytes
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| PathBuf::from(std::ffi::OsString::from_vec(p.to_vec())))
        .collect()
}
