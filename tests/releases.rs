//! Release names, retention, keep, prune, rollback, and how they are listed.

use crate::support::{Site, is_release_name, write_files};

fn deploy_version(site: &Site, version: &str, extra: &[&str]) {
    let app = site.path("app");
    write_files(&app, &[("index.php", version)]);
    site.deploy(&app).args(extra).success();
}

#[test]
fn deploys_within_one_second_get_distinct_names_in_order() {
    let site = Site::new();
    for i in 0..4 {
        deploy_version(&site, &format!("v{i}"), &["--keep", "10"]);
    }
    let releases = site.releases();
    assert_eq!(releases.len(), 4, "{releases:?}");
    assert!(releases.iter().all(|r| is_release_name(r)), "{releases:?}");
    assert_eq!(site.live_release(), releases[3], "the newest name is live");
}

#[test]
fn retention_keeps_the_newest_counting_the_live_one() {
    let site = Site::new();
    for i in 0..5 {
        deploy_version(&site, &format!("v{i}"), &["--keep", "2", "--drain", "0s"]);
    }
    let releases = site.releases();
    assert_eq!(releases.len(), 2, "{releases:?}");
    assert_eq!(site.live_release(), releases[1]);
    assert_eq!(site.read("index.php"), "v4");
}

#[test]
fn a_release_a_process_still_works_in_is_pruned_only_once_the_process_is_gone() {
    let site = Site::new();
    deploy_version(&site, "v1", &[]);
    let first = site.live_release();
    // A queue worker started from v1: its working directory is there.
    let mut worker = std::process::Command::new("sleep")
        .arg("120")
        .current_dir(site.webroot.join(&first))
        .spawn()
        .unwrap();
    let prune = ["--keep", "1", "--drain", "0s"];
    deploy_version(&site, "v2", &prune);
    deploy_version(&site, "v3", &prune);
    assert!(site.releases().contains(&first), "{:?}", site.releases());
    let out = site.zdeploy("prune").args(prune).success();
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(
        said.contains(&format!(
            "kept {first} for now: process {} (sleep 120) uses it",
            worker.id()
        )),
        "{said}"
    );
    assert_eq!(
        site.releases().len(),
        2,
        "only the worker's release stays besides the live one"
    );
    // status names the worker still running old code.
    let status = site.zdeploy("status").success().stdout;
    assert!(
        status.contains(&format!(
            "old code: process {} (sleep 120) still runs from {first}, which is not live",
            worker.id()
        )),
        "{status}"
    );
    worker.kill().unwrap();
    worker.wait().unwrap();
    let out = site.zdeploy("prune").args(prune).success();
    assert!(
        out.stdout.contains(&format!("pruned {first}")),
        "{}",
        out.stdout
    );
    assert_eq!(site.releases(), vec![site.live_release()]);
    let status = site.zdeploy("status").success().stdout;
    assert!(!status.contains("old code"), "{status}");
}

#[test]
fn drain_protects_a_release_that_just_stopped_being_live() {
    let site = Site::new();
    deploy_version(&site, "v1", &["--keep", "1", "--drain", "1h"]);
    deploy_version(&site, "v2", &["--keep", "1", "--drain", "1h"]);
    assert_eq!(
        site.releases().len(),
        2,
        "the previous release drains for an hour"
    );
    let out = site
        .zdeploy("prune")
        .args(["--keep", "1", "--drain", "0s"])
        .success();
    assert!(out.stdout.contains("pruned"), "{}", out.stdout);
    assert_eq!(site.releases(), vec![site.live_release()]);
}

#[test]
fn late_user_files_in_a_pruned_release_are_carried_first() {
    let site = Site::new();
    deploy_version(&site, "v1", &[]);
    let first = site.live_release();
    deploy_version(&site, "v2", &["--drain", "1h"]);
    // A request that started on v1 finishes after the switch and writes there.
    std::fs::write(site.webroot.join(&first).join("late-upload.png"), "late").unwrap();
    site.zdeploy("prune")
        .args(["--keep", "1", "--drain", "0s"])
        .success();
    assert!(!site.webroot.join(&first).exists());
    assert_eq!(site.read("late-upload.png"), "late");
}

