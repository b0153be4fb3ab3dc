//! Dependency folders reused from the live release: `vendor/` keyed by
//! `composer.lock`, `node_modules/` by `package-lock.json`. When the key
//! file's content is unchanged, the folder the live release's build made is
//! shared into the new release (each file checked against its recorded
//! digest first), and the build steps that only produce it are skipped.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::manifest::{Entry, EntryKind, Manifest, digest_file};
use crate::session::Session;
use crate::share::Sharer;

/// `reuse = [{ path = "vendor", key = "composer.lock" }]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reuse {
    pub path: PathBuf,
    pub key: PathBuf,
}

/// The live release as reuse sees it.
pub struct LiveTree<'a> {
    pub dir: &'a Path,
    pub manifest: &'a Manifest<'a>,
    pub made_ms: i64,
}

/// Why `rule` cannot reuse the live release's folder, or `None` if it can.
fn refusal(rule: &Reuse, live: &LiveTree<'_>, new: &Manifest<'_>) -> Result<Option<String>> {
    let (path, key) = (rule.path.display(), rule.key.display());
    let Some(new_key) = new.get(&rule.key)?.filter(|e| e.kind == EntryKind::File) else {
        return Ok(Some(format!("the new release has no {key}")));
    };
    match live.manifest.get(&rule.key)? {
        Some(old) if old.kind == EntryKind::File && old.digest == new_key.digest => {}
        Some(_) => return Ok(Some(format!("{key} changed"))),
        None => return Ok(Some(format!("the live release has no {key}"))),
    }
    if new.contains(&rule.path)? {
        return Ok(Some(format!("the source itself provides {path}")));
    }
    Ok(match live.manifest.get(&rule.path)? {
        Some(entry) if entry.kind == EntryKind::Dir => None,
        _ => Some(format!("the live release has no {path} to reuse")),
    })
}

/// Share each reusable folder into `release`, adding its entries to
/// `manifest`; returns the folders reused.
pub fn reuse_folders(
    session: &Session<'_>,
    rules: &[Reuse],
    live: &LiveTree<'_>,
    release: &Path,
    manifest: &Manifest<'_>,
) -> Result<Vec<PathBuf>> {
    let mut reused = Vec::new();
    for rule in rules {
        // Several keys may name one folder (package-lock.json, yarn.lock):
        // the first that allows it wins.
        if reused.contains(&rule.path) {
            continue;
        }
        if let Some(why) = refusal(rule, live, manifest)? {
            session.info(&format!("reuse: building {} ({why})", rule.path.display()));
            continue;
        }
        // Files to share are named one by one here, not looked up.
        let sharer = Sharer::new(live.dir, None, live.made_ms);
        // What is shared is listed apart first: a folder that cannot be
        // reused after all leaves the new manifest untouched.
        let shared = Manifest::create(&session.history, &format!("{}/reuse", manifest.release()))?;
        let mut created = Vec::new();
        match share_folder(rule, live, release, &sharer, &shared, &mut created)? {
            Ok(()) => {
                for item in shared.entries() {
                    let (path, entry) = item?;
                    manifest.insert(&path, entry)?;
                }
                session.history.drop_manifest(shared.release())?;
                let (files, bytes) = sharer.counts();
                session.info(&format!(
                    "reuse: {} unchanged ({} unchanged): shared {files} files ({bytes} bytes) from the live release by {}",
                    rule.path.display(),
                    rule.key.display(),
                    sharer.method().as_str()
                ));
                reused.push(rule.path.clone());
            }
            Err(why) => {
                session.history.drop_manifest(shared.release())?;
                // Undo only what was made here: carried user files stay.
                for path in created.iter().rev() {
                    let _ = std::fs::remove_file(path).or_else(|_| std::fs::remove_dir(path));
                }
                session.info(&format!("reuse: building {} ({why})", rule.path.display()));
            }
        }
    }
    Ok(reused)
}

/// Recreate `rule.path` in `release` from the live release, listing what it
/// made in `shared`; every file must still hold the content its manifest
/// recorded. The inner error says why not.
fn share_folder(
    rule: &Reuse,
    live: &LiveTree<'_>,
    release: &Path,
    sharer: &Sharer,
    shared: &Manifest<'_>,
    created: &mut Vec<PathBuf>,
) -> Result<std::result::Result<(), String>> {
    for item in live.manifest.entries_under(&rule.path) {
        let (path, entry) = item?;
        let outcome = share_entry(&path, &entry, live, release, sharer, created);
        if let Err(why) = outcome {
            return Ok(Err(why));
        }
        shared.insert(&path, entry)?;
    }
    shared.flush()?;
    Ok(Ok(()))
}

/// Recreate one entry of a reused folder; the error says why it cannot be.
fn share_entry(
    path: &Path,
    entry: &Entry,
    live: &LiveTree<'_>,
    release: &Path,
    sharer: &Sharer,
    created: &mut Vec<PathBuf>,
) -> std::result::Result<(), String> {
    let (from, to) = (live.dir.join(path), release.join(path));
    let io = |e: std::io::Error| format!("{}: {e}", path.display());
    match entry.kind {
        EntryKind::Dir => {
            // Parents come first (path order): a folder swapped for a
            // symlink stops the reuse before anything inside is read.
            let real = std::fs::symlink_metadata(&from).map_err(io)?;
            if !real.file_type().is_dir() {
                return Err(format!("{} is no longer a folder", path.display()));
            }
            // Carry may have made it already (folders are always made,
            // as user files can live in them).
            match std::fs::create_dir(&to) {
                Ok(()) => created.push(to.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && to.is_dir() => {}
                Err(e) => return Err(io(e)),
            }
        }
        EntryKind::Symlink => {
            let target = std::fs::read_link(&from).map_err(io)?;
            if target.as_os_str() != entry.digest.as_str() {
                return Err(format!("{} changed in the live release", path.display()));
            }
            std::os::unix::fs::symlink(&target, &to).map_err(io)?;
            created.push(to.clone());
        }
        EntryKind::File => {
            let meta = std::fs::symlink_metadata(&from).map_err(io)?;
            let (digest, _) = if meta.file_type().is_file() {
                digest_file(&from).map_err(io)?
            } else {
                (String::new(), 0)
            };
            if digest != entry.digest {
                return Err(format!("{} changed in the live release", path.display()));
            }
            if !sharer.share(&from, &to, entry.size).map_err(io)? {
                std::fs::copy(&from, &to).map_err(io)?;
            }
            created.push(to.clone());
        }
    }
    Ok(())
}
