//! Fleets over OpenSSH: real hosts (network namespaces, each with its own
//! sshd, nginx, PHP-FPM and webroot) behind a load balancer, deployed to by
//! the built binary as a controller.

use std::path::Path;
use std::time::Duration;

use crate::support::Zdeploy;
use crate::support::agent::Agent;
use crate::support::fleet::Fleet;
use crate::support::git::Repo;
use crate::support::load::{Load, deploys_and_rollbacks, judge, php_app};

/// Put version `version` of the load's PHP app in the repo's work tree.
pub(crate) fn app_version(repo: &Repo, scratch: &Path, version: &str) -> String {
    php_app(scratch, version);
    repo.commit_tree_of(scratch)
}

/// The controller's state (its mirror, its fleet history) beside the config.
pub(crate) fn controller(config: &Path) -> Zdeploy {
    Zdeploy::new()
        .env(
            "ZDEPLOY_STATE_DIR",
            config.parent().unwrap().join("controller"),
        )
        .arg("--config")
        .arg(config)
}

fn fleet_command(config: &Path, args: &[&str]) -> Zdeploy {
    controller(config).args(args)
}

pub(crate) fn fleet_deploy(config: &Path) -> Zdeploy {
    controller(config).args(["deploy", "shop"])
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
        "{} requests (none failed, torn or stale), {} saves kept; switch skew over 30 fleet deploys and 6 rollbacks (ms): {:?}",
        samples.len(),
        saved.len(),
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
        // Every host builds, so host 1's own build fails.
        format!(
            "build_on = \"every-host\"\nbuild = [\"test ! -e {}/fail-build\"]\n",
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

#[test]
fn a_split_fleet_shows_as_split_and_converges_to_one_release() {
    let (fleet, repo, scratch, config) = fleet_on_v1(|_| String::new());
    let status = fleet_command(&config, &["status", "shop", "--json"]).success();
    let status: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status["agrees"], true, "{status}");
    // A deploy that reached two hosts of three (as if the third was down).
    app_version(&repo, &scratch, "v2");
    let partial = fleet_deploy(&config)
        .args([
            "--host",
            &fleet.hosts[0].address,
            "--host",
            &fleet.hosts[1].address,
        ])
        .success();
    let live = fleet.live();
    assert_eq!(live[0], live[1], "{}", partial.stderr);
    assert_ne!(live[0], live[2]);
    let status = fleet_command(&config, &["status", "shop"]).success();
    assert!(status.stdout.contains("SPLIT"), "{}", status.stdout);
    assert!(
        status.stdout.contains(&fleet.hosts[2].address),
        "{}",
        status.stdout
    );
    // A rollback of a split fleet is refused, naming what each host serves.
    let refused = fleet_command(&config, &["rollback", "shop"]).fails_with(1);
    assert!(refused.stderr.contains("split"), "{}", refused.stderr);
    assert_eq!(fleet.live(), live);
    let converged = fleet_command(&config, &["fleet", "converge", "shop", "--json"]).success();
    let result: serde_json::Value = serde_json::from_str(&converged.stdout).unwrap();
    assert_eq!(result["outcome"], "converged", "{}", converged.stdout);
    assert_eq!(
        fleet.live(),
        vec![live[0].clone(); 3],
        "{}",
        converged.stderr
    );
    let status = fleet_command(&config, &["status", "shop", "--json"]).success();
    let status: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status["agrees"], true, "{status}");
    // The controller's history has every run, newest first.
    let runs: Vec<&str> = status["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        runs[..4],
        ["converged", "failed", "deployed", "deployed"],
        "{status}"
    );
    // The converged host built the same content: its page is v2.
    let page = std::fs::read_to_string(
        fleet.hosts[2]
            .dir
            .join("www")
            .join(live[0].as_ref().unwrap())
            .join("data_v2.txt"),
    )
    .unwrap();
    assert_eq!(page.trim(), "v2");
    // Per-host commands name every host.
    let releases = fleet_command(&config, &["releases", "shop"]).success();
    for host in &fleet.hosts {
        assert!(
            releases.stdout.contains(&format!("== {} ==", host.address)),
            "{}",
            releases.stdout
        );
    }
    let again = fleet_command(&config, &["fleet", "converge", "shop", "--json"]).success();
    let result: serde_json::Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!(result["outcome"], "unchanged", "{}", again.stdout);
}

