//! A release copied from the one a fleet's builder built: the builder writes
//! its release's manifest for the other hosts; a host makes every folder and
//! symlink it lists, links each file its own live release has with the same
//! digest, names the files it lacks, and writes those from the bytes the
//! builder sent, each checked against the builder's digest. Hosts other than
//! the builder so serve the builder's bytes without its build tools or the
//! source. A host already live on the release the builder's was built
//! over gets only the difference between the two manifests.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use crate::manifest::{Entry, EntryKind, Manifest};
use crate::share::Sharer;
use crate::source::extract::{Extractor, Limits};

/// The builder's release, as another host copies it.
pub struct CopySource<'a> {
    /// The builder's manifest, as [`export_manifest`] wrote it, or its
    /// difference from `base` as [`export_delta`] wrote it.
    pub manifest: PathBuf,
    pub base: Option<Base>,
    /// The builder's content digest: the copy must come out equal.
    pub digest: String,
    /// Where the list of lacking files is written (NUL-separated paths).
    pub lacking_list: PathBuf,
    /// Given what this host lacks, the tar holding those files (the
    /// builder's, sent by whoever coordinates the fleet).
    pub supply: &'a mut dyn FnMut(&Lacking) -> Result<PathBuf>,
}

/// The release a delta applies to: this host's live one, whose content
/// must be what the builder's release of that name holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Base {
    pub release: String,
    pub digest: String,
}

/// The files a host lacks to copy a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lacking {
    pub files: u64,
    pub bytes: u64,
    /// Their paths, relative to the release, each ended by a NUL.
    pub list: PathBuf,
}

/// Write `manifest` to `to` for other hosts: per entry, kind, octal mode,
/// size, digest (a symlink's target) and path, each ended by a NUL.
pub fn export_manifest(manifest: &Manifest<'_>, to: &Path) -> Result<()> {
    let file = File::create(to).map_err(|e| Error::io("create", to, e))?;
    let mut out = BufWriter::new(file);
    write_manifest(manifest, &mut out, to)?;
    finish_export(out, to)
}

/// Write what `manifest` changes of `base` to `to`: the entries added or
/// changed, as [`export_manifest`] writes them, and each path gone, as kind
/// `gone`.
pub fn export_delta(base: &Manifest<'_>, manifest: &Manifest<'_>, to: &Path) -> Result<()> {
    let file = File::create(to).map_err(|e| Error::io("create", to, e))?;
    let mut out = BufWriter::new(file);
    write_delta(base, manifest, &mut out, to)?;
    finish_export(out, to)
}

/// [`export_manifest`]'s bytes, in memory (an agent answering a member).
pub fn manifest_bytes(manifest: &Manifest<'_>) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    write_manifest(manifest, &mut out, Path::new("the exported manifest"))?;
    Ok(out)
}

/// [`export_delta`]'s bytes, in memory.
pub fn delta_bytes(base: &Manifest<'_>, manifest: &Manifest<'_>) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    write_delta(base, manifest, &mut out, Path::new("the exported delta"))?;
    Ok(out)
}

/// Every entry of `manifest` as a record; `to` names `out` in errors.
fn write_manifest(manifest: &Manifest<'_>, out: &mut impl Write, to: &Path) -> Result<()> {
    for item in manifest.entries() {
        let (path, entry) = item?;
        write_record(out, &path, Some(&entry)).map_err(|e| Error::io("write", to, e))?;
    }
    Ok(())
}

