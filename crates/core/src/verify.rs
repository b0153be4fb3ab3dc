//! Whether a release still holds what it was deployed with: every folder,
//! file and symlink of its manifest, with the recorded kind, mode, size and
//! content. Files that are not in the manifest are user content and ignored.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::Result;
use crate::manifest::{Entry, EntryKind, Manifest, digest_file};

/// One way a release differs from its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    pub path: PathBuf,
    pub problem: String,
}

/// Every difference between the release at `dir` and `manifest`, in path order.
pub fn verify(dir: &Path, manifest: &Manifest<'_>) -> Result<Vec<Mismatch>> {
    let mut mismatches = Vec::new();
    for item in manifest.entries() {
        let (path, entry) = item?;
        mismatches.extend(check(dir, path, &entry));
    }
    Ok(mismatches)
}

/// How the entry at `path` differs from what was deployed, if it does.
fn check(dir: &Path, path: PathBuf, entry: &Entry) -> Option<Mismatch> {
    let problem = |problem: String| {
        Some(Mismatch {
            path: path.clone(),
            problem,
        })
    };
    let full = dir.join(&path);
    let meta = match full.symlink_metadata() {
        Ok(meta) => meta,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return problem(format!("missing (a deployed {})", entry.kind.as_str()));
        }
        Err(error) => return problem(format!("cannot read: {error}")),
    };
    let found = EntryKind::of(meta.file_type());
    if found != Some(entry.kind) {
        let what = found.map_or("special file", EntryKind::as_str);
        return problem(format!(
            "is a {what}, was deployed as a {}",
            entry.kind.as_str()
        ));
    }
    match entry.kind {
        EntryKind::Dir => None,
        EntryKind::Symlink => match std::fs::read_link(&full) {
            Ok(target) if target.as_os_str().as_encoded_bytes() == entry.digest.as_bytes() => None,
            Ok(target) => problem(format!(
                "points to '{}', was deployed pointing to '{}'",
                target.display(),
                entry.digest
            )),
            Err(error) => problem(format!("cannot read link: {error}")),
        },
        EntryKind::File => {
            let mode = meta.permissions().mode() & 0o777;
            if mode != entry.mode {
                return problem(format!("mode {mode:o}, was deployed {:o}", entry.mode));
            }
            if meta.size() != entry.size {
                return problem(format!(
                    "{} bytes, was deployed with {}",
                    meta.size(),
                    entry.size
                ));
            }
            if entry.digest.is_empty() {
                return None;
            }
            match digest_file(&full) {
                Ok((digest, _)) if digest == entry.digest => None,
                Ok(_) => problem("content changed since it was deployed".into()),
                Err(error) => problem(format!("cannot read: {error}")),
            }
        }
    }
}
