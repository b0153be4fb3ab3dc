//! Carrying user content (files the running app created: uploads, saves)
//! from one release into another. A user file is carried by hard link: the
//! releases share its inode, so a carry costs what `cp -al` costs, writes no
//! file bytes, and an app that keeps a file open and writes it in place (a
//! SQLite database, a log) writes the one copy every release sees. Only where
//! a link cannot be made (another filesystem, too many links) is a file
//! copied. The decisions are pure functions; the walk applies them.

use std::ffi::OsString;
use std::fs::{self, FileType};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, StatxFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::manifest::{EntryKind, Manifest};
use crate::user_content::UserContentList;

/// Ending of the temporary name a file is carried under before its rename.
const CARRY_TMP_SUFFIX: &str = ".zdeploy-carry";

/// What a carry is for, which decides what it may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Into a release that holds no user content of its own yet (the first
    /// carry, seeding a shared store): link what the target lacks; where the
    /// target has a user file already, the newer one wins.
    Fill,
    /// Make the user content of a release that is not live the same as the
    /// live one's (the sync before a switch, a rollback's target): link what
    /// is new or was replaced, remove what the source no longer has.
    /// With `since`, files and folders not changed since then are as the
    /// last pass left them.
    Mirror { since: Option<i128> },
    /// From a release that stopped being live, what requests still running
    /// on it wrote after `since` (settle, the carry before a prune): files
    /// born after it are carried, files replaced after it win when newer.
    /// A file missing in the target but older than `since` was deleted
    /// there by a user, and stays deleted.
    Late { since: i128 },
}

impl Pass {
    fn since(self) -> Option<i128> {
        match self {
            Pass::Fill => None,
            Pass::Mirror { since } => since,
            Pass::Late { since } => Some(since),
        }
    }
}

/// An entry of the release carried from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceEntry {
    pub kind: EntryKind,
    /// A deployed file of that release (in its manifest), not user content.
    pub deployed: bool,
    /// Its inode changed at or after the pass's `since` (always without one).
    pub changed: bool,
    /// Its inode was born at or after the pass's `since` (always without one).
    pub born_after: bool,
    pub mtime_ns: i128,
    pub size: u64,
    pub inode: Inode,
}

/// Device and inode number: the same file, whatever its paths.
pub type Inode = (u64, u64);

/// The same path in the release carried to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetEntry {
    Missing,
    /// A deployed file of the target (or, when the target has no manifest, any
    /// existing entry): it wins over user content.
    Deployed(EntryKind),
    /// User content already in the target.
    User {
        kind: EntryKind,
        mtime_ns: i128,
        size: u64,
        inode: Inode,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing to do; for a folder, don't look inside.
    Skip,
    /// A folder present on both sides: look inside.
    Descend,
    /// Link it into the target (a folder: create it, then look inside).
    Create,
    /// Put the source's file in place of the target's.
    Replace,
    /// User content hidden by a deployed file at the same path: logged, not carried.
    Shadowed,
}

/// What to do with one entry. Folders are always explored because user files
/// live inside deployed folders (e.g. `uploads/` with a `.gitkeep`).
pub fn decide(pass: Pass, source: SourceEntry, target: TargetEntry) -> Action {
    use Action::*;
    use EntryKind::Dir;
    let late = matches!(pass, Pass::Late { .. });
    let mirror = matches!(pass, Pass::Mirror { .. });
    if source.kind == Dir {
        return match target {
            // Deleted in the live release, or made in the old one since (a
            // folder's birth says little: every release makes its own).
            // Only what inside it was born since is carried.
            TargetEntry::Missing if late => Descend,
            TargetEntry::Missing => Create,
            TargetEntry::Deployed(Dir) | TargetEntry::User { kind: Dir, .. } => Descend,
            TargetEntry::Deployed(_) if source.deployed => Skip,
            TargetEntry::Deployed(_) => Shadowed,
            TargetEntry::User { .. } if mirror => Replace,
            TargetEntry::User { .. } => Skip,
        };
    }
    if source.deployed || !source.changed {
        return Skip;
    }
    match target {
        TargetEntry::Missing if late && !source.born_after => Skip,
        TargetEntry::Missing => Create,
        TargetEntry::Deployed(_) => Shadowed,
        TargetEntry::User { inode, .. } if inode == source.inode => Skip,
        TargetEntry::User { .. } if mirror => Replace,
        TargetEntry::User {
            kind,
            mtime_ns,
            size,
            ..
        } if kind == source.kind => {
            let newer =
                source.mtime_ns > mtime_ns || (source.mtime_ns == mtime_ns && source.size != size);
            if newer { Replace } else { Skip }
        }
        TargetEntry::User { .. } => Skip,
    }
}