#[test]
fn hosts_that_refuse_us_or_run_another_zdeploy_are_named_and_nothing_changes() {
    let (fleet, repo, scratch, config) = fleet_on_v1(|_| String::new());
    let before = fleet.live();
    app_version(&repo, &scratch, "v2");
    // Another zdeploy version on one host.
    let bin = fleet.hosts[2].dir.join("bin/zdeploy");
    std::fs::remove_file(&bin).unwrap();
    std::fs::write(&bin, "#!/bin/sh\necho 'zdeploy 0.0.1'\n").unwrap();
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = fleet_deploy(&config).fails_with(1);
    let line = out
        .stderr
        .lines()
        .rfind(|l| l.starts_with("error:"))
        .unwrap();
    assert!(
        line.contains("versions differ")
            && line.contains(&format!("{} has zdeploy 0.0.1", fleet.hosts[2].address)),
        "{}",
        out.stderr
    );
    assert_untouched_and_usable(&fleet, &before, &config);
    // `fleet install` puts this binary there; the others are current.
    let installed = fleet_command(&config, &["fleet", "install", "shop", "--json"]).success();
    let installed: serde_json::Value = serde_json::from_str(&installed.stdout).unwrap();
    let outcomes: Vec<&str> = installed
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["current", "current", "replaced"]);
    assert_eq!(
        std::fs::read(&bin).unwrap(),
        std::fs::read(crate::support::BIN).unwrap()
    );
    // A host that refuses our key: one clear line, no prompt (stdin is closed).
    let keys = fleet.hosts[1].dir.join("ssh/authorized_keys");
    let key = std::fs::read_to_string(&keys).unwrap();
    std::fs::write(&keys, "").unwrap();
    let out = fleet_deploy(&config).fails_with(1);
    assert!(
        out.stderr.contains(&format!(
            "{}: the host refused our key",
            fleet.hosts[1].address
        )),
        "{}",
        out.stderr
    );
    assert_untouched_and_usable(&fleet, &before, &config);
    std::fs::write(&keys, key).unwrap();
    // A host whose key we do not know.
    let known = fleet.root.path().join("known_hosts");
    let all = std::fs::read_to_string(&known).unwrap();
    let without: String = all
        .lines()
        .filter(|l| !l.starts_with(&format!("{} ", fleet.hosts[0].address)))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&known, without).unwrap();
    let out = fleet_deploy(&config).fails_with(1);
    assert!(
        out.stderr.contains(&format!(
            "{}: its host key is not in known_hosts",
            fleet.hosts[0].address
        )),
        "{}",
        out.stderr
    );
    assert_untouched_and_usable(&fleet, &before, &config);
    std::fs::write(&known, all).unwrap();
    // A host ssh would read as an option never reaches ssh.
    let out = fleet_deploy(&config)
        .arg("--host=-oProxyCommand=touch /tmp/zdeploy-pwned")
        .fails_with(2);
    assert!(
        out.stderr.contains("ssh would read as an option"),
        "{}",
        out.stderr
    );
    assert!(!Path::new("/tmp/zdeploy-pwned").exists());
    let out = fleet_deploy(&config).arg("--json").success();
    let result: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        fleet.live(),
        vec![Some(result["release"].as_str().unwrap().to_string()); 3]
    );
}

#[test]
fn a_second_controller_is_refused_at_once_naming_the_holder() {
    let (fleet, repo, scratch, config) = fleet_on_v1(|_| "build = [\"sleep 8\"]\n".into());
    app_version(&repo, &scratch, "v2");
    let mut first = fleet_deploy(&config)
        .command()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    eventually(
        "the first deploy to be building",
        Duration::from_secs(30),
        || !fleet.processes(0, "sleep 8").is_empty(),
    );
    let second = fleet_deploy(&config).arg("--force").fails_with(3);
    // Refused while the first still runs: nobody waited for it.
    assert!(
        first.try_wait().unwrap().is_none(),
        "the second controller waited"
    );
    assert!(
        second.stderr.contains("being deployed by pid"),
        "{}",
        second.stderr
    );
    let status = first.wait_with_output().unwrap().status;
    assert!(status.success(), "the first deploy failed");
    let live = fleet.live();
    assert!(live.iter().all(|l| l == &live[0]));
    assert_eq!(fleet.leftovers(), vec![Vec::<String>::new(); 3]);
}

/// Wait (bounded) until `done`, polling.
pub(crate) fn eventually(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "not in {limit:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn no_host_process_left(fleet: &Fleet) -> bool {
    (0..fleet.hosts.len()).all(|h| fleet.processes(h, "fleet-host").is_empty())
}

