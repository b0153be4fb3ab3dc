//! A release's manifest: the deployed files it got from its source and build
//! steps. Everything else in a release is user content. Manifests live in the
//! history database and are read and written a batch at a time, so a tree of
//! a million files costs no more memory than one of a hundred.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::history::History;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Dir => "dir",
            EntryKind::Symlink => "symlink",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "file" => EntryKind::File,
            "dir" => EntryKind::Dir,
            "symlink" => EntryKind::Symlink,
            _ => return None,
        })
    }

    pub fn of(file_type: std::fs::FileType) -> Option<Self> {
        if file_type.is_symlink() {
            Some(EntryKind::Symlink)
        } else if file_type.is_dir() {
            Some(EntryKind::Dir)
        } else if file_type.is_file() {
            Some(EntryKind::File)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: EntryKind,
    /// Permission bits (0o777 at most).
    pub mode: u32,
    pub size: u64,
    /// sha256 of the content for files, the target for symlinks, empty for folders.
    pub digest: String,
}

/// How many rows a manifest reads ahead, and writes at once.
const BATCH: usize = 1024;

/// A release's manifest as kept in the history database. Lookups that move
/// forward in path order (as walks and sources deliver paths) are answered
/// from a window of rows read ahead; others ask the database. Writes are
/// batched. Memory stays flat in the number of entries.
pub struct Manifest<'h> {
    history: &'h History,
    release: String,
    /// Written, not yet in the database.
    pending: RefCell<BTreeMap<Vec<u8>, Entry>>,
    window: RefCell<Window>,
}

/// Rows read ahead in path order. Every row after `passed` up to
/// `read_to` is in `rows`; lookups at or before `passed` ask the database.
#[derive(Default)]
struct Window {
    rows: VecDeque<(Vec<u8>, Entry)>,
    passed: Option<Vec<u8>>,
    read_to: Option<Vec<u8>>,
    /// Nothing follows `read_to`.
    exhausted: bool,
}

impl Window {
    /// Forget what was read (the rows changed) but not where lookups are.
    fn reset(&mut self) {
        self.rows.clear();
        self.read_to = self.passed.clone();
        self.exhausted = false;
    }
}

fn key(path: &Path) -> &[u8] {
    path.as_os_str().as_bytes()
}

fn path_of(key: Vec<u8>) -> PathBuf {
    PathBuf::from(OsString::from_vec(key))
}

impl<'h> Manifest<'h> {
    /// The manifest of `release` (empty if the history has none).
    pub fn of(history: &'h History, release: &str) -> Self {
        Manifest {
            history,
            release: release.to_string(),
            pending: RefCell::default(),
            window: RefCell::default(),
        }
    }

    /// An empty manifest for `release`, dropping any rows it had.
    pub fn create(history: &'h History, release: &str) -> Result<Self> {
        history.drop_manifest(release)?;
        Ok(Manifest::of(history, release))
    }

    pub fn release(&self) -> &str {
        &self.release
    }

