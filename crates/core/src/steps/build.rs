//! Step `build`: dependency folders reused from the live release, the app's
//! build steps run in the new release, and its manifest rescanned after them.

use std::path::{Path, PathBuf};

use walkdir::WalkDir;

use crate::build::{BuildStep, check_command, release_env, run_command};
use crate::confine::{Confinement, make_missing_folders};
use crate::error::{Error, Result};
use crate::fsx;
use crate::maintenance;
use crate::manifest::{Entry, EntryKind, Manifest, digest_file};
use crate::once_runs::run_once;
use crate::policy::DeployPlan;
use crate::reuse::{LiveTree, reuse_folders};
use crate::session::{Session, human_duration};
use crate::share::own_copies;
use crate::steps::carry::{MARK_MARGIN_NS, now_ns};

pub(crate) fn build(
    session: &Session<'_>,
    plan: &DeployPlan,
    release_dir: &Path,
    manifest: &Manifest<'_>,
    live: Option<&LiveTree<'_>>,
) -> Result<()> {
    let reused = match live {
        Some(live) if !plan.policy.reuse.is_empty() && !plan.prebuilt => {
            reuse_folders(session, &plan.policy.reuse, live, release_dir, manifest)?
        }
        _ => Vec::new(),
    };
    let build_user = plan.policy.privileges.build_user.as_ref();
    plan.policy
        .privileges
        .hand_to_build_user(release_dir, manifest)?;
    let user_content = Manifest::create(
        &session.history,
        &format!("{}/user-content", manifest.release()),
    )?;
    record_user_content(release_dir, manifest, &user_content)?;
    // Made after user content was noted: they are the build's, deployed.
    let confine = crate::confine::available();
    if confine {
        let writes: Vec<PathBuf> = plan
            .policy
            .build
            .iter()
            .flat_map(|step| step.writes.iter().flatten().cloned())
            .collect();
        make_missing_folders(release_dir, &writes, build_user.map(|u| (u.uid, u.gid)))?;
    }
    let started_ns = now_ns();
    let env = release_env(session.layout, release_dir);
    let mut whole_release_owned = false;
    // Steps that need a maintenance window run last, so the window lasts
    // only them and what is left until the switch.
    let (windowed, plain): (Vec<&BuildStep>, Vec<&BuildStep>) =
        plan.policy.build.iter().partition(|step| step.maintenance);
    for step in plain.into_iter().chain(windowed) {
        let command = &step.run;
        if plan.prebuilt && !step.once {
            session.info(&format!(
                "build: skipped {command} (the source was built already)"
            ));
            continue;
        }
        if let Some(path) = step.unless_reused.as_ref().filter(|p| reused.contains(p)) {
            session.info(&format!(
                "build: skipped {command} ({} was reused)",
                path.display()
            ));
            continue;
        }
        if let Some(path) = step
            .if_exists
            .as_ref()
            .filter(|p| !release_dir.join(p).exists())
        {
            session.info(&format!(
                "build: skipped {command} (the release has no {})",
                path.display()
            ));
            continue;
        }
        if let Some(when) = &step.when
            && !has_work(session, plan, release_dir, &env, command, when)?
        {
            continue;
        }
        if step.maintenance {
            open_window(session, plan, release_dir, command)?;
        }
        let confined_to = step.writes.as_deref().filter(|_| confine);
        let confinement = confined_to.map(|writes| Confinement::new(release_dir, writes));
        if !whole_release_owned {
            own_copies_before(session, command, release_dir, confined_to, manifest)?;
            whole_release_owned = confined_to.is_none();
        }
        match &confinement {
            Some(confined) => session.info(&format!(
                "build: running {command} (writes {})",
                confined.describe()
            )),
            None => session.info(&format!("build: running {command}")),
        }
        let started = std::time::Instant::now();
        let run = || {
            run_command(
                command,
                release_dir,
                &env,
                build_user,
                confinement.as_ref(),
                plan.policy.build_timeout,
                &mut |line| {
                    session.debug(&format!("build | {line}"));
                },
            )
            .map_err(|why| match &confinement {
                // The kernel's words for a write the confinement refused.
                Some(confined) if why.contains("Read-only file system") => Error::Build(format!(
                    "build step {why}\n(the rest of the release is read-only while it runs: its `writes` \
                     names only {}; a step that writes elsewhere must list it)",
                    confined.describe()
                )),
                _ => Error::Build(format!("build step {why}")),
            })
        };
        if step.once {
            let commit = session
                .history
                .release(manifest.release())?
                .and_then(|r| r.commit);
            run_once(session, command, manifest.release(), commit.as_deref(), run)?;
        } else {
            run()?;
        }
        session.info(&format!(
            "build: {command} finished in {}",
            human_duration(started.elapsed())
        ));
    }
    let rescanned = Manifest::create(&session.history, &format!("{}/rescan", manifest.release()))?;
    rescan_after_build(
        release_dir,
        &user_content,
        manifest,
        &rescanned,
        &plan.policy.shared,
        started_ns,
    )?;
    manifest.replace_with(&rescanned)?;
    session.history.drop_manifest(user_content.release())
}