#[test]
fn a_controller_killed_in_any_phase_leaves_nothing_behind_and_the_next_deploy_converges() {
    // A migration (a `once` step) logs each run on the host it runs on.
    let (fleet, repo, scratch, config) = fleet_on_v1(|fleet| {
        format!(
            "stage_timeout = \"3s\"\nbuild = [{{ run = \"echo $ZDEPLOY_RELEASE >> {}/once.log\", once = true, writes = [] }}, \"sleep 1\"]\n",
            fleet.path.display()
        )
    });
    let mut told_it_ran = 0;
    // From connecting, through staging and building, to switching and settling.
    for (round, delay_ms) in [150u64, 600, 1100, 1500, 1800, 2100, 2600]
        .into_iter()
        .enumerate()
    {
        app_version(&repo, &scratch, &format!("v{}", round + 2));
        let mut controller = fleet_deploy(&config)
            .command()
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        controller.kill().unwrap();
        controller.wait().unwrap();
        eventually("every host's part to stop", Duration::from_secs(15), || {
            no_host_process_left(&fleet)
        });
        assert_eq!(
            fleet.leftovers(),
            vec![Vec::<String>::new(); 3],
            "after a kill at {delay_ms} ms"
        );
        let out = fleet_deploy(&config).arg("--json").success();
        let result: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        let live = fleet.live();
        assert!(
            live.iter().all(|l| l == &live[0]),
            "split after a kill at {delay_ms} ms: {live:?}"
        );
        if result["outcome"] == "deployed" {
            assert_eq!(live[0].as_deref(), result["release"].as_str());
        }
        told_it_ran += usize::from(out.stderr.contains("already ran for commit"));
    }
    // The migration ran on the builder only, at most once for any release,
    // and a retry after a kill that had run it said so.
    let log = std::fs::read_to_string(fleet.hosts[0].dir.join("once.log")).unwrap();
    let mut runs: Vec<&str> = log.lines().collect();
    let count = runs.len();
    runs.sort();
    runs.dedup();
    assert_eq!(
        runs.len(),
        count,
        "a release ran its migration twice: {log}"
    );
    assert!(!fleet.hosts[1].dir.join("once.log").exists());
    assert!(!fleet.hosts[2].dir.join("once.log").exists());
    assert!(told_it_ran > 0, "no retry said the migration had run");
}

#[test]
fn a_host_cut_off_while_staging_stops_the_deploy_and_cleans_up_after_itself() {
    let (fleet, repo, scratch, config) = fleet_on_v1(|_| {
        "stage_timeout = \"4s\"\nbuild_on = \"every-host\"\nbuild = [\"sleep 3\"]\n".into()
    });
    let before = fleet.live();
    app_version(&repo, &scratch, "v2");
    let controller = fleet_deploy(&config)
        .command()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    eventually("host 2 to be building", Duration::from_secs(20), || {
        !fleet.processes(2, "sleep 3").is_empty()
    });
    fleet.set_link(2, false);
    let out = controller.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&fleet.hosts[2].address), "{stderr}");
    assert!(stderr.contains("nothing switched anywhere"), "{stderr}");
    fleet.set_link(2, true);
    let address = format!("{}:22", fleet.hosts[2].address);
    eventually("the host to answer again", Duration::from_secs(10), || {
        std::net::TcpStream::connect_timeout(&address.parse().unwrap(), Duration::from_millis(300))
            .is_ok()
    });
    eventually(
        "the cut-off host to give up its staged release",
        Duration::from_secs(20),
        || no_host_process_left(&fleet),
    );
    assert_untouched_and_usable(&fleet, &before, &config);
    let out = fleet_deploy(&config).arg("--json").success();
    let result: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        fleet.live(),
        vec![Some(result["release"].as_str().unwrap().to_string()); 3]
    );
}

#[test]
fn a_host_that_fails_after_its_switch_has_every_host_switched_back() {
    let (fleet, repo, scratch, config, health) = fleet_with_health("");
    let before = fleet.live();
    std::fs::write(fleet.hosts[1].dir.join("unhealthy"), "").unwrap();
    commit_version(&repo, &scratch, "v2", &health);
    let out = fleet_deploy(&config).fails_with(1);
    assert!(
        out.stderr.contains("at the switch") && out.stderr.contains(&fleet.hosts[1].address),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("switched back"), "{}", out.stderr);
    assert_untouched_and_usable(&fleet, &before, &config);
}