    /// Another handle on the same entries with a window of its own, for a
    /// walk that starts again from the top (this one's window may be past it).
    pub fn reread(&self) -> Result<Manifest<'h>> {
        self.flush()?;
        Ok(Manifest::of(self.history, &self.release))
    }

    pub fn insert(&self, path: &Path, entry: Entry) -> Result<()> {
        let full = {
            let mut pending = self.pending.borrow_mut();
            pending.insert(key(path).to_vec(), entry);
            pending.len() >= BATCH
        };
        if full {
            self.flush()?;
        }
        Ok(())
    }

    /// Write what is pending to the database.
    pub fn flush(&self) -> Result<()> {
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        if pending.is_empty() {
            return Ok(());
        }
        self.history.write_manifest_rows(&self.release, &pending)?;
        self.window.borrow_mut().reset();
        Ok(())
    }

    pub fn get(&self, path: &Path) -> Result<Option<Entry>> {
        self.look_up(path, Entry::clone)
    }

    /// The kind of the entry at `path`, if any (no copy of its digest).
    pub fn kind(&self, path: &Path) -> Result<Option<EntryKind>> {
        self.look_up(path, |entry| entry.kind)
    }

    fn look_up<T>(&self, path: &Path, read: impl Fn(&Entry) -> T) -> Result<Option<T>> {
        let key = key(path);
        if let Some(entry) = self.pending.borrow().get(key) {
            return Ok(Some(read(entry)));
        }
        let mut window = self.window.borrow_mut();
        if window.passed.as_deref().is_some_and(|passed| key <= passed) {
            let entry = self.history.manifest_row(&self.release, key)?;
            return Ok(entry.as_ref().map(read));
        }
        while let Some((front, entry)) = window.rows.front() {
            match front.as_slice().cmp(key) {
                Ordering::Less => {
                    let (front, _) = window.rows.pop_front().expect("has a front");
                    window.passed = Some(front);
                }
                Ordering::Equal => return Ok(Some(read(entry))),
                Ordering::Greater => return Ok(None),
            }
        }
        let covered = window.read_to.as_deref().is_some_and(|to| key <= to);
        if covered || window.exhausted {
            return Ok(None);
        }
        // Read on from `key` itself: rows between the last read and `key`
        // are behind every later lookup, so sparse lookups skip them unread
        // (`passed` moves to `key`: a lookup of one of them asks the database).
        let mut rows =
            VecDeque::from(self.history.manifest_rows_from(&self.release, key, BATCH)?);
        window.exhausted = rows.len() < BATCH;
        window.read_to = Some(rows.back().map_or(key, |(k, _)| k.as_slice()).to_vec());
        window.passed = Some(key.to_vec());
        let found = match rows.front() {
            Some((first, _)) if first.as_slice() == key => rows.pop_front().map(|(_, e)| read(&e)),
            _ => None,
        };
        window.rows = rows;
        Ok(found)
    }

    pub fn contains(&self, path: &Path) -> Result<bool> {
        Ok(self.kind(path)?.is_some())
    }

    /// Entries in byte order of their paths (parents before their
    /// children; the order SQLite keeps them in), read a batch at a time.
    pub fn entries(&self) -> Entries<'_, 'h> {
        Entries {
            manifest: self,
            under: None,
            after: None,
            batch: VecDeque::new(),
            exhausted: false,
        }
    }

    /// `path` and every entry below it, in path order.
    pub fn entries_under(&self, path: &Path) -> Entries<'_, 'h> {
        Entries {
            under: Some(path.to_path_buf()),
            ..self.entries()
        }
    }

    /// How many entries (folders, files and symlinks).
    pub fn entry_count(&self) -> Result<u64> {
        self.flush()?;
        Ok(self.history.manifest_totals(&self.release)?.0)
    }

    pub fn total_bytes(&self) -> Result<u64> {
        self.flush()?;
        Ok(self.history.manifest_totals(&self.release)?.1)
    }

    /// Drop `path` and everything below it.
    pub fn remove_tree(&self, path: &Path) -> Result<()> {
        self.flush()?;
        self.history
            .delete_manifest_tree(&self.release, key(path))?;
        self.window.borrow_mut().reset();
        Ok(())
    }

    /// Make the entries below `top` the top level (an archive's single top
    /// folder unwrapped); `top` itself goes.
    pub fn unwrap_top(&self, top: &Path) -> Result<()> {
        self.flush()?;
        self.history.unwrap_manifest_top(&self.release, key(top))?;
        *self.window.borrow_mut() = Window::default();
        Ok(())
    }

    /// Take `other`'s entries in place of this manifest's; `other` is left empty.
    pub fn replace_with(&self, other: &Manifest<'_>) -> Result<()> {
        self.flush()?;
        other.flush()?;
        self.history.move_manifest(&other.release, &self.release)?;
        *self.window.borrow_mut() = Window::default();
        *other.window.borrow_mut() = Window::default();
        Ok(())
    }

    /// One digest for the whole content: equal digests mean equal deployed trees.
    pub fn content_digest(&self) -> Result<String> {
        self.flush()?;
        let mut hasher = Sha256::new();
        // Component order, as digests already in histories were made.
        self.history
            .manifest_in_component_order(&self.release, &mut |path, entry| {
                hasher.update(path);
                hasher.update([0]);
                hasher.update(entry.kind.as_str());
                hasher.update(format!("\0{:o}\0", entry.mode));
                hasher.update(&entry.digest);
                hasher.update([b'\n']);
            })?;
        Ok(hex(&hasher.finalize()))
    }
}

/// A manifest's entries in path order (see [`Manifest::entries`]).
pub struct Entries<'m, 'h> {
    manifest: &'m Manifest<'h>,
    under: Option<PathBuf>,
    after: Option<Vec<u8>>,
    batch: VecDeque<(Vec<u8>, Entry)>,
    exhausted: bool,
}

impl Iterator for Entries<'_, '_> {
    type Item = Result<(PathBuf, Entry)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.batch.is_empty() && !self.exhausted {
            // What the caller wrote meanwhile is read too.
            let read = self.manifest.flush().and_then(|()| {
                self.manifest.history.manifest_rows_under(
                    &self.manifest.release,
                    self.under.as_deref().map(key),
                    self.after.as_deref(),
                    BATCH,
                )
            });
            match read {
                Ok(rows) => {
                    self.exhausted = rows.len() < BATCH;
                    self.after = rows.last().map(|(k, _)| k.clone());
                    self.batch.extend(rows);
                }
                Err(e) => {
                    self.exhausted = true;
                    return Some(Err(e));
                }
            }
        }
        let (key, entry) = self.batch.pop_front()?;
        Some(Ok((path_of(key), entry)))
    }
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// A writer that hashes what passes through it and counts the bytes.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    pub fn finish(self) -> (W, String, u64) {
        (self.inner, hex(&self.hasher.finalize()), self.written)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// sha256 of a file's content.
