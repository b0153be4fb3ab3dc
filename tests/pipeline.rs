//! zdeploy in a team's pipeline: the exact commit CI tested goes live, not
//! a newer one that landed meanwhile, through the CLI and the agent's API;
//! a commit off the app's ref is refused unless the app allows any.

use std::time::Duration;

use crate::support::agent::{Agent, demo_app};
use crate::support::git::Repo;
use crate::support::{Site, Zdeploy};

/// A site deploying `repo` (ref `main`) as app `shop`, with `extra` keys.
fn config(site: &Site, repo: &Repo, extra: &str) -> std::path::PathBuf {
    let path = site.path("zdeploy.toml");
    std::fs::write(
        &path,
        format!(
            "[apps.shop]\nwebroot = \"{}\"\nsource = \"{}\"\nref = \"main\"\nsettle = \"0s\"\n{extra}\n",
            site.webroot.display(),
            repo.url()
        ),
    )
    .unwrap();
    path
}

/// A site and a repo whose `main` has the commit CI tested (returned) and
/// a newer one nobody tested yet.
fn tested_then_newer() -> (Site, Repo, String) {
    let site = Site::new();
    let repo = Repo::new(site.dir.path(), "app");
    let tested = repo
        .write("index.php", "<?php echo 'tested';")
        .commit("tested");
    repo.write("index.php", "<?php echo 'newer';")
        .commit("newer, not tested yet");
    (site, repo, tested)
}

fn zdeploy(config: &std::path::Path, args: &[&str]) -> Zdeploy {
    Zdeploy::new().arg("--config").arg(config).args(args)
}

#[test]
fn deploy_commit_puts_exactly_that_commit_live_and_refuses_one_off_the_ref() {
    let (site, repo, tested) = tested_then_newer();
    let config = config(&site, &repo, "");

    // An abbreviated id is enough; the answer names the full commit.
    let out = zdeploy(
        &config,
        &["deploy", "shop", "--commit", &tested[..10], "--json"],
    )
    .success();
    let done: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(done["commit"], tested.as_str(), "{}", out.stdout);
    assert_eq!(site.read("index.php"), "<?php echo 'tested';");
    let out = zdeploy(&config, &["log", "shop"]).success();
    assert!(out.stdout.contains("as asked"), "{}", out.stdout);
    let live = site.live_release();

    // A commit on another branch is not on `main`.
    repo.checkout_new_branch("feature");
    let off = repo
        .write("index.php", "<?php echo 'feature';")
        .commit("feature work");
    let refused = zdeploy(&config, &["deploy", "shop", "--commit", &off]).fails_with(2);
    assert!(
        refused
            .stderr
            .contains(&format!("commit {off} is not on main"))
            && refused.stderr.contains("allow_any_commit = true"),
        "{}",
        refused.stderr
    );
    assert_eq!(site.live_release(), live);

    // Hostile ids are refused before anything is fetched.
    for bad in [
        "xyz",
        "12345",
        "--upload-pack=touch /tmp/x",
        "abcdefg",
        "a b c d e f g",
        &"a".repeat(41),
    ] {
        let flag = format!("--commit={bad}");
        let refused = zdeploy(&config, &["deploy", "shop", &flag]).fails_with(2);
        assert!(
            refused.stderr.contains("is not a commit id"),
            "{bad}: {}",
            refused.stderr
        );
    }
    let nowhere =
        zdeploy(&config, &["deploy", "shop", "--commit", "deadbeefdeadbeef"]).fails_with(2);
    assert!(
        nowhere.stderr.contains("no such commit there"),
        "{}",
        nowhere.stderr
    );
    assert_eq!(site.live_release(), live);

    // Allowed, a commit off the ref deploys.
    let config = self::config(&site, &repo, "allow_any_commit = true");
    let out = zdeploy(&config, &["deploy", "shop", "--commit", &off]).success();
    assert!(
        out.stdout.contains(&format!("commit {}", &off[..12])),
        "{}",
        out.stdout
    );
    assert_eq!(site.read("index.php"), "<?php echo 'feature';");

    // Only a git source has commits.
    let folder = site.path("folder");
    std::fs::create_dir(&folder).unwrap();
    let refused = site
        .zdeploy("deploy")
        .args(["--commit", &tested])
        .arg(&folder)
        .fails_with(2);
    assert!(
        refused.stderr.contains("only a git source has commits"),
        "{}",
        refused.stderr
    );
}

