//! Health checks: a release whose health URL fails after the switch is
//! switched back by zdeploy itself and skipped by later rollbacks; a failing
//! check before the switch leaves the live release alone.

use crate::support::http::FileServer;
use crate::support::{Site, write_files};

/// `zdeploy releases --json` as (name, state) pairs.
fn release_states(site: &Site) -> Vec<(String, String)> {
    let out = site.zdeploy("releases").arg("--json").success();
    let list: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_release_that_fails_its_health_check_is_switched_back_and_skipped_by_rollbacks() {
    let site = Site::new();
    let app = site.path("app");
    // The live site, as the web server would serve it: through the symlink.
    let server = FileServer::start(&site.webroot);
    let health = format!("http://{}/ROOT/healthz.txt", server.address);
    let deploy = |version: &str, healthy: bool| {
        write_files(&app, &[("index.php", version)]);
        let marker = app.join("healthz.txt");
        if healthy {
            std::fs::write(&marker, "ok").unwrap();
        } else if marker.exists() {
            std::fs::remove_file(&marker).unwrap();
        }
        site.deploy(&app)
            .args(["--health-url", &health, "--health-timeout", "2s"])
            .args(["--settle", "0s", "--drain", "0s", "--keep", "5"])
    };
    deploy("v1", true).success();
    let good = site.live_release();
    std::fs::write(site.context().join("upload.txt"), "from a user").unwrap();

    let out = deploy("v2", false).fails_with(1);
    assert!(
        out.stderr.contains("healthz.txt did not answer 200")
            && out.stderr.contains(&format!("switched back to {good}")),
        "{}",
        out.stderr
    );
    assert_eq!(
        site.live_release(),
        good,
        "the healthy release serves again"
    );
    assert_eq!(site.read("index.php"), "v1");
    assert_eq!(site.read("upload.txt"), "from a user");
    let states = release_states(&site);
    let bad = states
        .iter()
        .find(|(name, _)| name != &good)
        .expect("the failed release stays on disk for inspection");
    assert_eq!(bad.1, "failed", "{states:?}");
    let log = site.zdeploy("log").arg("--json").success().stdout;
    assert!(
        log.contains("health check") || log.contains("did not answer"),
        "{log}"
    );

    deploy("v3", true).success();
    assert_eq!(site.read("index.php"), "v3");
    site.zdeploy("rollback").args(["--settle", "0s"]).success();
    assert_eq!(
        site.live_release(),
        good,
        "rollback skips the release that failed its health check"
    );
}

#[test]
fn a_failing_check_before_the_switch_leaves_the_live_release_alone() {
    let site = Site::new();
    let app = site.path("app");
    write_files(&app, &[("index.php", "v1"), ("ready", "")]);
    let check = ["--health-before", "test -f ready && echo checked"];
    site.deploy(&app).args(check).success();
    let before = site.snapshot();
    std::fs::remove_file(app.join("ready")).unwrap();
    write_files(&app, &[("index.php", "v2")]);
    let out = site.deploy(&app).args(check).fails_with(1);
    assert!(
        out.stderr.contains("the check before the switch"),
        "{}",
        out.stderr
    );
    assert_eq!(site.snapshot(), before, "nothing changed");
}

#[test]
fn health_settings_are_checked() {
    let site = Site::new();
    let app = site.path("app");
    write_files(&app, &[("index.php", "v1")]);
    for (args, says) in [
        (
            vec!["--health-url", "ftp://x/"],
            "must be http:// or https://",
        ),
        (
            vec![
                "--health-url",
                "http://127.0.0.1:9/",
                "--health-status",
                "99",
            ],
            "100-599",
        ),
        (vec!["--health-status", "200"], "needs a url"),
        (
            vec![
                "--health-url",
                "http://127.0.0.1:9/",
                "--health-timeout",
                "soon",
            ],
            "--health-timeout",
        ),
    ] {
        let out = site.deploy(&app).args(&args).fails_with(2);
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
    }
    let out = site
        .deploy_by_config(
            &app,
            "health = { url = \"http://127.0.0.1:9/\", expect = 200 }",
        )
        .fails_with(2);
    assert!(
        out.stderr.contains(":4:") && out.stderr.contains("expect"),
        "{}",
        out.stderr
    );
    assert!(site.releases().is_empty());
}

#[test]
fn after_switch_commands_run_in_order_in_the_release_that_just_went_live() {
    let site = Site::new();
    let app = site.path("app");
    let record = site.path("after-switch.log");
    // Each command records which release it ran in and what was live then.
    let step = |label: &str| {
        format!(
            "echo \"{label} $(basename \"$PWD\") $(readlink ../ROOT) $ZDEPLOY_PREVIOUS\" >> {}",
            record.display()
        )
    };
    let deploy = |version: &str| {
        write_files(&app, &[("index.php", version)]);
        site.deploy(&app)
            .args(["--after-switch", &step("first")])
            .args(["--after-switch", &step("second")])
            .success();
    };
    deploy("v1");
    let first = site.live_release();
    deploy("v2");
    let second = site.live_release();
    let lines: Vec<String> = std::fs::read_to_string(&record)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        lines,
        vec![
            format!("first {first} {first} "),
            format!("second {first} {first} "),
            format!("first {second} {second} {first}"),
            format!("second {second} {second} {first}"),
        ],
        "in order, in the new release, once it is live"
    );
    // A rollback runs them too (queues must restart on the old code).
    std::fs::remove_file(&record).unwrap();
    site.zdeploy("rollback")
        .args(["--settle", "0s", "--after-switch", &step("back")])
        .success();
    assert_eq!(
        std::fs::read_to_string(&record).unwrap(),
        format!("back {first} {first} {second}\n")
    );
}

