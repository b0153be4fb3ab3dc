//! Commands that look after releases outside a deploy: `prune` (retention on
//! demand) and `keep` (a release renamed out of retention).

use std::path::Path;

use crate::apache::ApacheMap;
use crate::error::{Error, Result};
use crate::fsx;
use crate::history::{Kind, Outcome};
use crate::inventory::releases_on_disk;
use crate::layout::Layout;
use crate::policy::Policy;
use crate::release::validate_kept_name;
use crate::session::{Observer, RunOptions, Session, Step};
use crate::steps::prune::prune_in_session;
use crate::steps::recover::recover;
use crate::switch::{Live, read_live, switch_to};

/// `zdeploy prune`: retention on demand.
pub fn prune(
    layout: &Layout,
    policy: &Policy,
    options: &RunOptions,
    observer: &dyn Observer,
) -> Result<Vec<String>> {
    let session = Session::open(layout, Kind::Prune, options, None, None, observer)?;
    let result = session
        .step(Step::Recover, || recover(&session, policy.apache.as_ref()))
        .and_then(|_| session.step(Step::Prune, || prune_in_session(&session, policy)));
    session.finish(&result, |_| Outcome::Success)?;
    result
}

/// `zdeploy keep RELEASE NAME`: rename a release to `<context>_NAME` so
/// retention never touches it. The live release is renamed without a moment
/// where the context does not resolve.
pub fn keep(
    layout: &Layout,
    release: &str,
    name: &str,
    apache: Option<&ApacheMap>,
    options: &RunOptions,
    observer: &dyn Observer,
) -> Result<String> {
    validate_kept_name(name)?;
    let session = Session::open(layout, Kind::Keep, options, None, None, observer)?;
    let result = keep_in_session(&session, release, name, apache);
    session.finish(&result, |_| Outcome::Success)?;
    result
}

fn keep_in_session(
    session: &Session<'_>,
    release: &str,
    name: &str,
    apache: Option<&ApacheMap>,
) -> Result<String> {
    let layout = session.layout;
    session.step(Step::Recover, || recover(session, apache))?;
    let release = resolve_release_name(layout, release)?;
    let new_name = format!("{}_{name}", layout.context());
    if fsx::metadata_if_exists(&layout.release_path(&new_name))?.is_some() {
        return Err(Error::Invalid(format!(
            "cannot keep {release} as {new_name}: {new_name} already exists"
        )));
    }
    let old_path = layout.release_path(&release);
    let new_path = layout.release_path(&new_name);
    if read_live(layout)? == Live::Release(release.clone()) {
        // Put a symlink at the new name pointing to itself, then exchange: the
        // folder takes the new name and the old name becomes a symlink to it,
        // so `<context>` -> old name -> new name resolves throughout.
        fsx::symlink(Path::new(&new_name), &new_path)?;
        fsx::exchange(&old_path, &new_path)?;
        switch_to(layout, &new_name, None)?;
        if let Some(apache) = apache {
            // Apache serves the old name, now a symlink, until the map changes.
            apache.point_at(layout, &new_name)?;
        }
        fsx::remove_file(&old_path)?;
    } else {
        fsx::rename(&old_path, &new_path)?;
    }
    fsx::fsync_dir(layout.webroot())?;
    session.history.rename_release(&release, &new_name)?;
    session.info(&format!(
        "kept {release} as {new_name}; retention will never remove it"
    ));
    Ok(new_name)
}

/// Accept a release by full name or by the part after `<context>_`.
pub fn resolve_release_name(layout: &Layout, given: &str) -> Result<String> {
    let releases = releases_on_disk(layout)?;
    let wanted = [given.to_string(), format!("{}_{given}", layout.context())];
    releases
        .iter()
        .find(|r| wanted.contains(&r.name))
        .map(|r| r.name.clone())
        .ok_or_else(|| {
            let names: Vec<_> = releases.iter().map(|r| r.name.as_str()).collect();
            Error::Invalid(format!(
                "no release '{given}' of {} in {} (releases: {})",
                layout.context(),
                layout.webroot().display(),
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ))
        })
}
