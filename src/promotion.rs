//! Promotion: `zdeploy deploy production --from staging` deploys exactly
//! the bytes of another app's live release (on this host, or on a host of
//! an ssh fleet), copied by digest: files production's live release has
//! are linked, only the rest are sent, and `build` does not run again.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use zdeploy_core::deploy::Promotion;
use zdeploy_core::history::History;
use zdeploy_core::policy::{DeployPlan, DeployResult};
use zdeploy_core::release_copy::{CopySource, Lacking, manifest_bytes};
use zdeploy_core::session::{Observer, RunOptions};
use zdeploy_core::source::Source;
use zdeploy_core::switch::read_live;

use crate::config::{AppConfig, Topology, UsageError};
use crate::fleet::remote_command::{TempDir, run_on};
use crate::fleet::ssh::Connection;
use crate::fleet::transfer::{fetch_release_files, release_files_tar};

/// An app's live release, as a promotion copies it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Exported {
    pub release: String,
    /// The release's folder on its host.
    pub dir: PathBuf,
    pub commit: Option<String>,
    /// Its content digest: the promoted release comes out with the same.
    pub digest: String,
    /// Its manifest as `release_copy` exports it, in hex.
    pub manifest: String,
}

/// `app`'s live release with its manifest.
pub fn export_live(app: &AppConfig) -> Result<Exported> {
    let layout = &app.layout;
    let live = read_live(layout)?;
    let (Some(release), Some(dir)) = (live.record_name(layout), live.dir(layout)) else {
        bail!("nothing is live at {}", layout.context_path().display());
    };
    let path = layout.history_path();
    if !path.exists() {
        bail!(
            "{} has no history: nothing to promote",
            layout.webroot().display()
        );
    }
    let history = History::open(&path)?;
    let record = history
        .release(release)?
        .ok_or_else(|| anyhow!("the history has no release {release}"))?;
    let manifest = history.manifest(release)?.ok_or_else(|| {
        anyhow!("the history has no manifest of {release}: it cannot be promoted (deploy it again first)")
    })?;
    Ok(Exported {
        release: release.to_string(),
        dir,
        commit: record.commit,
        digest: manifest.content_digest()?,
        manifest: hex::encode(manifest_bytes(&manifest)?),
    })
}

/// The hidden `zdeploy promotion-export`: what a promotion run elsewhere
/// asks this host for, as JSON on stdout.
pub fn print_export(app: &AppConfig) -> Result<()> {
    println!("{}", serde_json::to_string(&export_live(app)?)?);
    Ok(())
}

/// Where `from`'s live release is read: here, or on its first ssh host.
enum Origin {
    Here,
    Remote(Box<Connection>),
}

/// Deploy `from`'s live release to `target` (one host) as it is.
pub fn promote(
    target: &AppConfig,
    from: &AppConfig,
    force: bool,
    options: &RunOptions,
    observer: &dyn Observer,
) -> Result<DeployResult> {
    if !matches!(target.topology, Topology::OneHost | Topology::OnOrders) {
        return Err(UsageError(format!(
            "{}--from: promoting into a fleet is not supported yet; promote on one host",
            target.origin
        ))
        .into());
    }
    if target.layout.state_dir() == from.layout.state_dir() {
        return Err(UsageError("--from names the app being deployed".into()).into());
    }
    let (origin, exported, from_shown) = match &from.topology {
        Topology::OneHost | Topology::OnOrders => {
            let exported = export_live(from)
                .with_context(|| format!("--from {}", from.name.as_deref().unwrap_or("?")))?;
            let shown = format!("{}/{}", from.layout.webroot().display(), exported.release);
            (Origin::Here, exported, shown)
        }
        Topology::Ssh(fleet) => {
            let host = &fleet.hosts[0];
            let connection = Connection::open(host, fleet)?;
            let args = vec![
                "promotion-export".to_string(),
                from.name.clone().unwrap_or_default(),
            ];
            let answer = run_on(&connection, from, fleet, &args)?;
            if answer.code != 0 {
                bail!(
                    "{}: cannot read the live release to promote: {}",
                    host.shown,
                    answer.stderr.trim()
                );
            }
            let exported: Exported = serde_json::from_str(answer.stdout.trim())
                .with_context(|| format!("{}: read the exported release", host.shown))?;
            let shown = format!("{}:{}", host.shown, exported.dir.display());
            (Origin::Remote(Box::new(connection)), exported, shown)
        }
        Topology::Etcd(_) => {
            return Err(UsageError(
                "--from: promoting from a fleet in etcd is not supported yet".into(),
            )
            .into());
        }
    };
    let work = TempDir::new("promote")?;
    let manifest = work.path.join("manifest");
    let bytes = hex::decode(&exported.manifest).context("read the exported manifest")?;
    std::fs::write(&manifest, bytes).with_context(|| format!("write {}", manifest.display()))?;
    let mut fetched = 0;
    let mut supply = |lacking: &Lacking| -> zdeploy_core::Result<PathBuf> {
        fetched += 1;
        let tar = work.path.join(format!("files-{fetched}.tar"));
        supply_files(&origin, &exported.dir, &lacking.list, &tar)
            .map_err(|e| zdeploy_core::Error::Source(format!("{e:#}")))?;
        Ok(tar)
    };
    let mut promotion = Promotion {
        from: from_shown.clone(),
        commit: exported.commit.clone(),
        copy: CopySource {
            manifest,
            base: None,
            digest: exported.digest.clone(),
            lacking_list: work.path.join("lacking"),
            supply: &mut supply,
        },
    };
    let plan = DeployPlan {
        source: Source::Folder(PathBuf::from(&from_shown)),
        reference: None,
        commit: None,
        requested: None,
        policy: target.policy.clone(),
        force,
        prebuilt: true,
        canary: None,
    };
    Ok(zdeploy_core::deploy::promote(
        &target.layout,
        &plan,
        &mut promotion,
        options,
        observer,
    )?)
}

/// The files named in `list` (NUL-separated, relative to `dir`) as a tar
/// at `tar`, read where the release is.
fn supply_files(origin: &Origin, dir: &Path, list: &Path, tar: &Path) -> Result<()> {
    let names = std::fs::read(list).with_context(|| format!("read {}", list.display()))?;
    match origin {
        Origin::Remote(connection) => fetch_release_files(connection, dir, &names, tar),
        Origin::Here => {
            let (dir_text, list_text, tar_text) = (
                dir.display().to_string(),
                list.display().to_string(),
                tar.display().to_string(),
            );
            let words = release_files_tar(&dir_text, &list_text, &tar_text);
            let output = Command::new(words[0])
                .args(&words[1..])
                .output()
                .context("run tar")?;
            if !output.status.success() {
                bail!(
                    "reading the release's files from {} failed: {}",
                    dir.display(),
                    String::from_utf8_lossy(&output.stderr).trim()
                );
            }
            Ok(())
        }
    }
}
