//! Where a release's code comes from: a git repository, an archive or a folder.
//! Parsing a source string decides which, and refuses what must never reach git
//! or the disk (option-like URLs, foreign transports).

pub mod archive;
pub mod extract;
pub mod folder;
pub mod git;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Which kind of source the user says a local path is, when guessing is not wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Git,
    Archive,
    Folder,
}

impl SourceKind {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "git" => SourceKind::Git,
            "archive" => SourceKind::Archive,
            "folder" => SourceKind::Folder,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Git => "git",
            SourceKind::Archive => "archive",
            SourceKind::Folder => "folder",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveLocation {
    Path(PathBuf),
    Url(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `url` is what git is given (a URL or an absolute path).
    Git {
        url: String,
    },
    Archive(ArchiveLocation),
    Folder(PathBuf),
}

const GIT_SCHEMES: &[&str] = &["https", "ssh", "git", "file", "git+ssh", "ssh+git"];

impl Source {
    /// Decide what `text` is. Local paths must exist; `kind` overrides the guess.
    pub fn parse(text: &str, kind: Option<SourceKind>) -> Result<Source> {
        let shown = redact_credentials(text);
        if text.is_empty() {
            return Err(Error::Invalid("the source is empty".into()));
        }
        if text.starts_with('-') {
            return Err(Error::Invalid(format!(
                "invalid source '{shown}': it starts with '-' and would be read as an option"
            )));
        }
        if text.chars().any(|c| c.is_control()) {
            return Err(Error::Invalid(format!(
                "invalid source '{}': it contains control characters",
                shown.escape_debug()
            )));
        }
        if let Some((scheme, _)) = text.split_once("://") {
            return Self::parse_url(text, &scheme.to_ascii_lowercase(), &shown, kind);
        }
        if let Some((transport, _)) = text.split_once("::") {
            return Err(Error::Invalid(format!(
                "refusing source '{shown}': git transport '{transport}::' is not allowed (use https, ssh, git or file)"
            )));
        }
        if is_scp_like(text) {
            return match kind {
                None | Some(SourceKind::Git) => Ok(Source::Git {
                    url: text.to_string(),
                }),
                Some(other) => Err(Error::Invalid(format!(
                    "source '{shown}' is an ssh git address, not a {}",
                    other.as_str()
                ))),
            };
        }
        Self::parse_local(Path::new(text), kind)
    }

    fn parse_url(
        text: &str,
        scheme: &str,
        shown: &str,
        kind: Option<SourceKind>,
    ) -> Result<Source> {
        let path_part = text.split(['?', '#']).next().unwrap_or(text);
        let archive_like = archive::has_archive_suffix(path_part);
        match (scheme, kind) {
            ("http" | "https", Some(SourceKind::Archive)) => {
                Ok(Source::Archive(ArchiveLocation::Url(text.to_string())))
            }
            ("http" | "https", None) if archive_like => {
                Ok(Source::Archive(ArchiveLocation::Url(text.to_string())))
            }
            ("http", _) => Err(Error::Invalid(format!(
                "refusing git source '{shown}': plain http is not allowed for git; use https"
            ))),
            (_, Some(SourceKind::Folder)) => Err(Error::Invalid(format!(
                "source '{shown}' is a URL, not a folder"
            ))),
            (s, Some(SourceKind::Archive)) => Err(Error::Invalid(format!(
                "refusing archive source '{shown}': archives are downloaded over http or https, not {s}"
            ))),
            (s, _) if GIT_SCHEMES.contains(&s) => Ok(Source::Git {
                url: text.to_string(),
            }),
            (s, _) => Err(Error::Invalid(format!(
                "refusing source '{shown}': transport '{s}' is not allowed (use https, ssh, git or file)"
            ))),
        }
    }

    fn parse_local(path: &Path, kind: Option<SourceKind>) -> Result<Source> {
        let absolute = std::path::absolute(path).map_err(|e| Error::io("resolve", path, e))?;
        let meta = std::fs::metadata(&absolute).map_err(|_| {
            Error::Source(format!(
                "source {} does not exist (give a git URL, an archive or a folder)",
                path.display()
            ))
        })?;
        let is_repo = meta.is_dir() && (absolute.join(".git").exists() || is_bare_repo(&absolute));
        match kind {
            Some(SourceKind::Git) if meta.is_dir() => Ok(Source::Git {
                url: path_string(&absolute)?,
            }),
            Some(SourceKind::Folder) if meta.is_dir() => Ok(Source::Folder(absolute)),
            Some(SourceKind::Archive) if meta.is_file() => {
                Ok(Source::Archive(ArchiveLocation::Path(absolute)))
            }
            Some(k) => Err(Error::Invalid(format!(
                "source {} is a {}, not a {}",
                path.display(),
                if meta.is_dir() { "folder" } else { "file" },
                k.as_str()
            ))),
            None if is_repo => Ok(Source::Git {
                url: path_string(&absolute)?,
            }),
            None if meta.is_dir() => Ok(Source::Folder(absolute)),
            None if meta.is_file() => Ok(Source::Archive(ArchiveLocation::Path(absolute))),
            None => Err(Error::Source(format!(
                "source {} is neither a folder nor a file",
                path.display()
            ))),
        }
    }

    pub fn kind(&self) -> SourceKind {
        match self {
            Source::Git { .. } => SourceKind::Git,
            Source::Archive(_) => SourceKind::Archive,
            Source::Folder(_) => SourceKind::Folder,
        }
    }

    /// The source as it may be shown and stored: credentials removed.
    pub fn shown(&self) -> String {
        match self {
            Source::Git { url } => redact_credentials(url),
            Source::Archive(ArchiveLocation::Url(url)) => redact_credentials(url),
            Source::Archive(ArchiveLocation::Path(p)) | Source::Folder(p) => {
                p.display().to_string()
            }
        }
    }
}

fn path_string(path: &Path) -> Result<String> {
    path.to_str()
        .map(str::to_string)
        .ok_or_else(|| Error::Invalid(format!("source path {} is not valid UTF-8", path.display())))
}

fn is_bare_repo(path: &Path) -> bool {
    path.join("HEAD").is_file() && path.join("objects").is_dir() && path.join("refs").is_dir()
}

/// `user@host:path` or `host:path` (git's scp-like ssh syntax): a colon before
/// any slash.
fn is_scp_like(text: &str) -> bool {
    match (text.find(':'), text.find('/')) {
        (Some(colon), Some(slash)) => colon < slash && colon > 0,
        (Some(colon), None) => colon > 0,
        _ => false,
    }
}

/// Remove `user:password@` from every URL in `text`, keeping the rest.
pub fn redact_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let authority_end = tail
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..authority_end];
        match authority.rfind('@') {
            Some(i) => {
                out.push_str("***@");
                out.push_str(&authority[i + 1..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[authority_end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_classification() {
        let cases: &[(&str, Option<&str>)] = &[
            ("https://example.com/acme/app.git", Some("git")),
            ("ssh://git@example.com/acme/app.git", Some("git")),
            ("git://example.com/app.git", Some("git")),
            ("file:///srv/app.git", Some("git")),
            ("git@example.com:acme/app.git", Some("git")),
            (
                "https://example.com/app/archive/main.tar.gz",
                Some("archive"),
            ),
            ("https://example.com/release.zip?token=1", Some("archive")),
            ("http://example.com/release.tgz", Some("archive")),
            ("http://example.com/app.git", None),
            ("ext::sh -c touch% /tmp/pwned", None),
            ("fd::17", None),
            ("ftp://example.com/app.git", None),
            ("-uhttps://x", None),
            ("--upload-pack=touch /tmp/x", None),
        ];
        for (text, expected) in cases {
            let got = Source::parse(text, None).ok().map(|s| s.kind().as_str());
            assert_eq!(got, *expected, "{text}");
        }
    }

    #[test]
    fn credentials_are_redacted() {
        let cases = [
            (
                "https://user:tok@example.com/a.git",
                "https://***@example.com/a.git",
            ),
            (
                "https://tok@example.com/a.git",
                "https://***@example.com/a.git",
            ),
            ("https://example.com/a.git", "https://example.com/a.git"),
            (
                "fatal: unable to access 'https://u:p@h/x/': 403",
                "fatal: unable to access 'https://***@h/x/': 403",
            ),
            ("git@example.com:a.git", "git@example.com:a.git"),
        ];
        for (input, expected) in cases {
            assert_eq!(redact_credentials(input), expected);
        }
    }
}
