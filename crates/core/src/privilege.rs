//! Least privilege for a release: who owns its deployed files (a configured
//! user and group), which paths the web server may write (`writable`, group
//! writable), and which unprivileged user runs its commands — never root
//! unless allowed.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use rustix::fs::{AtFlags, CWD, Gid, Uid};

use crate::error::{Error, Result};
use crate::manifest::{Entry, EntryKind, Manifest};

/// A user from the system's user database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Privileges {
    /// Owner (uid) of every deployed file and folder.
    pub owner: Option<u32>,
    /// Group (gid) of every deployed file and folder.
    pub group: Option<u32>,
    /// Release paths the group may write (folders get setgid so what the
    /// app creates there stays in the group).
    pub writable: Vec<PathBuf>,
    /// Runs build steps and the check before the switch.
    pub build_user: Option<Account>,
    /// Let build steps run as root when no build user is set.
    pub allow_root_build: bool,
}

/// `name` (or a numeric uid) from the user database, via getent (NSS).
pub fn lookup_user(name: &str) -> std::result::Result<Account, String> {
    let fields = getent("passwd", name)?;
    let number = |i: usize| fields.get(i).and_then(|f| f.parse::<u32>().ok());
    match (number(2), number(3), fields.get(5)) {
        (Some(uid), Some(gid), Some(home)) => Ok(Account {
            name: fields[0].clone(),
            uid,
            gid,
            home: PathBuf::from(home),
        }),
        _ => Err(format!(
            "the user database has a malformed entry for '{name}'"
        )),
    }
}

/// `name` (or a numeric gid) from the group database, via getent (NSS).
pub fn lookup_group(name: &str) -> std::result::Result<u32, String> {
    getent("group", name)?
        .get(2)
        .and_then(|gid| gid.parse().ok())
        .ok_or_else(|| format!("the group database has a malformed entry for '{name}'"))
}

fn getent(database: &str, name: &str) -> std::result::Result<Vec<String>, String> {
    let valid = !name.is_empty()
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-$".contains(c));
    if !valid {
        return Err(format!("'{name}' is not a valid {database} name"));
    }
    let kind = if database == "passwd" {
        "user"
    } else {
        "group"
    };
    let output = Command::new("getent")
        .args([database, "--", name])
        .output()
        .map_err(|e| format!("cannot run getent to look up {kind} '{name}': {e}"))?;
    let line = String::from_utf8_lossy(&output.stdout);
    match line.lines().next() {
        Some(entry) if output.status.success() => {
            Ok(entry.split(':').map(str::to_string).collect())
        }
        _ => Err(format!("no {kind} '{name}' on this system")),
    }
}

/// A `writable` entry: a relative path inside the release.
pub fn validate_writable_path(path: &Path) -> std::result::Result<(), String> {
    let normal = path.components().all(|c| matches!(c, Component::Normal(_)));
    if path.as_os_str().is_empty() || !normal {
        return Err(format!(
            "writable path '{}' must be relative to the release, without '..'",
            path.display()
        ));
    }
    Ok(())
}

pub fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}

