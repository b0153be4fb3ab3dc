//! Step `resolve`: what a deploy will write — the commit a ref names (fetched
//! into the mirror), the archive (downloaded when it is a URL), or the folder.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fsx;
use crate::layout::Layout;
use crate::policy::DeployPlan;
use crate::release::short;
use crate::session::Session;
use crate::source::{ArchiveLocation, Source, archive, git};

/// What `resolve` found.
pub(crate) struct Resolved {
    pub commit: Option<String>,
    pub message: Option<String>,
    pub reference: Option<String>,
    pub archive: Option<PathBuf>,
}

pub(crate) fn resolve(session: &Session<'_>, plan: &DeployPlan) -> Result<Resolved> {
    let layout = session.layout;
    match &plan.source {
        Source::Git { url } if plan.commit.is_some() => {
            let commit = plan.commit.clone().expect("matched on it");
            let shown = plan.source.shown();
            let mirror = layout.mirror_path();
            // A controller pushes the commit's objects first; an agent of a
            // fleet in etcd fetches them itself.
            let found = match git::resolve(&mirror, &commit, &shown) {
                Ok(found) if found == commit => found,
                _ => {
                    session.info(&format!("fetching {shown} for commit {}", short(&commit)));
                    git::fetch(&mirror, url, &shown)?;
                    git::resolve(&mirror, &commit, &shown)?
                }
            };
            if found != commit {
                return Err(Error::Source(format!(
                    "commit {commit} is not in {}",
                    layout.mirror_path().display()
                )));
            }
            let message = git::describe(&layout.mirror_path(), &commit);
            session.info(&format!(
                "deploying commit {} {} chosen for the fleet",
                short(&commit),
                message.as_deref().unwrap_or("")
            ));
            Ok(Resolved {
                commit: Some(commit),
                message,
                reference: plan.reference.clone(),
                archive: None,
            })
        }
        Source::Git { url } => {
            let shown = plan.source.shown();
            let reference = match &plan.reference {
                Some(r) => r.clone(),
                None => git::default_branch(url, &shown)?.ok_or_else(|| {
                    Error::Source(format!("{shown} has no default branch; pass --ref"))
                })?,
            };
            git::validate_ref(&reference)?;
            session.info(&format!("fetching {shown}"));
            git::fetch(&layout.mirror_path(), url, &shown)?;
            let mut commit = git::resolve(&layout.mirror_path(), &reference, &shown)?;
            if let Some(requested) = &plan.requested {
                let tip = commit;
                commit = git::pin(
                    &layout.mirror_path(),
                    url,
                    &shown,
                    (&reference, &tip),
                    requested,
                    plan.policy.allow_any_commit,
                )?;
            }
            if let Some(path) = &plan.policy.subfolder
                && git::tree_id(&layout.mirror_path(), &commit, path).is_none()
            {
                return Err(Error::Source(format!(
                    "{} is not a folder of commit {} ({reference} of {shown}); check the app's path",
                    path.display(),
                    short(&commit)
                )));
            }
            let message = git::describe(&layout.mirror_path(), &commit);
            match &plan.requested {
                Some(_) => session.info(&format!(
                    "deploying commit {} {} as asked",
                    short(&commit),
                    message.as_deref().unwrap_or("")
                )),
                None => session.info(&format!(
                    "{reference} is at {} {}",
                    short(&commit),
                    message.as_deref().unwrap_or("")
                )),
            }
            Ok(Resolved {
                commit: Some(commit),
                message,
                reference: Some(reference),
                archive: None,
            })
        }
        Source::Archive(location) => {
            let path = match location {
                ArchiveLocation::Path(p) => p.clone(),
                ArchiveLocation::Url(url) => {
                    let dir = layout.download_dir();
                    fsx::create_dir_all(&dir)?;
                    let dest = dir.join(format!("archive-{}", session.id));
                    session.info(&format!("downloading {}", plan.source.shown()));
                    archive::download(
                        url,
                        &plan.source.shown(),
                        &dest,
                        plan.policy.limits.max_bytes,
                    )?;
                    dest
                }
            };
            Ok(Resolved {
                commit: None,
                message: None,
                reference: None,
                archive: Some(path),
            })
        }
        Source::Folder(path) => {
            check_folder_source(layout, path)?;
            Ok(Resolved {
                commit: None,
                message: None,
                reference: None,
                archive: None,
            })
        }
    }
}

/// A folder source may not contain the webroot: the copy would contain itself.
fn check_folder_source(layout: &Layout, folder: &Path) -> Result<()> {
    let folder =
        std::fs::canonicalize(folder).map_err(|e| Error::io("open source folder", folder, e))?;
    let webroot = std::fs::canonicalize(layout.webroot())
        .map_err(|e| Error::io("open", layout.webroot(), e))?;
    if webroot.starts_with(&folder) {
        return Err(Error::Invalid(format!(
            "source folder {} contains the webroot {}; deploy from a folder outside it",
            folder.display(),
            webroot.display()
        )));
    }
    Ok(())
}
