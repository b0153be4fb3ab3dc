//! Step `settle`: after the switch, wait for requests still running in the old
//! release, then carry what they wrote into the new one; reset the opcache.

use crate::carry::{Deployed, Pass};
use crate::policy::Policy;
use crate::session::{Session, Step};
use crate::steps::carry::{carry_logged, late_writes_since};
use crate::steps::stage::Staged;
use crate::steps::switch::{Switched, Synced};

/// After the switch: wait, then carry what in-flight requests wrote into the
/// old release. Failures are logged: the new release is already live.
/// `all_linked`: every user file of `new` is a link to `old`'s.
pub(crate) fn settle(
    session: &Session<'_>,
    old: &str,
    new: &str,
    new_deployed: Deployed<'_>,
    policy: &Policy,
    carried_ms: i64,
    all_linked: bool,
) {
    let layout = session.layout;
    let result = session.step(Step::Settle, || {
        std::thread::sleep(policy.settle);
        let old_manifest = session.history.manifest(old)?;
        let since = late_writes_since(Some(carried_ms));
        carry_logged(
            session,
            Step::Settle,
            &layout.release_path(old),
            Deployed::listed_or(old_manifest.as_ref(), Deployed::Nothing),
            &layout.release_path(new),
            new_deployed,
            &policy.shared,
            Pass::Late { since },
            all_linked,
            None,
        )
    });
    if let Err(e) = result {
        session.warn(&format!("settle: could not carry late writes from {old}: {e}; they stay in {old} and are carried again before it is pruned"));
    }
    if let Some(address) = &policy.opcache_reset {
        match crate::opcache::reset(layout, address) {
            Ok(()) => session.info(&format!("settle: reset PHP-FPM's opcache at {address}")),
            Err(e) => session.warn(&format!("settle: {e} (the deploy itself succeeded)")),
        }
    }
}

/// After a switch that stays: carry late writes out of the release that was
/// live.
pub fn settle_switched(
    session: &Session<'_>,
    staged: &Staged<'_>,
    synced: &Synced,
    switched: &Switched,
    policy: &Policy,
) {
    if let Some(previous) = &switched.previous {
        settle(
            session,
            previous,
            &switched.name,
            staged.deployed(),
            policy,
            synced.started_ms,
            synced.all_linked,
        );
    }
}