/// What of a release is deployed; the rest is user content.
#[derive(Clone, Copy)]
pub enum Deployed<'a> {
    /// What its manifest lists.
    Listed(&'a Manifest<'a>),
    /// Whatever exists in it (a release the history has no manifest of).
    Everything,
    /// Nothing (a site deployed by other means; a shared store).
    Nothing,
}

impl<'a> Deployed<'a> {
    /// `Listed` when there is a manifest, else `otherwise`.
    pub fn listed_or(manifest: Option<&'a Manifest<'a>>, otherwise: Deployed<'a>) -> Self {
        manifest.map_or(otherwise, Deployed::Listed)
    }

    /// As one walk reads it: a manifest with a window of its own.
    fn for_walk(&self) -> Result<Walking<'a>> {
        Ok(match self {
            Deployed::Listed(manifest) => Walking::Listed(manifest.reread()?),
            Deployed::Everything => Walking::Everything,
            Deployed::Nothing => Walking::Nothing,
        })
    }
}

/// `Deployed`, read by one walk.
enum Walking<'a> {
    Listed(Manifest<'a>),
    Everything,
    Nothing,
}

impl Walking<'_> {
    /// Whether `path` (of `kind`, when known) is deployed.
    fn has(&self, path: &Path, kind: Option<EntryKind>) -> Result<bool> {
        Ok(match self {
            Walking::Listed(manifest) => manifest
                .kind(path)?
                .is_some_and(|found| kind.is_none_or(|k| k == found)),
            Walking::Everything => true,
            Walking::Nothing => false,
        })
    }
}

/// Where to carry from and to, and what for.
pub struct Carry<'a> {
    pub from: &'a Path,
    pub from_deployed: Deployed<'a>,
    pub to: &'a Path,
    pub to_deployed: Deployed<'a>,
    /// Shared paths: symlinked, never carried.
    pub skip: &'a [PathBuf],
    pub pass: Pass,
    /// Every user file of the target is a link to the source's, made by the
    /// passes of this run: then a folder of the source whose names did not
    /// change since `since` holds nothing to carry (its files' writes are
    /// the target's writes), and only its subfolders are looked into.
    pub all_linked: bool,
    /// Where each user file placed in the target is listed, if anywhere.
    pub listing: Option<&'a UserContentList>,
}

#[derive(Debug, Default, Clone)]
pub struct CarryReport {
    /// User files (and folders' worth of them) new in the target.
    pub created: u64,
    /// Target user files replaced by the source's.
    pub replaced: u64,
    /// Target user entries removed because the source no longer has them.
    pub removed: u64,
    /// Of the files carried, those that could not be linked and were copied.
    pub copied: u64,
    /// Bytes those copies wrote.
    pub copied_bytes: u64,
    /// Folders whose files needed no look (names unchanged, all linked).
    pub folders_unchanged: u64,
    pub shadowed: Vec<PathBuf>,
}

impl CarryReport {
    pub fn files(&self) -> u64 {
        self.created + self.replaced
    }

    /// Whether every file this carry placed shares its inode with the source's.
    pub fn all_linked(&self) -> bool {
        self.copied == 0
    }
}

/// What a carry needs to know of an entry, from one `statx`.
#[derive(Debug, Clone, Copy)]
struct Stat {
    kind: Option<EntryKind>,
    inode: Inode,
    mtime_ns: i128,
    ctime_ns: i128,
    /// Birth time where the filesystem records one.
    born_ns: Option<i128>,
    size: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
}

