//! Which bytes of a file the filesystem shares with other files. Reflinked
//! files (btrfs, xfs) have their own inode yet share data blocks, which
//! neither the size nor the link count shows: their extent map (FIEMAP) does.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use fiemap::{Fiemap, FiemapExtentFlags};

const XFS_MAGIC: u64 = 0x5846_5342;
const BTRFS_MAGIC: u64 = 0x9123_683e;

/// Whether files under `path` can share blocks (a filesystem with reflinks);
/// elsewhere only hardlinks share, and the link count says so.
pub fn can_share_blocks(path: &Path) -> bool {
    rustix::fs::statfs(path).is_ok_and(|fs| matches!(fs.f_type as u64, XFS_MAGIC | BTRFS_MAGIC))
}

/// A run of a file's data on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub physical: u64,
    pub length: u64,
    /// Other files use these blocks too.
    pub shared: bool,
}

/// The extents of the regular file at `path` (never following a symlink).
pub fn extents(path: &Path) -> io::Result<Vec<Extent>> {
    let file: File = OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32)
        .open(path)?;
    Fiemap::new(&file)
        .map(|extent| {
            extent.map(|e| Extent {
                physical: e.fe_physical,
                length: e.fe_length,
                shared: e.fe_flags.contains(FiemapExtentFlags::SHARED),
            })
        })
        .collect()
}

/// Bytes of a file of `size` bytes that no other file shares.
pub fn unshared_bytes(extents: &[Extent], size: u64) -> u64 {
    let unshared: u64 = extents.iter().filter(|e| !e.shared).map(|e| e.length).sum();
    unshared.min(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_blocks_no_other_file_uses_count_as_the_files_own() {
        let extent = |length, shared| Extent {
            physical: 0,
            length,
            shared,
        };
        assert_eq!(unshared_bytes(&[extent(4096, true)], 4000), 0);
        assert_eq!(
            unshared_bytes(&[extent(4096, true), extent(8192, false)], 12_000),
            8192
        );
        // The last block is whole on disk; a file owns at most its size.
        assert_eq!(unshared_bytes(&[extent(4096, false)], 10), 10);
    }
}