/// Whether `step`'s `when` command says it has work (exit 0). It reads
/// the release, writing nothing there, within the build timeout; one that
/// cannot start or times out fails the deploy.
fn has_work(
    session: &Session<'_>,
    plan: &DeployPlan,
    release_dir: &Path,
    env: &[(&str, String)],
    command: &str,
    when: &str,
) -> Result<bool> {
    let confinement = crate::confine::available().then(|| Confinement::new(release_dir, &[]));
    let checked = check_command(
        when,
        release_dir,
        env,
        plan.policy.privileges.build_user.as_ref(),
        confinement.as_ref(),
        plan.policy.build_timeout,
        &mut |line| session.debug(&format!("when | {line}")),
    )
    .map_err(|why| Error::Build(format!("the `when` of build step '{command}': {why}")))?;
    if !checked {
        session.info(&format!(
            "build: skipped {command} (`{when}` says there is nothing to do)"
        ));
    }
    Ok(checked)
}

/// Open this deploy's maintenance window (unless one is open by hand),
/// serving the release's page when the app names one; the fleet's other
/// hosts open theirs first.
fn open_window(
    session: &Session<'_>,
    plan: &DeployPlan,
    release_dir: &Path,
    command: &str,
) -> Result<()> {
    let page = match &plan.policy.maintenance_page {
        Some(relative) => Some(maintenance::page_in_release(release_dir, relative)?),
        None => None,
    };
    match maintenance::current(session.layout)? {
        Some(window) if window.deployment == Some(session.id) => {}
        Some(_) => session.info(&format!(
            "maintenance is on by hand; {command} runs inside that window"
        )),
        None => {
            session.window_opening()?;
            maintenance::open_for_deploy(session, page, &plan.policy.maintenance_allow)?;
            session.info(&format!("maintenance: on for {command} until the switch"));
            std::thread::sleep(maintenance::IN_FLIGHT_GRACE);
        }
    }
    Ok(())
}

/// Before `command` runs, make the deployed files it may write (under
/// `writes`, or anywhere) copies of their own where they are hard links to
/// the live release's.
pub(crate) fn own_copies_before(
    session: &Session<'_>,
    command: &str,
    release_dir: &Path,
    writes: Option<&[PathBuf]>,
    manifest: &Manifest<'_>,
) -> Result<()> {
    let whole = [PathBuf::new()];
    let copied = own_copies(release_dir, writes.unwrap_or(&whole), manifest)?;
    if copied > 0 {
        session.info(&format!(
            "gave {copied} files hard-linked with the live release copies of their own before {command} (it may write them)"
        ));
    }
    Ok(())
}

/// Note in `user_content` every entry of `root` that `manifest` does not
/// list (user files carried in), so the rescan after the build keeps them
/// user content.
fn record_user_content(
    root: &Path,
    manifest: &Manifest<'_>,
    user_content: &Manifest<'_>,
) -> Result<()> {
    let walk = WalkDir::new(root)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name();
    for entry in walk {
        let entry = entry.map_err(|e| Error::io("read", root, e.into()))?;
        let relative = entry.path().strip_prefix(root).expect("under root");
        let Some(kind) = EntryKind::of(entry.file_type()) else {
            continue;
        };
        if !manifest.contains(relative)? {
            let noted = Entry {
                kind,
                mode: 0,
                size: 0,
                digest: String::new(),
            };
            user_content.insert(relative, noted)?;
        }
    }
    user_content.flush()
}

/// After build steps: what they created or changed is deployed; what was
/// user content before stays user content; what they deleted is gone.
fn rescan_after_build(
    root: &Path,
    user_content: &Manifest<'_>,
    old: &Manifest<'_>,
    rescanned: &Manifest<'_>,
    shared: &[PathBuf],
    build_started_ns: i128,
) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let walk = WalkDir::new(root)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name();
    for entry in walk {
        let entry = entry.map_err(|e| Error::io("read", root, e.into()))?;
        let relative = entry
            .path()
            .strip_prefix(root)
            .expect("under root")
            .to_path_buf();
        if shared.iter().any(|s| relative.starts_with(s)) {
            continue;
        }
        if user_content.contains(&relative)? {
            continue;
        }
        let meta = entry
            .metadata()
            .map_err(|e| Error::io("inspect", entry.path(), e.into()))?;
        let Some(kind) = EntryKind::of(meta.file_type()) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        let entry_record = match (kind, old.get(&relative)?) {
            (EntryKind::File, Some(prev))
                if prev.kind == EntryKind::File && unchanged_since(&meta, build_started_ns) =>
            {
                prev
            }
            (EntryKind::File, _) => {
                let (digest, size) =
                    digest_file(entry.path()).map_err(|e| Error::io("read", entry.path(), e))?;
                Entry {
                    kind,
                    mode,
                    size,
                    digest,
                }
            }
            (EntryKind::Symlink, _) => {
                let target = fsx::read_link(entry.path())?;
                Entry {
                    kind,
                    mode: 0o777,
                    size: meta.len(),
                    digest: target.to_string_lossy().into_owned(),
                }
            }
            (EntryKind::Dir, _) => Entry {
                kind,
                mode,
                size: 0,
                digest: String::new(),
            },
        };
        rescanned.insert(&relative, entry_record)?;
    }
    rescanned.flush()
}

/// Whether a file's ctime says it was not touched after `mark_ns` (with a
/// margin for coarse filesystem clocks).
fn unchanged_since(meta: &std::fs::Metadata, mark_ns: i128) -> bool {
    use std::os::unix::fs::MetadataExt;
    let ctime_ns = meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128;
    ctime_ns < mark_ns - MARK_MARGIN_NS
}