impl Stat {
    /// `lstat` of `path`; `None` when it is gone (a file where a folder
    /// above it should be is an error: `ENOTDIR`).
    fn of(path: &Path) -> io::Result<Option<Stat>> {
        let mask = StatxFlags::BASIC_STATS | StatxFlags::BTIME;
        let stx = match rustix::fs::statx(CWD, path, AtFlags::SYMLINK_NOFOLLOW, mask) {
            Ok(stx) => stx,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let ns =
            |t: rustix::fs::StatxTimestamp| t.tv_sec as i128 * 1_000_000_000 + t.tv_nsec as i128;
        let mode = u32::from(stx.stx_mode);
        let kind = match rustix::fs::FileType::from_raw_mode(mode) {
            rustix::fs::FileType::Directory => Some(EntryKind::Dir),
            rustix::fs::FileType::RegularFile => Some(EntryKind::File),
            rustix::fs::FileType::Symlink => Some(EntryKind::Symlink),
            _ => None,
        };
        let dev = u64::from(stx.stx_dev_major) << 32 | u64::from(stx.stx_dev_minor);
        let has_birth = StatxFlags::from_bits_retain(stx.stx_mask).contains(StatxFlags::BTIME);
        Ok(Some(Stat {
            kind,
            inode: (dev, stx.stx_ino),
            mtime_ns: ns(stx.stx_mtime),
            ctime_ns: ns(stx.stx_ctime),
            born_ns: has_birth.then(|| ns(stx.stx_btime)),
            size: stx.stx_size,
            mode,
            uid: stx.stx_uid,
            gid: stx.stx_gid,
            nlink: stx.stx_nlink,
        }))
    }

    /// Born at or after `since`. Without a birth time, the change time
    /// stands in: it errs towards carrying (a file a user deleted in the
    /// live release may come back), never towards losing a write.
    fn born_since(&self, since: Option<i128>) -> bool {
        since.is_none_or(|s| self.born_ns.unwrap_or(self.ctime_ns) >= s)
    }

    fn changed_since(&self, since: Option<i128>) -> bool {
        since.is_none_or(|s| self.ctime_ns.max(self.mtime_ns) >= s)
    }
}

/// One walk's state.
struct Walk<'a, 'p> {
    from_deployed: Walking<'a>,
    to_deployed: Walking<'a>,
    report: CarryReport,
    seen: u64,
    progress: &'p mut dyn FnMut(u64),
}

impl Carry<'_> {
    pub fn run(&self, progress: &mut dyn FnMut(u64)) -> Result<CarryReport> {
        let mut walk = Walk {
            from_deployed: self.from_deployed.for_walk()?,
            to_deployed: self.to_deployed.for_walk()?,
            report: CarryReport::default(),
            seen: 0,
            progress,
        };
        self.carry_folder(Path::new(""), false, &mut walk)?;
        (walk.progress)(walk.seen);
        Ok(walk.report)
    }

    /// Carry the entries of the folder `relative` (both sides exist).
    /// `fresh`: this pass just created it in the target.
    fn carry_folder(&self, relative: &Path, fresh: bool, walk: &mut Walk<'_, '_>) -> Result<()> {
        let from_dir = self.from.join(relative);
        let since = self.pass.since();
        let stat = match since {
            Some(_) if !fresh => match source_stat(&from_dir)? {
                Some(stat) => Some(stat),
                None => return Ok(()),
            },
            _ => None,
        };
        let names_changed = stat.is_none_or(|stat| stat.changed_since(since));
        if !names_changed && self.all_linked {
            // Nothing was added, removed or renamed here, and every file is
            // shared with the target: only subfolders can hold changes.
            walk.report.folders_unchanged += 1;
            // ext4 and xfs count a folder's subfolders in its links: two
            // links, no subfolder (btrfs says one, and is listed).
            if stat.is_some_and(|stat| stat.nlink == 2) {
                return Ok(());
            }
            // The subfolders are listed from the target's copy, not the
            // live release; a folder on both sides is looked into whatever
            // the manifests say (see `decide`), so they are not asked.
            let to_dir = self.to.join(relative);
            for (name, file_type) in list_sorted(&to_dir)? {
                let path = relative.join(name);
                if file_type.is_dir()
                    && !self.ignored(&path)
                    && fs::symlink_metadata(self.from.join(&path)).is_ok_and(|m| m.is_dir())
                {
                    walk.seen += 1;
                    self.carry_folder(&path, false, walk)?;
                }
            }
            return Ok(());
        }
        let entries = list_sorted(&from_dir)?;
        if names_changed && matches!(self.pass, Pass::Mirror { .. }) {
            self.remove_gone(relative, &entries, walk)?;
        }
        for (name, file_type) in entries {
            self.carry_entry(&relative.join(name), file_type, walk)?;
        }
        Ok(())
    }

