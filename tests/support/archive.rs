//! Archives built at test time, hostile ones included: entries are written
//! with raw headers so names like `../evil` reach the archive unchanged.

use std::fs::File;
use std::io::Write;
use std::path::Path;

/// One entry of a test archive.
pub enum Item<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    CharDevice(&'a str),
    Fifo(&'a str),
}

fn raw_header(name: &str, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    {
        let bytes = name.as_bytes();
        assert!(bytes.len() < 100, "test names stay short");
        let old = header.as_old_mut();
        old.name[..bytes.len()].copy_from_slice(bytes);
    }
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    header.set_mtime(1_700_000_000);
    header
}

fn set_link(header: &mut tar::Header, target: &str) {
    let bytes = target.as_bytes();
    header.as_old_mut().linkname[..bytes.len()].copy_from_slice(bytes);
}

/// Write a plain tar stream of `items` into `out`.
pub fn tar_into(out: impl Write, items: &[Item<'_>]) {
    let mut builder = tar::Builder::new(out);
    for item in items {
        let (mut header, data): (tar::Header, &[u8]) = match item {
            Item::File(name, data) => (
                raw_header(name, tar::EntryType::Regular, data.len() as u64),
                data,
            ),
            Item::Dir(name) => (raw_header(name, tar::EntryType::Directory, 0), &[]),
            Item::Symlink(name, target) => {
                let mut h = raw_header(name, tar::EntryType::Symlink, 0);
                set_link(&mut h, target);
                (h, &[])
            }
            Item::Hardlink(name, target) => {
                let mut h = raw_header(name, tar::EntryType::Link, 0);
                set_link(&mut h, target);
                (h, &[])
            }
            Item::CharDevice(name) => (raw_header(name, tar::EntryType::Char, 0), &[]),
            Item::Fifo(name) => (raw_header(name, tar::EntryType::Fifo, 0), &[]),
        };
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }
    builder.into_inner().unwrap().flush().unwrap();
}

pub fn tar(path: &Path, items: &[Item<'_>]) {
    tar_into(File::create(path).unwrap(), items);
}

pub fn tar_gz(path: &Path, items: &[Item<'_>]) {
    let encoder =
        flate2::write::GzEncoder::new(File::create(path).unwrap(), flate2::Compression::fast());
    let mut buffer = Vec::new();
    tar_into(&mut buffer, items);
    let mut encoder = encoder;
    encoder.write_all(&buffer).unwrap();
    encoder.finish().unwrap();
}

pub fn tar_zst(path: &Path, items: &[Item<'_>]) {
    let mut buffer = Vec::new();
    tar_into(&mut buffer, items);
    let compressed = zstd::encode_all(&buffer[..], 3).unwrap();
    std::fs::write(path, compressed).unwrap();
}

pub fn zip(path: &Path, items: &[Item<'_>]) {
    use zip::write::SimpleFileOptions;
    let mut writer = zip::ZipWriter::new(File::create(path).unwrap());
    let options = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for item in items {
        match item {
            Item::File(name, data) => {
                writer.start_file(*name, options).unwrap();
                writer.write_all(data).unwrap();
            }
            Item::Dir(name) => writer.add_directory(*name, options).unwrap(),
            Item::Symlink(name, target) => writer.add_symlink(*name, *target, options).unwrap(),
            Item::Hardlink(..) | Item::CharDevice(_) | Item::Fifo(_) => {
                panic!("zip has no such entries")
            }
        }
    }
    writer.finish().unwrap();
}

/// A zip holding one file of `size` zero bytes (compresses ~1000:1).
pub fn zip_bomb(path: &Path, size: usize) {
    use zip::write::SimpleFileOptions;
    let mut writer = zip::ZipWriter::new(File::create(path).unwrap());
    let options = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(size > u32::MAX as usize);
    writer.start_file("zeros.bin", options).unwrap();
    let chunk = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len());
        writer.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
    writer.finish().unwrap();
}
