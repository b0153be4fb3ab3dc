//! Every path zdeploy touches, owned by one type so no path is joined by hand elsewhere.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Name of the folder in the webroot that holds the state of every context.
pub const STATE_FOLDER: &str = ".zdeploy";

#[derive(Debug, Clone)]
pub struct Layout {
    webroot: PathBuf,
    context: String,
}

impl Layout {
    /// A layout for `context` in `webroot`; the context name is validated, the
    /// webroot made absolute (it need not exist yet: `check_webroot` says so).
    pub fn new(webroot: &Path, context: &str) -> Result<Self> {
        validate_context(context)?;
        let webroot = std::path::absolute(webroot).map_err(|e| Error::io("resolve", webroot, e))?;
        Ok(Layout {
            webroot,
            context: context.to_string(),
        })
    }

    pub fn webroot(&self) -> &Path {
        &self.webroot
    }

    pub fn context(&self) -> &str {
        &self.context
    }

    /// `<webroot>/<context>`: the one path the web server knows.
    pub fn context_path(&self) -> PathBuf {
        self.webroot.join(&self.context)
    }

    /// `<webroot>/<release>`.
    pub fn release_path(&self, release: &str) -> PathBuf {
        self.webroot.join(release)
    }

    /// The symlink built beside the context and renamed over it at a switch.
    pub fn switch_tmp_path(&self) -> PathBuf {
        self.webroot.join(format!(".{}.zdeploy-tmp", self.context))
    }

    /// Where a plain-mode conversion assembles the real folder before swapping it in.
    pub fn plain_tmp_path(&self) -> PathBuf {
        self.webroot
            .join(format!(".{}.zdeploy-plain", self.context))
    }

    /// Where a plain-mode deploy writes the source before moving files into place.
    pub fn staging_path(&self) -> PathBuf {
        self.state_dir().join("staging")
    }

    /// `<webroot>/.zdeploy`.
    pub fn state_root(&self) -> PathBuf {
        self.webroot.join(STATE_FOLDER)
    }

    /// `<webroot>/.zdeploy/<context>`: same filesystem as the releases.
    pub fn state_dir(&self) -> PathBuf {
        self.state_root().join(&self.context)
    }

    /// Behind Apache, the default text map naming the live release.
    pub fn apache_map(&self) -> PathBuf {
        self.state_dir().join("apache.map")
    }

    /// Where maintenance windows live (readable by the web server).
    pub fn maintenance_dir(&self) -> PathBuf {
        self.state_dir().join("maintenance")
    }

    /// The symlink whose presence is an open maintenance window.
    pub fn maintenance_window(&self) -> PathBuf {
        self.maintenance_dir().join("window")
    }

    /// The app's freeze, while one is in force.
    pub fn freeze_path(&self) -> PathBuf {
        self.state_dir().join("freeze.json")
    }

    pub fn lock_path(&self) -> PathBuf {
        self.state_dir().join("lock")
    }

    pub fn history_path(&self) -> PathBuf {
        self.state_dir().join("history.sqlite")
    }

    pub fn mirror_path(&self) -> PathBuf {
        self.state_dir().join("git")
    }

    pub fn shared_dir(&self) -> PathBuf {
        self.state_dir().join("shared")
    }

    /// Where shared path `relative` lives.
    pub fn shared_path(&self, relative: &Path) -> PathBuf {
        self.shared_dir().join(relative)
    }

    /// Releases being deleted are renamed here first, so a half-deleted release
    /// never looks like a release.
    pub fn trash_dir(&self) -> PathBuf {
        self.state_dir().join("trash")
    }

    pub fn download_dir(&self) -> PathBuf {
        self.state_dir().join("downloads")
    }

    /// Where the generated web server site reports each request it served
    /// (a datagram socket the agent listens on).
    pub fn traffic_socket(&self) -> PathBuf {
        self.state_dir().join("traffic.sock")
    }

    /// Present while the agent listens on the traffic socket (a web server
    /// can test a plain file where it cannot test a socket).
    pub fn traffic_listening(&self) -> PathBuf {
        self.state_dir().join("traffic.on")
    }

    /// While a canary runs: a link to the folder naming its release and the
    /// client buckets it serves (read by the web server per request).
    pub fn canary_link(&self) -> PathBuf {
        self.state_dir().join("canary")
    }

    /// Archives sent to the agent to deploy, waiting for their run (a run's
    /// recover leaves them: they belong to queued deploys).
    pub fn upload_dir(&self) -> PathBuf {
        self.state_dir().join("uploads")
    }

    /// The user files the last carry placed in a new release (NUL-ended paths).
    pub fn user_content_list(&self) -> PathBuf {
        self.state_dir().join("user-content.list")
    }

    /// Which release that list is of, how many files and their digest.
    pub fn user_content_summary(&self) -> PathBuf {
        self.state_dir().join("user-content.json")
    }

    /// The relative symlink target that leads from `release/relative` to the
    /// shared path, so the link survives the webroot being moved.
    pub fn shared_link_target(&self, relative: &Path) -> PathBuf {
        let depth = relative.components().count();
        let mut target = PathBuf::new();
        for _ in 0..depth {
            target.push("..");
        }
        target
            .join(STATE_FOLDER)
            .join(&self.context)
            .join("shared")
            .join(relative)
    }

    /// Fail clearly when the webroot is unusable.
    pub fn check_webroot(&self) -> Result<()> {
        let meta = std::fs::metadata(&self.webroot).map_err(|_| {
            Error::Webroot(format!(
                "webroot {} does not exist; create it first (mkdir -p {})",
                self.webroot.display(),
                self.webroot.display()
            ))
        })?;
        if !meta.is_dir() {
            return Err(Error::Webroot(format!(
                "webroot {} is not a folder",
                self.webroot.display()
            )));
        }
        if rustix::fs::access(&self.webroot, rustix::fs::Access::WRITE_OK).is_err() {
            return Err(Error::Webroot(format!(
                "webroot {} is not writable by this user",
                self.webroot.display()
            )));
        }
        Ok(())
    }
}

/// A context is one plain name inside the webroot.
pub fn validate_context(context: &str) -> Result<()> {
    let problem = if context.is_empty() {
        Some("it is empty")
    } else if context.contains('/') {
        Some("it contains '/'")
    } else if context == ".." || context.contains("..") {
        Some("it contains '..'")
    } else if context.starts_with('.') {
        Some("it starts with '.'")
    } else if context.starts_with('-') {
        Some("it starts with '-'")
    } else if context.chars().any(|c| c.is_control() || c.is_whitespace()) {
        Some("it contains whitespace or control characters")
    } else {
        None
    };
    match problem {
        Some(why) => Err(Error::Invalid(format!(
            "invalid context '{}': {why}; a context is one folder name such as ROOT",
            context.escape_debug()
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts() {
        for good in ["ROOT", "api", "shop_v2", "a.b"] {
            assert!(validate_context(good).is_ok(), "{good}");
        }
        for bad in ["", "a/b", "..", "x..y", ".hidden", "-x", "a b", "a\nb"] {
            assert!(validate_context(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn shared_link_target_is_relative_to_the_release() {
        let layout = Layout::new(Path::new("/w"), "ROOT").unwrap();
        assert_eq!(
            layout.shared_link_target(Path::new("data/saves")),
            PathBuf::from("../../.zdeploy/ROOT/shared/data/saves")
        );
    }
}