    fn carry_entry(
        &self,
        relative: &Path,
        file_type: FileType,
        walk: &mut Walk<'_, '_>,
    ) -> Result<()> {
        walk.seen += 1;
        if walk.seen.is_multiple_of(256) {
            (walk.progress)(walk.seen);
        }
        if self.ignored(relative) {
            return Ok(());
        }
        let Some(kind) = EntryKind::of(file_type) else {
            return Ok(());
        };
        let deployed = walk.from_deployed.has(relative, Some(kind))?;
        // A deployed file is never carried: no need to look at it (most
        // of a release is deployed files, so this keeps the walk cheap).
        if deployed && kind != EntryKind::Dir {
            return Ok(());
        }
        let from_path = self.from.join(relative);
        let to_path = self.to.join(relative);
        if self.pass == Pass::Fill && kind != EntryKind::Dir {
            // The target is fresh: try the link first, look only on a clash.
            match link_or_copy(&from_path, &to_path, &mut walk.report)? {
                Placed::Done => {
                    walk.report.created += 1;
                    self.list(relative)?;
                    return Ok(());
                }
                Placed::Vanished => return Ok(()),
                Placed::Exists => {}
            }
        }
        let Some(stat) = source_stat(&from_path)? else {
            return Ok(()); // deleted while we walk: nothing left to carry
        };
        if stat.kind != Some(kind) {
            return Ok(()); // replaced while we walk: the next carry sees it
        }
        let since = self.pass.since();
        let source = SourceEntry {
            kind,
            deployed,
            changed: stat.changed_since(since),
            born_after: stat.born_since(since),
            mtime_ns: stat.mtime_ns,
            size: stat.size,
            inode: stat.inode,
        };
        let target = self.target_entry(relative, &to_path, walk)?;
        match decide(self.pass, source, target) {
            Action::Skip => {}
            Action::Descend => self.carry_folder(relative, false, walk)?,
            Action::Shadowed => walk.report.shadowed.push(relative.to_path_buf()),
            Action::Create if kind == EntryKind::Dir => {
                create_folder(&to_path, &stat)?;
                self.carry_folder(relative, true, walk)?;
                // A deployed folder the target's version dropped comes
                // along only for the user content in it: left empty, it
                // goes (remove_dir refuses a folder that is not empty).
                if deployed {
                    let _ = fs::remove_dir(&to_path);
                }
            }
            Action::Create => {
                self.make_parents(relative)?;
                if link_or_copy(&from_path, &to_path, &mut walk.report)? == Placed::Done {
                    walk.report.created += 1;
                    self.list(relative)?;
                }
            }
            Action::Replace => {
                let kind_changes = kind == EntryKind::Dir
                    || matches!(
                        target,
                        TargetEntry::User {
                            kind: EntryKind::Dir,
                            ..
                        }
                    );
                let replaced = if kind_changes {
                    // A folder for a file or the other way round (only
                    // before a switch): the target's goes first.
                    remove_entry(&to_path)?;
                    if kind == EntryKind::Dir {
                        create_folder(&to_path, &stat)?;
                        true
                    } else {
                        link_or_copy(&from_path, &to_path, &mut walk.report)? == Placed::Done
                    }
                } else {
                    replace_by_link(&from_path, &to_path, &mut walk.report)?
                };
                if replaced {
                    walk.report.replaced += 1;
                    if kind != EntryKind::Dir {
                        self.list(relative)?;
                    }
                }
                if kind == EntryKind::Dir {
                    self.carry_folder(relative, true, walk)?;
                }
            }
        }
        Ok(())
    }