#[test]
fn a_full_disk_on_one_host_stops_the_deploy_everywhere() {
    let fleet = Fleet::start_with(3, |index, dir| {
        if index != 2 {
            return Vec::new();
        }
        let www = dir.join("www");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
            .arg(&www)
            .status()
            .unwrap();
        assert!(status.success());
        vec![www]
    });
    let repo = Repo::new(fleet.root.path(), "shop");
    let scratch = fleet.root.path().join("scratch");
    app_version(&repo, &scratch, "v1");
    let config = fleet.config("shop", &repo.bare, "");
    fleet_deploy(&config).success();
    let before = fleet.live();
    php_app(&scratch, "v2");
    // Random bytes: git cannot compress them below the host's free space.
    let noise: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(scratch.join("big.bin"), noise).unwrap();
    repo.commit_tree_of(&scratch);
    let out = fleet_deploy(&config).fails_with(1);
    assert!(
        out.stderr.contains(&fleet.hosts[2].address),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("nothing changed anywhere")
            || out.stderr.contains("nothing switched anywhere"),
        "{}",
        out.stderr
    );
    assert_untouched_and_usable(&fleet, &before, &config);
}

/// A fleet of three whose v1 has a health page that fails on a host with
/// an `unhealthy` marker; `extra` shapes the rollout.
fn fleet_with_health(extra: &str) -> (Fleet, Repo, std::path::PathBuf, std::path::PathBuf, String) {
    let fleet = Fleet::start(3);
    let repo = Repo::new(fleet.root.path(), "shop");
    let scratch = fleet.root.path().join("scratch");
    let health = format!(
        "<?php if (file_exists('{}/unhealthy')) {{ http_response_code(500); echo 'sick'; }} else {{ echo 'ok'; }}\n",
        fleet.path.display()
    );
    php_app(&scratch, "v1");
    std::fs::write(scratch.join("health.php"), &health).unwrap();
    repo.commit_tree_of(&scratch);
    let config = fleet.config(
        "shop",
        &repo.bare,
        &format!("health = {{ url = \"http://{{host}}/health.php\", timeout = \"2s\" }}\n{extra}"),
    );
    fleet_deploy(&config).success();
    (fleet, repo, scratch, config, health)
}

fn commit_version(repo: &Repo, scratch: &Path, version: &str, health: &str) {
    php_app(scratch, version);
    std::fs::write(scratch.join("health.php"), health).unwrap();
    repo.commit_tree_of(scratch);
}

#[test]
fn a_rolling_deploy_switches_batch_by_batch_and_reverts_every_batch_on_failure() {
    let (fleet, repo, scratch, config, health) =
        fleet_with_health("strategy = \"rolling\"\nbatch = \"34%\"\nbatch_wait = \"1s\"\n");
    commit_version(&repo, &scratch, "v2", &health);
    let out = fleet_deploy(&config).arg("--json").success();
    let result: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let release = result["release"].as_str().unwrap().to_string();
    assert_eq!(fleet.live(), vec![Some(release.clone()); 3]);
    // Batches of two, then one, a second apart.
    assert!(
        out.stderr.contains("batch 1 of 2") && out.stderr.contains("batch 2 of 2"),
        "{}",
        out.stderr
    );
    let times: Vec<i64> = result["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["switched_at_ms"].as_i64().unwrap())
        .collect();
    assert!((times[0] - times[1]).abs() < 1000, "{times:?}");
    assert!(times[2] - times[0] >= 1000, "{times:?}");
    // The last batch fails its health check: every host goes back.
    std::fs::write(fleet.hosts[2].dir.join("unhealthy"), "").unwrap();
    commit_version(&repo, &scratch, "v3", &health);
    let out = fleet_deploy(&config).fails_with(1);
    let line = out
        .stderr
        .lines()
        .rfind(|l| l.starts_with("error:"))
        .unwrap();
    assert!(
        line.contains(&fleet.hosts[2].address) && line.contains("switched back"),
        "{}",
        out.stderr
    );
    assert_eq!(fleet.live(), vec![Some(release); 3]);
    assert_eq!(fleet.leftovers(), vec![Vec::<String>::new(); 3]);
}

#[test]
fn a_sequential_deploy_that_stops_leaves_the_fleet_split_until_converge() {
    let (fleet, repo, scratch, config, health) =
        fleet_with_health("strategy = \"sequential\"\ndelay = \"200ms\"\non_failure = \"stop\"\n");
    let before = fleet.live();
    std::fs::write(fleet.hosts[1].dir.join("unhealthy"), "").unwrap();
    commit_version(&repo, &scratch, "v2", &health);
    let out = fleet_deploy(&config).fails_with(1);
    assert!(out.stderr.contains("stopped"), "{}", out.stderr);
    let live = fleet.live();
    assert_ne!(live[0], before[0], "the first host keeps the new release");
    assert_eq!(live[1], before[1], "the failing host switched back");
    assert_eq!(live[2], before[2], "the last host never switched");
    assert_eq!(fleet.leftovers(), vec![Vec::<String>::new(); 3]);
    let status = fleet_command(&config, &["status", "shop", "--json"]).success();
    let status: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status["agrees"], false);
    std::fs::remove_file(fleet.hosts[1].dir.join("unhealthy")).unwrap();
    fleet_command(&config, &["fleet", "converge", "shop"]).success();
    assert_eq!(fleet.live(), vec![live[0].clone(); 3]);
}