#[test]
fn the_api_deploys_the_commit_ci_names_while_a_newer_one_exists() {
    let (site, repo, tested) = tested_then_newer();
    std::fs::write(site.path("secret"), "s3cret\n").unwrap();
    let agent = Agent::start(
        site.dir.path(),
        &demo_app(&site.webroot, &repo.url(), &site.path("secret"), ""),
    );
    for bad in [
        r#"{"commit": "not-hex!"}"#,
        r#"{"commit": "abc"}"#,
        r#"{"commit": 5}"#,
    ] {
        let answer = agent.act("demo", "deploy", bad);
        assert_eq!(answer.status, 400, "{bad}: {}", answer.body);
    }
    let answer = agent.act("demo", "deploy", &format!(r#"{{"commit": "{tested}"}}"#));
    assert_eq!(answer.status, 202, "{}", answer.body);
    agent.wait_for("the deploy", Duration::from_secs(60), || {
        agent.app("demo")["live"]["commit"] == tested.as_str()
    });
    agent.wait_idle("demo");
    assert_eq!(site.read("index.php"), "<?php echo 'tested';");
    let deployments = agent.deployments("demo");
    assert_eq!(deployments[0]["commit"], tested.as_str(), "{deployments:?}");
}

#[test]
fn a_freeze_stops_automatic_deploys_and_asks_people_to_force_theirs() {
    let site = Site::new();
    let repo = Repo::new(site.dir.path(), "app");
    repo.write("index.php", "<?php echo 'v1';").commit("v1");
    let config = config(&site, &repo, "");
    zdeploy(&config, &["deploy", "shop"]).success();
    let v1 = site.live_release();

    // Hostile input freezes nothing.
    for (args, says) in [
        (&["--until", "yesterday-ish"][..], "give a time such as"),
        (&["--until", "2001-01-01T00:00:00Z"][..], "in the past"),
        (&["--reason", "two\nlines"][..], "one line"),
    ] {
        let refused = zdeploy(&config, &["freeze", "shop"])
            .args(args)
            .fails_with(2);
        assert!(
            refused.stderr.contains(says),
            "{args:?}: {}",
            refused.stderr
        );
    }
    assert!(
        !zdeploy(&config, &["status", "shop"])
            .success()
            .stdout
            .contains("frozen")
    );

    zdeploy(&config, &["freeze", "shop", "--reason", "Black Friday"]).success();
    let status = zdeploy(&config, &["status", "shop"]).success().stdout;
    assert!(
        status.contains("is frozen (Black Friday) since"),
        "{status}"
    );
    repo.write("index.php", "<?php echo 'v2';").commit("v2");
    let refused = zdeploy(&config, &["deploy", "shop"]).fails_with(2);
    assert!(
        refused
            .stderr
            .contains("frozen (Black Friday): a deploy needs --force"),
        "{}",
        refused.stderr
    );
    assert_eq!(site.live_release(), v1);
    zdeploy(&config, &["deploy", "shop", "--force"]).success();
    assert_eq!(site.read("index.php"), "<?php echo 'v2';");
    let refused = zdeploy(&config, &["rollback", "shop"]).fails_with(2);
    assert!(
        refused.stderr.contains("a rollback needs --force"),
        "{}",
        refused.stderr
    );
    zdeploy(&config, &["rollback", "shop", "--force"]).success();
    assert_eq!(site.live_release(), v1);
    zdeploy(&config, &["unfreeze", "shop"]).success();
    zdeploy(&config, &["deploy", "shop"]).success();
    assert_eq!(site.read("index.php"), "<?php echo 'v2';");

    // A freeze with --until ends by itself.
    zdeploy(&config, &["freeze", "shop", "--until", "1s"]).success();
    assert!(
        zdeploy(&config, &["status", "shop"])
            .success()
            .stdout
            .contains("is frozen since")
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !zdeploy(&config, &["status", "shop"])
            .success()
            .stdout
            .contains("frozen")
    );
}

#[test]
fn a_frozen_agent_skips_pushes_and_polls_says_why_and_keeps_the_freeze_across_restarts() {
    let site = Site::new();
    let repo = Repo::new(site.dir.path(), "app");
    repo.write("index.php", "<?php echo 'v1';").commit("v1");
    std::fs::write(site.path("secret"), format!("{}\n", crate::agent::SECRET)).unwrap();
    let agent = Agent::start(
        site.dir.path(),
        &demo_app(
            &site.webroot,
            &repo.url(),
            &site.path("secret"),
            "interval = \"1s\"",
        ),
    );
    agent.wait_for("v1 live", Duration::from_secs(60), || {
        site.live().is_some() && site.read("index.php") == "<?php echo 'v1';"
    });
    agent.wait_idle("demo");
    let config_path = agent.config.clone();
    let cli = |args: &[&str]| {
        Zdeploy::new()
            .arg("--config")
            .arg(&config_path)
            .args(args)
            .success()
    };
    cli(&["freeze", "demo", "--reason", "incident 42"]);
    repo.write("index.php", "<?php echo 'v2';").commit("v2");
    let answer = crate::agent::github_push(&agent, "refs/heads/main", "frozen-push");
    assert_eq!(answer.status, 202, "{}", answer.body);
    agent.wait_for("a skipped deploy", Duration::from_secs(30), || {
        agent
            .deployments("demo")
            .iter()
            .any(|d| d["outcome"] == "skipped" && d["error"] == "skipped: frozen (incident 42)")
    });
    // The poll sees v2 every second; the history says so once.
    std::thread::sleep(Duration::from_secs(3));
    let skipped = agent
        .deployments("demo")
        .iter()
        .filter(|d| d["outcome"] == "skipped")
        .count();
    assert!(
        skipped <= 2,
        "one record per commit and reason, not per poll: {skipped}"
    );
    assert_eq!(site.read("index.php"), "<?php echo 'v1';");
    let answer = agent.act("demo", "deploy", "{}");
    assert_eq!(answer.status, 409, "{}", answer.body);
    assert!(answer.body.contains("incident 42"), "{}", answer.body);
    assert!(
        agent.app("demo")["freeze"]["described"]
            .as_str()
            .unwrap()
            .contains("incident 42")
    );
    let panel = agent.get("/apps/demo/panel").body;
    assert!(panel.contains("Frozen: demo"), "{panel}");

    // The freeze outlives the agent.
    let port = agent.port;
    drop(agent);
    let agent = Agent::start_with(&config_path, port, &[]);
    assert!(agent.app("demo")["freeze"].is_object());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(site.read("index.php"), "<?php echo 'v1';");
    let answer = agent.act("demo", "deploy", r#"{"force": true}"#);
    assert_eq!(answer.status, 202, "{}", answer.body);
    agent.wait_for("the forced deploy", Duration::from_secs(60), || {
        site.read("index.php") == "<?php echo 'v2';"
    });
    agent.wait_idle("demo");
    cli(&["unfreeze", "demo"]);
    repo.write("index.php", "<?php echo 'v3';").commit("v3");
    agent.wait_for("the poll to deploy v3", Duration::from_secs(60), || {
        site.read("index.php") == "<?php echo 'v3';"
    });
}

#[test]
fn a_monorepo_app_deploys_its_folder_and_only_when_something_under_it_changed() {
    let site = Site::new();
    let repo = Repo::new(site.dir.path(), "mono");
    repo.write("apps/site/index.php", "<?php echo 'site v1';")
        .write("apps/site/lib/a.php", "<?php // a")
        .write("apps/admin/index.php", "<?php echo 'admin';")
        .write("README.md", "the monorepo")
        .commit("site v1");
    let config = config(
        &site,
        &repo,
        "path = \"apps/site/\"\nshared = [\"uploads\"]",
    );
    zdeploy(&config, &["deploy", "shop"]).success();
    let first = site.live_release();
    assert_eq!(site.read("index.php"), "<?php echo 'site v1';");
    assert!(site.context().join("lib/a.php").is_file());
    assert!(!site.context().join("apps").exists() && !site.context().join("README.md").exists());
    std::fs::write(site.context().join("uploads/photo.jpg"), "a user's photo").unwrap();

    // A commit elsewhere in the repository deploys nothing.
    repo.write("apps/admin/index.php", "<?php echo 'admin v2';")
        .commit("admin only");
    let out = zdeploy(&config, &["deploy", "shop"]).success();
    assert!(out.stdout.contains("unchanged"), "{}", out.stdout);
    let log = zdeploy(&config, &["log", "shop"]).success().stdout;
    assert!(log.contains("nothing changed under apps/site"), "{log}");
    assert_eq!(site.live_release(), first);

    // A commit under it does, sharing what did not change, keeping uploads.
    repo.write("apps/site/index.php", "<?php echo 'site v2';")
        .commit("site v2");
    zdeploy(&config, &["deploy", "shop"]).success();
    assert_ne!(site.live_release(), first);
    assert_eq!(site.read("index.php"), "<?php echo 'site v2';");
    assert_eq!(site.read("uploads/photo.jpg"), "a user's photo");
    let log = zdeploy(&config, &["log", "shop"]).success().stdout;
    assert!(log.contains("shared 1 unchanged files"), "{log}");
    zdeploy(&config, &["verify", "shop"]).success();

    // A path out of the repository, or one the commit lacks, is refused.
    let bad = self::config(&site, &repo, "path = \"../elsewhere\"");
    let refused = zdeploy(&bad, &["deploy", "shop"]).fails_with(2);
    assert!(
        refused
            .stderr
            .contains("must be a folder inside the repository"),
        "{}",
        refused.stderr
    );
    let missing = self::config(&site, &repo, "path = \"apps/shop\"");
    let refused = zdeploy(&missing, &["deploy", "shop"]).run();
    assert!(
        refused.code != Some(0)
            && refused
                .stderr
                .contains("apps/shop is not a folder of commit"),
        "{}",
        refused.stderr
    );
    assert_eq!(site.read("index.php"), "<?php echo 'site v2';");
}
