//! Step `materialize`: the source written into the new release's folder,
//! every entry recorded in its manifest, unchanged files shared with the live
//! release.

use std::path::Path;

use crate::error::Result;
use crate::manifest::Manifest;
use crate::policy::DeployPlan;
use crate::release::short;
use crate::session::{Session, Step};
use crate::share::Sharer;
use crate::source::extract::Extractor;
use crate::source::{Source, archive, folder, git};
use crate::steps::resolve::Resolved;

/// Write the source into `dest` (empty, existing), recording it in `manifest`.
pub(crate) fn materialize(
    session: &Session<'_>,
    plan: &DeployPlan,
    resolved: &Resolved,
    dest: &Path,
    manifest: &Manifest<'_>,
    sharer: Option<&Sharer>,
    base: Option<&str>,
) -> Result<()> {
    let mut progress = |entries: u64, total: Option<u64>| {
        if entries.is_multiple_of(64) {
            session.progress(Step::Materialize, entries, total);
        }
    };
    match &plan.source {
        Source::Git { .. } => {
            let commit = resolved
                .commit
                .as_deref()
                .expect("git sources resolve to a commit");
            let origin = format!("commit {}", short(commit));
            let mirror = session.layout.mirror_path();
            let mut extractor =
                Extractor::new(dest, &origin, plan.policy.limits, manifest, &mut progress);
            let subfolder = plan.policy.subfolder.as_deref();
            let tree = git::treeish(commit, subfolder);
            // The live commit's folder, when it had one, to write only changes.
            let base = base.filter(|base| {
                subfolder.is_none_or(|path| git::tree_id(&mirror, base, path).is_some())
            });
            let incremental = match (sharer, base) {
                (Some(sharer), Some(base)) => {
                    extractor.share_from(sharer);
                    let base = git::treeish(base, subfolder);
                    git::materialize_changes(&mirror, &base, &tree, &mut extractor)?
                }
                _ => false,
            };
            if !incremental {
                git::archive_into(&mirror, &tree, &mut extractor)?;
            }
            extractor.finish(false)?
        }
        Source::Archive(_) => {
            let path = resolved
                .archive
                .as_deref()
                .expect("archives resolve to a file");
            archive::extract(
                path,
                dest,
                plan.policy.limits,
                manifest,
                sharer,
                &mut progress,
            )?
        }
        Source::Folder(path) => folder::copy(
            path,
            dest,
            plan.policy.limits,
            manifest,
            sharer,
            &mut progress,
        )?,
    }
    let (shared, shared_bytes) = sharer.map(Sharer::counts).unwrap_or_default();
    session.info(&format!(
        "wrote {} entries ({} bytes) from {}",
        manifest.entry_count()?.saturating_sub(shared),
        manifest.total_bytes()?.saturating_sub(shared_bytes),
        plan.source.shown()
    ));
    if let Some(sharer) = sharer.filter(|_| shared > 0) {
        session.info(&format!(
            "shared {shared} unchanged files ({shared_bytes} bytes) with the live release by {}",
            sharer.method().as_str()
        ));
    }
    Ok(())
}