    /// Remove the target's user entries of folder `relative` that the
    /// source's folder (listed as `entries`) no longer has.
    fn remove_gone(
        &self,
        relative: &Path,
        entries: &[(OsString, FileType)],
        walk: &mut Walk<'_, '_>,
    ) -> Result<()> {
        let to_dir = self.to.join(relative);
        for (name, _) in list_sorted(&to_dir)? {
            if entries.binary_search_by(|(n, _)| n.cmp(&name)).is_ok() {
                continue;
            }
            let path = relative.join(&name);
            if self.ignored(&path) || walk.to_deployed.has(&path, None)? {
                continue;
            }
            remove_entry(&to_dir.join(&name))?;
            walk.report.removed += 1;
        }
        Ok(())
    }

    /// Create the folders above `relative` that the target lacks (a late
    /// file in a folder the target does not have), like the source's.
    fn list(&self, relative: &Path) -> Result<()> {
        match self.listing {
            Some(listing) => listing.add(relative),
            None => Ok(()),
        }
    }

    fn make_parents(&self, relative: &Path) -> Result<()> {
        let Some(parent) = relative.parent().filter(|p| !p.as_os_str().is_empty()) else {
            return Ok(());
        };
        if fs::symlink_metadata(self.to.join(parent)).is_ok() {
            return Ok(());
        }
        self.make_parents(parent)?;
        match source_stat(&self.from.join(parent))? {
            Some(stat) => create_folder(&self.to.join(parent), &stat),
            None => Ok(()),
        }
    }

    /// Shared paths and leftovers of a killed carry are never carried.
    fn ignored(&self, relative: &Path) -> bool {
        relative.to_string_lossy().ends_with(CARRY_TMP_SUFFIX) || self.shared(relative)
    }

    /// At or under a shared path (a link to the shared store).
    fn shared(&self, relative: &Path) -> bool {
        self.skip.iter().any(|s| relative.starts_with(s))
    }

    fn target_entry(
        &self,
        relative: &Path,
        target_path: &Path,
        walk: &Walk<'_, '_>,
    ) -> Result<TargetEntry> {
        let stat = match Stat::of(target_path) {
            Ok(Some(stat)) => stat,
            Ok(None) => return Ok(TargetEntry::Missing),
            // A parent is a file in the target: treat as hidden by it.
            Err(e) if e.raw_os_error() == Some(Errno::NOTDIR.raw_os_error()) => {
                return Ok(TargetEntry::Deployed(EntryKind::File));
            }
            Err(e) => return Err(Error::io("inspect", target_path, e)),
        };
        let kind = stat.kind.unwrap_or(EntryKind::File);
        let deployed = self.shared(relative) || walk.to_deployed.has(relative, None)?;
        Ok(if deployed {
            TargetEntry::Deployed(kind)
        } else {
            TargetEntry::User {
                kind,
                mtime_ns: stat.mtime_ns,
                size: stat.size,
                inode: stat.inode,
            }
        })
    }
}

/// An entry of the release carried from; `None` when it went meanwhile.
fn source_stat(path: &Path) -> Result<Option<Stat>> {
    match Stat::of(path) {
        Err(e) if e.raw_os_error() == Some(Errno::NOTDIR.raw_os_error()) => Ok(None),
        other => other.map_err(|e| Error::io("inspect", path, e)),
    }
}

/// How `link_or_copy` ended.
#[derive(Debug, PartialEq, Eq)]
enum Placed {
    Done,
    /// The target has an entry at that path: look before touching it.
    Exists,
    /// The source was deleted meanwhile.
    Vanished,
}

/// A link cannot be made here, but a copy can: another filesystem under the
/// release, an inode at its link limit, a file the deploying user may not link.
fn cannot_link(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == Errno::XDEV.raw_os_error()
            || code == Errno::MLINK.raw_os_error()
            || code == Errno::PERM.raw_os_error()
    )
}

/// How many times a link is tried again when its source was replaced while
/// it was being linked.
const LINK_ATTEMPTS: usize = 16;