#[test]
fn the_agent_deploys_a_fleet_on_push_and_shows_each_host() {
    let fleet = Fleet::start(3);
    let repo = Repo::new(fleet.root.path(), "shop");
    let scratch = fleet.root.path().join("scratch");
    app_version(&repo, &scratch, "v1");
    let config = fleet.config("shop", &repo.bare, "interval = \"1s\"\n");
    let text = std::fs::read_to_string(&config).unwrap();
    let dir = fleet.root.path().join("agent");
    std::fs::create_dir_all(&dir).unwrap();
    let agent = Agent::start(&dir, &text);
    let agreed = |agent: &Agent| -> Option<String> {
        let view = &agent.app("shop")["fleet"];
        let releases: Vec<&str> = view["hosts"]
            .as_object()?
            .values()
            .filter_map(|h| h["release"].as_str())
            .collect();
        (releases.len() == 3 && releases.iter().all(|r| *r == releases[0]))
            .then(|| releases[0].to_string())
    };
    agent.wait_for("the first fleet deploy", Duration::from_secs(120), || {
        agreed(&agent).is_some()
    });
    let first = agreed(&agent).unwrap();
    assert_eq!(fleet.live(), vec![Some(first.clone()); 3]);
    app_version(&repo, &scratch, "v2");
    agent.wait_for(
        "the pushed commit on every host",
        Duration::from_secs(120),
        || agreed(&agent).is_some_and(|r| r != first),
    );
    agent.wait_idle("shop");
    let second = agreed(&agent).unwrap();
    assert_eq!(fleet.live(), vec![Some(second.clone()); 3]);
    let view = agent.app("shop")["fleet"].clone();
    assert!(view["skew_ms"].as_i64().is_some(), "{view}");
    let metrics = agent.get("/metrics").body;
    assert!(
        metrics.contains("zdeploy_fleet_switch_skew_seconds{app=\"shop\"}"),
        "{metrics}"
    );
    for host in &fleet.hosts {
        assert!(
            metrics.contains(&format!(
                "zdeploy_fleet_host_failures_total{{app=\"shop\",host=\"{}\"}} 0",
                host.address
            )),
            "{metrics}"
        );
    }
    let panel = agent.get("/apps/shop/panel").body;
    assert!(
        panel.contains("<h3>Fleet</h3>") && panel.contains("every host on one release"),
        "{panel}"
    );
    for host in &fleet.hosts {
        assert!(panel.contains(&host.address), "{panel}");
    }
    // The API's rollback rolls back the fleet, every host, as the CLI's does.
    let answer = agent.act("shop", "rollback", "{}");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["release"], first.as_str(), "{}", answer.body);
    assert_eq!(fleet.live(), vec![Some(first.clone()); 3]);
}