/// A record for each path `manifest` adds, changes or drops of `base`.
fn write_delta(
    base: &Manifest<'_>,
    manifest: &Manifest<'_>,
    out: &mut impl Write,
    to: &Path,
) -> Result<()> {
    let mut old = base.entries().peekable();
    let mut new = manifest.entries().peekable();
    loop {
        let order = match (old.peek(), new.peek()) {
            (None, None) => break,
            (Some(Err(_)), _) => return Err(old.next().expect("peeked").unwrap_err()),
            (_, Some(Err(_))) => return Err(new.next().expect("peeked").unwrap_err()),
            (Some(Ok(_)), None) => std::cmp::Ordering::Less,
            (None, Some(Ok(_))) => std::cmp::Ordering::Greater,
            (Some(Ok((a, _))), Some(Ok((b, _)))) => {
                a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes())
            }
        };
        let written = match order {
            std::cmp::Ordering::Less => {
                let (path, _) = old.next().expect("peeked")?;
                write_record(out, &path, None)
            }
            std::cmp::Ordering::Greater => {
                let (path, entry) = new.next().expect("peeked")?;
                write_record(out, &path, Some(&entry))
            }
            std::cmp::Ordering::Equal => {
                let (_, was) = old.next().expect("peeked")?;
                let (path, entry) = new.next().expect("peeked")?;
                match was == entry {
                    true => Ok(()),
                    false => write_record(out, &path, Some(&entry)),
                }
            }
        };
        written.map_err(|e| Error::io("write", to, e))?;
    }
    Ok(())
}

/// One record: an entry, or `None` for a path that is gone.
fn write_record(out: &mut impl Write, path: &Path, entry: Option<&Entry>) -> std::io::Result<()> {
    match entry {
        Some(entry) => write!(
            out,
            "{}\0{:o}\0{}\0{}\0",
            entry.kind.as_str(),
            entry.mode,
            entry.size,
            entry.digest
        )?,
        None => write!(out, "{GONE}\00\00\0\0")?,
    }
    out.write_all(path.as_os_str().as_bytes())?;
    out.write_all(b"\0")
}

/// The kind of a delta's record for a path the new release no longer has.
const GONE: &str = "gone";

fn finish_export(out: BufWriter<File>, to: &Path) -> Result<()> {
    out.into_inner()
        .map_err(|e| Error::io("write", to, e.into_error()))?
        .sync_all()
        .map_err(|e| Error::io("write", to, e))
}

/// Reads entries back from an exported manifest, refusing anything malformed.
struct Exported {
    reader: BufReader<File>,
    origin: PathBuf,
}

impl Exported {
    fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
        Ok(Exported {
            reader: BufReader::new(file),
            origin: path.to_path_buf(),
        })
    }

    fn field(&mut self) -> Result<Option<Vec<u8>>> {
        let mut field = Vec::new();
        let read = self
            .reader
            .read_until(0, &mut field)
            .map_err(|e| Error::io("read", &self.origin, e))?;
        if read == 0 {
            return Ok(None);
        }
        if field.pop() != Some(0) {
            return Err(self.malformed("a truncated entry"));
        }
        Ok(Some(field))
    }

    fn malformed(&self, what: &str) -> Error {
        Error::Source(format!(
            "the builder's manifest {} is malformed: {what}",
            self.origin.display()
        ))
    }

    /// The next record: a path and its entry, or `None` for a path gone.
    fn next_record(&mut self) -> Result<Option<(PathBuf, Option<Entry>)>> {
        let Some(kind) = self.field()? else {
            return Ok(None);
        };
        let mut fields = Vec::new();
        for _ in 0..4 {
            fields.push(
                self.field()?
                    .ok_or_else(|| self.malformed("a truncated entry"))?,
            );
        }
        let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).ok();
        let path = PathBuf::from(std::ffi::OsString::from_vec(fields.pop().expect("four")));
        if kind == GONE.as_bytes() {
            return Ok(Some((path, None)));
        }
        let kind = text(&kind)
            .and_then(|k| EntryKind::parse(&k))
            .ok_or_else(|| self.malformed("an unknown kind of entry"))?;
        let mode = text(&fields[0])
            .and_then(|m| u32::from_str_radix(&m, 8).ok())
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| self.malformed("a bad mode"))?;
        let size = text(&fields[1])
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| self.malformed("a bad size"))?;
        let digest = text(&fields[2]).ok_or_else(|| self.malformed("a bad digest"))?;
        Ok(Some((
            path,
            Some(Entry {
                kind,
                mode,
                size,
                digest,
            }),
        )))
    }
}