#[test]
fn keep_renames_a_release_out_of_retention() {
    let site = Site::new();
    deploy_version(&site, "v1", &[]);
    let first = site.live_release();
    deploy_version(&site, "v2", &[]);
    let out = site
        .zdeploy("keep")
        .args([&first, "before-new-levels"])
        .success();
    assert!(
        out.stdout.contains("ROOT_before-new-levels"),
        "{}",
        out.stdout
    );
    assert!(
        site.webroot
            .join("ROOT_before-new-levels/index.php")
            .exists()
    );
    for i in 3..7 {
        deploy_version(&site, &format!("v{i}"), &["--keep", "1", "--drain", "0s"]);
    }
    assert!(
        site.webroot.join("ROOT_before-new-levels").exists(),
        "never pruned"
    );
    // It is still a rollback target.
    site.zdeploy("rollback")
        .arg("ROOT_before-new-levels")
        .args(["--settle", "0s"])
        .success();
    assert_eq!(site.read("index.php"), "v1");
}

#[test]
fn keeping_the_live_release_never_breaks_the_context() {
    let site = Site::new();
    deploy_version(&site, "v1", &[]);
    let live = site.live_release();
    site.zdeploy("keep").args([&live, "launch"]).success();
    assert_eq!(site.live().as_deref(), Some("ROOT_launch"));
    assert_eq!(site.read("index.php"), "v1");
    assert!(!site.webroot.join(&live).exists());
    let listed = site.zdeploy("releases").arg("--json").success();
    let releases: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(releases[0]["name"], "ROOT_launch");
    assert_eq!(releases[0]["live"], true);
}

#[test]
fn keep_refuses_bad_names() {
    let site = Site::new();
    deploy_version(&site, "v1", &[]);
    let live = site.live_release();
    let before = site.snapshot();
    for (name, expected) in [
        ("2026.11.26-10.05.48", "looks like a release timestamp"),
        ("../escape", "invalid name"),
        (".hidden", "invalid name"),
    ] {
        let out = site
            .zdeploy("keep")
            .args([live.as_str(), name])
            .fails_with(2);
        assert!(out.stderr.contains(expected), "{name}: {}", out.stderr);
    }
    let out = site
        .zdeploy("keep")
        .args(["ROOT_1999.01.01-00.00.00", "x"])
        .fails_with(2);
    assert!(out.stderr.contains("no release"), "{}", out.stderr);
    assert_eq!(site.snapshot(), before);
}

#[test]
fn rollback_goes_to_the_previous_release_or_the_one_named() {
    let site = Site::new();
    for v in ["v1", "v2", "v3"] {
        deploy_version(&site, v, &[]);
    }
    let releases = site.releases();
    site.zdeploy("rollback").args(["--settle", "0s"]).success();
    assert_eq!(site.read("index.php"), "v2");
    site.zdeploy("rollback").args(["--settle", "0s"]).success();
    assert_eq!(site.read("index.php"), "v1");
    let out = site.zdeploy("rollback").fails_with(2);
    assert!(out.stderr.contains("no earlier release"), "{}", out.stderr);
    site.zdeploy("rollback")
        .arg(&releases[2])
        .args(["--settle", "0s"])
        .success();
    assert_eq!(site.read("index.php"), "v3");
}

#[test]
fn rollback_carries_user_content() {
    let site = Site::new();
    deploy_version(&site, "v1", &[]);
    deploy_version(&site, "v2", &[]);
    std::fs::write(site.context().join("written-on-v2.txt"), "keep me").unwrap();
    site.zdeploy("rollback").args(["--settle", "0s"]).success();
    assert_eq!(site.read("index.php"), "v1");
    assert_eq!(site.read("written-on-v2.txt"), "keep me");
}

#[test]
fn rollback_to_an_unknown_release_changes_nothing() {
    let site = Site::new();
    deploy_version(&site, "v1", &[]);
    deploy_version(&site, "v2", &[]);
    let before = site.snapshot();
    let out = site
        .zdeploy("rollback")
        .arg("ROOT_2000.01.01-00.00.00")
        .fails_with(2);
    assert!(
        out.stderr.contains("no release 'ROOT_2000.01.01-00.00.00'"),
        "{}",
        out.stderr
    );
    let out = site
        .zdeploy("rollback")
        .arg(site.live_release())
        .fails_with(2);
    assert!(out.stderr.contains("already live"), "{}", out.stderr);
    assert_eq!(site.snapshot(), before);
}

