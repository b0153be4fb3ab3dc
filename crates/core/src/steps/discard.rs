//! Removing a release this run created (a failed or abandoned stage).

use crate::error::Result;
use crate::release::ReleaseState;
use crate::session::Session;
use crate::steps::prune::delete_release_dir;

/// Remove a release this run created and mark it failed.
pub fn discard_release(session: &Session<'_>, name: &str, why: &str) -> Result<()> {
    delete_release_dir(session.layout, name)?;
    session
        .history
        .set_release_state(name, ReleaseState::Failed, Some(why))?;
    session.history.drop_manifest(name)
}