/// The builder's entries in path order: from a whole manifest, or from a
/// delta merged with this host's manifest of the base release.
struct BuilderEntries<'m, 'h> {
    exported: Exported,
    base: Option<std::iter::Peekable<crate::manifest::Entries<'m, 'h>>>,
    /// A record read from the delta, not yet merged.
    pending: Option<(PathBuf, Option<Entry>)>,
}

impl BuilderEntries<'_, '_> {
    fn next_entry(&mut self) -> Result<Option<(PathBuf, Entry)>> {
        let Some(base) = self.base.as_mut() else {
            return match self.exported.next_record()? {
                Some((path, Some(entry))) => Ok(Some((path, entry))),
                Some((_, None)) => Err(self.exported.malformed("a path gone in a whole manifest")),
                None => Ok(None),
            };
        };
        loop {
            if self.pending.is_none() {
                self.pending = self.exported.next_record()?;
            }
            let order = match (base.peek(), &self.pending) {
                (Some(Err(_)), _) => return Err(base.next().expect("peeked").unwrap_err()),
                (None, None) => return Ok(None),
                (Some(Ok(_)), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(Ok((a, _))), Some((b, _))) => {
                    a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes())
                }
            };
            match order {
                std::cmp::Ordering::Less => return base.next().transpose(),
                std::cmp::Ordering::Greater => match self.pending.take().expect("compared") {
                    (path, Some(entry)) => return Ok(Some((path, entry))),
                    (path, None) => {
                        return Err(self.exported.malformed(&format!(
                            "'{}' is gone but was never there",
                            path.display()
                        )));
                    }
                },
                std::cmp::Ordering::Equal => {
                    base.next();
                    if let (path, Some(entry)) = self.pending.take().expect("compared") {
                        return Ok(Some((path, entry)));
                    }
                }
            }
        }
    }
}

