//! zdeploy in a team's pipeline: the exact commit CI tested goes live, not
//! a newer one that landed meanwhile, through the CLI and the agent's API
//! (a commit off the app's ref is refused unless the app allows any); the
//! archive CI built goes live as it is; freezes; monorepos.

use std::time::Duration;

use crate::support::agent::{Agent, demo_app};
use crate::support::archive::{Item, tar_gz};
use crate::support::git::Repo;
use crate::support::http::Recorder;
use crate::support::{Output, Site, Zdeploy};

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
    // The example pipeline's call, as CI makes it.
    let out = ci_deploy(
        &agent,
        "unused",
        "demo",
        &["--commit".as_ref(), tested.as_ref()],
    );
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(&format!("(commit {tested})")),
        "{}",
        out.stdout
    );
    let out = ci_deploy(
        &agent,
        "unused",
        "demo",
        &["--commit".as_ref(), "abc; rm".as_ref()],
    );
    assert_eq!(out.code, Some(2), "{}\n{}", out.stdout, out.stderr);
    assert_eq!(agent.app("demo")["live"]["commit"], tested.as_str());
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
    let told = Recorder::start(&[200]);
    let agent = Agent::start(
        site.dir.path(),
        &demo_app(
            &site.webroot,
            &repo.url(),
            &site.path("secret"),
            &format!(
                "interval = \"1s\"\nnotify = [{{ url = \"http://{}/\", format = \"slack\", on = [\"skipped\"] }}]",
                told.address
            ),
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
    let said = told.bodies.lock().unwrap().clone();
    assert!(
        !said.is_empty()
            && said.len() <= skipped
            && said[0].contains("skipped: frozen (incident 42)"),
        "one notification per recorded skip: {said:?}"
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

/// `examples/ci/zdeploy-deploy.sh APP ARGS…`, as a CI job runs it, against
/// `agent`.
fn ci_deploy(agent: &Agent, token: &str, app: &str, args: &[&std::ffi::OsStr]) -> Output {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ci/zdeploy-deploy.sh");
    let out = std::process::Command::new(script)
        .arg(app)
        .args(args)
        .env("ZDEPLOY_URL", agent.url(""))
        .env("ZDEPLOY_TOKEN", token)
        .output()
        .expect("run the example deploy script");
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn sha256_of(path: &std::path::Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

#[test]
fn an_archive_ci_built_goes_live_through_the_api_and_the_cli_only_with_its_digest() {
    let site = Site::new();
    let repo = Repo::new(site.dir.path(), "app");
    repo.write("index.php", "<?php echo 'built on the server';")
        .commit("git");
    std::fs::write(site.path("secret"), "s3cret\n").unwrap();
    std::fs::write(site.path("token"), "t0ken\n").unwrap();
    let migrations = site.path("migrations.log");
    let extra = format!(
        "build = [\"touch built-here\", {{ run = \"basename $ZDEPLOY_RELEASE >> {}\", once = true }}]\nmax_archive_size = \"256KiB\"",
        migrations.display()
    );
    let agent = Agent::start(
        site.dir.path(),
        &format!(
            "[agent]\ntoken_file = \"{}\"\n\n{}",
            site.path("token").display(),
            demo_app(&site.webroot, &repo.url(), &site.path("secret"), &extra)
        ),
    );
    let first = site.path("site-1.tar.gz");
    tar_gz(
        &first,
        &[
            Item::File("site/index.php", b"<?php echo 'artifact 1';"),
            Item::File("site/vendor/autoload.php", b"<?php // built by CI"),
        ],
    );
    let digest = sha256_of(&first);
    let bytes = std::fs::read(&first).unwrap();
    let deploy_path = "/api/apps/demo/deploy";
    let auth = ("Authorization", "Bearer t0ken");

    // Hostile: a digest that lies, one that is not hex, no token, too big.
    let lying = "0".repeat(64);
    let answer = agent.post(
        deploy_path,
        &[auth, ("X-Zdeploy-Archive-Sha256", &lying)],
        &bytes,
    );
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(
        answer.body.contains(&digest) && answer.body.contains("nothing was deployed"),
        "{}",
        answer.body
    );
    let answer = agent.post(
        deploy_path,
        &[auth, ("X-Zdeploy-Archive-Sha256", "abc; rm -rf /")],
        &bytes,
    );
    assert_eq!(answer.status, 400, "{}", answer.body);
    let answer = agent.post(
        deploy_path,
        &[("X-Zdeploy-Archive-Sha256", &digest)],
        &bytes,
    );
    assert_eq!(answer.status, 401, "{}", answer.body);
    // The agent answers 413 from Content-Length and may hang up before the
    // body is sent: read its status over a bare connection.
    let big = "x".repeat(300 * 1024);
    let big_digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(big.as_bytes()))
    };
    let status = agent.post_raw(
        deploy_path,
        &[auth, ("X-Zdeploy-Archive-Sha256", &big_digest)],
        &big,
    );
    assert_eq!(status, 413);
    assert_eq!(agent.get("/api/apps/demo/triggers/1").status, 404);
    assert!(agent.deployments("demo").is_empty(), "nothing ran");
    assert!(site.live().is_none(), "nothing went live");
    let uploads = site.webroot.join(".zdeploy/ROOT/uploads");
    assert!(
        std::fs::read_dir(&uploads).map_or(true, |d| d.count() == 0),
        "refused uploads are not kept"
    );

    // The example pipeline's script: sends it, follows it, says it is live.
    let out = ci_deploy(&agent, "t0ken", "demo", &[first.as_os_str()]);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("demo now serves"), "{}", out.stdout);
    assert_eq!(site.read("index.php"), "<?php echo 'artifact 1';");
    assert_eq!(site.read("vendor/autoload.php"), "<?php // built by CI");
    assert!(
        !site.context().join("built-here").exists(),
        "the build entries did not run on the server"
    );
    let migrated = std::fs::read_to_string(&migrations).unwrap();
    assert_eq!(
        migrated.lines().count(),
        1,
        "the once entry ran: {migrated}"
    );
    let deployment = &agent.deployments("demo")[0];
    assert_eq!(deployment["outcome"], "success", "{deployment}");
    assert!(
        deployment["trigger"]
            .as_str()
            .unwrap()
            .contains(&digest[..12]),
        "{deployment}"
    );
    assert!(
        std::fs::read_dir(&uploads).map_or(true, |d| d.count() == 0),
        "a deployed upload is removed"
    );
    // The same bytes again: unchanged, and the script still succeeds.
    let out = ci_deploy(&agent, "t0ken", "demo", &[first.as_os_str()]);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("already served"), "{}", out.stdout);
    // The trigger's answer names the release that went live.
    let state = agent.get("/api/apps/demo/triggers/1").json();
    assert_eq!(state["state"], "done", "{state}");
    assert_eq!(state["outcome"], "success", "{state}");
    assert_eq!(state["release"], site.live_release().as_str(), "{state}");

    // A broken archive fails the deploy and the script says so.
    let broken = site.path("broken.tar.gz");
    std::fs::write(&broken, b"\x1f\x8b not really gzip").unwrap();
    let out = ci_deploy(&agent, "t0ken", "demo", &[broken.as_os_str()]);
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("ended failed"), "{}", out.stderr);
    assert_eq!(site.read("index.php"), "<?php echo 'artifact 1';");

    // Frozen: refused unless forced.
    let second = site.path("site-2.tar.gz");
    tar_gz(
        &second,
        &[Item::File("index.php", b"<?php echo 'artifact 2';")],
    );
    zdeploy(&agent.config, &["freeze", "demo", "--reason", "sale"]).success();
    let out = ci_deploy(&agent, "t0ken", "demo", &[second.as_os_str()]);
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("(409)") && out.stderr.contains("sale"),
        "{}",
        out.stderr
    );
    zdeploy(&agent.config, &["unfreeze", "demo"]).success();
    agent.wait_idle("demo");
    drop(agent);

    // The CLI: --sha256 must match the file.
    let config = site.path("zdeploy.toml");
    let out = zdeploy(&config, &["deploy", "demo", "--archive"])
        .arg(&second)
        .args(["--sha256", &digest])
        .fails_with(2);
    assert!(
        out.stderr.contains("nothing was deployed"),
        "{}",
        out.stderr
    );
    let out = zdeploy(
        &config,
        &["deploy", "demo", "--archive", "/nonexistent.tar.gz"],
    )
    .fails_with(2);
    assert!(out.stderr.contains("/nonexistent.tar.gz"), "{}", out.stderr);
    assert_eq!(site.read("index.php"), "<?php echo 'artifact 1';");
    zdeploy(&config, &["deploy", "demo", "--archive"])
        .arg(&second)
        .args(["--sha256", &sha256_of(&second)])
        .success();
    assert_eq!(site.read("index.php"), "<?php echo 'artifact 2';");
    assert!(!site.context().join("built-here").exists());
    let migrated = std::fs::read_to_string(&migrations).unwrap();
    assert_eq!(migrated.lines().count(), 2, "{migrated}");
}