/// `link(from, to)`, tried again while it fails because the file `from`
/// named was replaced meanwhile (a rename over it: the inode looked up has
/// no name left, and the kernel refuses to give it one). `NotFound` from it
/// means `from` (or the folder of `to`) is gone.
fn hard_link(from: &Path, to: &Path) -> io::Result<()> {
    let mut attempt = 1;
    loop {
        match fs::hard_link(from, to) {
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    && attempt < LINK_ATTEMPTS
                    && fs::symlink_metadata(from).is_ok() =>
            {
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Give `to` (which must not exist) the file or symlink at `from`: a hard
/// link, or a copy where no link can be made.
fn link_or_copy(from: &Path, to: &Path, report: &mut CarryReport) -> Result<Placed> {
    match hard_link(from, to) {
        Ok(()) => Ok(Placed::Done),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Placed::Exists),
        Err(e) if e.kind() == io::ErrorKind::NotFound && fs::symlink_metadata(from).is_err() => {
            Ok(Placed::Vanished)
        }
        Err(e) if cannot_link(&e) => Ok(if copy_instead(from, to, report)? {
            Placed::Done
        } else {
            Placed::Vanished
        }),
        Err(e) => Err(Error::io("link user file to", to, e)),
    }
}

/// Put a link to `from` in place of the file at `to` in one rename, so a
/// reader never sees the path missing. False when `from` vanished.
fn replace_by_link(from: &Path, to: &Path, report: &mut CarryReport) -> Result<bool> {
    let tmp = temporary_name(to);
    let _ = fs::remove_file(&tmp);
    match hard_link(from, &tmp) {
        Ok(()) => fs::rename(&tmp, to).map(|()| true).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::io("replace user file", to, e)
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound && fs::symlink_metadata(from).is_err() => {
            Ok(false)
        }
        Err(e) if cannot_link(&e) => copy_instead(from, to, report),
        Err(e) => Err(Error::io("link user file to", &tmp, e)),
    }
}

/// Copy `from` to `to` where no link can be made, counting it; false when
/// `from` vanished.
fn copy_instead(from: &Path, to: &Path, report: &mut CarryReport) -> Result<bool> {
    let Some(bytes) = copy_entry(from, to)? else {
        return Ok(false);
    };
    report.copied += 1;
    report.copied_bytes += bytes;
    Ok(true)
}

fn temporary_name(to: &Path) -> PathBuf {
    let name = to
        .file_name()
        .expect("a carried path has a name")
        .to_string_lossy();
    to.with_file_name(format!(".{name}{CARRY_TMP_SUFFIX}"))
}

/// The names and types in a folder, in byte order (so manifests are read
/// forward as the walk goes); empty when the folder is gone.
fn list_sorted(dir: &Path) -> Result<Vec<(OsString, FileType)>> {
    let reader = match fs::read_dir(dir) {
        Ok(reader) => reader,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(Vec::new());
        }
        Err(e) => return Err(Error::io("list folder", dir, e)),
    };
    let mut entries = Vec::new();
    for entry in reader {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("list folder", dir, e)),
        };
        match entry.file_type() {
            Ok(file_type) => entries.push((entry.file_name(), file_type)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("inspect", entry.path(), e)),
        }
    }
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(entries)
}

/// A folder of user content, with the owner and mode of the one it mirrors.
fn create_folder(path: &Path, like: &Stat) -> Result<()> {
    match fs::create_dir(path) {
        Ok(()) => {
            if rustix::process::geteuid().is_root() {
                let current = path
                    .symlink_metadata()
                    .map_err(|e| Error::io("inspect", path, e))?;
                crate::privilege::set_owner(path, &current, Some(like.uid), Some(like.gid))
                    .map_err(|e| Error::io("keep the owner of", path, e))?;
            }
            let _ = fs::set_permissions(path, fs::Permissions::from_mode(like.mode & 0o7777));
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io("create folder", path, e)),
    }
}

/// Remove a user file or folder of a release that is not live.
fn remove_entry(path: &Path) -> Result<()> {
    let removed = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match removed {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::io("remove", path, e)),
        _ => Ok(()),
    }
}