/// Write the builder's release into `dest` (empty, existing), recording it
/// in `manifest`: folders and symlinks as listed, files shared from the live
/// release when it has them with the same digest, the rest written from the
/// tar `copy.supply` returns for the list of what is lacking. Fails unless
/// the result's content digest is the builder's.
pub(crate) fn materialize_copy(
    copy: &mut CopySource<'_>,
    dest: &Path,
    limits: Limits,
    manifest: &Manifest<'_>,
    base: Option<&Manifest<'_>>,
    sharer: Option<&Sharer>,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<Lacking> {
    let origin = "the builder's release";
    let mut extractor = Extractor::new(dest, origin, limits, manifest, progress);
    if let Some(sharer) = sharer {
        extractor.share_from(sharer);
    }
    let mut exported = BuilderEntries {
        exported: Exported::open(&copy.manifest)?,
        base: base.map(|m| m.entries().peekable()),
        pending: None,
    };
    let list_file =
        File::create(&copy.lacking_list).map_err(|e| Error::io("create", &copy.lacking_list, e))?;
    let mut list = BufWriter::new(list_file);
    // What is lacking, to check the bytes that come against.
    let mut lacking: BTreeMap<PathBuf, Entry> = BTreeMap::new();
    let mut bytes = 0;
    while let Some((path, entry)) = exported.next_entry()? {
        match entry.kind {
            EntryKind::Dir => extractor.dir(&path, entry.mode)?,
            EntryKind::Symlink => extractor.symlink(&path, Path::new(&entry.digest))?,
            EntryKind::File => {
                if !extractor.known_file(&path, entry.mode, &entry.digest)? {
                    list.write_all(path.as_os_str().as_bytes())
                        .and_then(|_| list.write_all(b"\0"))
                        .map_err(|e| Error::io("write", &copy.lacking_list, e))?;
                    bytes += entry.size;
                    lacking.insert(path, entry);
                }
            }
        }
    }
    list.into_inner()
        .map_err(|e| Error::io("write", &copy.lacking_list, e.into_error()))?;
    let needed = Lacking {
        files: lacking.len() as u64,
        bytes,
        list: copy.lacking_list.clone(),
    };
    if !lacking.is_empty() {
        let tar = (copy.supply)(&needed)?;
        fill_from_tar(&tar, &mut extractor, &mut lacking)?;
        let _ = std::fs::remove_file(&tar);
    }
    extractor.finish(false)?;
    let digest = manifest.content_digest()?;
    if digest != copy.digest {
        return Err(Error::Source(format!(
            "the copy of the builder's release came out with digest {}, not the builder's {}: its files differ (see zdeploy verify on both hosts)",
            crate::release::short(&digest),
            crate::release::short(&copy.digest)
        )));
    }
    Ok(needed)
}

/// Write each lacking file from `tar`, refusing any entry that was not
/// asked for or whose bytes are not the builder's; every lacking file must
/// come.
fn fill_from_tar(
    tar: &Path,
    extractor: &mut Extractor<'_>,
    lacking: &mut BTreeMap<PathBuf, Entry>,
) -> Result<()> {
    let file = File::open(tar).map_err(|e| Error::io("open", tar, e))?;
    let mut archive = tar::Archive::new(BufReader::new(file));
    let unreadable =
        |e: std::io::Error| Error::Source(format!("the builder's files are unreadable: {e}"));
    for item in archive.entries().map_err(unreadable)? {
        let mut item = item.map_err(unreadable)?;
        let path = item.path().map_err(unreadable)?.into_owned();
        let path: PathBuf = path.components().collect();
        let Some(wanted) = lacking.remove(&path) else {
            return Err(Error::Source(format!(
                "the builder sent '{}', which was not asked for",
                path.display()
            )));
        };
        if !item.header().entry_type().is_file() {
            return Err(Error::Source(format!(
                "the builder sent '{}' as something other than a file",
                path.display()
            )));
        }
        let mtime = item
            .header()
            .mtime()
            .ok()
            .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        extractor.file(&path, wanted.mode, mtime, &mut item)?;
        let written = extractor.written_entry(&path)?;
        if written.as_ref().map(|e| (&e.digest, e.size)) != Some((&wanted.digest, wanted.size)) {
            return Err(Error::Source(format!(
                "'{}' arrived with other bytes than the builder built ({} bytes, digest {}); the builder's release changed since it was staged, or the transfer was corrupted",
                path.display(),
                written.as_ref().map_or(0, |e| e.size),
                written
                    .as_ref()
                    .map_or("none", |e| crate::release::short(&e.digest)),
            )));
        }
    }
    if let Some((path, _)) = lacking.iter().next() {
        return Err(Error::Source(format!(
            "the builder did not send {} of the files asked for, '{}' among them",
            lacking.len(),
            path.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::History;
    use crate::manifest::hex;
    use sha2::{Digest, Sha256};

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "zdeploy-copy-{name}-{}-{}",
            std::process::id(),
            crate::history::now_ms()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn file(content: &str) -> Entry {
        Entry {
            kind: EntryKind::File,
            mode: 0o644,
            size: content.len() as u64,
            digest: hex(&Sha256::digest(content.as_bytes())),
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

    fn fill(manifest: &Manifest<'_>, entries: &[(&str, Entry)]) {
        for (path, entry) in entries {
            manifest.insert(Path::new(path), entry.clone()).unwrap();
        }
        manifest.flush().unwrap();
    }

    fn read_all(exported: &Path, base: Option<&Manifest<'_>>) -> Result<Vec<(PathBuf, Entry)>> {
        let mut entries = BuilderEntries {
            exported: Exported::open(exported)?,
            base: base.map(|m| m.entries().peekable()),
            pending: None,
        };
        let mut all = Vec::new();
        while let Some(entry) = entries.next_entry()? {
            all.push(entry);
        }
        Ok(all)
    }

    #[test]
    fn a_delta_merged_with_its_base_is_the_whole_manifest() {
        let history = History::open(Path::new(":memory:")).unwrap();
        let old = Manifest::create(&history, "old").unwrap();
        fill(
            &old,
            &[
                ("a", dir()),
                ("a/x", file("1")),
                ("b", file("2")),
                ("c", file("3")),
                ("z", file("9")),
            ],
        );
        let new = Manifest::create(&history, "new").unwrap();
        fill(
            &new,
            &[
                ("a", dir()),
                ("a/x", file("1!")),
                ("a-b", file("5")),
                ("b", file("2")),
                ("d", file("4")),
            ],
        );
        let work = scratch("delta");
        let (whole, delta) = (work.join("whole"), work.join("delta"));
        export_manifest(&new, &whole).unwrap();
        export_delta(&old, &new, &delta).unwrap();
        // In memory, the same bytes as in the files.
        assert_eq!(
            manifest_bytes(&new).unwrap(),
            std::fs::read(&whole).unwrap()
        );
        assert_eq!(
            delta_bytes(&old, &new).unwrap(),
            std::fs::read(&delta).unwrap()
        );
        let expected: Vec<(PathBuf, Entry)> = new.entries().map(|e| e.unwrap()).collect();
        assert_eq!(read_all(&whole, None).unwrap(), expected);
        assert_eq!(read_all(&delta, Some(&old)).unwrap(), expected);
        // Only what changed travels: a/x, a-b and d, and c and z gone.
        let records = std::fs::read(&delta).unwrap();
        assert_eq!(records.iter().filter(|b| **b == 0).count(), 5 * 5);
        // A delta is no whole manifest.
        let refused = read_all(&delta, None).unwrap_err().to_string();
        assert!(refused.contains("gone in a whole manifest"), "{refused}");
        std::fs::remove_dir_all(work).unwrap();
    }

    /// Copy a one-file release whose file `f` holds "hello", from `tar`.
    fn copy_with(tar_entries: &[(&str, &str)]) -> Result<Lacking> {
        let history = History::open(Path::new(":memory:")).unwrap();
        let built = Manifest::create(&history, "built").unwrap();
        fill(&built, &[("f", file("hello"))]);
        let work = scratch("fill");
        export_manifest(&built, &work.join("manifest")).unwrap();
        let tar_path = work.join("files.tar");
        let mut builder = tar::Builder::new(File::create(&tar_path).unwrap());
        for (path, content) in tar_entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, path, content.as_bytes())
                .unwrap();
        }
        builder.finish().unwrap();
        let dest = work.join("release");
        std::fs::create_dir(&dest).unwrap();
        let copied = Manifest::create(&history, "copied").unwrap();
        let mut supply = |_: &Lacking| Ok(tar_path.clone());
        let mut copy = CopySource {
            manifest: work.join("manifest"),
            base: None,
            digest: built.content_digest().unwrap(),
            lacking_list: work.join("lacking"),
            supply: &mut supply,
        };
        let result = materialize_copy(
            &mut copy,
            &dest,
            Limits::default(),
            &copied,
            None,
            None,
            &mut |_, _| {},
        );
        std::fs::remove_dir_all(work).unwrap();
        result
    }

    #[test]
    fn only_the_builders_bytes_for_the_files_asked_are_taken() {
        let lacking = copy_with(&[("f", "hello")]).unwrap();
        assert_eq!((lacking.files, lacking.bytes), (1, 5));
        let cases = [
            (vec![("f", "HELLO")], "arrived with other bytes"),
            (
                vec![("f", "hello"), ("g", "extra")],
                "'g', which was not asked for",
            ),
            (vec![], "did not send 1 of the files asked for, 'f'"),
        ];
        for (entries, refusal) in cases {
            let error = copy_with(&entries).unwrap_err().to_string();
            assert!(error.contains(refusal), "{error}");
        }
    }
}
