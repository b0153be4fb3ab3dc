//! A release's manifest: the deployed files it got from its source and build
//! steps. Everything else in a release is user content.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

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

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// Hashed, not ordered: lookups dominate (several per file on big
    /// trees), and comparing paths component by component was most of a
    /// deploy's CPU. `iter` sorts when order matters.
    entries: HashMap<PathBuf, Entry>,
}

impl Manifest {
    pub fn insert(&mut self, path: PathBuf, entry: Entry) {
        self.entries.insert(path, entry);
    }

    pub fn get(&self, path: &Path) -> Option<&Entry> {
        self.entries.get(path)
    }

    pub fn contains(&self, path: &Path) -> bool {
        self.entries.contains_key(path)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries in byte order of their paths (parents before their children;
    /// the order SQLite keeps them in).
    pub fn iter(&self) -> impl Iterator<Item = (&PathBuf, &Entry)> {
        let mut sorted: Vec<_> = self.entries.iter().collect();
        sorted.sort_unstable_by(|a, b| a.0.as_os_str().cmp(b.0.as_os_str()));
        sorted.into_iter()
    }

    /// Entries in no particular order, without the cost of sorting.
    pub fn iter_unordered(&self) -> impl Iterator<Item = (&PathBuf, &Entry)> {
        self.entries.iter()
    }

    pub fn total_bytes(&self) -> u64 {
        self.entries.values().map(|e| e.size).sum()
    }

    /// Drop `path` and everything below it.
    pub fn remove_tree(&mut self, path: &Path) {
        self.entries.retain(|p, _| !p.starts_with(path));
    }

    /// Every entry under `root` (kinds only, no digests): for a release the
    /// history has no manifest of, where everything present counts as deployed.
    pub fn of_tree(root: &Path) -> Manifest {
        let mut manifest = Manifest::default();
        let entries = walkdir::WalkDir::new(root).min_depth(1).follow_links(false);
        for entry in entries.into_iter().flatten() {
            let Some(kind) = EntryKind::of(entry.file_type()) else {
                continue;
            };
            let relative = entry
                .path()
                .strip_prefix(root)
                .expect("under root")
                .to_path_buf();
            manifest.insert(
                relative,
                Entry {
                    kind,
                    mode: 0,
                    size: 0,
                    digest: String::new(),
                },
            );
        }
        manifest
    }

    /// One digest for the whole content: equal digests mean equal deployed trees.
    pub fn content_digest(&self) -> String {
        let mut hasher = Sha256::new();
        // Component order, as digests already in histories were made.
        let mut sorted: Vec<_> = self.entries.iter().collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (path, entry) in sorted {
            hasher.update(path.as_os_str().as_encoded_bytes());
            hasher.update([0]);
            hasher.update(entry.kind.as_str());
            hasher.update(format!("\0{:o}\0", entry.mode));
            hasher.update(&entry.digest);
            hasher.update([b'\n']);
        }
        hex(&hasher.finalize())
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