/// Copy one file or symlink to `to` via a temporary name and a rename.
/// `None` when the source vanished meanwhile.
fn copy_entry(from: &Path, to: &Path) -> Result<Option<u64>> {
    let meta = match fs::symlink_metadata(from) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("inspect", from, e)),
    };
    let tmp = temporary_name(to);
    let copied = if meta.file_type().is_symlink() {
        fs::read_link(from).and_then(|target| {
            let _ = fs::remove_file(&tmp);
            std::os::unix::fs::symlink(target, &tmp)?;
            keep_owner(&tmp, &meta).map(|_| 0)
        })
    } else {
        copy_file(from, &tmp, &meta)
    };
    match copied {
        Ok(bytes) => {
            fs::rename(&tmp, to).map_err(|e| {
                let _ = fs::remove_file(&tmp);
                Error::io("write", to, e)
            })?;
            Ok(Some(bytes))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound && !from.exists() => {
            let _ = fs::remove_file(&tmp);
            Ok(None)
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(Error::io("copy user file to", to, e))
        }
    }
}

/// Copy content, permissions and mtime with one open on each side (the
/// kernel copies the bytes: copy_file_range, a reflink where supported).
fn copy_file(from: &Path, to: &Path, meta: &fs::Metadata) -> io::Result<u64> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let mut source = fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(from)?;
    let create = || {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(to)
    };
    let mut target = match create() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // A temporary left by a killed run.
            fs::remove_file(to)?;
            create()?
        }
        other => other?,
    };
    let bytes = io::copy(&mut source, &mut target)?;
    // Before the mode: a change of owner clears setuid and setgid bits.
    if rustix::process::geteuid().is_root() {
        rustix::fs::fchown(
            &target,
            Some(rustix::fs::Uid::from_raw(meta.uid())),
            Some(rustix::fs::Gid::from_raw(meta.gid())),
        )?;
    }
    target.set_permissions(fs::Permissions::from_mode(
        meta.permissions().mode() & 0o7777,
    ))?;
    target.set_modified(meta.modified()?)?;
    Ok(bytes)
}

/// Give a copy the owner and group of the user file it copies (the app's
/// user, usually, which must still be able to change it). Only root may;
/// anyone else copies only files it could write itself anyway.
fn keep_owner(copy: &Path, original: &fs::Metadata) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if rustix::process::geteuid().is_root() {
        let current = copy.symlink_metadata()?;
        crate::privilege::set_owner(copy, &current, Some(original.uid()), Some(original.gid()))?;
    }
    Ok(())
}

/// Carry everything under `from` into `to` (created if missing), keeping what
/// is already there unless `from` has a newer copy.
pub fn merge_tree(from: &Path, to: &Path) -> Result<CarryReport> {
    crate::fsx::create_dir_all(to)?;
    Carry {
        from,
        from_deployed: Deployed::Nothing,
        to,
        to_deployed: Deployed::Nothing,
        skip: &[],
        pass: Pass::Fill,
        all_linked: false,
        listing: None,
    }
    .run(&mut |_| {})
}

