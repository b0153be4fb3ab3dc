//! Archive sources (.zip, .tar, .tar.gz/.tgz, .tar.zst), from a path or an
//! http(s) URL, extracted through the hardened `Extractor`.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek};
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use crate::fsx;
use crate::manifest::Manifest;
use crate::share::Sharer;
use crate::source::extract::{Extractor, Limits, ProgressFn};

/// File name endings that make a source an archive.
pub const ARCHIVE_SUFFIXES: &[&str] = &[".zip", ".tar", ".tar.gz", ".tgz", ".tar.zst", ".tzst"];

pub fn has_archive_suffix(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    ARCHIVE_SUFFIXES.iter().any(|s| lower.ends_with(s))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Zip,
    Tar,
    TarGz,
    TarZst,
}

/// Tell the format from the first bytes, not the name.
fn sniff(path: &Path, file: &mut File) -> Result<Format> {
    let mut head = [0u8; 512];
    let mut filled = 0;
    while filled < head.len() {
        match file.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) => return Err(Error::io("read", path, e)),
        }
    }
    file.rewind().map_err(|e| Error::io("read", path, e))?;
    let head = &head[..filled];
    Ok(
        if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
            Format::Zip
        } else if head.starts_with(&[0x1f, 0x8b]) {
            Format::TarGz
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Format::TarZst
        } else if (head.len() >= 262 && &head[257..262] == b"ustar")
            || (head.len() >= 512 && tar_header_checksum_ok(head))
        {
            // ustar/GNU magic, or an old-style (v7) header with a valid checksum
            Format::Tar
        } else {
            return Err(Error::Source(format!(
                "{} is not a zip, tar, tar.gz or tar.zst archive (unrecognised content)",
                path.display()
            )));
        },
    )
}

fn tar_header_checksum_ok(block: &[u8]) -> bool {
    let field = String::from_utf8_lossy(&block[148..156]);
    let Ok(stored) = u32::from_str_radix(field.trim_matches(|c: char| c == '\0' || c == ' '), 8)
    else {
        return false;
    };
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                b' ' as u32
            } else {
                *b as u32
            }
        })
        .sum();
    sum == stored
}

/// Extract the archive at `path` into `root`, unwrapping a single top folder.
pub fn extract(
    path: &Path,
    root: &Path,
    limits: Limits,
    manifest: &Manifest<'_>,
    sharer: Option<&Sharer>,
    progress: &mut ProgressFn<'_>,
) -> Result<()> {
    let mut file = fsx::open(path)?;
    let origin = format!("archive {}", path.display());
    let format = sniff(path, &mut file)?;
    let mut extractor = Extractor::new(root, &origin, limits, manifest, progress);
    extractor.packed(
        file.metadata()
            .map_err(|e| Error::io("inspect", path, e))?
            .len(),
    );
    if let Some(sharer) = sharer {
        extractor.share_from(sharer);
    }
    let reader = BufReader::new(file);
    match format {
        Format::Zip => extract_zip(path, reader, &mut extractor)?,
        Format::Tar => extract_tar(&origin, reader, &mut extractor)?,
        Format::TarGz => extract_tar(
            &origin,
            flate2::read::MultiGzDecoder::new(reader),
            &mut extractor,
        )?,
        Format::TarZst => {
            let decoder = zstd::stream::read::Decoder::new(reader)
                .map_err(|e| Error::Source(format!("cannot read {origin}: {e}")))?;
            extract_tar(&origin, decoder, &mut extractor)?
        }
    }
    extractor.finish(true)
}

