//! The folder of a release that the web server serves (`public`): Laravel's
//! `public/`, Drupal's `web/`, Magento's `pub/`. Everything else in the
//! release (vendor, .env, storage) stays out of reach of HTTP. A release
//! without that folder, or whose folder leads out of the release through a
//! symlink, would serve nothing or someone else's files: it is refused
//! before the switch.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fsx;

/// A `public` setting must be a plain relative path inside the release.
pub fn validate_public_path(path: &Path) -> Result<()> {
    if fsx::is_safe_relative(path) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid public folder '{}': give a relative path inside the app such as public or web",
            path.display()
        )))
    }
}

/// The folder the web server serves in `release`: the release itself, or
/// its `public` folder.
pub fn served_dir(release: &Path, public: Option<&Path>) -> PathBuf {
    match public {
        Some(public) => release.join(public),
        None => release.to_path_buf(),
    }
}

/// Refuse a release whose `public` folder is missing, not a folder, or
/// (through symlinks) outside the release.
pub fn check_public(release: &Path, public: Option<&Path>) -> Result<()> {
    let Some(public) = public else {
        return Ok(());
    };
    let served = release.join(public);
    let name = release
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let resolved = match std::fs::canonicalize(&served) {
        Ok(resolved) => resolved,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Source(format!(
                "release {name} has no {}/ folder, which the web server is to serve (public = \"{}\"): nothing was switched",
                public.display(),
                public.display()
            )));
        }
        Err(e) => return Err(Error::io("resolve", served, e)),
    };
    let root = std::fs::canonicalize(release).map_err(|e| Error::io("resolve", release, e))?;
    if !resolved.starts_with(&root) {
        return Err(Error::Source(format!(
            "{}/ in release {name} leads out of the release (to {}): the web server would serve files zdeploy does not deploy; nothing was switched",
            public.display(),
            resolved.display()
        )));
    }
    if !resolved.is_dir() {
        return Err(Error::Source(format!(
            "{} in release {name} is not a folder, but public = \"{}\" says the web server serves it: nothing was switched",
            public.display(),
            public.display()
        )));
    }
    Ok(())
}
