//! Apache hands PHP the path it was given, so behind Apache a symlink switch
//! would leave PHP on old code. For Apache the document root is the live
//! release's real path, kept in a small include file that zdeploy rewrites
//! at every switch, followed by a graceful reload: requests in flight finish
//! on the old release (which `drain` keeps), new ones start on the new one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::fsx;
use crate::layout::Layout;

pub const DEFAULT_RELOAD: &str = "apachectl -k graceful";
const RELOAD_TIMEOUT: Duration = Duration::from_secs(60);
const DOCUMENT_ROOT: &str = "DocumentRoot ";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApacheSwitch {
    /// The include file the vhost reads its DocumentRoot from.
    pub include: PathBuf,
    /// Shell command that makes Apache reread its config gracefully.
    pub reload: String,
}

impl ApacheSwitch {
    /// The include's text for `release` (a folder in the webroot).
    pub fn include_text(layout: &Layout, release: &str) -> Result<String> {
        let path = layout.release_path(release);
        let text = path
            .to_str()
            .filter(|p| !p.contains(['"', '\n', '\\']))
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{} cannot be written into an Apache config (quotes, backslashes or newlines)",
                    path.display()
                ))
            })?;
        Ok(format!(
            "# Written by zdeploy at every switch of {}: the live release. Do not edit.\n{DOCUMENT_ROOT}\"{text}\"\n",
            layout.context()
        ))
    }

    /// The release path the include names now, if any.
    pub fn current(&self) -> Option<PathBuf> {
        let text = std::fs::read_to_string(&self.include).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(DOCUMENT_ROOT))
            .map(|p| PathBuf::from(p.trim().trim_matches('"')))
    }

    /// Rewrite the include (new file, then rename) to name `release`.
    pub fn point_at(&self, layout: &Layout, release: &str) -> Result<()> {
        let text = Self::include_text(layout, release)?;
        let dir = self.include.parent().unwrap_or(Path::new("."));
        fsx::create_dir_all(dir)?;
        let tmp = self.include.with_extension("zdeploy-tmp");
        let mut file = std::fs::File::create(&tmp).map_err(|e| Error::io("write", &tmp, e))?;
        file.write_all(text.as_bytes())
            .and_then(|_| file.sync_all())
            .map_err(|e| Error::io("write", &tmp, e))?;
        fsx::rename(&tmp, &self.include)?;
        fsx::fsync_dir(dir)
    }

    /// Run the reload command; its output is in the error when it fails.
    pub fn reload(&self) -> Result<()> {
        crate::build::run_command(
            &self.reload,
            Path::new("/"),
            &[],
            RELOAD_TIMEOUT,
            &mut |_| {},
        )
        .map_err(|e| Error::Server(format!("apache reload failed: {e}")))
    }
}