#[test]
fn releases_json_lists_every_field() {
    let site = Site::new();
    let repo = crate::support::git::Repo::new(site.dir.path(), "app");
    repo.write("index.php", "x");
    let commit = repo.commit("c");
    site.deploy(repo.url()).success();
    deploy_version(&site, "folder", &[]);
    let out = site.zdeploy("releases").arg("--json").success();
    let list: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    for key in [
        "name", "live", "state", "created", "source", "ref", "commit", "size",
    ] {
        assert!(list[0].get(key).is_some(), "missing {key}: {}", list[0]);
    }
    assert_eq!(list[0]["commit"], commit.as_str());
    assert_eq!(list[0]["ref"], "main");
    assert_eq!(list[0]["live"], false);
    assert_eq!(list[1]["live"], true);
    assert_eq!(list[1]["commit"], serde_json::Value::Null);
    assert_eq!(list[1]["state"], "complete");
    assert!(list[1]["size"].as_u64().unwrap() > 0);
}

#[test]
fn status_and_log_report_the_history() {
    let site = Site::new();
    deploy_version(&site, "v1", &[]);
    let app = site.path("app");
    write_files(&app, &[("index.php", "v2")]);
    site.deploy(&app)
        .args(["--build", "echo compiling assets; exit 3"])
        .fails_with(1);
    let status = site.zdeploy("status").arg("--json").success();
    let status: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status["live"], site.live_release().as_str());
    let deployments = status["deployments"].as_array().unwrap();
    assert_eq!(deployments.len(), 2);
    assert_eq!(deployments[0]["outcome"], "failed");
    assert_eq!(deployments[1]["outcome"], "success");
    let human = site.zdeploy("status").success();
    assert!(human.stdout.contains("live ROOT_"), "{}", human.stdout);

    let log = site.zdeploy("log").success();
    assert!(
        log.stdout.contains("compiling assets"),
        "build output is in the log: {}",
        log.stdout
    );
    assert!(log.stdout.contains("exit code 3"), "{}", log.stdout);
    let first = site.zdeploy("log").arg("1").success();
    assert!(first.stdout.contains("deployment #1"), "{}", first.stdout);
    for step in [
        "lock",
        "recover",
        "resolve",
        "materialize",
        "carry",
        "switch",
        "prune",
    ] {
        assert!(
            first.stdout.contains(step),
            "step {step} recorded: {}",
            first.stdout
        );
    }
}

#[test]
fn verify_finds_every_change_to_deployed_files_and_ignores_user_content() {
    let site = Site::new();
    let app = site.path("app");
    write_files(
        &app,
        &[
            ("index.php", "<?php echo 1;"),
            ("lib/a.php", "a"),
            ("lib/b.php", "b"),
            ("lib/c.php", "c"),
        ],
    );
    std::os::unix::fs::symlink("lib/a.php", app.join("link.php")).unwrap();
    site.deploy(&app).success();
    let live = site.live_release();
    let out = site.zdeploy("verify").success();
    assert!(
        out.stdout
            .contains(&format!("{live} matches its manifest (6 entries, digest ")),
        "{}",
        out.stdout
    );

    let root = site.context();
    write_files(
        &root,
        &[("uploads/user.txt", "user content"), ("lib/b.php", "B")],
    );
    std::fs::remove_file(root.join("lib/a.php")).unwrap();
    std::fs::write(root.join("lib/c.php"), "longer").unwrap();
    std::fs::remove_file(root.join("link.php")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("link.php")).unwrap();
    let out = site.zdeploy("verify").fails_with(1);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "lib/a.php: missing (a deployed file)",
            "lib/b.php: content changed since it was deployed",
            "lib/c.php: 6 bytes, was deployed with 1",
            "link.php: points to '/etc/passwd', was deployed pointing to 'lib/a.php'",
        ]
    );
    assert!(
        out.stderr
            .contains("differs from its manifest in 4 of 6 entries"),
        "{}",
        out.stderr
    );

    site.zdeploy("verify").arg("../../etc").fails_with(2);
    site.zdeploy("verify")
        .arg("ROOT_2001.01.01-00.00.00")
        .fails_with(2);
}
