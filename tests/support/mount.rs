//! Small filesystems a test mounts for itself (as root): an XFS image on a
//! loop device, where files can share blocks (reflinks), and a size-limited
//! tmpfs, to run a disk full. Unmounted when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Mount {
    pub path: PathBuf,
}

impl Mount {
    /// A fresh XFS filesystem of `megabytes` mounted at `at` (created).
    pub fn xfs(at: &Path, megabytes: u64) -> Mount {
        let image = at.with_extension("img");
        let file = std::fs::File::create(&image).expect("create image");
        file.set_len(megabytes << 20).expect("size image");
        run(Command::new("mkfs.xfs")
            .args(["-q", "-m", "reflink=1"])
            .arg(&image));
        std::fs::create_dir_all(at).unwrap();
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(at));
        Mount {
            path: at.to_path_buf(),
        }
    }

    /// A tmpfs of `megabytes` mounted at `at` (created).
    pub fn tmpfs(at: &Path, megabytes: u64) -> Mount {
        std::fs::create_dir_all(at).unwrap();
        let size = format!("size={megabytes}m");
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &size, "tmpfs"])
            .arg(at));
        Mount {
            path: at.to_path_buf(),
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // Lazy: a server a failed test left running must not keep it busy.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn run(command: &mut Command) {
    let output = command
        .env(
            "PATH",
            format!(
                "{}:/usr/sbin:/sbin",
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed (the test needs root and loop devices): {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
