//! Fleets over OpenSSH: real hosts (network namespaces, each with its own
//! sshd, nginx, PHP-FPM and webroot) behind a load balancer, deployed to by
//! the built binary as a controller.

use std::path::Path;
use std::time::Duration;

use crate::support::Zdeploy;
use crate::support::fleet::Fleet;
use crate::support::git::Repo;
use crate::support::load::{Load, deploys_and_rollbacks, judge, php_app};

/// Put version `version` of the load's PHP app in the repo's work tree.
fn app_version(repo: &Repo, scratch: &Path, version: &str) -> String {
    php_app(scratch, version);
    for entry in std::fs::read_dir(&repo.work).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != ".git" {
            let path = entry.path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path).unwrap();
            } else {
                std::fs::remove_file(&path).unwrap();
            }
        }
    }
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", scratch.display()))
        .arg(&repo.work)
        .status()
        .unwrap();
    assert!(copied.success());
    repo.commit(version)
}

fn fleet_command(config: &Path, args: &[&str]) -> Zdeploy {
    Zdeploy::new().arg("--config").arg(config).args(args)
}

fn fleet_deploy(config: &Path) -> Zdeploy {
    Zdeploy::new()
        .arg("--config")
        .arg(config)
        .args(["deploy", "shop"])
}

#[test]
fn a_fleet_deploys_and_rolls_back_together_under_load_and_keeps_every_save() {
    let mut fleet = Fleet::start(3);
    let repo = Repo::new(fleet.root.path(), "shop");
    let scratch = fleet.root.path().join("scratch");
    app_version(&repo, &scratch, "v0");
    let config = fleet.config("shop", &repo.bare, "keep = 3\n");
    let first = fleet_deploy(&config).arg("--json").success();
    let result: serde_json::Value = serde_json::from_str(&first.stdout).unwrap();
    let release = result["release"].as_str().unwrap().to_string();
    assert_eq!(
        fleet.live(),
        vec![Some(release.clone()); 3],
        "{}",
        first.stderr
    );
    let port = fleet.start_balancer();
    let load = Load::start(port, 4, true);
    let skews = std::cell::RefCell::new(Vec::new());
    std::thread::sleep(Duration::from_millis(300));
    let ops = deploys_and_rollbacks(
        30,
        |version| {
            app_version(&repo, &scratch, version);
            let out = fleet_deploy(&config).arg("--json").success();
            let result: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
            let release = result["release"].as_str().unwrap();
            assert_eq!(
                fleet.live(),
                vec![Some(release.to_string()); 3],
                "{}",
                out.stderr
            );
            skews.borrow_mut().push(result["skew_ms"].as_i64().unwrap());
        },
        || {
            let out = fleet_command(&config, &["rollback", "shop", "--json"]).success();
            let result: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
            let release = result["release"].as_str().unwrap();
            assert_eq!(
                fleet.live(),
                vec![Some(release.to_string()); 3],
                "{}",
                out.stderr
            );
            skews.borrow_mut().push(result["skew_ms"].as_i64().unwrap());
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    let (samples, saved, save_failures) = load.finish();
    // A request that started after a deploy returned must show its version:
    // no host serves an old release after the switch phase.
    let verdict = judge(&samples, &ops, "v0");
    assert!(
        verdict.failed.is_empty(),
        "failed requests: {:?}",
        &verdict.failed[..verdict.failed.len().min(5)]
    );
    assert!(
        verdict.stale.is_empty(),
        "old releases served after a switch: {:?}",
        &verdict.stale[..verdict.stale.len().min(5)]
    );
    assert!(
        verdict.torn.is_empty(),
        "torn pages: {:?}",
        &verdict.torn[..verdict.torn.len().min(5)]
    );
    assert!(save_failures.is_empty(), "saves failed: {save_failures:?}");
    assert!(
        samples.len() > 100,
        "the load ran: {} samples",
        samples.len()
    );
    // Every save acknowledged by some host is in that host's live release.
    let live = fleet.live();
    assert!(
        live.iter().all(|l| l == &live[0]),
        "hosts disagree: {live:?}"
    );
    let mut missing = Vec::new();
    for id in &saved {
        let found = fleet.hosts.iter().any(|h| {
            h.dir
                .join("www")
                .join(live[0].as_ref().unwrap())
                .join(format!("saves/{id}.txt"))
                .exists()
        });
        if !found {
            missing.push(id.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} saves lost: {:?}",
        missing.len(),
        saved.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(saved.len() > 50, "the saver ran: {}", saved.len());
    eprintln!(
        "switch skew over 30 fleet deploys and 6 rollbacks (ms): {:?}",
        skews.borrow()
    );
}

/// A fleet of three on v1, with a config whose hosts may be failed on purpose.
fn fleet_on_v1(
    extra: impl Fn(&Fleet) -> String,
) -> (Fleet, Repo, std::path::PathBuf, std::path::PathBuf) {
    let fleet = Fleet::start(3);
    let repo = Repo::new(fleet.root.path(), "shop");
    let scratch = fleet.root.path().join("scratch");
    app_version(&repo, &scratch, "v1");
    let config = fleet.config("shop", &repo.bare, &extra(&fleet));
    fleet_deploy(&config).success();
    (fleet, repo, scratch, config)
}

/// Nothing live changed, nothing staged is left, and the next deploy runs.
fn assert_untouched_and_usable(fleet: &Fleet, before: &[Option<String>], config: &Path) {
    assert_eq!(&fleet.live(), before, "a host switched");
    assert_eq!(
        fleet.leftovers(),
        vec![Vec::<String>::new(); 3],
        "staged releases left"
    );
    let _ = config;
}

#[test]
fn a_host_that_fails_to_stage_stops_the_deploy_everywhere() {
    let (fleet, repo, scratch, config) = fleet_on_v1(|fleet| {
        format!(
            "build = [\"test ! -e {}/fail-build\"]\n",
            fleet.path.display()
        )
    });
    let before = fleet.live();
    std::fs::write(fleet.hosts[1].dir.join("fail-build"), "").unwrap();
    app_version(&repo, &scratch, "v2");
    let out = fleet_deploy(&config).fails_with(1);
    assert!(
        out.stderr.contains(&fleet.hosts[1].address),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("nothing switched anywhere"),
        "{}",
        out.stderr
    );
    assert_untouched_and_usable(&fleet, &before, &config);
    std::fs::remove_file(fleet.hosts[1].dir.join("fail-build")).unwrap();
    let out = fleet_deploy(&config).arg("--json").success();
    let result: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let release = result["release"].as_str().unwrap().to_string();
    assert_eq!(fleet.live(), vec![Some(release); 3]);
}