#[test]
fn a_failing_after_switch_command_switches_back_with_a_health_url_and_fails_the_run_without() {
    let site = Site::new();
    let app = site.path("app");
    let server = FileServer::start(&site.webroot);
    let health = format!("http://{}/ROOT/index.php", server.address);
    write_files(&app, &[("index.php", "v1")]);
    site.deploy(&app).success();
    let good = site.live_release();
    std::fs::write(site.context().join("upload.txt"), "from a user").unwrap();

    // With a health URL: a failed command is a failed check.
    write_files(&app, &[("index.php", "v2")]);
    let out = site
        .deploy(&app)
        .args(["--health-url", &health, "--keep", "5"])
        .args(["--after-switch", "echo restarting; exit 3"])
        .fails_with(1);
    assert!(
        out.stderr.contains("after_switch")
            && out.stderr.contains("restarting")
            && out.stderr.contains(&format!("switched back to {good}")),
        "{}",
        out.stderr
    );
    assert_eq!(site.live_release(), good);
    assert_eq!(site.read("upload.txt"), "from a user");
    let failed: Vec<_> = release_states(&site)
        .into_iter()
        .filter(|(_, state)| state == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "the release is marked failed: {failed:?}");

    // Without one: the release stays live, the run fails and says so, and
    // the history records the failed step.
    write_files(&app, &[("index.php", "v3")]);
    let out = site
        .deploy(&app)
        .args(["--keep", "5", "--build-timeout", "1s"])
        .args(["--after-switch", "sleep 30"])
        .fails_with(1);
    let live = site.live_release();
    assert_ne!(live, good);
    assert_eq!(site.read("index.php"), "v3");
    assert!(
        out.stderr.contains("after_switch") && out.stderr.contains(&format!("ROOT serves {live}")),
        "{}",
        out.stderr
    );
    assert_eq!(site.read("upload.txt"), "from a user", "settle still ran");
    let log = site.zdeploy("log").success().stdout;
    assert!(log.contains("after_switch"), "{log}");

    // An empty command is refused before anything runs.
    let out = site
        .deploy(&app)
        .args(["--after-switch", " "])
        .fails_with(2);
    assert!(
        out.stderr
            .contains("--after-switch: an after_switch command is empty"),
        "{}",
        out.stderr
    );
}
