//! Steps `carry`, `sync` and the carry of late writes: user content moved
//! between releases by hard link, logged, and the marks that bound each pass.

use std::path::{Path, PathBuf};

use jiff::Timestamp;

use crate::carry::Pass;
use crate::carry::{Carry, CarryReport, Deployed};
use crate::error::Result;
use crate::manifest::Manifest;
use crate::session::{Session, Step};
use crate::switch::Live;
use crate::user_content::UserContentList;

/// Carry marks are compared with file times; a second of margin covers
/// clock granularity (looking at a file twice is harmless).
pub(crate) const MARK_MARGIN_NS: i128 = 1_000_000_000;

/// The mark a late carry from a release compares with: its last carry (in
/// ms) less the margin; without one (a record from an older zdeploy), the
/// beginning of time, so everything the target lacks or has older is carried.
pub(crate) fn late_writes_since(carried_ms: Option<i64>) -> i128 {
    carried_ms.map_or(i128::MIN, |ms| ms as i128 * 1_000_000 - MARK_MARGIN_NS)
}

pub(crate) fn now_ns() -> i128 {
    Timestamp::now().as_nanosecond()
}

pub(crate) fn live_manifest<'s>(
    session: &'s Session<'_>,
    live: &Live,
) -> Result<Option<Manifest<'s>>> {
    match live.record_name(session.layout) {
        Some(name) => session.history.manifest(name),
        None => Ok(None),
    }
}

/// Carry user content and log what happened, shadowed files by name.
#[allow(clippy::too_many_arguments)]
pub(crate) fn carry_logged(
    session: &Session<'_>,
    step: Step,
    from: &Path,
    from_deployed: Deployed<'_>,
    to: &Path,
    to_deployed: Deployed<'_>,
    shared: &[PathBuf],
    pass: Pass,
    all_linked: bool,
    listing: Option<&UserContentList>,
) -> Result<CarryReport> {
    let report = Carry {
        from,
        from_deployed,
        to,
        to_deployed,
        skip: shared,
        pass,
        all_linked,
        listing,
    }
    .run(&mut |seen| session.progress(step, seen, None))?;
    if report.files() > 0 || report.removed > 0 {
        let linked = report.files() - report.copied;
        session.info(&format!(
            "{step}: carried {linked} user file{} by hard link from {} ({} new, {} replaced, {} removed)",
            if linked == 1 { "" } else { "s" },
            from.display(),
            report.created,
            report.replaced,
            report.removed,
        ));
    }
    if report.copied > 0 {
        session.warn(&format!(
            "{step}: {} user files could not be linked (another filesystem, or too many links) and were copied ({} bytes)",
            report.copied, report.copied_bytes
        ));
    }
    if report.folders_unchanged > 0 {
        session.debug(&format!(
            "{step}: {} folders unchanged since the last carry were not read",
            report.folders_unchanged
        ));
    }
    for path in &report.shadowed {
        session.warn(&format!(
            "{step}: user file {} is shadowed by a deployed file of the same path; the deployed one wins",
            path.display()
        ));
    }
    Ok(report)
}