/// A folder of its own holding what the release at `from` holds, for plain
/// mode, which then updates it in place: its deployed files are copies (a
/// write in place there must not reach the release), its user content is
/// linked like any carry.
pub fn copy_release(from: &Path, manifest: Option<&Manifest<'_>>, to: &Path) -> Result<()> {
    crate::fsx::create_dir_all(to)?;
    let deployed = Deployed::listed_or(manifest, Deployed::Nothing);
    Carry {
        from,
        from_deployed: deployed,
        to,
        to_deployed: deployed,
        skip: &[],
        pass: Pass::Fill,
        all_linked: false,
        listing: None,
    }
    .run(&mut |_| {})?;
    let Some(manifest) = manifest else {
        return Ok(());
    };
    for item in manifest.entries() {
        let (path, entry) = item?;
        if entry.kind != EntryKind::Dir {
            copy_entry(&from.join(&path), &to.join(&path))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use EntryKind::*;

    const OLD: Inode = (1, 10);
    const OTHER: Inode = (1, 20);

    fn src(
        kind: EntryKind,
        deployed: bool,
        changed: bool,
        born_after: bool,
        mtime: i128,
    ) -> SourceEntry {
        SourceEntry {
            kind,
            deployed,
            changed,
            born_after,
            mtime_ns: mtime,
            size: 1,
            inode: OLD,
        }
    }

    fn user(kind: EntryKind, mtime: i128, inode: Inode) -> TargetEntry {
        TargetEntry::User {
            kind,
            mtime_ns: mtime,
            size: 1,
            inode,
        }
    }

    #[test]
    fn decision_table() {
        let fill = Pass::Fill;
        let mirror = Pass::Mirror { since: Some(5) };
        let late = Pass::Late { since: 5 };
        let cases = [
            // user file, nothing in the target: link it
            (
                fill,
                src(File, false, true, true, 10),
                TargetEntry::Missing,
                Create,
            ),
            // deployed file of the old release: never carried
            (
                fill,
                src(File, true, true, true, 10),
                TargetEntry::Missing,
                Skip,
            ),
            // user file under a deployed file of the new release: deployed wins
            (
                fill,
                src(File, false, true, true, 10),
                TargetEntry::Deployed(File),
                Shadowed,
            ),
            // the same inode on both sides: nothing to do, whatever was written
            (
                late,
                src(File, false, true, false, 20),
                user(File, 20, OLD),
                Skip,
            ),
            (
                mirror,
                src(File, false, true, false, 20),
                user(File, 20, OLD),
                Skip,
            ),
            // replaced by rename in the old release after the switch: newer wins
            (
                late,
                src(File, false, true, true, 20),
                user(File, 10, OTHER),
                Replace,
            ),
            // replaced in the live release after the switch: the live one stays
            (
                late,
                src(File, false, true, false, 10),
                user(File, 20, OTHER),
                Skip,
            ),
            // same mtime, different size (a write within one clock tick): replace
            (
                late,
                src(File, false, true, true, 10),
                TargetEntry::User {
                    kind: File,
                    mtime_ns: 10,
                    size: 2,
                    inode: OTHER,
                },
                Replace,
            ),
            // before a switch the live release is the truth: any difference goes
            (
                mirror,
                src(File, false, true, false, 10),
                user(File, 20, OTHER),
                Replace,
            ),
            (
                mirror,
                src(File, false, true, false, 10),
                user(Dir, 20, OTHER),
                Replace,
            ),
            // missing in the live release and older than the mark: a user deleted it
            (
                late,
                src(File, false, true, false, 10),
                TargetEntry::Missing,
                Skip,
            ),
            (
                late,
                src(Dir, false, true, false, 10),
                TargetEntry::Missing,
                Descend,
            ),
            // born in the old release after the mark: a late write, carried
            (
                late,
                src(File, false, true, true, 10),
                TargetEntry::Missing,
                Create,
            ),
            (
                late,
                src(Dir, false, true, true, 10),
                TargetEntry::Missing,
                Descend,
            ),
            // before the switch, whatever the live release has goes across
            (
                mirror,
                src(File, false, true, false, 10),
                TargetEntry::Missing,
                Create,
            ),
            // not changed since the last pass: skip
            (
                mirror,
                src(File, false, false, false, 10),
                TargetEntry::Missing,
                Skip,
            ),
            (
                late,
                src(File, false, false, false, 10),
                TargetEntry::Missing,
                Skip,
            ),
            // folders are explored
            (
                late,
                src(Dir, true, false, false, 10),
                TargetEntry::Deployed(Dir),
                Descend,
            ),
            (
                fill,
                src(Dir, false, false, true, 10),
                TargetEntry::Missing,
                Create,
            ),
            (
                fill,
                src(Dir, false, true, true, 10),
                TargetEntry::Deployed(File),
                Shadowed,
            ),
            (
                fill,
                src(Dir, true, true, true, 10),
                TargetEntry::Deployed(File),
                Skip,
            ),
            // a user symlink is carried like a file
            (
                fill,
                src(Symlink, false, true, true, 10),
                TargetEntry::Missing,
                Create,
            ),
            // kinds differ between user entries after the switch: leave the target alone
            (
                late,
                src(File, false, true, true, 20),
                user(Dir, 10, OTHER),
                Skip,
            ),
            (
                fill,
                src(File, false, true, true, 20),
                user(Dir, 10, OTHER),
                Skip,
            ),
        ];
        for (i, (pass, source, target, expected)) in cases.into_iter().enumerate() {
            assert_eq!(
                decide(pass, source, target),
                expected,
                "case {i}: {pass:?} {source:?} -> {target:?}"
            );
        }
    }
}