#[test]
fn promotion_puts_stagings_bytes_live_in_production_without_building_again() {
    let site = Site::new();
    let production = site.webroot.clone();
    let staging = site.path("staging-www");
    std::fs::create_dir_all(&staging).unwrap();
    let repo = Repo::new(site.dir.path(), "app");
    repo.write("index.php", "<?php echo 'v1';")
        .write("lib/util.php", "<?php // util")
        .commit("v1");
    let logs = site.path("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let app = |name: &str, webroot: &std::path::Path| {
        format!(
            "[apps.{name}]\nwebroot = \"{}\"\nsource = \"{}\"\nref = \"main\"\nsettle = \"0s\"\ndrain = \"0s\"\n\
             shared = [\"uploads\"]\n\
             build = [\"od -An -N8 -tx8 /dev/urandom > build-id.txt\", {{ run = \"echo migrated >> {logs}/{name}.migrations\", once = true }}]\n\
             after_switch = [\"echo switched >> {logs}/{name}.after\"]\n",
            webroot.display(),
            repo.url(),
            logs = logs.display(),
        )
    };
    let config = site.path("zdeploy.toml");
    std::fs::write(
        &config,
        app("production", &production) + &app("staging", &staging),
    )
    .unwrap();
    zdeploy(&config, &["deploy", "staging"]).success();
    let staged_live =
        |file: &str| std::fs::read_to_string(staging.join("ROOT").join(file)).unwrap();
    // What users wrote on staging stays on staging.
    std::fs::write(staging.join("ROOT/uploads/staging-upload.jpg"), "staging's").unwrap();
    std::fs::write(staging.join("ROOT/written-by-a-user.txt"), "staging's").unwrap();
    // Production has its own uploads, which must stay.
    std::fs::create_dir_all(production.join(".zdeploy/ROOT/shared/uploads")).unwrap();

    // Hostile: an app that does not exist, the app itself, with --commit.
    let out = zdeploy(&config, &["deploy", "production", "--from", "nosuch"]).fails_with(2);
    assert!(out.stderr.contains("nosuch"), "{}", out.stderr);
    let out = zdeploy(&config, &["deploy", "production", "--from", "production"]).fails_with(2);
    assert!(out.stderr.contains("--from"), "{}", out.stderr);
    zdeploy(
        &config,
        &[
            "deploy",
            "production",
            "--from",
            "staging",
            "--commit",
            "abc1234",
        ],
    )
    .fails_with(2);
    assert!(!production.join("ROOT").exists(), "nothing deployed");

    let out = zdeploy(&config, &["deploy", "production", "--from", "staging"]).success();
    assert!(out.stderr.contains("promoting"), "{}", out.stderr);
    assert_eq!(site.read("index.php"), "<?php echo 'v1';");
    assert_eq!(
        site.read("build-id.txt"),
        staged_live("build-id.txt"),
        "production serves staging's build, not one of its own"
    );
    assert!(!site.context().join("written-by-a-user.txt").exists());
    assert!(!site.context().join("uploads/staging-upload.jpg").exists());
    std::fs::write(
        site.context().join("uploads/production-upload.jpg"),
        "production's",
    )
    .unwrap();
    let count = |name: &str| {
        std::fs::read_to_string(logs.join(name))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    assert_eq!(
        count("production.migrations"),
        1,
        "production's once entry ran"
    );
    assert_eq!(
        count("production.after"),
        1,
        "production's after_switch ran"
    );
    let digest = |app: &str| {
        let out = zdeploy(&config, &["verify", app, "--json"]).success();
        serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(digest("production"), digest("staging"));
    let log = zdeploy(&config, &["log", "production", "--json"]).success();
    assert!(
        log.stdout.contains("staging-www"),
        "the history names the source: {}",
        log.stdout
    );

    // Nothing new on staging: unchanged. A new staging release: promoted,
    // production's upload carried.
    let out = zdeploy(&config, &["deploy", "production", "--from", "staging"]).success();
    assert!(out.stdout.contains("unchanged"), "{}", out.stdout);
    repo.write("index.php", "<?php echo 'v2';").commit("v2");
    zdeploy(&config, &["deploy", "staging"]).success();
    zdeploy(&config, &["deploy", "production", "--from", "staging"]).success();
    assert_eq!(site.read("index.php"), "<?php echo 'v2';");
    assert_eq!(site.read("build-id.txt"), staged_live("build-id.txt"));
    assert_eq!(site.read("uploads/production-upload.jpg"), "production's");
    assert_eq!(digest("production"), digest("staging"));
    assert_eq!(count("production.migrations"), 2);
    assert_eq!(
        count("staging.migrations"),
        2,
        "staging ran its own, once each"
    );
}