/// Feed a tar stream into the extractor.
pub fn extract_tar(origin: &str, reader: impl Read, extractor: &mut Extractor<'_>) -> Result<()> {
    let corrupt =
        |e: io::Error| Error::Source(format!("cannot read {origin}: {e} (corrupt or truncated?)"));
    let mut archive = tar::Archive::new(reader);
    let mut saw_entry = false;
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        saw_entry = true;
        let path = entry.path().map_err(corrupt)?.into_owned();
        let header = entry.header();
        let mode = header.mode().unwrap_or(0o644);
        let mtime = header
            .mtime()
            .ok()
            .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        use tar::EntryType as T;
        match header.entry_type() {
            T::Regular | T::Continuous | T::GNUSparse => {
                extractor.file(&path, mode, mtime, &mut entry)?
            }
            T::Directory => extractor.dir(&path, mode)?,
            T::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(corrupt)?
                    .ok_or_else(|| {
                        Error::Source(format!(
                            "{origin}: symlink '{}' has no target",
                            path.display()
                        ))
                    })?
                    .into_owned();
                extractor.symlink(&path, &target)?
            }
            T::Link => {
                let target = entry
                    .link_name()
                    .map_err(corrupt)?
                    .ok_or_else(|| {
                        Error::Source(format!(
                            "{origin}: hard link '{}' has no target",
                            path.display()
                        ))
                    })?
                    .into_owned();
                extractor.hardlink(&path, &target)?
            }
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => {}
            T::Char => extractor.special(&path, "character device")?,
            T::Block => extractor.special(&path, "block device")?,
            T::Fifo => extractor.special(&path, "named pipe")?,
            other => extractor.special(&path, &format!("tar entry of type {other:?}"))?,
        }
    }
    if !saw_entry {
        return Err(Error::Source(format!(
            "{origin} is empty or not a tar archive"
        )));
    }
    Ok(())
}

fn extract_zip(path: &Path, reader: impl Read + Seek, extractor: &mut Extractor<'_>) -> Result<()> {
    let corrupt = |e: zip::result::ZipError| {
        Error::Source(format!(
            "cannot read archive {}: {e} (corrupt or truncated?)",
            path.display()
        ))
    };
    let mut archive = zip::ZipArchive::new(reader).map_err(corrupt)?;
    // The index keeps one entry per name: tools disagree on which of two
    // same-named entries counts, so a zip that has them is refused whole.
    if archive.has_duplicate_names() {
        return Err(Error::Source(format!(
            "refusing archive {}: an entry name appears twice",
            path.display()
        )));
    }
    for index in 0..archive.len() {
        let mut file = archive.by_index(index).map_err(corrupt)?;
        let name = file.name().map_err(corrupt)?.to_string();
        // Our own checks see the raw name, so `..` and absolute paths are reported, not skipped.
        let raw = Path::new(&name).to_path_buf();
        let mode = file.unix_mode();
        let mtime = file
            .last_modified()
            .and_then(|t| {
                jiff::civil::DateTime::new(
                    t.year() as i16,
                    t.month() as i8,
                    t.day() as i8,
                    t.hour() as i8,
                    t.minute() as i8,
                    t.second().min(59) as i8,
                    0,
                )
                .ok()
            })
            .and_then(|dt| dt.to_zoned_datetime(jiff::tz::TimeZone::UTC).ok())
            .and_then(|z| u64::try_from(z.timestamp().as_second()).ok())
            .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        let file_type = mode.map(|m| m & 0o170000);
        if file.is_dir() {
            extractor.dir(&raw, mode.unwrap_or(0o755))?;
        } else if file.is_symlink() {
            let mut target = Vec::new();
            (&mut file)
                .take(4096)
                .read_to_end(&mut target)
                .map_err(|e| {
                    Error::Source(format!("cannot read archive {}: {e}", path.display()))
                })?;
            let target = <std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(target);
            extractor.symlink(&raw, Path::new(&target))?;
        } else if matches!(
            file_type,
            Some(0o020000) | Some(0o060000) | Some(0o010000) | Some(0o140000)
        ) {
            extractor.special(&raw, "device, pipe or socket")?;
        } else {
            extractor.file(&raw, mode.unwrap_or(0o644), mtime, &mut file)?;
        }
    }
    Ok(())
}

/// Download an http(s) archive to `dest`, refusing more than `max_bytes`.
pub fn download(url: &str, shown_url: &str, dest: &Path, max_bytes: u64) -> Result<()> {
    let fail = |why: String| Error::Source(format!("cannot download {shown_url}: {why}"));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(600)))
        .http_status_as_error(true)
        .build()
        .into();
    let response = agent.get(url).call().map_err(|e| fail(e.to_string()))?;
    let mut body = response.into_body().into_reader().take(max_bytes + 1);
    let mut out = File::create(dest).map_err(|e| Error::io("create", dest, e))?;
    let copied = io::copy(&mut body, &mut out).map_err(|e| fail(e.to_string()))?;
    if copied > max_bytes {
        return Err(fail(format!(
            "it is larger than the limit of {max_bytes} bytes"
        )));
    }
    out.sync_all().map_err(|e| Error::io("write", dest, e))?;
    Ok(())
}
