//! A release copied from the one a fleet's builder built: the builder writes
//! its release's manifest for the other hosts; a host makes every folder and
//! symlink it lists, links each file its own live release has with the same
//! digest, names the files it lacks, and writes those from the bytes the
//! builder sent, each checked against the builder's digest. Hosts other than
//! the builder so serve the builder's bytes without its build tools or the
//! source.

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
    /// The builder's manifest, as [`export_manifest`] wrote it.
    pub manifest: PathBuf,
    /// The builder's content digest: the copy must come out equal.
    pub digest: String,
    /// Where the list of lacking files is written (NUL-separated paths).
    pub lacking_list: PathBuf,
    /// Given what this host lacks, the tar holding those files (the
    /// builder's, sent by whoever coordinates the fleet).
    pub supply: &'a mut dyn FnMut(&Lacking) -> Result<PathBuf>,
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
    for item in manifest.entries() {
        let (path, entry) = item?;
        let write = |out: &mut BufWriter<File>| -> std::io::Result<()> {
            write!(
                out,
                "{}\0{:o}\0{}\0{}\0",
                entry.kind.as_str(),
                entry.mode,
                entry.size,
                entry.digest
            )?;
            out.write_all(path.as_os_str().as_bytes())?;
            out.write_all(b"\0")
        };
        write(&mut out).map_err(|e| Error::io("write", to, e))?;
    }
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

    fn next_entry(&mut self) -> Result<Option<(PathBuf, Entry)>> {
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
        let path = PathBuf::from(std::ffi::OsString::from_vec(fields.pop().expect("four")));
        Ok(Some((
            path,
            Entry {
                kind,
                mode,
                size,
                digest,
            },
        )))
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
    sharer: Option<&Sharer>,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<Lacking> {
    let origin = "the builder's release";
    let mut extractor = Extractor::new(dest, origin, limits, manifest, progress);
    if let Some(sharer) = sharer {
        extractor.share_from(sharer);
    }
    let mut exported = Exported::open(&copy.manifest)?;
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