impl Privileges {
    /// Refuse to run `commands` (build steps) as root unless allowed.
    pub fn check_commands(&self, commands: usize) -> Result<()> {
        if commands > 0 && self.build_user.is_none() && !self.allow_root_build && running_as_root()
        {
            return Err(Error::Invalid(
                "build steps would run as root: set build_user = \"USER\" (--build-user), an \
                 unprivileged user, or allow them as root with allow_root_build = true \
                 (--allow-root-build, ZDEPLOY_ALLOW_ROOT_BUILD=1)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Before the build: the build user gets the release and its deployed
    /// entries, so its commands can write there and nowhere else. A file
    /// linked from another release (a reused folder) is left alone: it is
    /// that release's too.
    pub fn hand_to_build_user(&self, release: &Path, manifest: &Manifest<'_>) -> Result<()> {
        let Some(user) = &self.build_user else {
            return Ok(());
        };
        let ids = (Some(user.uid), Some(user.gid));
        chown_if_needed(release, ids)?;
        for item in manifest.entries() {
            let (path, _) = item?;
            let full = release.join(path);
            let linked = full
                .symlink_metadata()
                .is_ok_and(|m| m.is_file() && m.nlink() > 1);
            if !linked {
                chown_if_needed(&full, ids)?;
            }
        }
        Ok(())
    }

    /// After the build: owner and group on every deployed entry, and the
    /// writable paths (created when missing) writable by the group.
    pub fn apply(&self, release: &Path, manifest: &Manifest<'_>) -> Result<()> {
        for writable in &self.writable {
            make_group_writable(release, writable, manifest)?;
        }
        let ids = (self.owner, self.group);
        if ids == (None, None) {
            return Ok(());
        }
        chown_if_needed(release, ids)?;
        for item in manifest.entries() {
            let (path, _) = item?;
            chown_if_needed(&release.join(path), ids)?;
        }
        Ok(())
    }
}

/// Change owner and group of `path` (not following symlinks; `meta` is its
/// lstat) where they differ from `uid`/`gid`; true when something changed.
pub(crate) fn set_owner(
    path: &Path,
    meta: &std::fs::Metadata,
    uid: Option<u32>,
    gid: Option<u32>,
) -> std::io::Result<bool> {
    let uid = uid.filter(|&uid| uid != meta.uid());
    let gid = gid.filter(|&gid| gid != meta.gid());
    if uid.is_none() && gid.is_none() {
        return Ok(false);
    }
    rustix::fs::chownat(
        CWD,
        path,
        uid.map(Uid::from_raw),
        gid.map(Gid::from_raw),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(true)
}

/// `set_owner` for a deployed entry, keeping its setuid/setgid bits.
fn chown_if_needed(path: &Path, (uid, gid): (Option<u32>, Option<u32>)) -> Result<()> {
    let meta = path
        .symlink_metadata()
        .map_err(|e| Error::io("inspect", path, e))?;
    let changed =
        set_owner(path, &meta, uid, gid).map_err(|e| Error::io("change the owner of", path, e))?;
    let mode = meta.mode();
    if changed && meta.is_file() && mode & 0o6000 != 0 {
        // chown drops setuid/setgid bits: put the deployed mode back.
        std::fs::set_permissions(path, PermissionsExt::from_mode(mode & 0o7777))
            .map_err(|e| Error::io("set permissions of", path, e))?;
    }
    Ok(())
}

/// `writable` under `release`: folders g+rwx with setgid, files g+rw; the
/// manifest follows. A symlink anywhere on the way is refused (it could
/// point outside the release).
fn make_group_writable(release: &Path, writable: &Path, manifest: &Manifest<'_>) -> Result<()> {
    let mut partial = PathBuf::new();
    for component in writable.components() {
        partial.push(component);
        let full = release.join(&partial);
        match full.symlink_metadata() {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(Error::Build(format!(
                    "writable path '{}' goes through the symlink '{}'; it must be a real \
                     folder or file of the release",
                    writable.display(),
                    partial.display()
                )));
            }
            // A folder made for a shared path's link below it (var/ for
            // var/log) is in no manifest yet: list it, so it is made writable.
            Ok(meta) if meta.is_dir() && !manifest.contains(&partial)? => {
                manifest.insert(
                    &partial,
                    Entry {
                        kind: EntryKind::Dir,
                        mode: meta.mode() & 0o777,
                        size: 0,
                        digest: String::new(),
                    },
                )?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&full).map_err(|e| Error::io("create", &full, e))?;
                manifest.insert(
                    &partial,
                    Entry {
                        kind: EntryKind::Dir,
                        mode: 0o755,
                        size: 0,
                        digest: String::new(),
                    },
                )?;
            }
            Err(e) => return Err(Error::io("inspect", &full, e)),
        }
    }
    for item in manifest.entries_under(writable) {
        let (path, mut entry) = item?;
        let full = release.join(&path);
        let extra = match entry.kind {
            EntryKind::Dir => 0o2070,
            EntryKind::File => 0o060,
            EntryKind::Symlink => continue,
        };
        let meta = full
            .symlink_metadata()
            .map_err(|e| Error::io("inspect", &full, e))?;
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.mode() & 0o7777 | extra;
        std::fs::set_permissions(&full, PermissionsExt::from_mode(mode))
            .map_err(|e| Error::io("make group-writable", &full, e))?;
        entry.mode = mode & 0o777;
        manifest.insert(&path, entry)?;
    }
    Ok(())
}
