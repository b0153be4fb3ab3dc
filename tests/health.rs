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
