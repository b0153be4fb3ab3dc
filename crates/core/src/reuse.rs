//! Dependency folders reused from the live release: `vendor/` keyed by
//! `composer.lock`, `node_modules/` by `package-lock.json`. When the key
//! file's content is unchanged, the folder the live release's build made is
//! shared into the new release (each file checked against its recorded
//! digest first), and the build steps that only produce it are skipped.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::manifest::{EntryKind, Manifest, digest_file};
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
    pub manifest: &'a Manifest,
    pub made_ms: i64,
}

/// Why `rule` cannot reuse the live release's folder, or `None` if it can.
fn refusal(rule: &Reuse, live: &LiveTree<'_>, new: &Manifest) -> Option<String> {
    let (path, key) = (rule.path.display(), rule.key.display());
    let Some(new_key) = new.get(&rule.key).filter(|e| e.kind == EntryKind::File) else {
        return Some(format!("the new release has no {key}"));
    };
    match live.manifest.get(&rule.key) {
        Some(old) if old.kind == EntryKind::File && old.digest == new_key.digest => {}
        Some(_) => return Some(format!("{key} changed")),
        None => return Some(format!("the live release has no {key}")),
    }
    if new.contains(&rule.path) {
        return Some(format!("the source itself provides {path}"));
    }
    match live.manifest.get(&rule.path) {
        Some(entry) if entry.kind == EntryKind::Dir => None,
        _ => Some(format!("the live release has no {path} to reuse")),
    }
}

/// Share each reusable folder into `release`, adding its entries to
/// `manifest`; returns the folders reused. Hardlinks only when
/// `hardlinks_ok` (no build step will run in the release).
pub fn reuse_folders(
    session: &Session<'_>,
    rules: &[Reuse],
    live: &LiveTree<'_>,
    release: &Path,
    manifest: &mut Manifest,
    hardlinks_ok: bool,
) -> Result<Vec<PathBuf>> {
    let mut reused = Vec::new();
    for rule in rules {
        if let Some(why) = refusal(rule, live, manifest) {
            session.info(&format!("reuse: building {} ({why})", rule.path.display()));
            continue;
        }
        // Files to share are named one by one here, not looked up.
        let none = Manifest::default();
        let sharer = Sharer::new(live.dir, &none, live.made_ms, hardlinks_ok);
        let mut created = Vec::new();
        match share_folder(rule, live, release, &sharer, &mut created) {
            Ok(entries) => {
                for (path, entry) in entries.iter_unordered() {
                    manifest.insert(path.clone(), entry.clone());
                }
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

/// Recreate `rule.path` in `release` from the live release; every file must
/// still hold the content its manifest recorded. The error says why not.
fn share_folder(
    rule: &Reuse,
    live: &LiveTree<'_>,
    release: &Path,
    sharer: &Sharer,
    created: &mut Vec<PathBuf>,
) -> std::result::Result<Manifest, String> {
    let mut entries = Manifest::default();
    for (path, entry) in live
        .manifest
        .iter()
        .filter(|(p, _)| p.starts_with(&rule.path))
    {
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
        entries.insert(path.clone(), entry.clone());
    }
    Ok(entries)
}
