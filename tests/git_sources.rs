//! Deploying from git: URLs and paths, branches, tags, commits, redeploys.

use crate::support::git::{Repo, git};
use crate::support::{Site, is_release_name};

#[test]
fn first_deploy_from_a_bare_repo_creates_a_release_and_the_symlink() {
    let site = Site::new();
    let repo = Repo::new(site.dir.path(), "app");
    repo.write("index.php", "<?php echo 'v1';")
        .write("levels/1.json", "{}");
    let commit = repo.commit("first");

    let out = site.deploy(repo.url()).success();
    let live = site.live_release();
    assert!(is_release_name(&live), "{live}");
    assert_eq!(site.releases(), vec![live.clone()]);
    assert_eq!(site.read("index.php"), "<?php echo 'v1';");
    assert!(out.stdout.contains(&commit[..12]), "{}", out.stdout);
    assert!(
        site.webroot.join(".zdeploy/ROOT/git/HEAD").exists(),
        "mirror kept for incremental fetches"
    );
}

#[test]
fn redeploying_the_live_commit_does_nothing_unless_forced() {
    let site = Site::new();
    let repo = Repo::new(site.dir.path(), "app");
    repo.write("index.php", "v1");
    repo.commit("first");
    site.deploy(repo.url()).success();
    let before = site.releases();

    let out = site.deploy(repo.url()).success();
    assert!(out.stdout.contains("unchanged"), "{}", out.stdout);
    assert!(out.stderr.contains("nothing to do"), "{}", out.stderr);
    assert_eq!(site.releases(), before);

    site.deploy(repo.url()).arg("--force").success();
    assert_eq!(site.releases().len(), 2);
}

#[test]
fn a_new_commit_becomes_a_new_release_and_files_removed_from_git_disappear() {
    let site = Site::new();
    let repo = Repo::new(site.dir.path(), "app");
    repo.write("index.php", "v1").write("old.php", "old");
    repo.commit("first");
    site.deploy(repo.url()).success();
    let first = site.live_release();

    repo.write("index.php", "v2").remove("old.php");
    repo.commit("second");
    site.deploy(repo.url()).success();
    assert_ne!(site.live_release(), first);
    assert_eq!(site.read("index.php"), "v2");
    assert!(!site.context().join("old.php").exists());
    assert!(
        site.webroot.join(&first).join("old.php").exists(),
        "previous release untouched"
    );
}

#[test]
fn refs_select_branches_tags_and_commits() {
    let site = Site::new();
    let repo = Repo::new(site.dir.path(), "app");
    repo.write("index.php", "main-1");
    let first = repo.commit("one");
    repo.tag("v1.0");
    repo.write("index.php", "main-2");
    repo.commit("two");
    repo.checkout_new_branch("release");
    repo.write("index.php", "release-1");
    repo.commit("on release");

    site.deploy(repo.url()).success();
    assert_eq!(
        site.read("index.php"),
        "main-2",
        "default branch of the remote"
    );
    site.deploy(repo.url()).args(["--ref", "release"]).success();
    assert_eq!(site.read("index.php"), "release-1");
    site.deploy(repo.url()).args(["--ref", "v1.0"]).success();
    assert_eq!(site.read("index.php"), "main-1");
    site.deploy(repo.url())
        .args(["--ref", &first])
        .arg("--force")
        .success();
    assert_eq!(site.read("index.php"), "main-1");
    site.deploy(repo.url())
        .args(["--ref", &first[..10]])
        .arg("--force")
        .success();
    assert_eq!(site.read("index.php"), "main-1");
}

#[test]
fn a_local_work_tree_path_is_a_git_source() {
    let site = Site::new();
    let repo = Repo::new(site.dir.path(), "app");
    repo.write("index.php", "committed");
    repo.commit("c");
    std::fs::write(repo.work.join("index.php"), "uncommitted edit").unwrap();
    site.deploy(&repo.work).success();
    assert_eq!(
        site.read("index.php"),
        "committed",
        "git sources deploy commits, not the work tree"
    );
    assert!(!site.context().join(".git").exists());
}

