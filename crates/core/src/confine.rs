//! Commands confined to what they say they write: run in a private mount
//! namespace where the release is read-only but for the paths a build step
//! names in `writes`. Files the new release shares with the live one by hard
//! link are the same inodes as the live release's; the kernel, not trust,
//! keeps a build from writing into them, so releases with build steps can
//! cost only what changed on filesystems without reflinks too.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;

use rustix::mount::{MountFlags, MountPropagationFlags};

/// Whether this process may make mount namespaces (root with
/// CAP_SYS_ADMIN): asked once, by a thread that makes one.
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        std::thread::spawn(|| own_mount_namespace().is_ok())
            .join()
            .unwrap_or(false)
    })
}

/// Give the calling thread a mount namespace of its own (a copy of the
/// process's, nothing propagated back). Only namespaces and the thread's
/// working folder are unshared, never its file table, which is what makes
/// rustix call `unshare` unsafe in general.
#[allow(deprecated)]
fn own_mount_namespace() -> io::Result<()> {
    rustix::thread::unshare(rustix::thread::UnshareFlags::NEWNS)?;
    rustix::mount::mount_change(
        c"/",
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )?;
    Ok(())
}

/// A release made read-only but for some of its folders, for one command.
#[derive(Debug, Clone)]
pub struct Confinement {
    release: CString,
    writable: Vec<CString>,
    /// What may be written, for messages.
    shown: Vec<PathBuf>,
}

impl Confinement {
    /// `release` read-only but for `writes` (relative paths, made by
    /// [`make_missing_folders`] when missing). A path that leads through a
    /// symlink (a shared path) points out of the release and needs nothing.
    pub fn new(release: &Path, writes: &[PathBuf]) -> Confinement {
        let mut writable: Vec<PathBuf> = Vec::new();
        for path in writes {
            let Some(full) = crate::fsx::without_symlinks(release, path)
                .filter(|p| p.symlink_metadata().is_ok())
            else {
                continue;
            };
            if !writable.iter().any(|w| full.starts_with(w)) {
                writable.retain(|w| !w.starts_with(&full));
                writable.push(full);
            }
        }
        let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).expect("paths hold no NUL");
        Confinement {
            release: c(release),
            writable: writable.iter().map(|p| c(p)).collect(),
            shown: writes.to_vec(),
        }
    }

    /// What the command may write, for messages.
    pub fn describe(&self) -> String {
        if self.shown.is_empty() {
            "nothing in the release".to_string()
        } else {
            let paths: Vec<String> = self.shown.iter().map(|p| p.display().to_string()).collect();
            paths.join(", ")
        }
    }

    /// Start `command` confined: from a thread of its own whose mount
    /// namespace has the release bound read-only over itself and the
    /// writable paths bound read-write above it. The child inherits that
    /// namespace; the rest of this process never sees it.
    pub fn spawn(&self, command: &mut Command) -> io::Result<Child> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    own_mount_namespace()?;
                    rustix::mount::mount_bind(self.release.as_c_str(), self.release.as_c_str())?;
                    for path in &self.writable {
                        rustix::mount::mount_bind(path.as_c_str(), path.as_c_str())?;
                    }
                    rustix::mount::mount_remount(
                        self.release.as_c_str(),
                        MountFlags::BIND | MountFlags::RDONLY,
                        c"",
                    )?;
                    command.spawn()
                })
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the confining thread panicked")))
        })
    }
}

/// Make the folders of `writes` the release lacks (a bind mount needs
/// something to bind), owned by `owner` (the build user) when given.
pub fn make_missing_folders(
    release: &Path,
    writes: &[PathBuf],
    owner: Option<(u32, u32)>,
) -> crate::Result<()> {
    for path in writes {
        if crate::fsx::without_symlinks(release, path).is_none() {
            continue;
        }
        let mut made = release.to_path_buf();
        for component in path.components() {
            made.push(component);
            if made.symlink_metadata().is_ok() {
                continue;
            }
            std::fs::create_dir(&made).map_err(|e| crate::Error::io("create", &made, e))?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::lchown(&made, Some(uid), Some(gid))
                    .map_err(|e| crate::Error::io("change the owner of", &made, e))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writable_paths_are_made_and_those_through_symlinks_left_alone() {
        let dir = std::env::temp_dir().join(format!("zdeploy-confine-{}", std::process::id()));
        let release = dir.join("release");
        std::fs::create_dir_all(release.join("vendor/composer")).unwrap();
        std::fs::write(release.join("composer.json"), "{}").unwrap();
        std::os::unix::fs::symlink("/elsewhere", release.join("storage")).unwrap();
        let writes: Vec<PathBuf> = [
            "vendor",
            "vendor/composer",
            "composer.json",
            "var/cache",
            "storage/framework",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        make_missing_folders(&release, &writes, None).unwrap();
        assert!(release.join("var/cache").is_dir());
        assert!(!release.join("storage").is_dir());
        let confined = Confinement::new(&release, &writes);
        let writable: Vec<PathBuf> = confined
            .writable
            .iter()
            .map(|c| PathBuf::from(c.to_str().unwrap()))
            .collect();
        assert_eq!(
            writable,
            [
                release.join("vendor"),
                release.join("composer.json"),
                release.join("var/cache")
            ]
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