pub fn digest_file(path: &Path) -> io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut writer = HashingWriter::new(io::sink());
    io::copy(&mut file, &mut writer)?;
    let (_, digest, size) = writer.finish();
    Ok((digest, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(digest: &str) -> Entry {
        Entry {
            kind: EntryKind::File,
            mode: 0o644,
            size: digest.len() as u64,
            digest: digest.to_string(),
        }
    }

    fn dir() -> Entry {
        Entry {
            kind: EntryKind::Dir,
            mode: 0o755,
            size: 0,
            digest: String::new(),
        }
    }

    /// Paths that sort differently by bytes and by components, more than
    /// one window of them, some entries written before a flush and some after.
    fn filled(history: &History) -> (Manifest<'_>, Vec<PathBuf>) {
        let manifest = Manifest::create(history, "r1").unwrap();
        let mut paths = Vec::new();
        for n in 0..(BATCH * 3) {
            let folder = PathBuf::from(format!("d{}", n % 7));
            if n < 7 {
                manifest.insert(&folder, dir()).unwrap();
                paths.push(folder.clone());
            }
            for name in [format!("f{n}"), format!("f{n}.x"), format!("f{n}-y")] {
                let path = folder.join(name);
                manifest
                    .insert(&path, file(&path.display().to_string()))
                    .unwrap();
                paths.push(path);
            }
        }
        paths.sort_by(|a, b| a.as_os_str().cmp(b.as_os_str()));
        (manifest, paths)
    }

    #[test]
    fn lookups_in_any_order_find_exactly_what_was_written() {
        let history = History::open(Path::new(":memory:")).unwrap();
        let (manifest, paths) = filled(&history);
        let missing = |p: &Path| p.with_extension("missing");
        // Pending rows are seen before a flush.
        assert!(manifest.contains(&paths[paths.len() - 1]).unwrap());
        manifest.flush().unwrap();
        // Forward, dense (every path, and a missing one beside each).
        for path in &paths {
            // Folders have no digest; a file's is its path here.
            let is_folder = path.components().count() == 1;
            let digest = if is_folder {
                String::new()
            } else {
                path.display().to_string()
            };
            assert_eq!(
                manifest.get(path).unwrap().map(|e| e.digest),
                Some(digest),
                "{}",
                path.display()
            );
            assert_eq!(manifest.kind(&missing(path)).unwrap(), None);
        }
        // Backward, and sparse forward with a fresh window.
        for path in paths.iter().rev().step_by(5) {
            assert!(manifest.contains(path).unwrap(), "{}", path.display());
        }
        let again = manifest.reread().unwrap();
        for path in paths.iter().step_by(97) {
            assert!(again.contains(path).unwrap(), "{}", path.display());
            assert!(!again.contains(&missing(path)).unwrap());
        }
        // A write is seen by a window that had read past it.
        let late = Path::new("d3/f0.late");
        manifest.insert(late, file("late")).unwrap();
        manifest.flush().unwrap();
        assert_eq!(manifest.get(late).unwrap(), Some(file("late")));
        assert_eq!(manifest.entry_count().unwrap(), paths.len() as u64 + 1);
    }

    #[test]
    fn entries_come_in_byte_order_and_trees_move_and_go_whole() {
        let history = History::open(Path::new(":memory:")).unwrap();
        let (manifest, paths) = filled(&history);
        let listed: Vec<PathBuf> = manifest.entries().map(|e| e.unwrap().0).collect();
        assert_eq!(listed, paths);
        let under: Vec<PathBuf> = manifest
            .entries_under(Path::new("d1"))
            .map(|e| e.unwrap().0)
            .collect();
        let expected: Vec<PathBuf> = paths
            .iter()
            .filter(|p| p.starts_with("d1"))
            .cloned()
            .collect();
        assert_eq!(under, expected);
        manifest.remove_tree(Path::new("d1")).unwrap();
        assert!(!manifest.contains(Path::new("d1")).unwrap());
        assert!(!manifest.contains(&expected[1]).unwrap());
        assert_eq!(
            manifest.entry_count().unwrap(),
            (paths.len() - expected.len()) as u64
        );

        let wrapped = Manifest::create(&history, "r2").unwrap();
        for path in ["top", "top/a", "top/b/c", "topper"] {
            wrapped.insert(Path::new(path), dir()).unwrap();
        }
        wrapped.remove_tree(Path::new("topper")).unwrap();
        wrapped.unwrap_top(Path::new("top")).unwrap();
        let listed: Vec<PathBuf> = wrapped.entries().map(|e| e.unwrap().0).collect();
        assert_eq!(listed, [PathBuf::from("a"), PathBuf::from("b/c")]);
    }

    #[test]
    fn the_content_digest_follows_component_order_as_it_always_has() {
        let history = History::open(Path::new(":memory:")).unwrap();
        let (manifest, mut paths) = filled(&history);
        // The digest as it was made before manifests moved to the history.
        paths.sort();
        let mut hasher = Sha256::new();
        for path in &paths {
            let entry = manifest.get(path).unwrap().unwrap();
            hasher.update(path.as_os_str().as_encoded_bytes());
            hasher.update([0]);
            hasher.update(entry.kind.as_str());
            hasher.update(format!("\0{:o}\0", entry.mode));
            hasher.update(&entry.digest);
            hasher.update([b'\n']);
        }
        assert_eq!(manifest.content_digest().unwrap(), hex(&hasher.finalize()));
    }
}