#[test]
fn unknown_ref_lists_the_branches_and_changes_nothing() {
    let site = Site::new();
    let repo = Repo::new(site.dir.path(), "app");
    repo.write("index.php", "v1");
    repo.commit("c");
    site.deploy(repo.url()).success();
    let before = site.snapshot();

    let out = site
        .deploy(repo.url())
        .args(["--ref", "relase"])
        .fails_with(4);
    assert!(
        out.stderr.contains("ref 'relase' not found"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("branches: main"), "{}", out.stderr);
    assert_eq!(site.snapshot(), before);
}

#[test]
fn unreachable_repository_is_a_clear_error() {
    let site = Site::new();
    let missing = site.path("nope.git");
    let out = site
        .deploy(format!("file://{}", missing.display()))
        .fails_with(4);
    assert!(out.stderr.contains("cannot"), "{}", out.stderr);
    assert!(out.stderr.contains("nope.git"), "{}", out.stderr);
    assert!(site.releases().is_empty());
    assert!(site.live().is_none());
}

#[test]
fn credentials_in_urls_never_reach_output_or_history() {
    let site = Site::new();
    // Nothing listens on port 9: the fetch fails after git has seen the URL.
    let url = "https://deploy-user:s3cr3t-t0ken@127.0.0.1:9/acme/app.git";
    let out = site.deploy(url).fails_with(4);
    assert!(!out.stderr.contains("s3cr3t"), "{}", out.stderr);
    assert!(out.stderr.contains("***@127.0.0.1"), "{}", out.stderr);
    let log = site.zdeploy("log").success();
    assert!(!log.stdout.contains("s3cr3t"), "{}", log.stdout);
    let history = std::fs::read(site.webroot.join(".zdeploy/ROOT/history.sqlite")).unwrap();
    let needle = b"s3cr3t";
    assert!(
        !history.windows(needle.len()).any(|w| w == needle),
        "secret stored in history"
    );
    let mirror_config =
        std::fs::read_to_string(site.webroot.join(".zdeploy/ROOT/git/config")).unwrap_or_default();
    assert!(!mirror_config.contains("s3cr3t"));
}

#[test]
fn option_like_refs_and_foreign_transports_are_refused_before_git_runs() {
    let site = Site::new();
    let repo = Repo::new(site.dir.path(), "app");
    repo.write("a", "a");
    repo.commit("c");
    let marker = site.path("pwned");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![repo.url(), "--ref=--upload-pack=touch /tmp/x".into()],
            "invalid ref",
        ),
        (
            vec![format!("ext::sh -c touch% {}", marker.display())],
            "not allowed",
        ),
        (vec!["--upload-pack=touch /tmp/x".into()], ""),
        (vec!["ftp://example.com/app.git".into()], "not allowed"),
        (vec!["http://example.com/app.git".into()], "https"),
    ];
    for (args, expected) in cases {
        let out = site.zdeploy("deploy").args(&args).run();
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(expected), "{args:?}: {}", out.stderr);
    }
    assert!(!marker.exists());
    assert!(site.live().is_none());
}

#[test]
fn git_environment_of_the_caller_is_ignored() {
    let site = Site::new();
    let repo = Repo::new(site.dir.path(), "app");
    repo.write("index.php", "v1");
    repo.commit("c");
    // A GIT_DIR pointing elsewhere would make every git call act on it.
    let decoy = site.path("decoy.git");
    git(
        site.dir.path(),
        &["init", "--quiet", "--bare", decoy.to_str().unwrap()],
    );
    site.deploy(repo.url())
        .env("GIT_DIR", &decoy)
        .env("GIT_WORK_TREE", "/")
        .success();
    assert_eq!(site.read("index.php"), "v1");
}

/// ssh is told never to prompt (password, unknown host): `ssh` here is a stand-in on PATH that
/// records how git ran it, then fails like a refused key.
#[test]
fn ssh_runs_in_batch_mode_whatever_the_caller_sets() {
    let site = Site::new();
    let bin = site.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let record = site.path("ssh-call");
    std::fs::write(
        bin.join("ssh"),
        format!("#!/bin/sh\necho \"$@\" > {0}\nexit 255\n", record.display()),
    )
    .unwrap();
    std::fs::set_permissions(
        bin.join("ssh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = site
        .deploy("ssh://git@127.0.0.1:22/acme/app.git")
        .env("PATH", path)
        .env("GIT_SSH_COMMAND", "ssh -o BatchMode=no")
        .fails_with(4);
    let call = std::fs::read_to_string(&record).unwrap();
    assert!(call.contains("-o BatchMode=yes"), "{call}");
    assert!(
        !call.contains("BatchMode=no"),
        "the caller's GIT_SSH_COMMAND is ignored: {call}"
    );
    assert!(site.live().is_none(), "{}", out.stderr);
}