#[test]
fn folders_and_archives_reach_every_host_as_the_same_bytes() {
    let fleet = Fleet::start(3);
    let folder = fleet.root.path().join("site");
    php_app(&folder, "f1");
    std::fs::create_dir_all(folder.join(".git")).unwrap();
    std::fs::write(folder.join(".git/HEAD"), "not deployed").unwrap();
    let config = fleet.config("shop", &folder, "source_kind = \"folder\"\n");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("ref = \"main\"\n", "");
    std::fs::write(&config, &text).unwrap();
    let out = fleet_deploy(&config).arg("--json").success();
    let result: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let release = result["release"].as_str().unwrap().to_string();
    assert_eq!(
        fleet.live(),
        vec![Some(release.clone()); 3],
        "{}",
        out.stderr
    );
    for host in &fleet.hosts {
        let root = host.dir.join("www").join(&release);
        assert_eq!(
            std::fs::read_to_string(root.join("data_f1.txt"))
                .unwrap()
                .trim(),
            "f1"
        );
        assert!(
            !root.join(".git").exists(),
            "the folder's .git was deployed"
        );
        assert!(
            !root.join("site").exists(),
            "the packing folder leaked into the release"
        );
    }
    // An archive: every host gets it and builds the same release.
    let scratch = fleet.root.path().join("scratch");
    php_app(&scratch, "a2");
    let archive = fleet.root.path().join("site.tar.gz");
    let packed = std::process::Command::new("tar")
        .arg("-C")
        .arg(&scratch)
        .arg("-czf")
        .arg(&archive)
        .arg(".")
        .status()
        .unwrap();
    assert!(packed.success());
    std::fs::write(
        &config,
        text.replace(
            &format!("source = \"{}\"", folder.display()),
            &format!("source = \"{}\"", archive.display()),
        )
        .replace("source_kind = \"folder\"\n", ""),
    )
    .unwrap();
    let out = fleet_deploy(&config).arg("--json").success();
    let result: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let second = result["release"].as_str().unwrap().to_string();
    assert_ne!(second, release);
    assert_eq!(
        fleet.live(),
        vec![Some(second.clone()); 3],
        "{}",
        out.stderr
    );
    let digests: Vec<String> = fleet
        .hosts
        .iter()
        .map(|h| {
            let db =
                rusqlite::Connection::open(h.dir.join("www/.zdeploy/ROOT/history.sqlite")).unwrap();
            db.query_row(
                "SELECT content_digest FROM releases WHERE name = ?1",
                [&second],
                |r| r.get(0),
            )
            .unwrap()
        })
        .collect();
    assert!(digests.iter().all(|d| d == &digests[0]), "{digests:?}");
    // Nothing the controller sent stays on a host.
    for host in &fleet.hosts {
        let downloads = host.dir.join("www/.zdeploy/ROOT/downloads");
        assert!(
            !downloads.exists(),
            "{} kept {}",
            host.address,
            downloads.display()
        );
    }
}

#[test]
fn bad_fleet_settings_are_refused_with_the_file_and_line() {
    let dir = crate::support::TempDir::new().unwrap();
    let webroot = dir.path().join("www");
    std::fs::create_dir_all(&webroot).unwrap();
    for (keys, says) in [
        ("hosts = []", "hosts is empty"),
        ("hosts = [\"web1\", \"web1\"]", "listed twice"),
        (
            "hosts = [\"-oProxyCommand=x\"]",
            "ssh would read as an option",
        ),
        ("hosts = [\"web1:99999\"]", "port '99999'"),
        ("hosts = [\"web1\"]\nzero_downtime = false", "plain mode"),
        (
            "hosts = [\"web1\"]\nstrategy = \"yolo\"",
            "unknown strategy 'yolo'",
        ),
        (
            "hosts = [\"web1\"]\nstrategy = \"rolling\"\nbatch = \"0%\"",
            "batch must be",
        ),
        (
            "hosts = [\"web1\"]\nstrategy = \"rolling\"\ndelay = \"1s\"",
            "delay does not apply",
        ),
        (
            "hosts = [\"web1\"]\nstrategy = \"atomic\"\nbatch = 2",
            "batch does not apply",
        ),
        (
            "hosts = [\"web1\"]\nstrategy = \"sequential\"\non_failure = \"panic\"",
            "on_failure must be",
        ),
        (
            "hosts = [\"web1\"]\nstage_timeout = \"soon\"",
            "stage_timeout",
        ),
        ("hosts = [\"web1\"]\nparallel = 0", "at least 1"),
    ] {
        let config = dir.path().join("zdeploy.toml");
        std::fs::write(
            &config,
            format!(
                "[apps.shop]\nwebroot = \"{}\"\nsource = \"{}\"\n{keys}\n",
                webroot.display(),
                dir.path().display()
            ),
        )
        .unwrap();
        let out = Zdeploy::new()
            .arg("--config")
            .arg(&config)
            .args(["deploy", "shop"])
            .fails_with(2);
        assert!(out.stderr.contains(says), "{keys}: {}", out.stderr);
        assert!(
            out.stderr.contains("zdeploy.toml:"),
            "{keys}: no file and line: {}",
            out.stderr
        );
    }
    assert_eq!(
        std::fs::read_dir(&webroot).unwrap().count(),
        0,
        "something was written"
    );
}
