//! Apache hands PHP the path it was given, so behind Apache a symlink switch
//! would leave PHP on old code. zdeploy's vhost therefore maps every request
//! to the live release's real folder through a mod_rewrite text map that
//! holds one line, `<context> <release>`; zdeploy rewrites it (new file,
//! then rename) at every switch. Apache rereads a text map when its mtime
//! changes, so the next request follows without a reload. (A graceful reload
//! was the first design: Apache's event MPM starts the new generation's
//! children up to a second after the old ones stop accepting, which put ~1 s
//! stalls into p99 at every deploy.)

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::canary::Canary;
use crate::error::{Error, Result};
use crate::fsx;
use crate::layout::Layout;

/// The map key whose value lists every client bucket, `|`-separated.
pub const BUCKET_KEY: &str = "zdeploy-buckets";

/// The text map an Apache vhost reads the live release from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApacheMap {
    pub path: PathBuf,
    /// Kept only once the map exists (`zdeploy webserver apache` makes it):
    /// an app that never named its web server, which a long-running agent
    /// read before the map was made.
    pub if_present: bool,
}

impl ApacheMap {
    /// The map's text for `release`: one line, `<context> <release>`.
    fn text(layout: &Layout, release: &str) -> Result<String> {
        if release.is_empty() || release.contains(char::is_whitespace) || release.contains('/') {
            return Err(Error::Invalid(format!(
                "release name {release:?} cannot be written into an Apache map (spaces or slashes)"
            )));
        }
        Ok(format!(
            "{}{} {release}\n",
            Self::header(layout),
            layout.context()
        ))
    }

    fn header(layout: &Layout) -> String {
        format!(
            "# Written by zdeploy at every switch of {}: the live release. Do not edit.\n",
            layout.context()
        )
    }

    /// Create the map with no entry (nothing deployed yet) unless it exists.
    pub fn create_empty(&self, layout: &Layout) -> Result<()> {
        match fsx::metadata_if_exists(&self.path)? {
            Some(_) => Ok(()),
            None => self.write(&Self::header(layout)),
        }
    }

    /// The release the map names now, if any.
    pub fn current(&self, layout: &Layout) -> Option<String> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        text.lines().find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == layout.context()).then(|| value.trim().to_string())
        })
    }

    /// Rewrite the map (new file, then rename) to name `release`. Apache
    /// caches a text map by its mtime, so the new file's mtime is made later
    /// than the old one's even on a filesystem with coarse timestamps.
    pub fn point_at(&self, layout: &Layout, release: &str) -> Result<()> {
        if !self.in_use() {
            return Ok(());
        }
        self.write(&Self::text(layout, release)?)
    }

    /// Whether Apache reads this map: it was named, or it exists.
    pub fn in_use(&self) -> bool {
        !self.if_present || self.path.exists()
    }

    /// Rewrite the map to name `live` for everyone and `canary`'s release
    /// for its buckets (`<context>@<bucket>`), with `<context>@canary`
    /// saying one runs and [`BUCKET_KEY`] the buckets a new client is
    /// given one of at random (read through a `rnd:` map).
    pub fn show_canary(&self, layout: &Layout, live: &str, canary: &Canary) -> Result<()> {
        if !self.in_use() {
            return Ok(());
        }
        let mut text = Self::text(layout, live)?;
        let context = layout.context();
        let release = &canary.release;
        // Checks the canary's name as it checks the live one's.
        Self::text(layout, release)?;
        text.push_str(&format!("{context}@canary {release}\n"));
        for bucket in canary.buckets() {
            text.push_str(&format!("{context}@{bucket:02x} {release}\n"));
        }
        let every: Vec<String> = (0..crate::canary::BUCKETS)
            .map(|b| format!("{b:02x}"))
            .collect();
        text.push_str(&format!("{BUCKET_KEY} {}\n", every.join("|")));
        self.write(&text)
    }

    fn write(&self, text: &str) -> Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fsx::create_dir_all(dir)?;
        let old_mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let tmp = self.path.with_extension("zdeploy-tmp");
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(text.as_bytes())?;
            if let Some(old) = old_mtime
                && file.metadata()?.modified()? <= old
            {
                file.set_modified(old + Duration::from_millis(1))?;
            }
            file.sync_all()
        };
        write().map_err(|e| Error::io("write", &tmp, e))?;
        fsx::rename(&tmp, &self.path)?;
        fsx::fsync_dir(dir)
    }
}
